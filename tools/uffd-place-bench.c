/*
 * uffd-place-bench: what placing one background page costs on this
 * kernel, for each way the module could place it.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   uffd-place-bench [PAGES [ROUNDS [RUN]]]
 *
 * Each way starts where ram.c leaves a page, in a receive buffer that the
 * next page overwrites, and ends with the page in place in an anonymous
 * private region registered for missing-page faults, as the guest's RAM
 * is.  Nobody waits on these pages: they are the background stream.
 *
 *   copy            UFFDIO_COPY from the receive buffer (upstream's way)
 *   ring+copy       memcpy into a ring slot, then UFFDIO_COPY from the
 *                   slot (the placer's way: the load thread copies, the
 *                   placer thread places; both costs counted here)
 *   ring+copy-run   as ring+copy, but each run of RUN slots holding
 *                   consecutive pages (16 unless given; a power of two
 *                   up to 64) placed by one UFFDIO_COPY: the placer's
 *                   way since its runs (its slots are side by side, and
 *                   the background stream is mostly consecutive pages)
 *   copy-dontwake   as copy, with UFFDIO_COPY_MODE_DONTWAKE, and one
 *                   UFFDIO_WAKE per batch of BATCH pages
 *   move            the page received into a page of its own (a fresh
 *                   anonymous page, as a read() into it would allocate),
 *                   then UFFDIO_MOVE into place: no copy by the kernel
 *   move-batch      as move, but BATCH consecutive pages received side by
 *                   side and moved by one UFFDIO_MOVE (the background
 *                   stream is mostly consecutive pages)
 *   move-populated  as move-batch, with each batch's fresh pages allocated
 *                   by one MADV_POPULATE_WRITE instead of a fault each
 *   (fill only)     for reference: the fresh pages of move filled, and
 *                   nothing placed; not a way to place a page
 *
 * Prints nanoseconds per page for each, the median of ROUNDS rounds, each
 * round on a fresh region of PAGES pages.
 */

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Debian 12's headers predate UFFDIO_MOVE (Linux 6.8). */
#ifndef UFFDIO_MOVE
struct uffdio_move {
    uint64_t dst;
    uint64_t src;
    uint64_t len;
    uint64_t mode;
    int64_t move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

#define PAGE 4096UL
#define BATCH 64
#define RING_SLOTS 64

/* ring+copy-run: pages per UFFDIO_COPY; divides RING_SLOTS. */
static size_t run;

enum way {
    COPY, RING_COPY, RING_COPY_RUN, COPY_DONTWAKE, MOVE, MOVE_BATCH,
    MOVE_POPULATED, FILL, WAYS
};
static const char *const way_names[WAYS] = {
    "copy", "ring+copy", "ring+copy-run", "copy-dontwake", "move",
    "move-batch", "move-populated", "(fill only)",
};

static void die(const char *what)
{
    fprintf(stderr, "uffd-place-bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        die("mmap");
    }
    return p;
}

static int open_uffd(void)
{
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MOVE };
    int fd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        die("userfaultfd");
    }
    if (ioctl(fd, UFFDIO_API, &api)) {
        die("UFFDIO_API (with UFFD_FEATURE_MOVE)");
    }
    return fd;
}

static void register_missing(int fd, void *area, size_t len)
{
    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)area, .len = len },
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };

    if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
        die("UFFDIO_REGISTER");
    }
}

static void place_copy_len(int fd, void *dst, const void *src, size_t len,
                           uint64_t mode)
{
    struct uffdio_copy copy = {
        .dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len,
        .mode = mode,
    };

    if (ioctl(fd, UFFDIO_COPY, &copy)) {
        die("UFFDIO_COPY");
    }
}

static void place_copy(int fd, void *dst, const void *src, uint64_t mode)
{
    place_copy_len(fd, dst, src, PAGE, mode);
}

static void wake(int fd, void *start, size_t len)
{
    struct uffdio_range range = { .start = (uintptr_t)start, .len = len };

    if (ioctl(fd, UFFDIO_WAKE, &range)) {
        die("UFFDIO_WAKE");
    }
}

static void place_move(int fd, void *dst, void *src, size_t len)
{
    struct uffdio_move move = {
        .dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len,
    };

    if (ioctl(fd, UFFDIO_MOVE, &move)) {
        die("UFFDIO_MOVE");
    }
}

/* One round of @way over @pages pages; nanoseconds per page. */
static double one_round(enum way way, size_t pages, const char *received)
{
    size_t len = pages * PAGE;
    char *area = map_anon(len);
    char *ring = map_anon(RING_SLOTS * PAGE);
    char *staging = NULL;
    int fd = open_uffd();
    double t0, t1;
    size_t i;

    register_missing(fd, area, len);
    memset(ring, 0, RING_SLOTS * PAGE);
    if (way == MOVE || way == MOVE_BATCH || way == MOVE_POPULATED ||
        way == FILL) {
        /*
         * Mapped, not touched: each page is allocated when it is filled.
         * Small pages: moving 4 KiB out of a transparent huge page splits
         * it first.
         */
        staging = map_anon(len);
        if (madvise(staging, len, MADV_NOHUGEPAGE)) {
            die("madvise");
        }
    }

    t0 = now_ns();
    for (i = 0; i < pages; i++) {
        char *dst = area + i * PAGE;

        switch (way) {
        case COPY:
            place_copy(fd, dst, received, 0);
            break;
        case RING_COPY: {
            char *slot = ring + (i % RING_SLOTS) * PAGE;

            memcpy(slot, received, PAGE);
            place_copy(fd, dst, slot, 0);
            break;
        }
        case RING_COPY_RUN: {
            size_t slot = i % RING_SLOTS;

            memcpy(ring + slot * PAGE, received, PAGE);
            if (slot % run == run - 1) {
                place_copy_len(fd, dst - (run - 1) * PAGE,
                               ring + (slot + 1 - run) * PAGE, run * PAGE, 0);
            }
            break;
        }
        case COPY_DONTWAKE:
            place_copy(fd, dst, received, UFFDIO_COPY_MODE_DONTWAKE);
            if (i % BATCH == BATCH - 1) {
                wake(fd, area + (i + 1 - BATCH) * PAGE, BATCH * PAGE);
            }
            break;
        case MOVE:
            memcpy(staging + i * PAGE, received, PAGE);
            place_move(fd, dst, staging + i * PAGE, PAGE);
            break;
        case MOVE_POPULATED:
            if (i % BATCH == 0 &&
                madvise(staging + i * PAGE, BATCH * PAGE,
                        MADV_POPULATE_WRITE)) {
                die("MADV_POPULATE_WRITE");
            }
            /* fall through */
        case MOVE_BATCH:
            memcpy(staging + i * PAGE, received, PAGE);
            if (i % BATCH == BATCH - 1) {
                size_t first = (i + 1 - BATCH) * PAGE;

                place_move(fd, area + first, staging + first, BATCH * PAGE);
            }
            break;
        case FILL:
            memcpy(staging + i * PAGE, received, PAGE);
            break;
        default:
            abort();
        }
    }
    t1 = now_ns();

    /* The page must be there, whichever way put it. */
    if (way != FILL && memcmp(area + (pages - 1) * PAGE, received, PAGE)) {
        fprintf(stderr, "uffd-place-bench: %s placed a wrong page\n",
                way_names[way]);
        exit(1);
    }
    close(fd);
    munmap(area, len);
    munmap(ring, RING_SLOTS * PAGE);
    if (staging) {
        munmap(staging, len);
    }
    return (t1 - t0) / pages;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* A whole decimal number, or -1. */
static long parse_count(const char *arg)
{
    long value;
    char extra;

    return sscanf(arg, "%ld%c", &value, &extra) == 1 ? value : -1;
}

int main(int argc, char **argv)
{
    long pages = argc > 1 ? parse_count(argv[1]) : 65536;
    long rounds = argc > 2 ? parse_count(argv[2]) : 5;
    long run_arg = argc > 3 ? parse_count(argv[3]) : 16;
    char *received = map_anon(PAGE);
    double ns[WAYS][64];
    int w, r;

    if (pages < BATCH || pages % BATCH || rounds < 1 || rounds > 64 ||
        run_arg < 1 || run_arg > RING_SLOTS || (run_arg & (run_arg - 1))) {
        fprintf(stderr, "usage: uffd-place-bench [PAGES (a multiple of %d)"
                " [ROUNDS (1-64) [RUN (a power of two up to %d)]]]\n",
                BATCH, RING_SLOTS);
        return 2;
    }
    run = run_arg;
    for (size_t i = 0; i < PAGE; i++) {
        received[i] = (char)(i * 7 + 1);
    }
    /* Interleaved, so that a slow moment of the machine hits every way. */
    for (r = 0; r < rounds; r++) {
        for (w = 0; w < WAYS; w++) {
            ns[w][r] = one_round(w, pages, received);
        }
    }
    printf("%ld pages of 4 KiB per round, %ld rounds, runs of %zu pages, "
           "median ns per page (min-max)\n", pages, rounds, run);
    for (w = 0; w < WAYS; w++) {
        qsort(ns[w], rounds, sizeof(double), cmp_double);
        printf("%-14s %7.0f  (%.0f-%.0f)\n", way_names[w], ns[w][rounds / 2],
               ns[w][0], ns[w][rounds - 1]);
    }
    return 0;
}
