/*
 * collapse-cost: what rebuilding huge pages with MADV_COLLAPSE costs the
 * threads that run beside it, as the module's rebuild after postcopy
 * costs the vCPUs.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 *   collapse-cost [GIB [HUGE_PER_CALL [PERCENT [cpu|mem [fresh|recycled]]]]]
 *
 * A region of GIB GiB (4) is filled in base pages, as postcopy leaves
 * guest RAM, and MADV_HUGEPAGE is set on it.  Two worker threads count
 * their steps: "cpu" steps in a small buffer of their own, "mem" (the
 * default) at random places of the region, as a guest's accesses land
 * all over its RAM.  After 3 s of their rate alone, one thread collapses
 * the region HUGE_PER_CALL huge pages per madvise() (1, as the module
 * does), resting after each call for its wall time times
 * (100 - PERCENT) / PERCENT (PERCENT 50): the module's share of rest,
 * though the module owes rests under POSTCOPY_COLLAPSE_REST_MIN_MS and
 * takes them together (postcopy_collapse_pace_after(), which needs
 * QEMU's headers).  On a CPU it shares with the workers, the thread
 * takes less than PERCENT.
 *
 * "recycled" first fills and frees a region of huge pages of the same
 * size, so that the collapse's new huge pages are memory this process
 * has just touched; "fresh" (the default) leaves the kernel to hand out
 * whatever it has, as after a migration.  On a host whose memory stays
 * resident the two are the same; where the host beneath takes free
 * memory back (free page reporting of a VM), "fresh" pays the host's
 * fault on every new huge page.
 *
 * Prints the collapse's wall time and its thread's CPU, the workers'
 * work lost while it ran (seconds at their joint rate before, and that
 * times two in CPU-seconds), the ratio of that to the collapse's CPU,
 * and the workers' rate after it over their rate before.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define HUGE_SIZE (2UL << 20)
#define BASE_SIZE 4096UL
#define WORKERS 2
#define STEPS_PER_COUNT 1024
#define SMALL_SIZE (64UL << 10)

static char *region;
static size_t region_size;
static bool workers_touch_region;
static atomic_bool quit;
static atomic_ulong steps[WORKERS];

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double thread_cpu(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_for(double seconds)
{
    struct timespec ts = {
        .tv_sec = (time_t)seconds,
        .tv_nsec = (long)((seconds - (time_t)seconds) * 1e9),
    };

    while (nanosleep(&ts, &ts) && errno == EINTR) {
        continue;
    }
}

static void *worker(void *opaque)
{
    int id = (intptr_t)opaque;
    uint64_t x = 88172645463325252ULL + id, n = 0;
    char *small = calloc(1, SMALL_SIZE);

    if (!small) {
        perror("calloc");
        exit(1);
    }
    while (!atomic_load_explicit(&quit, memory_order_relaxed)) {
        for (int i = 0; i < STEPS_PER_COUNT; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (workers_touch_region) {
                region[x % region_size]++;
            } else {
                small[x % SMALL_SIZE]++;
            }
        }
        n += STEPS_PER_COUNT;
        atomic_store_explicit(&steps[id], n, memory_order_relaxed);
    }
    free(small);
    return NULL;
}

static unsigned long all_steps(void)
{
    unsigned long total = 0;

    for (int i = 0; i < WORKERS; i++) {
        total += atomic_load(&steps[i]);
    }
    return total;
}

/* The workers' joint steps per second over the next @seconds. */
static double workers_rate(double seconds)
{
    unsigned long before = all_steps();
    double began = now();

    sleep_for(seconds);
    return (all_steps() - before) / (now() - began);
}

/* @size bytes of anonymous memory aligned to a huge page. */
static char *map_aligned(size_t size)
{
    char *p = mmap(NULL, size + HUGE_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return (char *)(((uintptr_t)p + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
}

/* Touch and free @size bytes of huge pages, for the kernel to reuse. */
static void recycle_huge_pages(size_t size)
{
    char *p = map_aligned(size);

    madvise(p, size, MADV_HUGEPAGE);
    memset(p, 1, size);
    munmap(p, size);
}

int main(int argc, char **argv)
{
    int gib = argc > 1 ? atoi(argv[1]) : 4;
    int per_call_huge = argc > 2 ? atoi(argv[2]) : 1;
    int percent = argc > 3 ? atoi(argv[3]) : 50;
    const char *workers_mode = argc > 4 ? argv[4] : "mem";
    const char *memory_mode = argc > 5 ? argv[5] : "fresh";
    bool recycled = !strcmp(memory_mode, "recycled");
    size_t per_call;
    pthread_t threads[WORKERS];
    double before, after, began, took, cpu, lost;
    unsigned long steps_then;
    int calls = 0, refused = 0;

    workers_touch_region = !strcmp(workers_mode, "mem");
    if (gib <= 0 || per_call_huge <= 0 || percent <= 0 || percent > 100 ||
        (!workers_touch_region && strcmp(workers_mode, "cpu")) ||
        (!recycled && strcmp(memory_mode, "fresh"))) {
        fprintf(stderr, "usage: collapse-cost [GIB [HUGE_PER_CALL "
                "[PERCENT [cpu|mem [fresh|recycled]]]]]\n");
        return 2;
    }
    region_size = (size_t)gib << 30;
    per_call = (size_t)per_call_huge * HUGE_SIZE;
    region = map_aligned(region_size);
    madvise(region, region_size, MADV_NOHUGEPAGE);
    for (size_t off = 0; off < region_size; off += BASE_SIZE) {
        region[off] = 1;
    }
    madvise(region, region_size, MADV_HUGEPAGE);

    for (int i = 0; i < WORKERS; i++) {
        if (pthread_create(&threads[i], NULL, worker, (void *)(intptr_t)i)) {
            fprintf(stderr, "collapse-cost: no worker thread\n");
            return 1;
        }
    }
    sleep_for(1);
    before = workers_rate(3);
    if (recycled) {
        recycle_huge_pages(region_size);
    }

    steps_then = all_steps();
    began = now();
    cpu = thread_cpu();
    for (size_t off = 0; off < region_size; off += per_call) {
        size_t len = MIN(per_call, region_size - off);
        double call = now();

        calls++;
        if (madvise(region + off, len, MADV_COLLAPSE)) {
            refused++;
        }
        if (percent < 100) {
            sleep_for((now() - call) * (100 - percent) / percent);
        }
    }
    took = now() - began;
    cpu = thread_cpu() - cpu;
    lost = took - (all_steps() - steps_then) / before;
    if (refused == calls) {
        fprintf(stderr, "collapse-cost: the kernel refused every collapse "
                "(MADV_COLLAPSE needs Linux 6.1 and THP not \"never\")\n");
        return 1;
    }
    after = workers_rate(3);

    printf("%d GiB, %d huge pages per call, pace %d%%, workers %s, %s "
           "memory: collapse %.2f s wall, %.2f s CPU (%.2f GB/s), %d "
           "refused; workers lost %.2f s (%.2f CPU-s, %.2f x the "
           "collapse's CPU); rate after / before %.2f\n",
           gib, per_call_huge, percent,
           workers_touch_region ? "mem" : "cpu",
           recycled ? "recycled" : "fresh", took, cpu,
           region_size / cpu / 1e9, refused, lost, lost * WORKERS,
           lost * WORKERS / cpu, after / before);
    atomic_store(&quit, true);
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
    }
    return 0;
}
