/*
 * Unit tests: per-vCPU blocktime accounting (migration/postcopy-blocktime.c)
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "postcopy-blocktime.h"

#define PAGE(n) (0x7f0000000000ULL + (uint64_t)(n) * 4096)

static void test_one_vcpu_one_fault(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(1);

    g_assert_false(postcopy_blocktime_has_waiters(bt));
    g_assert_true(postcopy_blocktime_fault(bt, 0, PAGE(1), 1000));
    g_assert_true(postcopy_blocktime_has_waiters(bt));
    /* another page arriving releases nobody */
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(2), 1500), ==, 0);
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(1), 1700), ==, 1);
    g_assert_false(postcopy_blocktime_has_waiters(bt));
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 700);
    /* the only vCPU waited: the whole guest was stopped */
    g_assert_cmpuint(postcopy_blocktime_total_ns(bt), ==, 700);
    g_assert_cmpuint(postcopy_blocktime_faults(bt), ==, 1);
    g_assert_cmpuint(postcopy_blocktime_longest_ns(bt), ==, 700);
    /* a page arriving twice counts once */
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(1), 2000), ==, 0);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 700);
    postcopy_blocktime_free(bt);
}

static void test_one_page_releases_every_waiter(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(4);

    postcopy_blocktime_fault(bt, 0, PAGE(7), 100);
    postcopy_blocktime_fault(bt, 2, PAGE(7), 150);
    postcopy_blocktime_fault(bt, 3, PAGE(8), 160);
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(7), 300), ==, 2);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 200);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 1), ==, 0);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 2), ==, 150);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 3), ==, 0);
    g_assert_true(postcopy_blocktime_has_waiters(bt));
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(8), 400), ==, 1);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 3), ==, 240);
    /* never were all four blocked */
    g_assert_cmpuint(postcopy_blocktime_total_ns(bt), ==, 0);
    postcopy_blocktime_free(bt);
}

/*
 *   vCPU0  [100 ................ 500)
 *   vCPU1        [200 ..... 400)     [600 .. 700)
 * all blocked    [200 ..... 400)
 */
static void test_total_counts_only_overlap_of_all(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(2);

    postcopy_blocktime_fault(bt, 0, PAGE(1), 100);
    postcopy_blocktime_fault(bt, 1, PAGE(2), 200);
    postcopy_blocktime_page_arrived(bt, PAGE(2), 400);
    postcopy_blocktime_page_arrived(bt, PAGE(1), 500);
    postcopy_blocktime_fault(bt, 1, PAGE(3), 600);
    postcopy_blocktime_page_arrived(bt, PAGE(3), 700);
    g_assert_cmpuint(postcopy_blocktime_total_ns(bt), ==, 200);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 400);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 1), ==, 300);
    g_assert_cmpuint(postcopy_blocktime_longest_ns(bt), ==, 400);
    postcopy_blocktime_free(bt);
}

static void test_repeated_fault_keeps_first_start(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(1);

    g_assert_true(postcopy_blocktime_fault(bt, 0, PAGE(5), 100));
    g_assert_false(postcopy_blocktime_fault(bt, 0, PAGE(5), 300));
    postcopy_blocktime_page_arrived(bt, PAGE(5), 400);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 300);
    g_assert_cmpuint(postcopy_blocktime_faults(bt), ==, 1);
    postcopy_blocktime_free(bt);
}

static void test_fault_elsewhere_ends_the_old_wait(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(2);

    postcopy_blocktime_fault(bt, 0, PAGE(1), 100);
    postcopy_blocktime_fault(bt, 1, PAGE(1), 100);
    postcopy_blocktime_fault(bt, 0, PAGE(2), 250);
    /* vCPU0 left page 1: its arrival releases vCPU1 only */
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(1), 300), ==, 1);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 1), ==, 200);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 150);
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(2), 350), ==, 1);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 250);
    postcopy_blocktime_free(bt);
}

/*
 * Random faults and arrivals against a brute-force model: exercises the
 * hash table's probing and deletion with many colliding pages.
 */
static void test_random_against_model(void)
{
    enum { VCPUS = 13, PAGES = 40, STEPS = 200000 };
    PostcopyBlocktime *bt = postcopy_blocktime_new(VCPUS);
    GRand *rand = g_rand_new_with_seed(2026);
    int64_t waiting_on[VCPUS];
    uint64_t since[VCPUS], blocked[VCPUS] = { 0 };
    uint64_t now = 1, total = 0, all_since = 0;
    unsigned int nr_waiting = 0, step, cpu;

    for (cpu = 0; cpu < VCPUS; cpu++) {
        waiting_on[cpu] = -1;
    }
    for (step = 0; step < STEPS; step++) {
        int64_t page = g_rand_int_range(rand, 0, PAGES);

        now += g_rand_int_range(rand, 0, 50);
        cpu = g_rand_int_range(rand, 0, VCPUS);
        if (g_rand_boolean(rand) && waiting_on[cpu] < 0) {
            g_assert_true(postcopy_blocktime_fault(bt, cpu, PAGE(page), now));
            waiting_on[cpu] = page;
            since[cpu] = now;
            if (++nr_waiting == VCPUS) {
                all_since = now;
            }
        } else {
            unsigned int expect = 0, c;

            for (c = 0; c < VCPUS; c++) {
                if (waiting_on[c] == page) {
                    if (nr_waiting == VCPUS) {
                        total += now - all_since;
                    }
                    nr_waiting--;
                    blocked[c] += now - since[c];
                    waiting_on[c] = -1;
                    expect++;
                }
            }
            g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(page),
                                                             now), ==, expect);
        }
        g_assert_cmpint(postcopy_blocktime_has_waiters(bt), ==,
                        nr_waiting > 0);
    }
    for (cpu = 0; cpu < VCPUS; cpu++) {
        g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, cpu), ==,
                         blocked[cpu]);
    }
    g_assert_cmpuint(postcopy_blocktime_total_ns(bt), ==, total);
    g_assert_cmpuint(total, >, 0);
    g_rand_free(rand);
    postcopy_blocktime_free(bt);
}

static void test_other_threads_timed_apart(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(1);
    uint64_t waited, faults, untracked;

    postcopy_blocktime_fault(bt, 0, PAGE(1), 1000);
    g_assert_true(postcopy_blocktime_other_fault(bt, 77, PAGE(1), 1200));
    /* The same thread again on the same page (after a signal) */
    g_assert_false(postcopy_blocktime_other_fault(bt, 77, PAGE(1), 1300));
    g_assert_true(postcopy_blocktime_other_fault(bt, 78, PAGE(2), 1400));
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(1), 2000), ==, 2);
    /* Only the other thread waits now */
    g_assert_true(postcopy_blocktime_has_waiters(bt));
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(2), 2400), ==, 1);
    g_assert_false(postcopy_blocktime_has_waiters(bt));

    postcopy_blocktime_others(bt, &waited, &faults, &untracked);
    g_assert_cmpuint(waited, ==, 800 + 1000);
    g_assert_cmpuint(faults, ==, 2);
    g_assert_cmpuint(untracked, ==, 0);
    /* Other threads' waits are no vCPU's blocktime */
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 1000);
    g_assert_cmpuint(postcopy_blocktime_faults(bt), ==, 1);
    g_assert_cmpuint(postcopy_blocktime_total_ns(bt), ==, 1000);
    postcopy_blocktime_free(bt);
}

static void test_other_threads_bounded(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(2);
    uint64_t waited, faults, untracked;
    unsigned int i;

    for (i = 0; i < POSTCOPY_BLOCKTIME_OTHERS; i++) {
        g_assert_true(postcopy_blocktime_other_fault(bt, 100 + i, PAGE(i),
                                                     10));
    }
    g_assert_false(postcopy_blocktime_other_fault(bt, 999, PAGE(500), 10));
    /* vCPUs are still timed while every other record is taken */
    g_assert_true(postcopy_blocktime_fault(bt, 1, PAGE(3), 20));
    g_assert_cmpuint(postcopy_blocktime_page_arrived(bt, PAGE(3), 30), ==, 2);
    /* A record freed by an arrival serves the next fault */
    g_assert_true(postcopy_blocktime_other_fault(bt, 999, PAGE(500), 40));
    for (i = 0; i < POSTCOPY_BLOCKTIME_OTHERS; i++) {
        postcopy_blocktime_page_arrived(bt, PAGE(i), 50);
    }
    postcopy_blocktime_page_arrived(bt, PAGE(500), 50);
    g_assert_false(postcopy_blocktime_has_waiters(bt));
    postcopy_blocktime_others(bt, &waited, &faults, &untracked);
    g_assert_cmpuint(faults, ==, POSTCOPY_BLOCKTIME_OTHERS + 1);
    g_assert_cmpuint(untracked, ==, 1);
    g_assert_cmpuint(waited, ==, 20 + (POSTCOPY_BLOCKTIME_OTHERS - 1) * 40 +
                     10);
    postcopy_blocktime_free(bt);
}

static void test_latency_per_vcpu_and_buckets(void)
{
    PostcopyBlocktime *bt = postcopy_blocktime_new(2);
    uint64_t dist[POSTCOPY_BLOCKTIME_BUCKETS];

    /* 0.5 us -> bucket 0; 1 us -> 0; 3 us -> 1; 1000 us -> 9 */
    postcopy_blocktime_fault(bt, 0, PAGE(1), 0);
    postcopy_blocktime_page_arrived(bt, PAGE(1), 500);
    postcopy_blocktime_fault(bt, 0, PAGE(1), 1000);
    postcopy_blocktime_page_arrived(bt, PAGE(1), 2000);
    postcopy_blocktime_fault(bt, 1, PAGE(2), 10000);
    postcopy_blocktime_page_arrived(bt, PAGE(2), 13000);
    postcopy_blocktime_other_fault(bt, 5, PAGE(3), 20000);
    postcopy_blocktime_page_arrived(bt, PAGE(3), 1020000);
    /* An hour lands in the last bucket */
    postcopy_blocktime_fault(bt, 1, PAGE(4), 0);
    postcopy_blocktime_page_arrived(bt, PAGE(4), 3600ULL * 1000000000);

    g_assert_cmpuint(postcopy_blocktime_vcpu_faults(bt, 0), ==, 2);
    g_assert_cmpuint(postcopy_blocktime_vcpu_faults(bt, 1), ==, 2);
    g_assert_cmpuint(postcopy_blocktime_vcpu_ns(bt, 0), ==, 1500);
    postcopy_blocktime_latency_dist(bt, dist);
    g_assert_cmpuint(dist[0], ==, 2);
    g_assert_cmpuint(dist[1], ==, 1);
    g_assert_cmpuint(dist[9], ==, 1);
    g_assert_cmpuint(dist[POSTCOPY_BLOCKTIME_BUCKETS - 1], ==, 1);
    g_assert_cmpuint(dist[2] + dist[8] + dist[10], ==, 0);
    postcopy_blocktime_free(bt);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/blocktime/one-fault", test_one_vcpu_one_fault);
    g_test_add_func("/postcopy/blocktime/shared-page",
                    test_one_page_releases_every_waiter);
    g_test_add_func("/postcopy/blocktime/total-overlap",
                    test_total_counts_only_overlap_of_all);
    g_test_add_func("/postcopy/blocktime/repeated-fault",
                    test_repeated_fault_keeps_first_start);
    g_test_add_func("/postcopy/blocktime/moved-fault",
                    test_fault_elsewhere_ends_the_old_wait);
    g_test_add_func("/postcopy/blocktime/random-model",
                    test_random_against_model);
    g_test_add_func("/postcopy/blocktime/other-threads",
                    test_other_threads_timed_apart);
    g_test_add_func("/postcopy/blocktime/other-threads-bounded",
                    test_other_threads_bounded);
    g_test_add_func("/postcopy/blocktime/latency",
                    test_latency_per_vcpu_and_buckets);
    return g_test_run();
}
