/*
 * Postcopy: QEMU_POSTCOPY_TUNE, the knobs for benchmarks (pure logic, but
 * for reading the environment once).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "postcopy-tune.h"
#include "postcopy-collapse.h"

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

/* @text, one of @words (NULL-terminated), for the item @name. */
static bool tune_parse_word(const char *name, const char *text,
                            const char *const *words, Error **errp)
{
    g_autoptr(GString) expected = g_string_new(words[0]);
    unsigned int n = g_strv_length((gchar **)words);
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
    return tune_parse_uint(name, text, "bytes", POSTCOPY_TUNE_BYTES_MIN,
                           POSTCOPY_TUNE_BYTES_MAX, bytes, errp);
}

/*
 * queue=auto, the default, bounds the send queue where the path limits
 * the sender (not the receiver, nor the sender's own idleness:
 * postcopy_queue_send_bound_wanted()), and leaves the receive queue alone:
 * measured, the receive bound cost throughput wherever the destination was
 * the bottleneck.
 */
static bool tune_parse_queue(const char *value, PostcopyTune *tune)
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
static bool tune_parse_pace(const char *value, PostcopyTune *tune,
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
static void tune_set_defaults(PostcopyTune *tune)
{
    *tune = (PostcopyTune) {
        .placer_run = POSTCOPY_PLACER_RUN_DEFAULT,
        .collapse_percent = POSTCOPY_COLLAPSE_PERCENT,
    };
    tune_parse_queue("auto", tune);
    tune_parse_pace("auto", tune, &error_abort);
}

/* queue=auto|off|send|receive|on */
static bool tune_item_queue(const char *value, PostcopyTune *tune,
                            Error **errp)
{
    if (!value || !tune_parse_queue(value, tune)) {
        error_setg(errp, "QEMU_POSTCOPY_TUNE: queue wants auto, off, send, "
                   "receive or on");
        return false;
    }
    return true;
}

static bool tune_item_lowat(const char *value, PostcopyTune *tune,
                            Error **errp)
{
    return tune_parse_bytes("lowat", value, &tune->lowat, errp);
}

static bool tune_item_rcvbuf(const char *value, PostcopyTune *tune,
                             Error **errp)
{
    return tune_parse_bytes("rcvbuf", value, &tune->rcvbuf, errp);
}

/*
 * The words of the items that take one: tune_parse_item() checks @value
 * against them before it calls the item's parser.
 */
static const char *const placer_words[] = { "auto", "on", "off", NULL };
static const char *const recheck_words[] = { "auto", "off", "only", NULL };
static const char *const on_off_words[] = { "on", "off", NULL };
static const char *const recovery_words[] = { "keep", "off", NULL };

static bool tune_item_placer(const char *value, PostcopyTune *tune,
                             Error **errp)
{
    tune->no_placer = !strcmp(value, "off");
    tune->placer_always = !strcmp(value, "on");
    return true;
}

static bool tune_item_placerun(const char *value, PostcopyTune *tune,
                               Error **errp)
{
    return tune_parse_uint("placerun", value, "pages", 1,
                           POSTCOPY_PLACER_RUN_MAX, &tune->placer_run, errp);
}

static bool tune_item_recheck(const char *value, PostcopyTune *tune,
                              Error **errp)
{
    tune->no_recheck = !strcmp(value, "off");
    tune->recheck_only = !strcmp(value, "only");
    return true;
}

static bool tune_item_recovery(const char *value, PostcopyTune *tune,
                               Error **errp)
{
    tune->no_recovery_keep = !strcmp(value, "off");
    return true;
}

/* collapse=off|PERCENT */
static bool tune_item_collapse(const char *value, PostcopyTune *tune,
                               Error **errp)
{
    if (!g_strcmp0(value, "off")) {
        tune->collapse_percent = 0;
        return true;
    }
    if (!value || !g_ascii_isdigit(*value) ||
        !tune_parse_uint("collapse", value, "percent", 1, 100,
                         &tune->collapse_percent, NULL)) {
        error_setg(errp, "QEMU_POSTCOPY_TUNE: collapse wants off or a "
                   "percent from 1 to 100");
        return false;
    }
    return true;
}

static bool tune_item_collapse_early(const char *value, PostcopyTune *tune,
                                     Error **errp)
{
    tune->no_collapse_early = !strcmp(value, "off");
    return true;
}

/*
 * Every item of QEMU_POSTCOPY_TUNE, once: its name, what it takes (for
 * the message that lists them) and its parser.  What each does is the
 * design doc's table ("Knobs"), which tests/unit/test-postcopy-tune.c
 * holds to this list.
 */
static const struct {
    const char *name;
    const char *takes;          /* or, for one of @words: NULL */
    const char *const *words;
    bool (*parse)(const char *value, PostcopyTune *tune, Error **errp);
} tune_items[] = {
    { "queue", "auto|off|send|receive|on", NULL, tune_item_queue },
    { "lowat", "BYTES", NULL, tune_item_lowat },
    { "rcvbuf", "BYTES", NULL, tune_item_rcvbuf },
    { "pace", "auto|off|PERCENT", NULL, tune_parse_pace },
    { "recheck", NULL, recheck_words, tune_item_recheck },
    { "recovery", NULL, recovery_words, tune_item_recovery },
    { "placer", NULL, placer_words, tune_item_placer },
    { "placerun", "PAGES", NULL, tune_item_placerun },
    { "collapse", "off|PERCENT", NULL, tune_item_collapse },
    { "collapse-early", NULL, on_off_words, tune_item_collapse_early },
};

const char *postcopy_tune_item_name(unsigned int i)
{
    return i < ARRAY_SIZE(tune_items) ? tune_items[i].name : NULL;
}

static void tune_unknown_item(const char *item, Error **errp)
{
    g_autoptr(GString) known = g_string_new(NULL);
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(tune_items); i++) {
        g_autofree char *words = tune_items[i].words ?
            g_strjoinv("|", (gchar **)tune_items[i].words) : NULL;

        g_string_append_printf(known, "%s%s=%s", i ? ", " : "",
                               tune_items[i].name,
                               words ? words : tune_items[i].takes);
    }
    error_setg(errp, "QEMU_POSTCOPY_TUNE: unknown item '%s' (known: %s)",
               item, known->str);
}

/* One item, "name=value", into @tune. */
static bool tune_parse_item(const char *item, PostcopyTune *tune,
                            Error **errp)
{
    g_auto(GStrv) kv = g_strsplit(item, "=", 2);
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(tune_items); i++) {
        if (strcmp(kv[0], tune_items[i].name)) {
            continue;
        }
        if (tune_items[i].words &&
            !tune_parse_word(tune_items[i].name, kv[1], tune_items[i].words,
                             errp)) {
            return false;
        }
        return tune_items[i].parse(kv[1], tune, errp);
    }
    tune_unknown_item(item, errp);
    return false;
}

/*
 * Each comma-separated item of @text into @tune, in order.  On a failure
 * the items before the bad one are applied: the caller resets @tune.
 */
static bool tune_parse_items(const char *text, PostcopyTune *tune,
                             Error **errp)
{
    g_auto(GStrv) items = g_strsplit(text ? text : "", ",", -1);
    int i;

    for (i = 0; items[i]; i++) {
        if (*items[i] && !tune_parse_item(items[i], tune, errp)) {
            return false;
        }
    }
    return true;
}

bool postcopy_tune_parse(const char *text, PostcopyTune *tune,
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
     * same name replaces an earlier one.  But queue=off promises the
     * kernel's own queues: asking for both is a mistake to report.
     */
    if (tune->rcvbuf && tune->no_send && tune->no_receive) {
        error_setg(errp, "QEMU_POSTCOPY_TUNE: rcvbuf= bounds the receive "
                   "queue, which queue=off leaves to the kernel");
        tune_set_defaults(tune);
        return false;
    }
    if (tune->rcvbuf) {
        tune->no_receive = false;
    }
    return true;
}

/* Written once by postcopy_tune_init() at start-up, then only read. */
static PostcopyTune tune_from_env;
/*
 * Why QEMU_POSTCOPY_TUNE was ignored, until the first read of the tuning
 * reports it: postcopy_tune_init() runs before QEMU's monitor exists,
 * where any report aborts QEMU (monitor_cur() takes a lock not yet made).
 */
static Error *tune_env_error;

void postcopy_tune_init(void)
{
    if (!postcopy_tune_parse(g_getenv("QEMU_POSTCOPY_TUNE"), &tune_from_env,
                             &tune_env_error)) {
        error_prepend(&tune_env_error, "QEMU_POSTCOPY_TUNE ignored: ");
    }
}

const PostcopyTune *postcopy_tune(void)
{
    if (unlikely(qatomic_read(&tune_env_error))) {
        Error *err = qatomic_xchg(&tune_env_error, NULL);

        if (err) {
            warn_report_err(err);
        }
    }
    return &tune_from_env;
}
