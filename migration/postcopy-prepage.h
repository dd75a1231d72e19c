/*
 * Postcopy: pre-paging, asking for the pages a walking vCPU will fault on
 * next (pure logic, driven by tests/unit/test-postcopy-prepage.c).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A vCPU that walks memory faults on page after page, and each fault costs
 * a round trip.  When a fault follows on from an earlier one (the same
 * RAMBlock, a little further on), the fault thread asks for the next
 * @depth pages too, after the faulting page's own request, so the walk
 * finds them on its way.  Random faults follow on from nothing and ask
 * for nothing more.
 *
 * Pages of the host's base size only: a huge page already brings
 * megabytes per fault.
 *
 * A few walks are followed at once (one per vCPU, say), each a "stream"
 * that remembers its last fault and how far it has asked ahead; a fault
 * that follows no stream replaces the one used least recently.
 *
 * Without the preempt channel QEMU's source already moves its background
 * scan to each requested page and goes on from there, which serves a walk
 * by itself; with preempt it does not.  Off unless QEMU_POSTCOPY_TUNE asks
 * for it (postcopy-tune.h): docs/notes/2026-12-02-fault-path.md has the
 * figures.
 */
#ifndef QEMU_POSTCOPY_PREPAGE_H
#define QEMU_POSTCOPY_PREPAGE_H

/* Walks followed at once. */
#define POSTCOPY_PREPAGE_STREAMS 8
/* Most pages asked for ahead of one fault. */
#define POSTCOPY_PREPAGE_MAX_DEPTH 256
/* A fault follows on from a stream up to this many pages past its end. */
#define POSTCOPY_PREPAGE_SLACK 2

typedef struct PostcopyPrepageStream {
    const void *block;          /* NULL: unused */
    uint64_t last;              /* page of its last fault */
    uint64_t asked_end;         /* it asked for the pages below this */
    uint64_t used;              /* when it last took a fault */
} PostcopyPrepageStream;

typedef struct PostcopyPrepage {
    PostcopyPrepageStream streams[POSTCOPY_PREPAGE_STREAMS];
    uint64_t faults;            /* the clock of @used */
    unsigned int depth;         /* pages to ask for ahead; 0: off */
} PostcopyPrepage;

/* Forget every stream; ask @depth pages ahead from now on (0: never). */
void postcopy_prepage_init(PostcopyPrepage *pp, unsigned int depth);

/*
 * A fault on page @page of @block, which has @pages pages.  Returns how
 * many pages to ask for ahead of it, starting at *@first (never @page
 * itself, never past the block's end, never a page this stream asked for
 * before); 0 when the fault follows on from no walk.  O(streams).
 */
unsigned int postcopy_prepage_fault(PostcopyPrepage *pp, const void *block,
                                    uint64_t page, uint64_t pages,
                                    uint64_t *first);

#endif
