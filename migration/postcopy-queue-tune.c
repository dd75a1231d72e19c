/*
 * Postcopy: sizing the queues ahead of a requested page (pure logic).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "postcopy-queue.h"
#include "postcopy-prepage.h"

/* @text, a number of @unit from @min to @max, into *@value. */
static bool tune_parse_uint(const char *name, const char *text,
                            const char *unit, uint32_t min, uint32_t max,
                            uint32_t *value, Error **errp)
{
    guint64 parsed;

    if (!text || !g_ascii_string_to_unsigned(text, 10, min, max, &parsed,
                                             NULL)) {
        error_setg(errp, "QEMU_POSTCOPY_TUNE: %s wants %s from %u to %u",
                   name, unit, min, max);
        return false;
    }
    *value = parsed;
    return true;
}

/* @text, one of the @n @words, for the item @name. */
static bool tune_parse_word(const char *name, const char *text,
                            const char *const *words, unsigned int n,
                            Error **errp)
{
    g_autoptr(GString) expected = g_string_new(words[0]);
    unsigned int i;

    for (i = 0; i < n; i++) {
        if (!g_strcmp0(text, words[i])) {
            return true;
        }
    }
    for (i = 1; i < n; i++) {
        g_string_append_printf(expected, "%s%s", i + 1 < n ? ", " : " or ",
                               words[i]);
    }
    error_setg(errp, "QEMU_POSTCOPY_TUNE: %s wants %s", name, expected->str);
    return false;
}

static bool tune_parse_bytes(const char *name, const char *text,
                             uint32_t *bytes, Error **errp)
{
    return tune_parse_uint(name, text, "bytes", POSTCOPY_QUEUE_MIN / 16,
                           POSTCOPY_QUEUE_MAX * 4, bytes, errp);
}

/*
 * queue=auto, the default, bounds the send queue where the path rather
 * than the receiver limits the sender, and leaves the receive queue alone:
 * measured, the receive bound cost throughput wherever the destination was
 * the bottleneck (docs/bench/fault-path.md).
 */
static bool tune_parse_queue(const char *value, PostcopyQueueTune *tune)
{
    static const struct {
        const char *name;
        bool no_send, send_always, no_receive;
    } modes[] = {
        { "auto", false, false, true },
        { "off", true, false, true },
        { "send", false, true, true },
        { "receive", true, false, false },
        { "on", false, true, false },
    };
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(modes); i++) {
        if (!strcmp(value, modes[i].name)) {
            tune->no_send = modes[i].no_send;
            tune->send_always = modes[i].send_always;
            tune->no_receive = modes[i].no_receive;
            return true;
        }
    }
    return false;
}

/* pace=auto|off|PERCENT */
static bool tune_parse_pace(const char *value, PostcopyQueueTune *tune,
                            Error **errp)
{
    if (!g_strcmp0(value, "auto")) {
        tune->pace_percent = POSTCOPY_PACE_PERCENT;
        tune->pace_forced = false;
        return true;
    }
    if (!g_strcmp0(value, "off")) {
        tune->pace_percent = 0;
        tune->pace_forced = false;
        return true;
    }
    if (!value || !g_ascii_isdigit(*value)) {
        error_setg(errp, "QEMU_POSTCOPY_TUNE: pace wants auto, off or a "
                   "percent from 1 to 100");
        return false;
    }
    if (!tune_parse_uint("pace", value, "percent", 1, 100,
                         &tune->pace_percent, errp)) {
        return false;
    }
    tune->pace_forced = true;
    return true;
}

/* What an unset QEMU_POSTCOPY_TUNE means. */
static void tune_set_defaults(PostcopyQueueTune *tune)
{
    *tune = (PostcopyQueueTune) { .placer_run = POSTCOPY_PLACER_RUN_DEFAULT };
    tune_parse_queue("auto", tune);
    tune_parse_pace("auto", tune, &error_abort);
}

/*
 * Each comma-separated item of @text into @tune, in order.  On a failure
 * the items before the bad one are applied: the caller resets @tune.
 */
static bool tune_parse_items(const char *text, PostcopyQueueTune *tune,
                             Error **errp)
{
    g_auto(GStrv) items = g_strsplit(text ? text : "", ",", -1);
    int i;

    for (i = 0; items[i]; i++) {
        g_auto(GStrv) kv = g_strsplit(items[i], "=", 2);

        if (!*items[i]) {
            continue;
        }
        if (!strcmp(kv[0], "queue")) {
            if (!kv[1] || !tune_parse_queue(kv[1], tune)) {
                error_setg(errp, "QEMU_POSTCOPY_TUNE: queue wants auto, "
                           "off, send, receive or on");
                return false;
            }
        } else if (!strcmp(kv[0], "lowat")) {
            if (!tune_parse_bytes("lowat", kv[1], &tune->lowat, errp)) {
                return false;
            }
        } else if (!strcmp(kv[0], "prepage")) {
            if (!tune_parse_uint("prepage", kv[1], "pages", 0,
                                 POSTCOPY_PREPAGE_MAX_DEPTH, &tune->prepage,
                                 errp)) {
                return false;
            }
        } else if (!strcmp(kv[0], "placer")) {
            static const char *const placer[] = { "auto", "on", "off" };

            if (!tune_parse_word("placer", kv[1], placer,
                                 ARRAY_SIZE(placer), errp)) {
                return false;
            }
            tune->no_placer = !strcmp(kv[1], "off");
            tune->placer_always = !strcmp(kv[1], "on");
        } else if (!strcmp(kv[0], "placerun")) {
            if (!tune_parse_uint("placerun", kv[1], "pages", 1,
                                 POSTCOPY_PLACER_RUN_MAX, &tune->placer_run,
                                 errp)) {
                return false;
            }
        } else if (!strcmp(kv[0], "recheck")) {
            static const char *const recheck[] = { "auto", "off", "only" };

            if (!tune_parse_word("recheck", kv[1], recheck,
                                 ARRAY_SIZE(recheck), errp)) {
                return false;
            }
            tune->no_recheck = !strcmp(kv[1], "off");
            tune->recheck_only = !strcmp(kv[1], "only");
        } else if (!strcmp(kv[0], "recovery")) {
            static const char *const recovery[] = { "keep", "off" };

            if (!tune_parse_word("recovery", kv[1], recovery,
                                 ARRAY_SIZE(recovery), errp)) {
                return false;
            }
            tune->no_recovery_keep = !strcmp(kv[1], "off");
        } else if (!strcmp(kv[0], "pace")) {
            if (!tune_parse_pace(kv[1], tune, errp)) {
                return false;
            }
        } else if (!strcmp(kv[0], "rcvbuf")) {
            if (!tune_parse_bytes("rcvbuf", kv[1], &tune->rcvbuf, errp)) {
                return false;
            }
        } else {
            error_setg(errp, "QEMU_POSTCOPY_TUNE: unknown item '%s' (known: "
                       "queue=auto|off|send|receive|on, lowat=BYTES, "
                       "rcvbuf=BYTES, prepage=PAGES, placer=auto|on|off, "
                       "placerun=PAGES, "
                       "pace=auto|off|PERCENT, recheck=auto|off|only, "
                       "recovery=keep|off)",
                       items[i]);
            return false;
        }
    }
    return true;
}

bool postcopy_queue_tune_parse(const char *text, PostcopyQueueTune *tune,
                               Error **errp)
{
    tune_set_defaults(tune);
    if (!tune_parse_items(text, tune, errp)) {
        /* Half an item list applied is neither what was asked nor tested. */
        tune_set_defaults(tune);
        return false;
    }
    /*
     * A receive bound of a given size is on, wherever queue= came in the
     * list: the order of items never matters, only a later item of the
     * same name replaces an earlier one.
     */
    if (tune->rcvbuf) {
        tune->no_receive = false;
    }
    return true;
}

uint32_t postcopy_queue_lowat(uint64_t rate_bps, uint32_t rtt_us)
{
    /* rate < 2^40 B/s and rtt < 2^32 us: the product cannot overflow. */
    uint64_t bdp = MIN(rate_bps, 1ULL << 40) * rtt_us / 1000000;

    return MIN(MAX(bdp, POSTCOPY_QUEUE_MIN), POSTCOPY_QUEUE_MAX);
}

bool postcopy_queue_send_bound_wanted(uint64_t busy_us, uint64_t rwnd_us)
{
    /* Nothing measured: bound, as where the path is the bottleneck. */
    return !busy_us || rwnd_us <= busy_us / 2;
}

uint64_t postcopy_queue_pace_rate(uint64_t bytes_acked, uint64_t busy_us,
                                  uint64_t elapsed_us, unsigned int percent)
{
    uint64_t busy_ms = busy_us / 1000;

    if (!percent || busy_us < POSTCOPY_PACE_MIN_BUSY_US ||
        busy_us < elapsed_us / 4 * 3) {
        return 0;
    }
    /* Exact below 2^54 bytes acked, and 2^64 is beyond any migration. */
    bytes_acked = MIN(bytes_acked, 1ULL << 54);
    return bytes_acked * 1000 / busy_ms * percent / 100;
}

/*
 * Whether @postcopy_bps is close enough to @precopy_bps to be the same
 * path's rate.  Apart by more below than above: in half a second the path
 * gives a little less now and then (the one look that read 12% less had
 * the receiver hold the sender back a third of the time), but it never
 * gives more than it did, and a rate that rose came from the endpoints'
 * CPU.
 */
static bool queue_rates_agree(uint64_t precopy_bps, uint64_t postcopy_bps)
{
    /* Divided first: no product can overflow, whatever the caller passes. */
    if (postcopy_bps >= precopy_bps) {
        return postcopy_bps - precopy_bps <=
               precopy_bps / 100 * POSTCOPY_RECHECK_ABOVE_PERCENT;
    }
    return precopy_bps - postcopy_bps <=
           precopy_bps / 100 * POSTCOPY_RECHECK_BELOW_PERCENT;
}

PostcopyQueueRecheck postcopy_queue_recheck(uint64_t busy_us,
                                            uint64_t rwnd_us,
                                            uint64_t bytes_acked,
                                            uint64_t interval_us,
                                            uint64_t precopy_rate_bps,
                                            unsigned int percent)
{
    PostcopyQueueRecheck verdict = {
        .rate_bps = postcopy_queue_pace_rate(bytes_acked, busy_us,
                                             interval_us, 100),
    };

    /* pace_rate() also wants the sender busy most of the interval. */
    if (!verdict.rate_bps || !precopy_rate_bps ||
        !postcopy_queue_send_bound_wanted(busy_us, rwnd_us) ||
        !queue_rates_agree(precopy_rate_bps, verdict.rate_bps)) {
        return verdict;
    }
    verdict.bound = true;
    /*
     * Each rate is what the path delivered to a busy sender, so it carries
     * at least the higher: @percent of the lower would throttle it more
     * than @percent says.
     */
    verdict.pace_bps = MAX(precopy_rate_bps, verdict.rate_bps) / 100 *
                       percent;
    return verdict;
}
