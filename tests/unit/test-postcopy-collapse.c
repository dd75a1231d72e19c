/*
 * Unit tests: the plan (its passes, sweeps, byte counts and runs of huge
 * pages with THP allowed), the data test and the pace of rebuilding huge
 * pages (migration/postcopy-collapse.c).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "postcopy-collapse.h"

#define PRESENT   (1ULL << 63)
#define SWAPPED   (1ULL << 62)
#define EXCLUSIVE (1ULL << 56)

/* Every chunk next() gives, as "block:offset/MiB" or "block:offset/MiB*". */
static char *plan_order(PostcopyCollapsePlan *plan)
{
    g_autoptr(GString) order = g_string_new("");
    PostcopyCollapseChunk chunk;

    while (postcopy_collapse_plan_next(plan, &chunk)) {
        g_string_append_printf(order, "%s%s:%" PRIu64 "%s",
                               order->len ? " " : "", chunk.block,
                               chunk.offset / MiB, chunk.hot ? "*" : "");
    }
    return g_strdup(order->str);
}

/* Only whole huge pages, counted from the first aligned host address. */
static void test_plan_alignment(void)
{
    PostcopyCollapsePlan plan;
    g_autofree char *order = NULL;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    /* Aligned: 8 MiB is four huge pages. */
    g_assert_cmpint(postcopy_collapse_plan_add(&plan, "a", 0x40000000,
                                               8 * MiB), ==, 0);
    /* 1 MiB past a boundary: the first whole one is at offset 1 MiB. */
    g_assert_cmpint(postcopy_collapse_plan_add(&plan, "b", 0x80100000,
                                               6 * MiB), ==, 1);
    /* Smaller than a huge page once aligned: nothing to do. */
    g_assert_cmpint(postcopy_collapse_plan_add(&plan, "c", 0x90100000,
                                               2 * MiB), ==, -1);
    order = plan_order(&plan);
    g_assert_cmpstr(order, ==, "a:0 a:2 a:4 a:6 b:1 b:3");
    postcopy_collapse_plan_free(&plan);
}

/* The huge pages the guest faulted on come first, each once. */
static void test_plan_hot_first(void)
{
    PostcopyCollapsePlan plan;
    g_autofree char *order = NULL;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    postcopy_collapse_plan_add(&plan, "a", 0, 8 * MiB);
    postcopy_collapse_plan_add(&plan, "b", 0x80100000, 6 * MiB);
    postcopy_collapse_plan_note(&plan, 0, 5 * MiB);
    postcopy_collapse_plan_note(&plan, 0, 4 * MiB + 4096);
    postcopy_collapse_plan_note(&plan, 1, 3 * MiB);
    /* Before the first whole one and past the last: not in the plan. */
    postcopy_collapse_plan_note(&plan, 1, 512 * KiB);
    postcopy_collapse_plan_note(&plan, 1, 5 * MiB + 4096);
    order = plan_order(&plan);
    g_assert_cmpstr(order, ==, "a:4* b:3* a:0 a:2 a:6 b:1");
    postcopy_collapse_plan_free(&plan);
}

/* Every chunk one sweep offers, as "block:offset/MiB". */
static char *sweep_order(PostcopyCollapsePlan *plan,
                         PostcopyCollapseSweep *sweep)
{
    g_autoptr(GString) order = g_string_new("");
    PostcopyCollapseChunk chunk;

    while (postcopy_collapse_plan_next_untried(plan, sweep, &chunk)) {
        g_string_append_printf(order, "%s%s:%" PRIu64, order->len ? " " : "",
                               chunk.block, chunk.offset / MiB);
    }
    return g_strdup(order->str);
}

/*
 * While pages come in, each sweep offers every huge page not tried yet;
 * at the end only those not collapsed then are left, hot ones first.
 */
static void test_plan_sweeps(void)
{
    PostcopyCollapseSweep sweep = { 0 };
    PostcopyCollapsePlan plan;
    PostcopyCollapseChunk chunk;
    g_autofree char *first = NULL, *second = NULL, *third = NULL;
    g_autofree char *order = NULL;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    postcopy_collapse_plan_add(&plan, "a", 0, 8 * MiB);
    postcopy_collapse_plan_add(&plan, "b", 0x80100000, 6 * MiB);
    postcopy_collapse_plan_note(&plan, 0, 2 * MiB);
    postcopy_collapse_plan_note(&plan, 1, 3 * MiB);
    first = sweep_order(&plan, &sweep);
    g_assert_cmpstr(first, ==, "a:0 a:2 a:4 a:6 b:1 b:3");

    /* a:2 and b:3 collapse, a:4 is whole but refused; the rest not whole. */
    g_assert_true(postcopy_collapse_plan_next_untried(&plan, &sweep, &chunk));
    g_assert_true(postcopy_collapse_plan_next_untried(&plan, &sweep, &chunk));
    postcopy_collapse_plan_tried(&plan, &chunk, true);
    g_assert_true(postcopy_collapse_plan_next_untried(&plan, &sweep, &chunk));
    postcopy_collapse_plan_tried(&plan, &chunk, false);
    chunk = (PostcopyCollapseChunk) { .block = "b", .offset = 3 * MiB,
                                      .range = 1 };
    postcopy_collapse_plan_tried(&plan, &chunk, true);
    sweep = (PostcopyCollapseSweep) { 0 };
    second = sweep_order(&plan, &sweep);
    g_assert_cmpstr(second, ==, "a:0 a:6 b:1");
    /* The sweep starts again by itself once it has ended. */
    third = sweep_order(&plan, &sweep);
    g_assert_cmpstr(third, ==, second);

    order = plan_order(&plan);
    g_assert_cmpstr(order, ==, "a:0 a:4 a:6 b:1");
    postcopy_collapse_plan_free(&plan);
}

/*
 * Bytes placed count toward each huge page they fall in, split where a
 * run crosses from one to the next; outside the whole ones they count for
 * none.
 */
static void test_plan_placed(void)
{
    PostcopyCollapsePlan plan;
    PostcopyCollapseChunk a0 = { .block = "a", .offset = 1 * MiB },
                          a2 = { .block = "a", .offset = 3 * MiB };

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    /* Block a from 1 MiB past a boundary: whole ones at 1 and 3 MiB. */
    postcopy_collapse_plan_add(&plan, "a", 0x80100000, 6 * MiB);
    /* Before the first whole one, and half of it. */
    postcopy_collapse_plan_placed(&plan, 0, 0, 2 * MiB);
    g_assert_false(postcopy_collapse_plan_whole(&plan, &a0));
    /* Across the boundary: the rest of the first, 64 KiB of the next. */
    postcopy_collapse_plan_placed(&plan, 0, 2 * MiB, 1 * MiB + 64 * KiB);
    g_assert_true(postcopy_collapse_plan_whole(&plan, &a0));
    g_assert_false(postcopy_collapse_plan_whole(&plan, &a2));
    /* The rest of the second, and past the last whole one. */
    postcopy_collapse_plan_placed(&plan, 0, 3 * MiB + 64 * KiB,
                                  3 * MiB - 64 * KiB);
    g_assert_true(postcopy_collapse_plan_whole(&plan, &a2));
    postcopy_collapse_plan_free(&plan);
}

/* At LISTEN the huge pages whole already are left to the last pass. */
static void test_plan_skip_whole(void)
{
    PostcopyCollapseSweep sweep = { 0 };
    PostcopyCollapsePlan plan;
    g_autofree char *order = NULL, *last = NULL;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    postcopy_collapse_plan_add(&plan, "a", 0, 8 * MiB);
    postcopy_collapse_plan_placed(&plan, 0, 2 * MiB, 2 * MiB);
    postcopy_collapse_plan_placed(&plan, 0, 4 * MiB, 1 * MiB);
    postcopy_collapse_plan_skip_whole(&plan);
    order = sweep_order(&plan, &sweep);
    g_assert_cmpstr(order, ==, "a:0 a:4 a:6");
    last = plan_order(&plan);
    g_assert_cmpstr(last, ==, "a:0 a:2 a:4 a:6");
    postcopy_collapse_plan_free(&plan);
}

/*
 * THP allowed again: a huge page next to a run joins it; past
 * islands_max, only those.
 */
static void test_plan_islands(void)
{
    PostcopyCollapsePlan plan;
    PostcopyCollapseChunk c[8];
    int i;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    g_assert_cmpuint(plan.islands_max, ==, POSTCOPY_COLLAPSE_ISLANDS_MAX);
    plan.islands_max = 2;
    postcopy_collapse_plan_add(&plan, "a", 0, 16 * MiB);
    for (i = 0; i < 8; i++) {
        c[i] = (PostcopyCollapseChunk) { .block = "a", .offset = i * 2 * MiB };
    }
    g_assert_true(postcopy_collapse_plan_may_allow(&plan, &c[1]));
    postcopy_collapse_plan_allowed(&plan, &c[1]);
    /* Next to it: no new island. */
    postcopy_collapse_plan_allowed(&plan, &c[2]);
    g_assert_cmpuint(plan.islands, ==, 1);
    postcopy_collapse_plan_allowed(&plan, &c[5]);
    g_assert_cmpuint(plan.islands, ==, 2);
    /* The budget is spent: only neighbours of a run now. */
    g_assert_false(postcopy_collapse_plan_may_allow(&plan, &c[7]));
    g_assert_true(postcopy_collapse_plan_may_allow(&plan, &c[0]));
    g_assert_true(postcopy_collapse_plan_may_allow(&plan, &c[3]));
    g_assert_true(postcopy_collapse_plan_may_allow(&plan, &c[6]));
    /* Joining two runs is no new one either. */
    postcopy_collapse_plan_allowed(&plan, &c[3]);
    postcopy_collapse_plan_allowed(&plan, &c[4]);
    g_assert_cmpuint(plan.islands, ==, 2);
    postcopy_collapse_plan_free(&plan);
}

static void test_plan_empty(void)
{
    PostcopyCollapsePlan plan;
    PostcopyCollapseChunk chunk;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    g_assert_false(postcopy_collapse_plan_next(&plan, &chunk));
    postcopy_collapse_plan_free(&plan);
    /* Freeing twice is harmless: the thread, then forget(). */
    postcopy_collapse_plan_free(&plan);
}

/*
 * A range that refuses POSTCOPY_COLLAPSE_REFUSALS_MAX times in a row is
 * given up, in both passes; a collapse between refusals starts the count
 * again; other ranges go on.
 */
static void test_plan_given_up(void)
{
    PostcopyCollapseSweep sweep = { 0 };
    PostcopyCollapsePlan plan;
    PostcopyCollapseChunk chunk;
    g_autofree char *rest = NULL, *sweep_rest = NULL;
    int i;

    postcopy_collapse_plan_init(&plan, 2 * MiB);
    postcopy_collapse_plan_add(&plan, "a", 0, 64 * MiB);
    postcopy_collapse_plan_add(&plan, "b", 0, 4 * MiB);
    postcopy_collapse_plan_note(&plan, 0, 60 * MiB);
    /* The hot one is refused, then one collapses, then refusals. */
    g_assert_true(postcopy_collapse_plan_next(&plan, &chunk));
    g_assert_true(chunk.hot);
    g_assert_false(postcopy_collapse_plan_result(&plan, &chunk, true));
    g_assert_true(postcopy_collapse_plan_next(&plan, &chunk));
    g_assert_cmpuint(chunk.offset, ==, 0);
    g_assert_false(postcopy_collapse_plan_result(&plan, &chunk, false));
    for (i = 1; i < POSTCOPY_COLLAPSE_REFUSALS_MAX; i++) {
        g_assert_true(postcopy_collapse_plan_next(&plan, &chunk));
        g_assert_cmpstr(chunk.block, ==, "a");
        g_assert_false(postcopy_collapse_plan_result(&plan, &chunk, true));
    }
    g_assert_true(postcopy_collapse_plan_next(&plan, &chunk));
    g_assert_true(postcopy_collapse_plan_result(&plan, &chunk, true));
    /* Nothing more of a, in a sweep either; all of b. */
    sweep_rest = sweep_order(&plan, &sweep);
    g_assert_cmpstr(sweep_rest, ==, "b:0 b:2");
    rest = plan_order(&plan);
    g_assert_cmpstr(rest, ==, "b:0 b:2");
    postcopy_collapse_plan_free(&plan);
}

/* With khugepaged's defaults: one page of data is enough. */
static bool worth(const uint64_t *entries, bool shared)
{
    return postcopy_collapse_worth(entries, 512, shared, 511, 64);
}

/*
 * A huge page of zero-page mappings (present, shared) and holes holds
 * nothing in private memory; one exclusive page is data.  In shared
 * memory any present page is.
 */
static void test_worth_data(void)
{
    uint64_t entries[512] = { 0 };
    int i;

    g_assert_false(worth(entries, false));
    g_assert_false(worth(entries, true));
    for (i = 0; i < 512; i += 2) {
        entries[i] = PRESENT | 0x1234;     /* the zero page */
    }
    g_assert_false(worth(entries, false));
    g_assert_true(worth(entries, true));
    entries[511] = EXCLUSIVE;               /* not present */
    g_assert_false(worth(entries, false));
    entries[300] = PRESENT | EXCLUSIVE | 0x5678;
    g_assert_true(worth(entries, false));
}

/* khugepaged's max_ptes_none and max_ptes_swap hold. */
static void test_worth_limits(void)
{
    uint64_t entries[512];
    int i;

    for (i = 0; i < 512; i++) {
        entries[i] = i < 500 ? PRESENT | EXCLUSIVE : 0;
    }
    /* 12 pages without data */
    g_assert_true(postcopy_collapse_worth(entries, 512, false, 12, 0));
    g_assert_false(postcopy_collapse_worth(entries, 512, false, 11, 0));
    /* 12 swapped out: counted apart from the holes */
    for (i = 500; i < 512; i++) {
        entries[i] = SWAPPED;
    }
    g_assert_true(postcopy_collapse_worth(entries, 512, false, 0, 12));
    g_assert_false(postcopy_collapse_worth(entries, 512, false, 511, 11));
}

/* At 50% the rests add up to the work; short ones are owed. */
static void test_pace(void)
{
    PostcopyCollapsePace pace;
    uint64_t rested = 0;
    int i;

    postcopy_collapse_pace_init(&pace, 50);
    /* 3 ms of work: 3 ms owed, below the least rest. */
    g_assert_cmpuint(postcopy_collapse_pace_after(&pace, 3000000), ==, 0);
    for (i = 1; i < 100; i++) {
        rested += postcopy_collapse_pace_after(&pace, 3000000);
    }
    /* 300 ms of work: 300 ms of rest in all, less what is still owed. */
    g_assert_cmpuint(rested + pace.owed_ns / 1000000, ==, 300);
    g_assert_cmpuint(pace.owed_ns, <,
                     POSTCOPY_COLLAPSE_REST_MIN_MS * 1000000ULL);

    /* All of a CPU: never a rest. */
    postcopy_collapse_pace_init(&pace, 100);
    g_assert_cmpuint(postcopy_collapse_pace_after(&pace, 50000000), ==, 0);
    /* 25%: three times the work. */
    postcopy_collapse_pace_init(&pace, 25);
    g_assert_cmpuint(postcopy_collapse_pace_after(&pace, 10000000), ==, 30);
    /* Out of range: held to 1..100. */
    postcopy_collapse_pace_init(&pace, 0);
    g_assert_cmpuint(pace.percent, ==, 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/collapse/plan/alignment", test_plan_alignment);
    g_test_add_func("/postcopy/collapse/plan/hot-first", test_plan_hot_first);
    g_test_add_func("/postcopy/collapse/plan/sweeps", test_plan_sweeps);
    g_test_add_func("/postcopy/collapse/plan/placed", test_plan_placed);
    g_test_add_func("/postcopy/collapse/plan/skip-whole",
                    test_plan_skip_whole);
    g_test_add_func("/postcopy/collapse/plan/islands", test_plan_islands);
    g_test_add_func("/postcopy/collapse/plan/empty", test_plan_empty);
    g_test_add_func("/postcopy/collapse/plan/given-up", test_plan_given_up);
    g_test_add_func("/postcopy/collapse/worth/data", test_worth_data);
    g_test_add_func("/postcopy/collapse/worth/limits", test_worth_limits);
    g_test_add_func("/postcopy/collapse/pace", test_pace);
    return g_test_run();
}
