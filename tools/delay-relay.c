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

#define CHUNK       (256 * 1024)
#define QUEUE_CAP   (1024 * 1024)
#define RELAY_SOCKBUF (256 * 1024)
#define MAX_CONNS   16

typedef struct Chunk {
    struct Chunk *next;
    uint64_t due_us;
    size_t len, off;
    char data[];
} Chunk;

/* One direction: bytes read from @from wait in the queue, then go to @to. */
typedef struct Pipe {
    int from, to;
    Chunk *head, *tail;
    size_t queued;
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

static void pipe_read(Pipe *p)
{
    Chunk *c = malloc(sizeof(*c) + CHUNK);
    ssize_t n;

    if (!c) {
        return;
    }
    n = read(p->from, c->data, CHUNK);
    if (n <= 0) {
        free(c);
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            p->eof = true;
        }
        return;
    }
    c->next = NULL;
    c->len = n;
    c->off = 0;
    c->due_us = now_us() + delay_us;
    if (p->tail) {
        p->tail->next = c;
    } else {
        p->head = c;
    }
    p->tail = c;
    p->queued += n;
}

static void pipe_write(Pipe *p, uint64_t now)
{
    while (p->head && p->head->due_us <= now) {
        Chunk *c = p->head;
        ssize_t n = write(p->to, c->data + c->off, c->len - c->off);

        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                p->eof = true;
                p->done = true;
            }
            return;
        }
        c->off += n;
        p->queued -= n;
        if (c->off < c->len) {
            return;
        }
        p->head = c->next;
        if (!p->head) {
            p->tail = NULL;
        }
        free(c);
    }
    if (p->eof && !p->head && !p->done) {
        shutdown(p->to, SHUT_WR);
        p->done = true;
    }
}

static void conn_close(Conn *c)
{
    int i;

    for (i = 0; i < 2; i++) {
        while (c->dir[i].head) {
            Chunk *next = c->dir[i].head->next;

            free(c->dir[i].head);
            c->dir[i].head = next;
        }
    }
    close(c->dir[0].from);
    close(c->dir[0].to);
    c->used = false;
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
    memset(&conns[i], 0, sizeof(conns[i]));
    conns[i].used = true;
    conns[i].dir[0] = (Pipe) { .from = in, .to = out };
    conns[i].dir[1] = (Pipe) { .from = out, .to = in };
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

                if (!p->eof && p->queued < QUEUE_CAP) {
                    owner[n] = p;
                    pfd[n++] = (struct pollfd) { .fd = p->from,
                                                 .events = POLLIN };
                }
                if (p->head && p->head->due_us <= now) {
                    owner[n] = p;
                    pfd[n++] = (struct pollfd) { .fd = p->to,
                                                 .events = POLLOUT };
                } else if (p->head && p->head->due_us < next_due) {
                    next_due = p->head->due_us;
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
