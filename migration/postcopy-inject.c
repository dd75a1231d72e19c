/*
 * Postcopy: fault points that tests arm (see postcopy-inject.h).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "postcopy-inject.h"

static const char *const postcopy_inject_names[POSTCOPY_INJECT__MAX] = {
    [POSTCOPY_INJECT_INSTALL_FAIL] = "install-fail",
    [POSTCOPY_INJECT_PLACER_HOLD] = "placer-hold",
    [POSTCOPY_INJECT_PLACER_FAIL] = "placer-fail",
    [POSTCOPY_INJECT_REQUEST_FAIL] = "request-fail",
    [POSTCOPY_INJECT_UFFD_READ_FAIL] = "uffd-read-fail",
    [POSTCOPY_INJECT_PLACE_LEFTOVERS] = "place-leftovers",
    [POSTCOPY_INJECT_PLACE_PREEMPT] = "place-preempt",
    [POSTCOPY_INJECT_PREEMPT_AT_END] = "preempt-at-end",
    [POSTCOPY_INJECT_PLACE_ZERO] = "place-zero",
    [POSTCOPY_INJECT_PAUSE_LATE] = "pause-late",
    [POSTCOPY_INJECT_SHARED_REQUEST_FAIL] = "shared-request-fail",
    [POSTCOPY_INJECT_SHARED_WAKE_FAIL] = "shared-wake-fail",
    [POSTCOPY_INJECT_COLLAPSE_REFUSED] = "collapse-refused",
};

/* Written once by postcopy_inject_init(), before any thread reads them. */
static PostcopyInjectArm inject_arms[POSTCOPY_INJECT__MAX];
static bool inject_any;
/* Atomic: passes so far, per point */
static uint64_t inject_passes[POSTCOPY_INJECT__MAX];

static int inject_point_by_name(const char *name)
{
    int i;

    for (i = 0; i < POSTCOPY_INJECT__MAX; i++) {
        if (!strcmp(name, postcopy_inject_names[i])) {
            return i;
        }
    }
    return -1;
}

/* "N" or "N:K", both at least 1. */
static bool inject_parse_passes(const char *text, PostcopyInjectArm *arm)
{
    g_auto(GStrv) parts = g_strsplit(text, ":", 2);

    if (!g_ascii_string_to_unsigned(parts[0], 10, 1, G_MAXUINT64,
                                    &arm->first, NULL)) {
        return false;
    }
    return !parts[1] || g_ascii_string_to_unsigned(parts[1], 10, 1,
                                                   G_MAXUINT64, &arm->count,
                                                   NULL);
}

bool postcopy_inject_parse(const char *spec, PostcopyInjectArm *arms,
                           Error **errp)
{
    PostcopyInjectArm parsed[POSTCOPY_INJECT__MAX] = { 0 };
    g_auto(GStrv) items = g_strsplit(spec, ",", -1);
    int i;

    for (i = 0; items[i]; i++) {
        g_auto(GStrv) kv = g_strsplit(items[i], "=", 2);
        PostcopyInjectArm arm = { .armed = true, .first = 1, .count = 1 };
        int point;

        if (!*items[i]) {
            continue;
        }
        point = inject_point_by_name(kv[0]);
        if (point < 0) {
            error_setg(errp, "unknown postcopy fault point '%s'", kv[0]);
            return false;
        }
        if (kv[1] && !inject_parse_passes(kv[1], &arm)) {
            error_setg(errp, "postcopy fault point %s: '%s' is not N or N:K "
                       "(positive integers)", kv[0], kv[1]);
            return false;
        }
        parsed[point] = arm;
    }
    memcpy(arms, parsed, sizeof(parsed));
    return true;
}

bool postcopy_inject_fires(const PostcopyInjectArm *arm, uint64_t pass)
{
    return arm->armed && pass >= arm->first && pass - arm->first < arm->count;
}

void postcopy_inject_init(void)
{
    static bool done;
    const char *spec = g_getenv("QEMU_POSTCOPY_INJECT");
    Error *err = NULL;
    int i;

    if (done || !spec) {
        return;
    }
    done = true;
    if (!postcopy_inject_parse(spec, inject_arms, &err)) {
        error_prepend(&err, "QEMU_POSTCOPY_INJECT ignored: ");
        warn_report_err(err);
        return;
    }
    for (i = 0; i < POSTCOPY_INJECT__MAX; i++) {
        if (!inject_arms[i].armed) {
            continue;
        }
        if (i == POSTCOPY_INJECT_PLACER_HOLD) {
            /* Not counted: on for the whole migration. */
            warn_report("postcopy: fault point %s armed: this migration "
                        "makes failures on purpose", postcopy_inject_names[i]);
        } else {
            warn_report("postcopy: fault point %s armed (passes %" PRIu64
                        " to %" PRIu64 "): this migration makes failures on "
                        "purpose", postcopy_inject_names[i],
                        inject_arms[i].first,
                        postcopy_inject_last_pass(&inject_arms[i]));
        }
        inject_any = true;
    }
}

const char *postcopy_inject_point_name(PostcopyInjectPoint point)
{
    return postcopy_inject_names[point];
}

uint64_t postcopy_inject_last_pass(const PostcopyInjectArm *arm)
{
    /* first >= 1, so first - 1 + count wraps only past UINT64_MAX. */
    if (arm->count > UINT64_MAX - (arm->first - 1)) {
        return UINT64_MAX;
    }
    return arm->first - 1 + arm->count;
}

bool postcopy_inject_armed(PostcopyInjectPoint point)
{
    return unlikely(inject_any) && inject_arms[point].armed;
}

bool postcopy_inject_hit(PostcopyInjectPoint point)
{
    uint64_t pass;

    if (likely(!postcopy_inject_armed(point))) {
        return false;
    }
    pass = qatomic_fetch_inc(&inject_passes[point]) + 1;
    if (!postcopy_inject_fires(&inject_arms[point], pass)) {
        return false;
    }
    warn_report("postcopy: fault point %s fires (pass %" PRIu64 ")",
                postcopy_inject_names[point], pass);
    return true;
}
