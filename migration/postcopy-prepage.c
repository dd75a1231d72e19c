/*
 * Postcopy: pre-paging (pure logic; see postcopy-prepage.h).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "postcopy-prepage.h"

void postcopy_prepage_init(PostcopyPrepage *pp, unsigned int depth)
{
    memset(pp, 0, sizeof(*pp));
    pp->depth = MIN(depth, POSTCOPY_PREPAGE_MAX_DEPTH);
}

/*
 * Whether a fault on @page of @block goes on with @s's walk: past its last
 * fault, and no further than a few pages beyond what it asked for (the
 * pages asked for arrive, and the walk faults again where they end).
 */
static bool prepage_follows(const PostcopyPrepageStream *s,
                            const void *block, uint64_t page)
{
    return s->block == block && page > s->last &&
           page <= MAX(s->last + 1, s->asked_end) + POSTCOPY_PREPAGE_SLACK;
}

static PostcopyPrepageStream *prepage_least_used(PostcopyPrepage *pp)
{
    PostcopyPrepageStream *oldest = &pp->streams[0];
    unsigned int i;

    for (i = 1; i < POSTCOPY_PREPAGE_STREAMS; i++) {
        if (pp->streams[i].used < oldest->used) {
            oldest = &pp->streams[i];
        }
    }
    return oldest;
}

unsigned int postcopy_prepage_fault(PostcopyPrepage *pp, const void *block,
                                    uint64_t page, uint64_t pages,
                                    uint64_t *first)
{
    PostcopyPrepageStream *s = NULL;
    uint64_t start, end;
    unsigned int i;

    if (!pp->depth || page >= pages) {
        return 0;
    }
    pp->faults++;
    for (i = 0; i < POSTCOPY_PREPAGE_STREAMS; i++) {
        if (prepage_follows(&pp->streams[i], block, page)) {
            s = &pp->streams[i];
            break;
        }
    }
    if (!s) {
        /* A walk may start here: wait for its second fault. */
        s = prepage_least_used(pp);
        *s = (PostcopyPrepageStream) {
            .block = block, .last = page, .asked_end = page + 1,
            .used = pp->faults,
        };
        return 0;
    }
    s->last = page;
    s->used = pp->faults;
    start = MAX(page + 1, s->asked_end);
    end = MIN(page + 1 + pp->depth, pages);
    if (start >= end) {
        return 0;
    }
    s->asked_end = end;
    *first = start;
    return end - start;
}
