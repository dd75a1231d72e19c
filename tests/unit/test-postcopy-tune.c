/*
 * Unit tests: QEMU_POSTCOPY_TUNE and the size of the source's send bound.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "postcopy-tune.h"
#include "postcopy-collapse.h"
#include "postcopy-tcp-queue.h"
#include "postcopy-doc-knobs.h"

/* Field by field: the struct's padding is not part of its value. */
static void assert_tune_equal(const PostcopyTune *a,
                              const PostcopyTune *b)
{
    g_assert_cmpint(a->no_send, ==, b->no_send);
    g_assert_cmpint(a->send_always, ==, b->send_always);
    g_assert_cmpint(a->no_receive, ==, b->no_receive);
    g_assert_cmpuint(a->lowat, ==, b->lowat);
    g_assert_cmpuint(a->rcvbuf, ==, b->rcvbuf);
    g_assert_cmpint(a->no_placer, ==, b->no_placer);
    g_assert_cmpuint(a->placer_run, ==, b->placer_run);
    g_assert_cmpint(a->placer_always, ==, b->placer_always);
    g_assert_cmpuint(a->pace_percent, ==, b->pace_percent);
    g_assert_cmpint(a->pace_forced, ==, b->pace_forced);
    g_assert_cmpint(a->no_recheck, ==, b->no_recheck);
    g_assert_cmpint(a->recheck_only, ==, b->recheck_only);
    g_assert_cmpint(a->no_recovery_keep, ==, b->no_recovery_keep);
    g_assert_cmpuint(a->collapse_percent, ==, b->collapse_percent);
    g_assert_cmpint(a->no_collapse_early, ==, b->no_collapse_early);
}

static void test_tune_defaults(void)
{
    PostcopyTune tune = { .no_send = true, .lowat = 1 };

    /* auto: the send queue, where the path limits the sender. */
    g_assert_true(postcopy_tune_parse(NULL, &tune, &error_abort));
    g_assert_false(tune.no_send);
    g_assert_false(tune.send_always);
    g_assert_true(tune.no_receive);
    g_assert_cmpuint(tune.lowat, ==, 0);
    g_assert_cmpuint(tune.rcvbuf, ==, 0);
    g_assert_false(tune.no_placer);
    g_assert_false(tune.placer_always);
    /* Pacing: with the preempt channel only. */
    g_assert_cmpuint(tune.pace_percent, ==, POSTCOPY_PACE_PERCENT);
    g_assert_false(tune.pace_forced);
    g_assert_false(tune.no_recheck);
    g_assert_false(tune.recheck_only);
    g_assert_false(tune.no_recovery_keep);
    g_assert_true(postcopy_tune_parse("", &tune, &error_abort));
    g_assert_false(tune.no_send);
}

static void test_tune_items(void)
{
    PostcopyTune tune;

    g_assert_true(postcopy_tune_parse("queue=off", &tune,
                                      &error_abort));
    g_assert_true(tune.no_send && tune.no_receive);
    g_assert_true(postcopy_tune_parse("queue=send", &tune,
                                      &error_abort));
    g_assert_true(!tune.no_send && tune.send_always && tune.no_receive);
    g_assert_true(postcopy_tune_parse("queue=receive", &tune,
                                      &error_abort));
    g_assert_true(tune.no_send && !tune.no_receive);
    g_assert_true(postcopy_tune_parse("queue=on", &tune,
                                      &error_abort));
    g_assert_false(tune.no_send || tune.no_receive);
    g_assert_true(postcopy_tune_parse("lowat=131072,,rcvbuf=1048576",
                                      &tune, &error_abort));
    g_assert_false(tune.no_send || tune.no_receive);
    g_assert_cmpuint(tune.lowat, ==, 131072);
    g_assert_cmpuint(tune.rcvbuf, ==, 1048576);
    g_assert_false(tune.no_send);
    g_assert_false(tune.no_placer);
    g_assert_true(postcopy_tune_parse("placer=off", &tune,
                                      &error_abort));
    g_assert_true(tune.no_placer);
    g_assert_false(tune.placer_always);
    g_assert_true(postcopy_tune_parse("placer=on", &tune,
                                      &error_abort));
    g_assert_false(tune.no_placer);
    g_assert_true(tune.placer_always);
    g_assert_true(postcopy_tune_parse("placer=auto", &tune,
                                      &error_abort));
    g_assert_false(tune.no_placer || tune.placer_always);
    g_assert_cmpuint(tune.placer_run, ==, POSTCOPY_PLACER_RUN_DEFAULT);
    g_assert_true(postcopy_tune_parse("placerun=1", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.placer_run, ==, 1);
    g_assert_true(postcopy_tune_parse("placerun=64,placer=on", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.placer_run, ==, POSTCOPY_PLACER_RUN_MAX);
    g_assert_true(tune.placer_always);
    g_assert_true(postcopy_tune_parse("pace=off", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.pace_percent, ==, 0);
    g_assert_true(postcopy_tune_parse("pace=90", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.pace_percent, ==, 90);
    g_assert_true(tune.pace_forced);
    g_assert_true(postcopy_tune_parse("pace=auto", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.pace_percent, ==, POSTCOPY_PACE_PERCENT);
    g_assert_false(tune.pace_forced);
    g_assert_true(postcopy_tune_parse("recheck=off", &tune,
                                      &error_abort));
    g_assert_true(tune.no_recheck && !tune.recheck_only);
    g_assert_true(postcopy_tune_parse("recheck=only", &tune,
                                      &error_abort));
    g_assert_true(!tune.no_recheck && tune.recheck_only);
    g_assert_true(postcopy_tune_parse("recovery=off", &tune,
                                      &error_abort));
    g_assert_true(tune.no_recovery_keep);
    g_assert_true(postcopy_tune_parse("recovery=keep", &tune,
                                      &error_abort));
    g_assert_false(tune.no_recovery_keep);
    g_assert_true(postcopy_tune_parse("recheck=auto", &tune,
                                      &error_abort));
    g_assert_false(tune.no_recheck || tune.recheck_only);
    g_assert_cmpuint(tune.collapse_percent, ==, POSTCOPY_COLLAPSE_PERCENT);
    g_assert_true(postcopy_tune_parse("collapse=off", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.collapse_percent, ==, 0);
    g_assert_true(postcopy_tune_parse("collapse=100", &tune,
                                      &error_abort));
    g_assert_cmpuint(tune.collapse_percent, ==, 100);
    g_assert_false(tune.no_collapse_early);
    g_assert_true(postcopy_tune_parse("collapse-early=off", &tune,
                                      &error_abort));
    g_assert_true(tune.no_collapse_early);
    g_assert_true(postcopy_tune_parse("collapse-early=on", &tune,
                                      &error_abort));
    g_assert_false(tune.no_collapse_early);
}

static void test_tune_errors(void)
{
    static const char *const bad[] = {
        "queue", "queue=maybe", "queue=", "lowat", "lowat=1", "rcvbuf=lots",
        "rcvbuf=999999999", "prepage=32",
        "placer", "placer=", "placer=always", "placerun=0", "placerun=65",
        "placerun=", "placerun=all", "pace", "pace=", "pace=0",
        "pace=101", "pace=on", "pace=-5", "recheck", "recheck=",
        "recheck=on", "recovery", "recovery=on", "collapse", "collapse=",
        "collapse=0", "collapse=101", "collapse=on", "collapse=-1",
        "collapse-early", "collapse-early=", "collapse-early=auto",
        "queue=off,rcvbuf=1048576", "rcvbuf=1048576,queue=off",
    };
    PostcopyTune defaults;
    unsigned int i;

    g_assert_true(postcopy_tune_parse(NULL, &defaults, &error_abort));
    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        /* Nothing like the defaults: a caller's zeroed or stale tuning. */
        PostcopyTune tune = { .rcvbuf = 7, .placer_always = true };
        Error *err = NULL;

        g_assert_false(postcopy_tune_parse(bad[i], &tune, &err));
        g_assert_nonnull(err);
        g_assert_nonnull(strstr(error_get_pretty(err),
                                "QEMU_POSTCOPY_TUNE"));
        error_free(err);
        /* Ignored means the defaults, not whatever was there. */
        assert_tune_equal(&tune, &defaults);
    }
}

static void test_tune_error_after_good_items(void)
{
    PostcopyTune defaults, tune = { 0 };
    Error *err = NULL;

    g_assert_true(postcopy_tune_parse(NULL, &defaults, &error_abort));
    /* The good items before the bad one are not applied either. */
    g_assert_false(postcopy_tune_parse("queue=on,placerun=4,pace=off,"
                                       "collapse=bad", &tune, &err));
    error_free(err);
    assert_tune_equal(&tune, &defaults);
    g_assert_true(tune.no_receive);
    g_assert_cmpuint(tune.placer_run, ==, POSTCOPY_PLACER_RUN_DEFAULT);
    g_assert_cmpuint(tune.pace_percent, ==, POSTCOPY_PACE_PERCENT);
}

static void test_tune_error_words(void)
{
    PostcopyTune tune;
    Error *err = NULL;

    /* A word that no choice has: the message lists the choices. */
    g_assert_false(postcopy_tune_parse("placer=always", &tune,
                                       &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "QEMU_POSTCOPY_TUNE: placer wants auto, on or off");
    error_free(err);
    err = NULL;
    g_assert_false(postcopy_tune_parse("recheck", &tune,
                                       &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "QEMU_POSTCOPY_TUNE: recheck wants auto, off or only");
    error_free(err);
    err = NULL;
    /* An unknown item: every item, with the words or value it takes. */
    g_assert_false(postcopy_tune_parse("placers=on", &tune, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "QEMU_POSTCOPY_TUNE: unknown item 'placers=on' (known: "
                    "queue=auto|off|send|receive|on, lowat=BYTES, "
                    "rcvbuf=BYTES, pace=auto|off|PERCENT, "
                    "recheck=auto|off|only, recovery=keep|off, "
                    "placer=auto|on|off, placerun=PAGES, "
                    "collapse=off|PERCENT, collapse-early=on|off)");
    error_free(err);
}

/*
 * The order of different items never matters: rcvbuf= keeps its receive
 * bound whichever side of queue= it is, and a later pace= replaces the
 * whole of an earlier one.
 */
static void test_tune_order(void)
{
    static const char *const pairs[][2] = {
        { "rcvbuf=1048576,queue=auto", "queue=auto,rcvbuf=1048576" },
        { "rcvbuf=1048576,queue=send", "queue=send,rcvbuf=1048576" },
        { "pace=50,recheck=off", "recheck=off,pace=50" },
        { "pace=50,pace=off", "pace=off" },
        { "pace=50,pace=auto", "pace=auto" },
        { "placer=off,placerun=4", "placerun=4,placer=off" },
    };
    PostcopyTune tune;
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(pairs); i++) {
        PostcopyTune a, b;

        g_test_message("%s against %s", pairs[i][0], pairs[i][1]);
        g_assert_true(postcopy_tune_parse(pairs[i][0], &a,
                                          &error_abort));
        g_assert_true(postcopy_tune_parse(pairs[i][1], &b,
                                          &error_abort));
        assert_tune_equal(&a, &b);
    }
    g_assert_true(postcopy_tune_parse("rcvbuf=1048576,queue=auto",
                                      &tune, &error_abort));
    g_assert_false(tune.no_receive);
    g_assert_cmpuint(tune.rcvbuf, ==, 1048576);
}

static void test_send_bound_wanted(void)
{
    /* Nothing to compare with: only the window counts. */
    g_assert_true(postcopy_queue_send_bound_wanted(0, 0, 0));
    /* The path limited the sender (1 Gbit/s link). */
    g_assert_true(postcopy_queue_send_bound_wanted(2000000, 10000, 2000000));
    g_assert_true(postcopy_queue_send_bound_wanted(2000000, 1000000,
                                                   2000000));
    /* The receiver did (a destination short of CPU). */
    g_assert_false(postcopy_queue_send_bound_wanted(2000000, 1000001,
                                                    2000000));
    g_assert_false(postcopy_queue_send_bound_wanted(2000000, 1990000,
                                                    2000000));
    /*
     * Neither: the sender was mostly idle.  Loopback with a 4 GiB guest
     * working (bench wset, 2026-12-03): busy 148-676 ms of about 2.1 s of
     * precopy, against 1,764-2,088 ms on the emulated 1 Gbit/s link.
     */
    g_assert_false(postcopy_queue_send_bound_wanted(676000, 180000,
                                                    2100000));
    g_assert_true(postcopy_queue_send_bound_wanted(1764000, 640000,
                                                   2100000));
    g_assert_true(postcopy_queue_send_bound_wanted(1575000, 0, 2100000));
    g_assert_false(postcopy_queue_send_bound_wanted(1574999, 0, 2100000));
    /* Nothing sent at all: nothing to bound. */
    g_assert_false(postcopy_queue_send_bound_wanted(0, 0, 2100000));
}

static void test_lowat_is_one_bdp(void)
{
    /* 10 Gbit/s, 157 us: 196,250 bytes. */
    g_assert_cmpuint(postcopy_queue_lowat(1250000000, 157), ==, 196250);
    /* 1 Gbit/s, 1 ms: 125,000 bytes. */
    g_assert_cmpuint(postcopy_queue_lowat(125000000, 1000), ==, 125000);
}

static void test_lowat_bounds(void)
{
    /* Loopback's tiny round trip, or nothing measured yet. */
    g_assert_cmpuint(postcopy_queue_lowat(3000000000ULL, 10), ==,
                     POSTCOPY_QUEUE_MIN);
    g_assert_cmpuint(postcopy_queue_lowat(0, 0), ==, POSTCOPY_QUEUE_MIN);
    /* A long fat path, and absurd figures that must not overflow. */
    g_assert_cmpuint(postcopy_queue_lowat(1250000000, 100000), ==,
                     POSTCOPY_QUEUE_MAX);
    g_assert_cmpuint(postcopy_queue_lowat(UINT64_MAX, UINT32_MAX), ==,
                     POSTCOPY_QUEUE_MAX);
}

static void test_pace_rate(void)
{
    /* 1 Gbit/s link, busy all of 2 s of precopy: 97% of 120 MB/s. */
    g_assert_cmpuint(postcopy_queue_pace_rate(240000000, 2000000, 2000000,
                                              97), ==, 116400000);
    /* Busy three quarters of the time: still the path's rate. */
    g_assert_cmpuint(postcopy_queue_pace_rate(180000000, 1500000, 2000000,
                                              100), ==, 120000000);
}

static void test_pace_rate_none(void)
{
    /* Asked for none. */
    g_assert_cmpuint(postcopy_queue_pace_rate(240000000, 2000000, 2000000,
                                              0), ==, 0);
    /*
     * A sender busy 300 ms of 2 s (loopback beside a busy source guest):
     * its rate is its own CPU's, not the path's.
     */
    g_assert_cmpuint(postcopy_queue_pace_rate(280000000, 300000, 2000000,
                                              97), ==, 0);
    g_assert_cmpuint(postcopy_queue_pace_rate(180000000, 1499000, 2000000,
                                              97), ==, 0);
    /* Too little measured. */
    g_assert_cmpuint(postcopy_queue_pace_rate(1000000, 99000, 99000, 97),
                     ==, 0);
}

static void test_pace_rate_large(void)
{
    /* Hours of precopy at 100 Gbit/s: no overflow. */
    uint64_t busy_us = 10ULL * 3600 * 1000000;
    uint64_t acked = 12500000000ULL / 1000000 * busy_us;

    g_assert_cmpuint(postcopy_queue_pace_rate(acked, busy_us, busy_us, 100),
                     ==, 12500000000ULL);
    g_assert_cmpuint(postcopy_queue_pace_rate(UINT64_MAX, 100000, 100000,
                                              100), ==,
                     (1ULL << 54) * 1000 / 100);
}

/*
 * The first 0.5 s of postcopy on the emulated 1 Gbit/s link (ss -ti of the
 * source's main channel, 2026-12-01): the window held the sender back
 * 188 ms of its 488 ms busy, at the rate precopy measured.
 */
static void test_recheck_path(void)
{
    PostcopyQueueRecheck v;

    v = postcopy_queue_recheck(488000, 188000, 58000000, 500000, 120000000,
                               97);
    g_assert_true(v.bound);
    g_assert_cmpuint(v.pace_bps, ==, 116400000);
    g_assert_cmpuint(v.rate_bps, ==, 58000000ULL * 1000 / 488);
    /* No pacing asked for (pace=off, no preempt, or paced already). */
    v = postcopy_queue_recheck(488000, 188000, 58000000, 500000, 120000000,
                               0);
    g_assert_true(v.bound);
    g_assert_cmpuint(v.pace_bps, ==, 0);
}

static void test_recheck_rates_disagree(void)
{
    PostcopyQueueRecheck v;

    /*
     * 175 MB/s in postcopy against 150 MB/s in precopy, though the window
     * held the sender back only 100 ms: the endpoints' CPU set that rate,
     * and the source's vCPUs have stopped since.
     */
    v = postcopy_queue_recheck(480000, 100000, 84000000, 500000, 150000000,
                               97);
    g_assert_false(v.bound);
    g_assert_cmpuint(v.pace_bps, ==, 0);
    /*
     * Up to 10% faster: 110 against 100 MB/s, and not 112 against 100.
     * The path carried 110 MB/s: paced at that, not at precopy's 100.
     */
    v = postcopy_queue_recheck(500000, 0, 55000000, 500000, 100000000, 100);
    g_assert_true(v.bound);
    g_assert_cmpuint(v.pace_bps, ==, 110000000);
    v = postcopy_queue_recheck(500000, 0, 56000000, 500000, 100000000, 100);
    g_assert_false(v.bound);
    /*
     * Up to 15% slower: 85 against 100 MB/s, and not 84.  The run of
     * 2026-12-01 05:30 on the emulated 1 Gbit/s link (bench --recover-at
     * 2): the window held the sender back 172 of its 504 ms busy, and it
     * sent 104.6 MB/s against precopy's 119.1, 12% less.
     */
    v = postcopy_queue_recheck(500000, 0, 42500000, 500000, 100000000, 0);
    g_assert_true(v.bound);
    v = postcopy_queue_recheck(500000, 0, 42000000, 500000, 100000000, 0);
    g_assert_false(v.bound);
    v = postcopy_queue_recheck(504000, 172000, 52727616, 500000, 119115169,
                               97);
    g_assert_cmpuint(v.rate_bps, ==, 104618285);
    g_assert_true(v.bound);
    /* Paced at precopy's rate then, the higher. */
    g_assert_cmpuint(v.pace_bps, ==, 119115169 / 100 * 97);
    /* Rates no caller measures: no overflow, and they still compare. */
    v = postcopy_queue_recheck(500000, 0, 55000000, 500000, UINT64_MAX, 100);
    g_assert_false(v.bound);
    /* Busy less than three quarters of the interval: no rate to compare. */
    v = postcopy_queue_recheck(300000, 0, 36000000, 500000, 120000000, 97);
    g_assert_false(v.bound);
    /* Nor without precopy's rate. */
    v = postcopy_queue_recheck(488000, 188000, 58000000, 500000, 0, 97);
    g_assert_false(v.bound);
}

static void test_recheck_receiver(void)
{
    PostcopyQueueRecheck v;

    /*
     * The emulated 10 Gbit/s link, the same half second: the destination
     * still the bottleneck, the window held the sender back 296 of 508 ms.
     * Even had precopy measured the same rate (354 MB/s), no bound.
     */
    v = postcopy_queue_recheck(508000, 296000, 180000000, 508000, 350000000,
                               97);
    g_assert_false(v.bound);
    g_assert_cmpuint(v.pace_bps, ==, 0);
    /* And it measured 150 MB/s, the source's vCPUs taking their share. */
    v = postcopy_queue_recheck(508000, 200000, 180000000, 508000, 150000000,
                               97);
    g_assert_false(v.bound);
    /* Too little sent to tell (everything sent before the look). */
    v = postcopy_queue_recheck(99000, 0, 12000000, 99000, 120000000, 97);
    g_assert_false(v.bound);
    g_assert_cmpuint(v.pace_bps, ==, 0);
    g_assert_cmpuint(v.rate_bps, ==, 0);
}

/* Whether @row of the doc's table is the item @name ("name=..."). */
static bool row_is_item(const char *row, const char *name)
{
    return g_str_has_prefix(row, name) && row[strlen(name)] == '=';
}

/*
 * The design doc's table lists every item, and no item that is not one:
 * the items are written once in code (tune_items[]) and described once.
 */
static void test_tune_items_documented(void)
{
    g_autoptr(GPtrArray) rows = postcopy_doc_knobs();
    const char *name;
    unsigned int i, r;

    for (i = 0; (name = postcopy_tune_item_name(i)); i++) {
        bool found = false;

        for (r = 0; r < rows->len; r++) {
            found |= row_is_item(g_ptr_array_index(rows, r), name);
        }
        g_test_message("%s: %s", name, found ? "documented" : "missing");
        g_assert_true(found);
    }
    for (r = 0; r < rows->len; r++) {
        const char *row = g_ptr_array_index(rows, r);
        bool known = !strchr(row, '=');

        for (i = 0; !known && (name = postcopy_tune_item_name(i)); i++) {
            known = row_is_item(row, name);
        }
        g_test_message("row %s: %s", row, known ? "known" : "unknown");
        g_assert_true(known);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/queue/tune-defaults", test_tune_defaults);
    g_test_add_func("/postcopy/queue/tune-items", test_tune_items);
    g_test_add_func("/postcopy/queue/tune-items-documented",
                    test_tune_items_documented);
    g_test_add_func("/postcopy/queue/tune-errors", test_tune_errors);
    g_test_add_func("/postcopy/queue/tune-error-after-good-items",
                    test_tune_error_after_good_items);
    g_test_add_func("/postcopy/queue/tune-error-words",
                    test_tune_error_words);
    g_test_add_func("/postcopy/queue/tune-order", test_tune_order);
    g_test_add_func("/postcopy/queue/send-bound-wanted",
                    test_send_bound_wanted);
    g_test_add_func("/postcopy/queue/lowat-is-one-bdp",
                    test_lowat_is_one_bdp);
    g_test_add_func("/postcopy/queue/lowat-bounds", test_lowat_bounds);
    g_test_add_func("/postcopy/queue/pace-rate", test_pace_rate);
    g_test_add_func("/postcopy/queue/pace-rate-none", test_pace_rate_none);
    g_test_add_func("/postcopy/queue/pace-rate-large", test_pace_rate_large);
    g_test_add_func("/postcopy/queue/recheck-path", test_recheck_path);
    g_test_add_func("/postcopy/queue/recheck-rates-disagree",
                    test_recheck_rates_disagree);
    g_test_add_func("/postcopy/queue/recheck-receiver",
                    test_recheck_receiver);
    return g_test_run();
}
