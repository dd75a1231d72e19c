/*
 * Unit tests: batching of postcopy discard ranges
 * (migration/postcopy-discard.c)
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "postcopy-discard.h"

/* What would have gone on the wire: one entry per command. */
typedef struct Sent {
    GArray *counts;          /* uint16_t per command */
    GArray *starts;          /* uint64_t, all commands in order */
    GArray *lengths;
    const char *last_block;
} Sent;

static void record_send(PostcopyDiscardBatch *batch, void *opaque)
{
    Sent *sent = opaque;

    g_assert_cmpuint(batch->count, >, 0);
    g_assert_cmpuint(batch->count, <=, POSTCOPY_DISCARD_BATCH_MAX);
    g_array_append_val(sent->counts, batch->count);
    g_array_append_vals(sent->starts, batch->starts, batch->count);
    g_array_append_vals(sent->lengths, batch->lengths, batch->count);
    sent->last_block = batch->block_name;
}

static void sent_init(Sent *sent)
{
    sent->counts = g_array_new(false, false, sizeof(uint16_t));
    sent->starts = g_array_new(false, false, sizeof(uint64_t));
    sent->lengths = g_array_new(false, false, sizeof(uint64_t));
    sent->last_block = NULL;
}

static void sent_free(Sent *sent)
{
    g_array_free(sent->counts, true);
    g_array_free(sent->starts, true);
    g_array_free(sent->lengths, true);
}

/* Ranges two pages apart never merge. */
static void add_sparse(PostcopyDiscardBatch *b, Sent *sent, unsigned int n)
{
    unsigned int i;

    for (i = 0; i < n; i++) {
        postcopy_discard_batch_add(b, 3 * i, 1, record_send, sent);
    }
}

static void test_full_batches_are_sent_at_once(void)
{
    PostcopyDiscardBatch b;
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "pc.ram", 4096);
    add_sparse(&b, &sent, POSTCOPY_DISCARD_BATCH_MAX - 1);
    g_assert_cmpuint(sent.counts->len, ==, 0);
    add_sparse(&b, &sent, 1);
    /* the 12th range fills the batch: sent before finish */
    g_assert_cmpuint(sent.counts->len, ==, 1);
    g_assert_cmpuint(g_array_index(sent.counts, uint16_t, 0), ==,
                     POSTCOPY_DISCARD_BATCH_MAX);
    g_assert_cmpuint(b.count, ==, 0);
    g_assert_cmpstr(sent.last_block, ==, "pc.ram");
    sent_free(&sent);
}

static void test_flush_sends_the_remainder_once(void)
{
    PostcopyDiscardBatch b;
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "pc.ram", 4096);
    add_sparse(&b, &sent, 2 * POSTCOPY_DISCARD_BATCH_MAX + 5);
    postcopy_discard_batch_flush(&b, record_send, &sent);
    postcopy_discard_batch_flush(&b, record_send, &sent);
    g_assert_cmpuint(sent.counts->len, ==, 3);
    g_assert_cmpuint(g_array_index(sent.counts, uint16_t, 2), ==, 5);
    g_assert_cmpuint(b.ranges_added, ==, 2 * POSTCOPY_DISCARD_BATCH_MAX + 5);
    g_assert_cmpuint(b.ranges_sent, ==, 2 * POSTCOPY_DISCARD_BATCH_MAX + 5);
    g_assert_cmpuint(b.commands_sent, ==, 3);
    sent_free(&sent);
}

static void test_empty_flush_sends_nothing(void)
{
    PostcopyDiscardBatch b;
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "pc.ram", 4096);
    postcopy_discard_batch_flush(&b, record_send, &sent);
    g_assert_cmpuint(sent.counts->len, ==, 0);
    g_assert_cmpuint(b.commands_sent, ==, 0);
    sent_free(&sent);
}

static void test_pages_become_bytes(void)
{
    PostcopyDiscardBatch b;
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "ram1", 4096);
    postcopy_discard_batch_add(&b, 0x10, 3, record_send, &sent);
    postcopy_discard_batch_add(&b, 0x100000, 0x200, record_send, &sent);
    postcopy_discard_batch_flush(&b, record_send, &sent);
    g_assert_cmpuint(g_array_index(sent.starts, uint64_t, 0), ==, 0x10000);
    g_assert_cmpuint(g_array_index(sent.lengths, uint64_t, 0), ==, 0x3000);
    /* no 32-bit overflow past 4 GiB */
    g_assert_cmpuint(g_array_index(sent.starts, uint64_t, 1), ==,
                     0x100000ULL * 4096);
    g_assert_cmpuint(g_array_index(sent.lengths, uint64_t, 1), ==,
                     0x200ULL * 4096);
    sent_free(&sent);
}

static void test_adjacent_ranges_merge(void)
{
    PostcopyDiscardBatch b;
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "pc.ram", 4096);
    postcopy_discard_batch_add(&b, 10, 2, record_send, &sent);
    postcopy_discard_batch_add(&b, 12, 5, record_send, &sent);  /* joins */
    postcopy_discard_batch_add(&b, 18, 1, record_send, &sent);  /* gap */
    postcopy_discard_batch_flush(&b, record_send, &sent);
    g_assert_cmpuint(sent.starts->len, ==, 2);
    g_assert_cmpuint(g_array_index(sent.starts, uint64_t, 0), ==, 10 * 4096);
    g_assert_cmpuint(g_array_index(sent.lengths, uint64_t, 0), ==, 7 * 4096);
    g_assert_cmpuint(g_array_index(sent.starts, uint64_t, 1), ==, 18 * 4096);
    g_assert_cmpuint(b.ranges_added, ==, 3);
    g_assert_cmpuint(b.ranges_sent, ==, 2);
    sent_free(&sent);
}

static void test_zero_length_is_ignored(void)
{
    PostcopyDiscardBatch b;
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "pc.ram", 4096);
    postcopy_discard_batch_add(&b, 5, 0, record_send, &sent);
    postcopy_discard_batch_flush(&b, record_send, &sent);
    g_assert_cmpuint(sent.counts->len, ==, 0);
    g_assert_cmpuint(b.ranges_added, ==, 0);
    sent_free(&sent);
}

/* Every page handed in is covered by exactly one sent range. */
static void test_coverage_is_exact(void)
{
    g_autofree bool *want = g_new0(bool, 4096);
    g_autofree bool *got = g_new0(bool, 4096);
    PostcopyDiscardBatch b;
    unsigned int page = 0, i, j;
    GRand *rand = g_rand_new_with_seed(42);
    Sent sent;

    sent_init(&sent);
    postcopy_discard_batch_init(&b, "pc.ram", 1);
    while (page < 4000) {
        unsigned int len = g_rand_int_range(rand, 1, 9);

        page += g_rand_int_range(rand, 0, 3);    /* 0: adjacent */
        for (i = page; i < page + len; i++) {
            want[i] = true;
        }
        postcopy_discard_batch_add(&b, page, len, record_send, &sent);
        page += len;
    }
    postcopy_discard_batch_flush(&b, record_send, &sent);
    for (i = 0; i < sent.starts->len; i++) {
        uint64_t start = g_array_index(sent.starts, uint64_t, i);
        uint64_t len = g_array_index(sent.lengths, uint64_t, i);

        for (j = start; j < start + len; j++) {
            g_assert_false(got[j]);
            got[j] = true;
        }
    }
    g_assert_cmpmem(want, 4096 * sizeof(bool), got, 4096 * sizeof(bool));
    g_rand_free(rand);
    sent_free(&sent);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/discard/full-batch",
                    test_full_batches_are_sent_at_once);
    g_test_add_func("/postcopy/discard/flush-remainder",
                    test_flush_sends_the_remainder_once);
    g_test_add_func("/postcopy/discard/empty-flush",
                    test_empty_flush_sends_nothing);
    g_test_add_func("/postcopy/discard/bytes", test_pages_become_bytes);
    g_test_add_func("/postcopy/discard/merge", test_adjacent_ranges_merge);
    g_test_add_func("/postcopy/discard/zero-length",
                    test_zero_length_is_ignored);
    g_test_add_func("/postcopy/discard/coverage", test_coverage_is_exact);
    return g_test_run();
}
