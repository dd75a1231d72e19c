/*
 * Postcopy: bounding the queues ahead of a requested page.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Without the preempt channel a page that a fault asked for travels on the
 * main channel behind every byte of background RAM queued ahead of it: in
 * the source's socket send buffer and in the destination's receive buffer,
 * both autotuned by the kernel to megabytes.  At a link's rate, several
 * megabytes are milliseconds.
 *
 * Where the path is the bottleneck the backlog sits in the send queue, and
 * the module bounds it when postcopy starts: TCP_NOTSENT_LOWAT on the
 * source's main channel keeps what is written but not sent to about one
 * bandwidth-delay product, over the least round trip TCP has seen: the
 * smoothed one counts the queues too, and precopy fills them.  Where the
 * destination is the bottleneck (the sender mostly waited for the
 * receiver's window during precopy) the backlog sits in the receive queue
 * instead; a send bound there only throttles, so none is set.  Nor where
 * the sender was mostly idle: no backlog forms, and a bound would only
 * cost the source CPU.  Bounding the receive queue (SO_RCVBUF on the
 * destination's main channel) shortened faults there but cost as much
 * postcopy time and saved no blocktime, so it is off unless asked for.
 * Only TCP channels.
 *
 * With the preempt channel a requested page skips the main channel's
 * queues in the sockets, but not the one at the path's bottleneck, which
 * both channels share: there the main channel keeps up to a window of
 * background pages in flight ahead of it.  So where the path is the
 * bottleneck the source also paces the main channel (SO_MAX_PACING_RATE)
 * a little below the rate the path gave it during precopy, which leaves
 * that queue nearly empty at the price of the same small share of
 * throughput.  Only where the sender had data to send most of the time
 * since the migration began: otherwise its rate says more about its own
 * CPU than about the path, and pacing at it would throttle.
 *
 * During precopy the source's vCPUs share a small host's CPU with the
 * migration, and the receiver can seem to be the bottleneck where, once
 * they stop, the path is.  So where the switch left the send queue
 * unbounded, or the main channel unpaced though pacing was wanted, the
 * source looks again POSTCOPY_RECHECK_MS into postcopy, at what TCP_INFO
 * measured since the switch (postcopy_queue_recheck()), and adds both
 * where the path now limits the sender at the rate precopy measured.
 *
 * A postcopy recovery connects the main channel anew, and a new socket
 * comes with the kernel's defaults.  So the source watches, all through
 * postcopy, for a main channel it has not set up, and gives it the send
 * bound and pacing the old one had, and the second look if it was still
 * due when the migration paused.
 *
 * The functions down to postcopy_queue_recheck() are pure
 * (postcopy-tcp-queue.c): tests/unit drives them; postcopy-tcp-queue-qemu.c
 * applies them to the sockets.  The knobs: postcopy-tune.h.
 */
#ifndef QEMU_POSTCOPY_TCP_QUEUE_H
#define QEMU_POSTCOPY_TCP_QUEUE_H

/* Neither bound goes below or above these, however the path measures. */
#define POSTCOPY_QUEUE_MIN      (64 * 1024)
#define POSTCOPY_QUEUE_MAX      (4 * 1024 * 1024)
/* The destination's receive buffer when nothing else is asked for. */
#define POSTCOPY_RCVBUF_DEFAULT (256 * 1024)
/* Less precopy than this measures no rate worth pacing at. */
#define POSTCOPY_PACE_MIN_BUSY_US 100000
/*
 * How long into postcopy the source takes its second look at the main
 * channel, and how close its rate then must be to precopy's to bound and
 * pace it (postcopy_queue_recheck()): at most ABOVE percent faster, as a
 * path does not speed up when the source's vCPUs stop, and at most BELOW
 * percent slower (half a second into postcopy, a path-limited sender's
 * rate can read somewhat below what precopy measured).
 */
#define POSTCOPY_RECHECK_MS     500
#define POSTCOPY_RECHECK_ABOVE_PERCENT 10
#define POSTCOPY_RECHECK_BELOW_PERCENT 15
/*
 * How often the source looks, during postcopy, whether a recovery gave
 * it a new main channel to set up again (recovery=keep).  A recovery
 * takes longer than this.
 */
#define POSTCOPY_WATCH_MS       100

/*
 * Whether the send queue is worth bounding, from the main channel's
 * history over @elapsed_us: of the @busy_us microseconds it had data to
 * send, @rwnd_us it waited for the receiver's window.  The path is the
 * bottleneck where the sender had data to send at least three quarters of
 * the time and the receiver's window held it back at most half of that.
 * Where the receiver mostly limited it, the backlog is in the receiver's
 * buffer, not in the send queue, and a send bound only throttles.  Where
 * the sender was mostly idle (loopback, or a path faster than the
 * source's CPU), there is no backlog to bound, and a bound only has the
 * sender wake and write in smaller pieces, taking CPU that a host's vCPUs
 * need.  @elapsed_us 0: nothing to compare with, only the window counts.
 */
bool postcopy_queue_send_bound_wanted(uint64_t busy_us, uint64_t rwnd_us,
                                      uint64_t elapsed_us);

/*
 * The source's not-sent bound for a path measured at @rate_bps bytes per
 * second and @rtt_us microseconds of the path's own round trip: one
 * bandwidth-delay product, kept within POSTCOPY_QUEUE_MIN and
 * POSTCOPY_QUEUE_MAX.
 */
uint32_t postcopy_queue_lowat(uint64_t rate_bps, uint32_t rtt_us);

/*
 * The rate to pace the source's main channel at, in bytes per second, or
 * 0 for none: @percent of what it delivered while busy (@bytes_acked over
 * @busy_us), if it was busy at least three quarters of the @elapsed_us
 * since the migration began and at least POSTCOPY_PACE_MIN_BUSY_US.
 * pace=auto has the caller find the path to be the bottleneck first
 * (postcopy_queue_send_bound_wanted()).
 */
uint64_t postcopy_queue_pace_rate(uint64_t bytes_acked, uint64_t busy_us,
                                  uint64_t elapsed_us, unsigned int percent);

/*
 * The second look, POSTCOPY_RECHECK_MS into postcopy, where the switch
 * left the send queue unbounded or the main channel unpaced: what to add.
 */
typedef struct PostcopyQueueRecheck {
    bool bound;                 /* bound the send queue */
    uint64_t pace_bps;          /* pace the main channel at this; 0: not */
    /* The sender's rate over the interval; 0: not busy enough to tell. */
    uint64_t rate_bps;
} PostcopyQueueRecheck;

/*
 * Over the @interval_us since the switch, the main channel was busy
 * @busy_us, @rwnd_us of them waiting for the receiver's window, and
 * @bytes_acked were acknowledged.  The path is the bottleneck, and the
 * send queue worth bounding, if the receiver limited the sender at most
 * half that time (postcopy_queue_send_bound_wanted()) and the sender's
 * rate is at most POSTCOPY_RECHECK_ABOVE_PERCENT above and at most
 * POSTCOPY_RECHECK_BELOW_PERCENT below @precopy_rate_bps,
 * postcopy_queue_pace_rate() at 100% over precopy: a path's rate does not
 * rise when the source's vCPUs stop, a rate that the endpoints' CPU sets
 * does.  Both rates need the sender busy three quarters of the time; 0 for
 * @precopy_rate_bps if it was not.  Then pace too, at @percent of the
 * higher of the two rates; @percent 0: no pacing (pace=off, no preempt, or
 * paced already).
 */
PostcopyQueueRecheck postcopy_queue_recheck(uint64_t busy_us,
                                            uint64_t rwnd_us,
                                            uint64_t bytes_acked,
                                            uint64_t interval_us,
                                            uint64_t precopy_rate_bps,
                                            unsigned int percent);

/* Set both sides' bounds (postcopy-tcp-queue-qemu.c). */

/* Register the source's hook on QEMU's migration notifiers.  Once. */
void postcopy_queue_init(void);
/*
 * Bound the destination's receive queue on the main channel of @mis,
 * unless the tuning says no or the channel is not TCP.  Any thread: it
 * reaches the socket through the return path, under its lock, never
 * through the load thread's file, which a pause may close meanwhile.
 */
void postcopy_queue_bound_incoming(MigrationIncomingState *mis);

#endif
