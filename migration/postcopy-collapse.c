/*
 * Postcopy: which huge pages to rebuild, when, in which order and at which
 * pace (pure logic; see postcopy-collapse.h).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/bitmap.h"
#include "postcopy-collapse.h"

/* /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst) */
#define PAGEMAP_PRESENT         (1ULL << 63)
#define PAGEMAP_SWAPPED         (1ULL << 62)
#define PAGEMAP_EXCLUSIVE       (1ULL << 56)

#define NS_PER_MS               1000000ULL

void postcopy_collapse_plan_init(PostcopyCollapsePlan *plan,
                                 uint64_t huge_size)
{
    *plan = (PostcopyCollapsePlan) {
        .ranges = g_array_new(false, true, sizeof(PostcopyCollapseRange)),
        .huge_size = huge_size,
        .islands_max = POSTCOPY_COLLAPSE_ISLANDS_MAX,
    };
}

void postcopy_collapse_plan_free(PostcopyCollapsePlan *plan)
{
    guint i;

    if (!plan->ranges) {
        return;
    }
    for (i = 0; i < plan->ranges->len; i++) {
        PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                                  PostcopyCollapseRange, i);

        g_free(r->block);
        g_free(r->hot);
        g_free(r->tried);
        g_free(r->done);
        g_free(r->placed);
        g_free(r->allowed);
    }
    g_array_free(plan->ranges, true);
    plan->ranges = NULL;
}

int postcopy_collapse_plan_add(PostcopyCollapsePlan *plan, const char *block,
                               uintptr_t host, uint64_t length)
{
    uint64_t start = ROUND_UP(host, plan->huge_size) - host;
    PostcopyCollapseRange r;

    if (start >= length || length - start < plan->huge_size) {
        return -1;
    }
    r = (PostcopyCollapseRange) {
        .block = g_strdup(block),
        .start = start,
        .count = (length - start) / plan->huge_size,
    };
    r.hot = bitmap_new(r.count);
    r.tried = bitmap_new(r.count);
    r.done = bitmap_new(r.count);
    r.placed = g_new0(uint32_t, r.count);
    r.allowed = bitmap_new(r.count);
    g_array_append_val(plan->ranges, r);
    return plan->ranges->len - 1;
}

void postcopy_collapse_plan_note(PostcopyCollapsePlan *plan, int range,
                                 uint64_t offset)
{
    PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                              PostcopyCollapseRange, range);
    uint64_t index;

    if (offset < r->start) {
        return;
    }
    index = (offset - r->start) / plan->huge_size;
    if (index < r->count) {
        set_bit(index, r->hot);
    }
}

bool postcopy_collapse_plan_next(PostcopyCollapsePlan *plan,
                                 PostcopyCollapseChunk *chunk)
{
    for (;;) {
        PostcopyCollapseRange *r;
        uint64_t index;

        if (plan->range >= plan->ranges->len) {
            if (plan->cold_pass) {
                return false;
            }
            plan->cold_pass = true;
            plan->range = 0;
            plan->next = 0;
            continue;
        }
        r = &g_array_index(plan->ranges, PostcopyCollapseRange, plan->range);
        if (r->given_up) {
            plan->range++;
            plan->next = 0;
            continue;
        }
        index = plan->cold_pass ?
                find_next_zero_bit(r->hot, r->count, plan->next) :
                find_next_bit(r->hot, r->count, plan->next);
        if (index >= r->count) {
            plan->range++;
            plan->next = 0;
            continue;
        }
        plan->next = index + 1;
        if (test_bit(index, r->done)) {
            continue;
        }
        *chunk = (PostcopyCollapseChunk) {
            .block = r->block,
            .offset = r->start + index * plan->huge_size,
            .hot = !plan->cold_pass,
            .range = plan->range,
        };
        return true;
    }
}

/* The range of @chunk and its index there. */
static PostcopyCollapseRange *chunk_range(PostcopyCollapsePlan *plan,
                                          const PostcopyCollapseChunk *chunk,
                                          uint64_t *index)
{
    PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                              PostcopyCollapseRange,
                                              chunk->range);

    *index = (chunk->offset - r->start) / plan->huge_size;
    return r;
}

/* Whether THP is allowed again next to @index of @r. */
static bool next_to_allowed(PostcopyCollapseRange *r, uint64_t index)
{
    return (index > 0 && test_bit(index - 1, r->allowed)) ||
           (index + 1 < r->count && test_bit(index + 1, r->allowed));
}

void postcopy_collapse_plan_placed(PostcopyCollapsePlan *plan, int range,
                                   uint64_t offset, uint64_t length)
{
    PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                              PostcopyCollapseRange, range);
    uint64_t end = offset + length;
    uint64_t whole_end = r->start + r->count * plan->huge_size;

    offset = MAX(offset, r->start);
    end = MIN(end, whole_end);
    while (offset < end) {
        uint64_t index = (offset - r->start) / plan->huge_size;
        uint64_t huge_end = r->start + (index + 1) * plan->huge_size;
        uint64_t bytes = MIN(end, huge_end) - offset;

        qatomic_add(&r->placed[index], bytes);
        offset += bytes;
    }
}

bool postcopy_collapse_plan_whole(PostcopyCollapsePlan *plan,
                                  const PostcopyCollapseChunk *chunk)
{
    uint64_t index;
    PostcopyCollapseRange *r = chunk_range(plan, chunk, &index);

    return qatomic_read(&r->placed[index]) >= plan->huge_size;
}

void postcopy_collapse_plan_skip_whole(PostcopyCollapsePlan *plan)
{
    guint i;

    for (i = 0; i < plan->ranges->len; i++) {
        PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                                  PostcopyCollapseRange, i);
        uint64_t index;

        for (index = 0; index < r->count; index++) {
            if (r->placed[index] >= plan->huge_size) {
                set_bit(index, r->tried);
            }
        }
    }
}

bool postcopy_collapse_plan_may_allow(PostcopyCollapsePlan *plan,
                                      const PostcopyCollapseChunk *chunk)
{
    uint64_t index;
    PostcopyCollapseRange *r = chunk_range(plan, chunk, &index);

    return plan->islands < plan->islands_max || next_to_allowed(r, index);
}

void postcopy_collapse_plan_allowed(PostcopyCollapsePlan *plan,
                                    const PostcopyCollapseChunk *chunk)
{
    uint64_t index;
    PostcopyCollapseRange *r = chunk_range(plan, chunk, &index);

    if (!next_to_allowed(r, index)) {
        plan->islands++;
    }
    set_bit(index, r->allowed);
}

bool postcopy_collapse_plan_next_untried(PostcopyCollapsePlan *plan,
                                         PostcopyCollapseSweep *sweep,
                                         PostcopyCollapseChunk *chunk)
{
    while (sweep->range < plan->ranges->len) {
        PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                                  PostcopyCollapseRange,
                                                  sweep->range);
        uint64_t index = r->given_up ? r->count :
                         find_next_zero_bit(r->tried, r->count, sweep->next);

        if (index >= r->count) {
            sweep->range++;
            sweep->next = 0;
            continue;
        }
        sweep->next = index + 1;
        *chunk = (PostcopyCollapseChunk) {
            .block = r->block,
            .offset = r->start + index * plan->huge_size,
            .range = sweep->range,
        };
        return true;
    }
    *sweep = (PostcopyCollapseSweep) { 0 };
    return false;
}

void postcopy_collapse_plan_tried(PostcopyCollapsePlan *plan,
                                  const PostcopyCollapseChunk *chunk,
                                  bool collapsed)
{
    uint64_t index;
    PostcopyCollapseRange *r = chunk_range(plan, chunk, &index);

    set_bit(index, r->tried);
    if (collapsed) {
        set_bit(index, r->done);
    }
}

bool postcopy_collapse_plan_result(PostcopyCollapsePlan *plan,
                                   const PostcopyCollapseChunk *chunk,
                                   bool refused)
{
    PostcopyCollapseRange *r = &g_array_index(plan->ranges,
                                              PostcopyCollapseRange,
                                              chunk->range);

    r->refused_in_a_row = refused ? r->refused_in_a_row + 1 : 0;
    if (r->refused_in_a_row >= POSTCOPY_COLLAPSE_REFUSALS_MAX) {
        r->given_up = true;
    }
    return r->given_up;
}

bool postcopy_collapse_worth(const uint64_t *entries, size_t n, bool shared,
                             unsigned int max_none, unsigned int max_swap)
{
    uint64_t data = PAGEMAP_PRESENT | (shared ? 0 : PAGEMAP_EXCLUSIVE);
    size_t i, none = 0, swapped = 0;

    for (i = 0; i < n; i++) {
        if ((entries[i] & data) == data) {
            continue;
        }
        if (entries[i] & PAGEMAP_SWAPPED) {
            swapped++;
        } else {
            none++;
        }
    }
    return none < n && none <= max_none && swapped <= max_swap;
}

void postcopy_collapse_pace_init(PostcopyCollapsePace *pace,
                                 unsigned int percent)
{
    *pace = (PostcopyCollapsePace) { .percent = MAX(MIN(percent, 100), 1) };
}

uint64_t postcopy_collapse_pace_after(PostcopyCollapsePace *pace,
                                      uint64_t took_ns)
{
    uint64_t ms;

    pace->owed_ns += took_ns * (100 - pace->percent) / pace->percent;
    ms = pace->owed_ns / NS_PER_MS;
    if (ms < POSTCOPY_COLLAPSE_REST_MIN_MS) {
        return 0;
    }
    pace->owed_ns -= ms * NS_PER_MS;
    return ms;
}
