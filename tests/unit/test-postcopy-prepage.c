/*
 * Unit tests: pre-paging's streams (migration/postcopy-prepage.c).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "postcopy-prepage.h"

static const char block_a[] = "a", block_b[] = "b";
#define PAGES 1000

/* A fault; returns the pages asked for ahead, from *first. */
static unsigned int fault(PostcopyPrepage *pp, const void *block,
                          uint64_t page, uint64_t *first)
{
    *first = UINT64_MAX;
    return postcopy_prepage_fault(pp, block, page, PAGES, first);
}

static void test_off(void)
{
    PostcopyPrepage pp;
    uint64_t first;
    int i;

    postcopy_prepage_init(&pp, 0);
    for (i = 0; i < 10; i++) {
        g_assert_cmpuint(fault(&pp, block_a, i, &first), ==, 0);
    }
}

/* A walk: the second fault asks ahead, later ones keep the window full. */
static void test_walk(void)
{
    PostcopyPrepage pp;
    uint64_t first;

    postcopy_prepage_init(&pp, 8);
    g_assert_cmpuint(fault(&pp, block_a, 100, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, 101, &first), ==, 8);
    g_assert_cmpuint(first, ==, 102);
    /* 102 was asked for and not there yet: only the page past the end. */
    g_assert_cmpuint(fault(&pp, block_a, 102, &first), ==, 1);
    g_assert_cmpuint(first, ==, 110);
    /* The pages arrived; the walk faults where they end. */
    g_assert_cmpuint(fault(&pp, block_a, 111, &first), ==, 8);
    g_assert_cmpuint(first, ==, 112);
    /* Just beyond the slack: another walk, which asks nothing yet. */
    g_assert_cmpuint(fault(&pp, block_a, 120 + POSTCOPY_PREPAGE_SLACK + 1,
                           &first), ==, 0);
}

/* Random faults follow on from nothing: they never ask ahead. */
static void test_random(void)
{
    static const uint64_t pages[] = { 500, 17, 900, 333, 42, 777, 3, 650,
                                      210, 999, 120, 860 };
    PostcopyPrepage pp;
    uint64_t first;
    unsigned int i;

    postcopy_prepage_init(&pp, 16);
    for (i = 0; i < ARRAY_SIZE(pages); i++) {
        g_assert_cmpuint(fault(&pp, block_a, pages[i], &first), ==, 0);
    }
}

/* Backwards or the same page: no walk. */
static void test_not_forward(void)
{
    PostcopyPrepage pp;
    uint64_t first;

    postcopy_prepage_init(&pp, 4);
    g_assert_cmpuint(fault(&pp, block_a, 50, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, 50, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, 49, &first), ==, 0);
}

/* Two vCPUs walking two blocks side by side: two streams. */
static void test_two_walks(void)
{
    PostcopyPrepage pp;
    uint64_t first;

    postcopy_prepage_init(&pp, 4);
    g_assert_cmpuint(fault(&pp, block_a, 10, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_b, 10, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, 11, &first), ==, 4);
    g_assert_cmpuint(first, ==, 12);
    g_assert_cmpuint(fault(&pp, block_b, 11, &first), ==, 4);
    g_assert_cmpuint(first, ==, 12);
}

/* Never past the block's end; the depth is capped. */
static void test_bounds(void)
{
    PostcopyPrepage pp;
    uint64_t first;

    postcopy_prepage_init(&pp, 100000);
    g_assert_cmpuint(pp.depth, ==, POSTCOPY_PREPAGE_MAX_DEPTH);
    g_assert_cmpuint(fault(&pp, block_a, PAGES - 4, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, PAGES - 3, &first), ==, 2);
    g_assert_cmpuint(first, ==, PAGES - 2);
    g_assert_cmpuint(fault(&pp, block_a, PAGES - 1, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, PAGES, &first), ==, 0);
}

/* More walks than streams: the least recently used one goes. */
static void test_replace_least_used(void)
{
    PostcopyPrepage pp;
    uint64_t first;
    unsigned int i;

    postcopy_prepage_init(&pp, 2);
    for (i = 0; i < POSTCOPY_PREPAGE_STREAMS; i++) {
        g_assert_cmpuint(fault(&pp, block_a, i * 100, &first), ==, 0);
    }
    /* Stream 0 (page 0) goes on: it is now the most recently used. */
    g_assert_cmpuint(fault(&pp, block_a, 1, &first), ==, 2);
    /* A new walk replaces the stream at page 100, the least used. */
    g_assert_cmpuint(fault(&pp, block_b, 0, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, 101, &first), ==, 0);
    g_assert_cmpuint(fault(&pp, block_a, 2, &first), ==, 1);
    g_assert_cmpuint(first, ==, 4);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/prepage/off", test_off);
    g_test_add_func("/postcopy/prepage/walk", test_walk);
    g_test_add_func("/postcopy/prepage/random", test_random);
    g_test_add_func("/postcopy/prepage/not-forward", test_not_forward);
    g_test_add_func("/postcopy/prepage/two-walks", test_two_walks);
    g_test_add_func("/postcopy/prepage/bounds", test_bounds);
    g_test_add_func("/postcopy/prepage/replace-least-used",
                    test_replace_least_used);
    return g_test_run();
}
