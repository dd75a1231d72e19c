/*
 * Postcopy: the queue between the main load thread and the placer thread.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Pure logic (tests/unit drives it).  The indices run freely and wrap at
 * UINT_MAX; tail - head is the number of published slots either way.
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "postcopy-placer.h"

void postcopy_placer_ring_init(PostcopyPlacerRing *q, unsigned int size)
{
    assert(size && !(size & (size - 1)));
    q->tail = 0;
    q->head = 0;
    q->size = size;
}

int postcopy_placer_ring_reserve(PostcopyPlacerRing *q)
{
    unsigned int head = qatomic_load_acquire(&q->head);

    if (q->tail - head == q->size) {
        return -1;
    }
    return q->tail & (q->size - 1);
}

void postcopy_placer_ring_publish(PostcopyPlacerRing *q)
{
    qatomic_store_release(&q->tail, q->tail + 1);
}

int postcopy_placer_ring_peek(PostcopyPlacerRing *q)
{
    unsigned int tail = qatomic_load_acquire(&q->tail);

    if (tail == q->head) {
        return -1;
    }
    return q->head & (q->size - 1);
}

void postcopy_placer_ring_release(PostcopyPlacerRing *q)
{
    postcopy_placer_ring_release_n(q, 1);
}

unsigned int postcopy_placer_ring_run(PostcopyPlacerRing *q,
                                      const PostcopyPlaceTarget *targets,
                                      size_t page_size, unsigned int max)
{
    unsigned int published = qatomic_load_acquire(&q->tail) - q->head;
    unsigned int first = q->head & (q->size - 1);
    unsigned int limit = MIN(MIN(published, max), q->size - first);
    unsigned int n;

    for (n = 1; n < limit; n++) {
        const PostcopyPlaceTarget *prev = &targets[first + n - 1];
        const PostcopyPlaceTarget *next = &targets[first + n];

        if (next->rb != prev->rb ||
            (uint8_t *)next->host != (uint8_t *)prev->host + page_size) {
            break;
        }
    }
    return MIN(n, limit);
}

void postcopy_placer_ring_release_n(PostcopyPlacerRing *q, unsigned int n)
{
    qatomic_store_release(&q->head, q->head + n);
}

bool postcopy_placer_ring_is_empty(PostcopyPlacerRing *q)
{
    return qatomic_load_acquire(&q->head) == qatomic_load_acquire(&q->tail);
}
