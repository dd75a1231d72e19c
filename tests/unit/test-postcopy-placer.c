/*
 * Unit tests: the placer's single-producer, single-consumer queue
 * (migration/postcopy-placer.c)
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/thread.h"
#include "postcopy-placer.h"

#define QSIZE 8

static void test_empty_full_order(void)
{
    PostcopyPlacerRing q;
    int i, slot;

    postcopy_placer_ring_init(&q, QSIZE);
    g_assert_true(postcopy_placer_ring_is_empty(&q));
    g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, -1);

    /* Every slot can be taken, in order, and then no more. */
    for (i = 0; i < QSIZE; i++) {
        slot = postcopy_placer_ring_reserve(&q);
        g_assert_cmpint(slot, ==, i);
        /* Reserving again without publishing gives the same slot. */
        g_assert_cmpint(postcopy_placer_ring_reserve(&q), ==, slot);
        postcopy_placer_ring_publish(&q);
        g_assert_false(postcopy_placer_ring_is_empty(&q));
    }
    g_assert_cmpint(postcopy_placer_ring_reserve(&q), ==, -1);

    /*
     * The consumer sees them oldest first; a slot frees on release only,
     * and the producer fills it again at once.
     */
    for (i = 0; i < QSIZE; i++) {
        g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, i);
        g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, i);
        g_assert_cmpint(postcopy_placer_ring_reserve(&q), ==, -1);
        postcopy_placer_ring_release(&q);
        g_assert_cmpint(postcopy_placer_ring_reserve(&q), ==, i);
        postcopy_placer_ring_publish(&q);
    }
    for (i = 0; i < QSIZE; i++) {
        g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, i);
        postcopy_placer_ring_release(&q);
    }
    g_assert_true(postcopy_placer_ring_is_empty(&q));
    g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, -1);
}

/* The free-running indices wrap at UINT_MAX without losing a slot. */
static void test_index_wrap(void)
{
    PostcopyPlacerRing q;
    unsigned int n;
    int slot;

    postcopy_placer_ring_init(&q, QSIZE);
    q.head = q.tail = UINT_MAX - 2;
    for (n = 0; n < 3 * QSIZE; n++) {
        slot = postcopy_placer_ring_reserve(&q);
        g_assert_cmpint(slot, ==, (int)((UINT_MAX - 2 + n) & (QSIZE - 1)));
        postcopy_placer_ring_publish(&q);
        g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, slot);
        postcopy_placer_ring_release(&q);
        g_assert_true(postcopy_placer_ring_is_empty(&q));
    }
    for (n = 0; n < QSIZE; n++) {
        g_assert_cmpint(postcopy_placer_ring_reserve(&q), >=, 0);
        postcopy_placer_ring_publish(&q);
    }
    g_assert_cmpint(postcopy_placer_ring_reserve(&q), ==, -1);
}

/* Publish a slot whose page goes to @host of @rb. */
static void publish_target(PostcopyPlacerRing *q, PostcopyPlaceTarget *t,
                           RAMBlock *rb, uintptr_t host)
{
    int slot = postcopy_placer_ring_reserve(q);

    g_assert_cmpint(slot, >=, 0);
    t[slot] = (PostcopyPlaceTarget) { .rb = rb, .host = (void *)host };
    postcopy_placer_ring_publish(q);
}

/*
 * A run is what one UFFDIO_COPY can place: published slots, consecutive
 * in the ring and in one RAMBlock's memory, never across the ring's end.
 */
static void test_runs(void)
{
    /* Only compared, never followed. */
    static int block_a, block_b;
    RAMBlock *a = (RAMBlock *)&block_a, *b = (RAMBlock *)&block_b;
    PostcopyPlaceTarget t[QSIZE] = { 0 };
    PostcopyPlacerRing q;
    const uintptr_t ps = 4096, base = 0x100000;

    postcopy_placer_ring_init(&q, QSIZE);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 0);

    /* Slots 0-2 follow one another; 3 jumps; 4 is in another block. */
    publish_target(&q, t, a, base);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 1);
    publish_target(&q, t, a, base + ps);
    publish_target(&q, t, a, base + 2 * ps);
    publish_target(&q, t, a, base + 4 * ps);
    publish_target(&q, t, b, base + 5 * ps);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 3);
    /* Capped by @max; a run of one when @max is 1. */
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 2), ==, 2);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 1), ==, 1);
    /* Only published slots count: a reserved one does not. */
    g_assert_cmpint(postcopy_placer_ring_reserve(&q), ==, 5);
    t[5] = (PostcopyPlaceTarget) { .rb = b, .host = (void *)(base + 6 * ps) };

    postcopy_placer_ring_release_n(&q, 3);
    g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, 3);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 1);
    postcopy_placer_ring_release(&q);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 1);
    postcopy_placer_ring_publish(&q);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 2);
    postcopy_placer_ring_release_n(&q, 2);
    g_assert_true(postcopy_placer_ring_is_empty(&q));

    /*
     * Slots 6, 7, 0, 1 hold consecutive pages, but the ring's end splits
     * them: the caller's slot memory is not consecutive there.
     */
    publish_target(&q, t, a, base);
    publish_target(&q, t, a, base + ps);
    publish_target(&q, t, a, base + 2 * ps);
    publish_target(&q, t, a, base + 3 * ps);
    g_assert_cmpint(postcopy_placer_ring_peek(&q), ==, 6);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 2);
    postcopy_placer_ring_release_n(&q, 2);
    g_assert_cmpuint(postcopy_placer_ring_run(&q, t, ps, 16), ==, 2);
    postcopy_placer_ring_release_n(&q, 2);
    g_assert_true(postcopy_placer_ring_is_empty(&q));
}

/*
 * One producer and one consumer thread pass a numbered stream through
 * the queue.  The consumer checks that every number comes once and in
 * order, and that its slot does not change under it before release.
 *
 * The stream ends at STREAM_LEN or after STREAM_SECONDS, whichever comes
 * first: on an idle host it runs to its end in well under a second, but
 * where other work holds the cores, each hand-over between the threads
 * can wait for a time slice.
 */
#define STREAM_LEN      2000000
#define STREAM_SECONDS  5
#define STREAM_LEAST    (QSIZE * 64)

typedef struct Stream {
    PostcopyPlacerRing q;
    uint64_t slots[QSIZE];
    uint64_t full_seen;
    uint64_t end;       /* the stream's length, once the producer stops */
} Stream;

static void *stream_consumer(void *opaque)
{
    Stream *s = opaque;
    uint64_t expect = 0;

    while (expect < qatomic_load_acquire(&s->end)) {
        int slot = postcopy_placer_ring_peek(&s->q);
        uint64_t got;

        if (slot < 0) {
            /* Spinning alone would starve the producer on a busy host. */
            g_thread_yield();
            continue;
        }
        got = s->slots[slot];
        g_assert_cmpuint(got, ==, expect);
        /*
         * Linger now and then so that the producer finds the ring full;
         * not too often: on a busy host each sleep lasts a time slice.
         */
        if (!(expect % 4096)) {
            g_usleep(1);
        }
        g_assert_cmpuint(s->slots[slot], ==, got);
        postcopy_placer_ring_release(&s->q);
        expect++;
    }
    return NULL;
}

static void test_two_threads(void)
{
    Stream *s = g_new0(Stream, 1);
    QemuThread consumer;
    int64_t deadline = g_get_monotonic_time() +
                       STREAM_SECONDS * G_USEC_PER_SEC;
    uint64_t n = 0;

    postcopy_placer_ring_init(&s->q, QSIZE);
    s->end = UINT64_MAX;
    qemu_thread_create(&consumer, "consumer", stream_consumer, s,
                       QEMU_THREAD_JOINABLE);
    while (n < STREAM_LEN &&
           (n < STREAM_LEAST || n % 1024 ||
            g_get_monotonic_time() < deadline)) {
        int slot = postcopy_placer_ring_reserve(&s->q);

        if (slot < 0) {
            s->full_seen++;
            g_thread_yield();
            continue;
        }
        s->slots[slot] = n++;
        postcopy_placer_ring_publish(&s->q);
    }
    qatomic_store_release(&s->end, n);
    qemu_thread_join(&consumer);
    if (n < STREAM_LEN) {
        g_test_message("the stream stopped after %" PRIu64 " numbers, at "
                       "its deadline", n);
    }
    g_assert_true(postcopy_placer_ring_is_empty(&s->q));
    /* The full-ring path ran too. */
    g_assert_cmpuint(s->full_seen, >, 0);
    g_free(s);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/placer-ring/empty-full-order",
                    test_empty_full_order);
    g_test_add_func("/postcopy/placer-ring/index-wrap", test_index_wrap);
    g_test_add_func("/postcopy/placer-ring/runs", test_runs);
    g_test_add_func("/postcopy/placer-ring/two-threads", test_two_threads);
    return g_test_run();
}
