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

static bool tune_parse_bytes(const char *name, const char *text,
                             uint32_t *bytes, Error **errp)
{
    guint64 value;

    if (!text || !g_ascii_string_to_unsigned(text, 10, POSTCOPY_QUEUE_MIN / 16,
                                             POSTCOPY_QUEUE_MAX * 4, &value,
                                             NULL)) {
        error_setg(errp, "QEMU_POSTCOPY_TUNE: %s wants bytes from %d to %d",
                   name, POSTCOPY_QUEUE_MIN / 16, POSTCOPY_QUEUE_MAX * 4);
        return false;
    }
    *bytes = value;
    return true;
}

bool postcopy_queue_tune_parse(const char *text, PostcopyQueueTune *tune,
                               Error **errp)
{
    /*
     * The default bounds the send queue only: measured, the receive
     * bound did not shorten faults where the link is the bottleneck and
     * cost throughput where the destination is (docs/bench/fault-path.md).
     */
    PostcopyQueueTune parsed = { .no_receive = true };
    g_auto(GStrv) items = g_strsplit(text ? text : "", ",", -1);
    int i;

    for (i = 0; items[i]; i++) {
        g_auto(GStrv) kv = g_strsplit(items[i], "=", 2);

        if (!*items[i]) {
            continue;
        }
        if (!strcmp(kv[0], "queue") && kv[1] &&
            (!strcmp(kv[1], "off") || !strcmp(kv[1], "on") ||
             !strcmp(kv[1], "send") || !strcmp(kv[1], "receive"))) {
            parsed.no_send = !strcmp(kv[1], "off") ||
                             !strcmp(kv[1], "receive");
            parsed.no_receive = !strcmp(kv[1], "off") ||
                                !strcmp(kv[1], "send");
        } else if (!strcmp(kv[0], "lowat")) {
            if (!tune_parse_bytes("lowat", kv[1], &parsed.lowat, errp)) {
                return false;
            }
        } else if (!strcmp(kv[0], "rcvbuf")) {
            if (!tune_parse_bytes("rcvbuf", kv[1], &parsed.rcvbuf, errp)) {
                return false;
            }
            parsed.no_receive = false;
        } else {
            error_setg(errp, "QEMU_POSTCOPY_TUNE: unknown item '%s' (known: "
                       "queue=on|off|send|receive, lowat=BYTES, rcvbuf=BYTES)", items[i]);
            return false;
        }
    }
    *tune = parsed;
    return true;
}

uint32_t postcopy_queue_lowat(uint64_t rate_bps, uint32_t rtt_us)
{
    /* rate < 2^40 B/s and rtt < 2^32 us: the product cannot overflow. */
    uint64_t bdp = MIN(rate_bps, 1ULL << 40) * rtt_us / 1000000;

    return MIN(MAX(bdp, POSTCOPY_QUEUE_MIN), POSTCOPY_QUEUE_MAX);
}
