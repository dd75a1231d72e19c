/*
 * Postcopy: the placer's ring, between the main load thread and the placer
 * thread.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A bounded single-producer, single-consumer ring of slot indices.  It
 * only counts: the caller keeps what each slot holds (a page and where it
 * goes) in arrays of @size entries indexed by what reserve() and peek()
 * return.  Pure logic, no system calls: tests/unit drives it.
 *
 * Memory ordering: the producer fills its slot, then publish() stores the
 * tail with release semantics; peek() loads it with acquire, so the
 * consumer sees the slot filled.  The same holds the other way for the
 * head: release() after the consumer is done with a slot, acquire in
 * reserve() before the producer overwrites it.
 */
#ifndef QEMU_POSTCOPY_PLACER_H
#define QEMU_POSTCOPY_PLACER_H

typedef struct PostcopyPlacerRing {
    /* Slots published; written by the producer only. */
    unsigned int tail;
    /* Slots released; written by the consumer only. */
    unsigned int head;
    /* A power of two */
    unsigned int size;
} PostcopyPlacerRing;

/* An empty queue of @size slots; @size must be a power of two. */
void postcopy_placer_ring_init(PostcopyPlacerRing *q, unsigned int size);

/* Producer: the free slot to fill next, or -1 when every slot is taken. */
int postcopy_placer_ring_reserve(PostcopyPlacerRing *q);
/* Producer: hand the slot reserve() gave to the consumer. */
void postcopy_placer_ring_publish(PostcopyPlacerRing *q);

/* Consumer: the oldest published slot, or -1 when there is none. */
int postcopy_placer_ring_peek(PostcopyPlacerRing *q);
/* Consumer: done with the slot peek() gave; the producer may reuse it. */
void postcopy_placer_ring_release(PostcopyPlacerRing *q);

/* Where the page in a slot goes: the caller's array of these. */
typedef struct PostcopyPlaceTarget {
    RAMBlock *rb;
    void *host;
} PostcopyPlaceTarget;

/*
 * Consumer: the run at the head, up to @max slots.  A run is published
 * slots, from the oldest, that are consecutive both in the ring (never
 * across its end, so that their pages are consecutive in the caller's
 * slot memory) and in @targets: each page goes @page_size bytes after the
 * one before, in the same RAMBlock.  One UFFDIO_COPY can place such a run.
 * 0 when nothing is published; 1 at least otherwise.
 */
unsigned int postcopy_placer_ring_run(PostcopyPlacerRing *q,
                                      const PostcopyPlaceTarget *targets,
                                      size_t page_size, unsigned int max);
/* Consumer: done with the @n oldest slots (release() @n times). */
void postcopy_placer_ring_release_n(PostcopyPlacerRing *q, unsigned int n);

/* Any thread: whether every published slot has been released. */
bool postcopy_placer_ring_is_empty(PostcopyPlacerRing *q);

#endif
