/*
 * Postcopy: sizing the TCP queues ahead of a requested page (pure logic).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "postcopy-tcp-queue.h"

uint32_t postcopy_queue_lowat(uint64_t rate_bps, uint32_t rtt_us)
{
    /* rate < 2^40 B/s and rtt < 2^32 us: the product cannot overflow. */
    uint64_t bdp = MIN(rate_bps, 1ULL << 40) * rtt_us / 1000000;

    return MIN(MAX(bdp, POSTCOPY_QUEUE_MIN), POSTCOPY_QUEUE_MAX);
}

/* Whether the sender had data to send most (3/4) of @elapsed_us. */
static bool queue_sender_busy(uint64_t busy_us, uint64_t elapsed_us)
{
    return busy_us >= elapsed_us / 4 * 3;
}

bool postcopy_queue_send_bound_wanted(uint64_t busy_us, uint64_t rwnd_us,
                                      uint64_t elapsed_us)
{
    return queue_sender_busy(busy_us, elapsed_us) && rwnd_us <= busy_us / 2;
}

uint64_t postcopy_queue_pace_rate(uint64_t bytes_acked, uint64_t busy_us,
                                  uint64_t elapsed_us, unsigned int percent)
{
    uint64_t busy_ms = busy_us / 1000;

    if (!percent || busy_us < POSTCOPY_PACE_MIN_BUSY_US ||
        !queue_sender_busy(busy_us, elapsed_us)) {
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
        !postcopy_queue_send_bound_wanted(busy_us, rwnd_us, interval_us) ||
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
