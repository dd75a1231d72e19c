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
#include "postcopy-placeq.h"

void postcopy_placeq_init(PostcopyPlaceQueue *q, unsigned int size)
{
    assert(size && !(size & (size - 1)));
    q->tail = 0;
    q->head = 0;
    q->size = size;
}

int postcopy_placeq_reserve(PostcopyPlaceQueue *q)
{
    unsigned int head = qatomic_load_acquire(&q->head);

    if (q->tail - head == q->size) {
        return -1;
    }
    return q->tail & (q->size - 1);
}

void postcopy_placeq_publish(PostcopyPlaceQueue *q)
{
    qatomic_store_release(&q->tail, q->tail + 1);
}

int postcopy_placeq_peek(PostcopyPlaceQueue *q)
{
    unsigned int tail = qatomic_load_acquire(&q->tail);

    if (tail == q->head) {
        return -1;
    }
    return q->head & (q->size - 1);
}

void postcopy_placeq_release(PostcopyPlaceQueue *q)
{
    postcopy_placeq_release_n(q, 1);
}

unsigned int postcopy_placeq_run(PostcopyPlaceQueue *q,
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

void postcopy_placeq_release_n(PostcopyPlaceQueue *q, unsigned int n)
{
    qatomic_store_release(&q->head, q->head + n);
}

bool postcopy_placeq_is_empty(PostcopyPlaceQueue *q)
{
    return qatomic_load_acquire(&q->head) == qatomic_load_acquire(&q->tail);
}
