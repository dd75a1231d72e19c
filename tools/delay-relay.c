/*
 * delay-relay: a TCP relay that holds every byte for a fixed time in each
 * direction, to give an emulated link its round trip where the kernel has
 * no netem (the benchmark machines' kernels do not).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   delay-relay LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT DELAY_US
 *
 * Accepts connections on LISTEN, connects each to TARGET, and forwards both
 * ways; data read at time t is written no earlier than t + DELAY_US.  At
 * most QUEUE_CAP bytes wait per direction, after which reading stops, so
 * TCP flow control still works end to end.  Prints "ready" once listening.
 *
 * The relay must add no queue that a real link does not have: what it
 * holds stands for the bytes in flight on the wire (rate x delay: 125 KB
 * at 10 Gbit/s and 0.1 ms, 37 KB at 1 Gbit/s and 0.3 ms), so QUEUE_CAP is
 * 1 MiB and its own sockets' buffers are RELAY_SOCKBUF.  With 32 MiB and
 * autotuned buffers, a destination slower than the link found up to
 * 40 MiB waiting in the relay ahead of every page it asked for, a queue
 * neither end could see or bound.
 * Single-threaded: ppoll() on every socket, the timeout set by the earliest
 * chunk due.
 *
 * Bytes wait in a pipe per direction, moved in and out with splice(), so
 * that the relay copies none of them: a real link costs the hosts no CPU,
 * and the relay shares the benchmark's 2 cores with both QEMUs.  Copying
 * them through a buffer, it took 2.1-3.0 CPU-s per 1 GiB migration over
 * the 10 Gbit/s link, most of it in the kernel's copy to user space
 * (perf), while postcopy lasted 2.4-3.1 s: the CPU the destination's
 * load thread was short of.  Each splice() in becomes a chunk: its length
 * and when it is due.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_CAP   (1024 * 1024)
/*
 * A pipe holds a number of page slots, and a splice() from a socket may
 * fill one with a single segment: room for QUEUE_CAP in 1448-byte
 * segments.  The kernel may give less to a user without CAP_SYS_RESOURCE;
 * the relay then holds what fits, the pipe being full reads as a socket
 * with nothing to read.
 */
#define PIPE_BYTES  (4 * QUEUE_CAP)
/* Splices waiting per direction; one more is never read. */
#define MAX_CHUNKS  4096
#define RELAY_SOCKBUF (256 * 1024)
#define MAX_CONNS   16

typedef struct Chunk {
    uint64_t due_us;
    size_t len;         /* bytes of it still in the pipe */
} Chunk;

/*
 * One direction: bytes read from @from wait in the pipe @pipe_fd (read
 * end, write end), then go to @to, in chunks[head], chunks[head + 1], ...
 */
typedef struct Pipe {
    int from, to;
    int pipe_fd[2];
    Chunk chunks[MAX_CHUNKS];
    unsigned int head, count;
    size_t queued;
    /* The last splice in found the pipe full: read after the next out. */
    bool pipe_full;
    bool eof;           /* @from is done; shut @to down once drained */
    bool done;
} Pipe;

typedef struct Conn {
    bool used;
    Pipe dir[2];
} Conn;

static Conn conns[MAX_CONNS];
static uint64_t delay_us;

/* A decimal number, or exit with a usage error. */
static uint64_t parse_number(const char *text)
{
    uint64_t v = 0;

    if (!*text) {
        fprintf(stderr, "delay-relay: empty number\n");
        exit(2);
    }
    for (; *text; text++) {
        if (*text < '0' || *text > '9') {
            fprintf(stderr, "delay-relay: not a number: %s\n", text);
            exit(2);
        }
        v = v * 10 + (*text - '0');
    }
    return v;
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_nonblock_nodelay(int fd)
{
    int one = 1;

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int tcp_socket(const char *addr, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    if (inet_pton(AF_INET, addr, &sa->sin_addr) != 1) {
        fprintf(stderr, "delay-relay: bad address %s\n", addr);
        exit(2);
    }
    return socket(AF_INET, SOCK_STREAM, 0);
}

/*
 * Before listen() or connect(), so that the window scale fits: bytes from
 * the source wait in the relay's receive buffer, bytes to the destination
 * in its send buffer.
 */
static void set_relay_buffers(int fd)
{
    int size = RELAY_SOCKBUF;

    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

static Chunk *pipe_head(Pipe *p)
{
    return p->count ? &p->chunks[p->head] : NULL;
}

static bool pipe_can_read(Pipe *p)
{
    return !p->eof && !p->pipe_full && p->queued < QUEUE_CAP &&
           p->count < MAX_CHUNKS;
}

static void pipe_read(Pipe *p)
{
    ssize_t n = splice(p->from, NULL, p->pipe_fd[1], NULL,
                       QUEUE_CAP - p->queued,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    Chunk *c;

    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            p->eof = true;
        } else if (errno == EAGAIN && p->queued) {
            /*
             * Or the socket had nothing after all: then reading waits
             * for the next chunk out, at most the delay.
             */
            p->pipe_full = true;
        }
        return;
    }
    c = &p->chunks[(p->head + p->count) % MAX_CHUNKS];
    c->len = n;
    c->due_us = now_us() + delay_us;
    p->count++;
    p->queued += n;
}

static void pipe_write(Pipe *p, uint64_t now)
{
    Chunk *c;

    while ((c = pipe_head(p)) && c->due_us <= now) {
        ssize_t n = splice(p->pipe_fd[0], NULL, p->to, NULL, c->len,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                p->eof = true;
                p->done = true;
            }
            return;
        }
        p->pipe_full = false;
        c->len -= n;
        p->queued -= n;
        if (c->len) {
            return;
        }
        p->head = (p->head + 1) % MAX_CHUNKS;
        p->count--;
    }
    if (p->eof && !p->count && !p->done) {
        shutdown(p->to, SHUT_WR);
        p->done = true;
    }
}

static void conn_close(Conn *c)
{
    int i;

    for (i = 0; i < 2; i++) {
        close(c->dir[i].pipe_fd[0]);
        close(c->dir[i].pipe_fd[1]);
    }
    close(c->dir[0].from);
    close(c->dir[0].to);
    c->used = false;
}

/* A pipe of PIPE_BYTES, or as much as the kernel gives; false: none. */
static bool pipe_open(Pipe *p, int from, int to)
{
    *p = (Pipe) { .from = from, .to = to };
    if (pipe2(p->pipe_fd, O_NONBLOCK | O_CLOEXEC)) {
        perror("delay-relay: pipe");
        return false;
    }
    fcntl(p->pipe_fd[1], F_SETPIPE_SZ, PIPE_BYTES);
    return true;
}

static void accept_one(int lfd, const char *taddr, int tport)
{
    struct sockaddr_in sa;
    int in = accept(lfd, NULL, NULL), out, i;

    if (in < 0) {
        return;
    }
    out = tcp_socket(taddr, tport, &sa);
    if (out >= 0) {
        set_relay_buffers(out);
    }
    if (out < 0 || connect(out, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("delay-relay: connect");
        close(in);
        if (out >= 0) {
            close(out);
        }
        return;
    }
    set_nonblock_nodelay(in);
    set_nonblock_nodelay(out);
    for (i = 0; i < MAX_CONNS && conns[i].used; i++) {
        /* find a free slot */
    }
    if (i == MAX_CONNS) {
        close(in);
        close(out);
        return;
    }
    if (!pipe_open(&conns[i].dir[0], in, out)) {
        close(in);
        close(out);
        return;
    }
    if (!pipe_open(&conns[i].dir[1], out, in)) {
        close(conns[i].dir[0].pipe_fd[0]);
        close(conns[i].dir[0].pipe_fd[1]);
        close(in);
        close(out);
        return;
    }
    conns[i].used = true;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    int lfd, one = 1;

    if (argc != 6) {
        fprintf(stderr, "usage: delay-relay LISTEN_ADDR LISTEN_PORT "
                "TARGET_ADDR TARGET_PORT DELAY_US\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /*
     * ppoll() may otherwise wake up to 50 us late (the default timer
     * slack), in each direction: a quarter of a 0.2 ms round trip.
     */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    delay_us = parse_number(argv[5]);
    lfd = tcp_socket(argv[1], parse_number(argv[2]), &sa);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    set_relay_buffers(lfd);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(lfd, 8)) {
        perror("delay-relay: listen");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    for (;;) {
        struct pollfd pfd[1 + 4 * MAX_CONNS];
        Pipe *owner[1 + 4 * MAX_CONNS];
        uint64_t now = now_us(), next_due = UINT64_MAX;
        struct timespec timeout = { .tv_sec = 1 };
        int n = 0, i, d;

        for (i = 0; i < MAX_CONNS; i++) {
            if (conns[i].used) {
                pipe_write(&conns[i].dir[0], now);
                pipe_write(&conns[i].dir[1], now);
                if (conns[i].dir[0].done && conns[i].dir[1].done) {
                    conn_close(&conns[i]);
                }
            }
        }
        pfd[n++] = (struct pollfd) { .fd = lfd, .events = POLLIN };
        for (i = 0; i < MAX_CONNS; i++) {
            for (d = 0; conns[i].used && d < 2; d++) {
                Pipe *p = &conns[i].dir[d];
                Chunk *head = pipe_head(p);

                if (pipe_can_read(p)) {
                    owner[n] = p;
                    pfd[n++] = (struct pollfd) { .fd = p->from,
                                                 .events = POLLIN };
                }
                if (head && head->due_us <= now) {
                    owner[n] = p;
                    pfd[n++] = (struct pollfd) { .fd = p->to,
                                                 .events = POLLOUT };
                } else if (head && head->due_us < next_due) {
                    next_due = head->due_us;
                }
            }
        }
        /* Microsecond resolution: the delays are a fraction of 1 ms. */
        if (next_due != UINT64_MAX) {
            timeout.tv_sec = (next_due - now) / 1000000;
            timeout.tv_nsec = (next_due - now) % 1000000 * 1000;
        }
        if (ppoll(pfd, n, &timeout, NULL) < 0 && errno != EINTR) {
            perror("delay-relay: poll");
            return 1;
        }
        if (pfd[0].revents & POLLIN) {
            accept_one(lfd, argv[3], parse_number(argv[4]));
        }
        for (i = 1; i < n; i++) {
            if ((pfd[i].events & POLLIN) &&
                (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                pipe_read(owner[i]);
            }
        }
    }
}
