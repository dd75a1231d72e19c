/*
 * Postcopy: bounding the queues ahead of a requested page (see
 * postcopy-queue.h): the socket options on both sides.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <netinet/tcp.h>
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "io/channel-socket.h"
#include "io/channel-tls.h"
#include "migration/misc.h"
#include "migration.h"
#include "options.h"
#include "qemu-file.h"
#include "postcopy-queue.h"
#include "trace.h"

/* Written once by postcopy_queue_init() at start-up, then only read. */
static PostcopyQueueTune queue_tune;
static NotifierWithReturn queue_notifier;

/* The TCP socket under @f's channel (through TLS), or -1. */
static int queue_tcp_fd(QEMUFile *f)
{
    QIOChannel *ioc = f ? qemu_file_get_ioc(f) : NULL;
    QIOChannelSocket *sioc;

    if (ioc && object_dynamic_cast(OBJECT(ioc), TYPE_QIO_CHANNEL_TLS)) {
        ioc = QIO_CHANNEL_TLS(ioc)->master;
    }
    if (!ioc || !object_dynamic_cast(OBJECT(ioc), TYPE_QIO_CHANNEL_SOCKET)) {
        return -1;
    }
    sioc = QIO_CHANNEL_SOCKET(ioc);
    if (sioc->localAddr.ss_family != AF_INET &&
        sioc->localAddr.ss_family != AF_INET6) {
        return -1;
    }
    return sioc->fd;
}

/*
 * glibc's struct tcp_info stops at tcpi_total_retrans; the kernel's goes
 * on (include/uapi/linux/tcp.h, an ABI).  <linux/tcp.h> cannot join
 * <netinet/tcp.h>, which osdep.h brings in, so the tail is spelled here,
 * up to the window-limited time (Linux 4.10); an older kernel answers
 * shorter, and then the bound is the smallest one.
 */
typedef struct QueueTcpInfo {
    struct tcp_info base;
    uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
    uint32_t segs_out, segs_in, notsent_bytes, min_rtt;
    uint32_t data_segs_in, data_segs_out;
    uint64_t delivery_rate;             /* bytes per second */
    /* Linux 4.10: microseconds busy sending, and limited by the window */
    uint64_t busy_time, rwnd_limited, sndbuf_limited;
} QueueTcpInfo;

QEMU_BUILD_BUG_ON(offsetof(QueueTcpInfo, delivery_rate) != 160);
QEMU_BUILD_BUG_ON(offsetof(QueueTcpInfo, rwnd_limited) != 176);

/* The main channel's measurements so far; false if the kernel has none. */
static bool queue_read_path(int fd, QueueTcpInfo *info)
{
    socklen_t len = sizeof(*info);

    memset(info, 0, sizeof(*info));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len) ||
        len < sizeof(*info)) {
        return false;
    }
    trace_postcopy_queue_path(info->delivery_rate, info->base.tcpi_rtt,
                              info->busy_time, info->rwnd_limited);
    return true;
}

/* Bound what is written to @fd but not sent to @lowat bytes. */
static bool queue_bound_send(int fd, uint32_t lowat)
{
    if (setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat,
                   sizeof(lowat))) {
        warn_report("postcopy: cannot bound the send queue "
                    "(TCP_NOTSENT_LOWAT): %s", strerror(errno));
        return false;
    }
    trace_postcopy_queue_bound("source", "notsent-lowat", lowat);
    return true;
}

/* Whether pace= wants the main channel paced where the path limits it. */
static bool queue_pace_wanted(void)
{
    return queue_tune.pace_percent &&
           (queue_tune.pace_forced || migrate_postcopy_preempt());
}

/* Pace @fd at @rate bytes per second; false if not (0: none asked). */
static bool queue_pace(int fd, uint64_t rate)
{
    /* The 32-bit form: every kernel takes it; 4 GB/s needs no pacing. */
    uint32_t rate32;

    if (!rate || rate >= UINT32_MAX) {
        return false;
    }
    rate32 = rate;
    if (setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &rate32,
                   sizeof(rate32))) {
        warn_report("postcopy: cannot pace the main channel "
                    "(SO_MAX_PACING_RATE): %s", strerror(errno));
        return false;
    }
    return true;
}

/*
 * The second look at the main channel, POSTCOPY_RECHECK_MS into postcopy
 * (postcopy_queue_recheck()).  During precopy the source's vCPUs compete
 * with the migration for a small host's CPU, and the receiver's window can
 * seem to limit a sender that, once they stop, the path limits: on the
 * emulated 1 Gbit/s link the window held the sender back 28-85% of its
 * busy time in precopy and 0-25% in the first half second of postcopy
 * (docs/bench/fault-path.md, "A second look").
 *
 * queue_source_notify() arms it and queue_recheck_run() reads it; the
 * first runs under the BQL (postcopy_start() holds it for the notifiers)
 * and the second in the main loop, which holds it too: nothing else
 * orders them.
 */
typedef struct QueueRecheck {
    QEMUTimer *timer;           /* created on first use, then kept */
    int fd;                     /* the main channel's socket at the switch */
    QueueTcpInfo at_switch;
    int64_t at_switch_ms;       /* QEMU_CLOCK_REALTIME */
    uint64_t precopy_rate;      /* B/s, 0: none worth pacing at */
    bool bounded;               /* by the switch */
    /* The share to pace at if the path limits; 0: unwanted or paced. */
    unsigned int pace_percent;
} QueueRecheck;

static QueueRecheck recheck;

static void queue_recheck_run(void *opaque)
{
    MigrationState *s = migrate_get_current();
    const QueueTcpInfo *then = &recheck.at_switch;
    int64_t interval_ms = MAX(qemu_clock_get_ms(QEMU_CLOCK_REALTIME) -
                              recheck.at_switch_ms, 1);
    uint64_t busy, rwnd, acked;
    PostcopyQueueRecheck verdict;
    QueueTcpInfo now;

    /* Postcopy's pause and the cleanup swap the channel under this lock. */
    QEMU_LOCK_GUARD(&s->qemu_file_lock);
    if (s->state != MIGRATION_STATUS_POSTCOPY_ACTIVE ||
        queue_tcp_fd(s->to_dst_file) != recheck.fd ||
        !queue_read_path(recheck.fd, &now) ||
        now.busy_time < then->busy_time ||
        now.rwnd_limited < then->rwnd_limited ||
        now.bytes_acked < then->bytes_acked) {
        /* Over, paused, or another connection since: nothing to compare. */
        return;
    }
    busy = now.busy_time - then->busy_time;
    rwnd = now.rwnd_limited - then->rwnd_limited;
    acked = now.bytes_acked - then->bytes_acked;
    verdict = postcopy_queue_recheck(busy, rwnd, acked, interval_ms * 1000,
                                     recheck.precopy_rate,
                                     recheck.pace_percent);
    trace_postcopy_queue_recheck(busy, rwnd, verdict.rate_bps,
                                 recheck.precopy_rate, interval_ms,
                                 verdict.bound, verdict.pace_bps);
    if (verdict.bound && !recheck.bounded) {
        queue_bound_send(recheck.fd,
                         postcopy_queue_lowat(now.delivery_rate,
                                              now.base.tcpi_rtt));
    }
    if (queue_pace(recheck.fd, verdict.pace_bps)) {
        trace_postcopy_queue_pace(verdict.pace_bps, busy, interval_ms);
    }
}

static void queue_recheck_arm(int fd, const QueueTcpInfo *info,
                              uint64_t precopy_rate, bool bounded,
                              unsigned int pace_percent)
{
    if (!recheck.timer) {
        recheck.timer = timer_new_ms(QEMU_CLOCK_REALTIME, queue_recheck_run,
                                     NULL);
    }
    recheck.fd = fd;
    recheck.at_switch = *info;
    recheck.at_switch_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    recheck.precopy_rate = precopy_rate;
    recheck.bounded = bounded;
    recheck.pace_percent = pace_percent;
    timer_mod(recheck.timer, recheck.at_switch_ms + POSTCOPY_RECHECK_MS);
}

/*
 * postcopy_start() calls the migration notifiers with PRECOPY_DONE in the
 * DEVICE state, after the device state and before any page is requested;
 * the end of a precopy migration calls them in another state.
 */
static int queue_source_notify(NotifierWithReturn *notifier,
                               MigrationEvent *e, Error **errp)
{
    MigrationState *s = migrate_get_current();
    int64_t elapsed_ms = MAX(qemu_clock_get_ms(QEMU_CLOCK_REALTIME) -
                             s->start_time, 0);
    bool path_limited, bounded = false, paced = false;
    uint64_t precopy_rate, pace_rate;
    unsigned int late_pace_percent;
    QueueTcpInfo info;
    int fd;

    if (e->type != MIG_EVENT_PRECOPY_DONE ||
        s->state != MIGRATION_STATUS_DEVICE || !migrate_postcopy_ram() ||
        queue_tune.no_send) {
        return 0;
    }
    fd = queue_tcp_fd(s->to_dst_file);
    if (fd < 0) {
        return 0;
    }
    if (!queue_read_path(fd, &info)) {
        /* An old kernel: the smallest bound, and no pacing. */
        queue_bound_send(fd, queue_tune.lowat ? queue_tune.lowat
                                              : POSTCOPY_QUEUE_MIN);
        return 0;
    }
    path_limited = !queue_tune.recheck_only &&
                   postcopy_queue_send_bound_wanted(info.busy_time,
                                                    info.rwnd_limited);
    if (queue_tune.lowat) {
        bounded = queue_bound_send(fd, queue_tune.lowat);
    } else if (path_limited || queue_tune.send_always) {
        bounded = queue_bound_send(fd,
                                   postcopy_queue_lowat(info.delivery_rate,
                                                        info.base.tcpi_rtt));
    } else {
        trace_postcopy_queue_bound("source", queue_tune.recheck_only ?
                                   "left to the second look, no bound" :
                                   "receiver-limited, no bound", 0);
    }
    precopy_rate = postcopy_queue_pace_rate(info.bytes_acked, info.busy_time,
                                            elapsed_ms * 1000, 100);
    /* The rate of a receiver-limited sender is the receiver's. */
    if (queue_pace_wanted() && (path_limited || queue_tune.pace_forced)) {
        pace_rate = precopy_rate * queue_tune.pace_percent / 100;
        trace_postcopy_queue_pace(pace_rate, info.busy_time, elapsed_ms);
        paced = queue_pace(fd, pace_rate);
    }
    late_pace_percent = queue_pace_wanted() && !paced ?
                        queue_tune.pace_percent : 0;
    if (!queue_tune.no_recheck &&
        ((!bounded && !queue_tune.lowat) ||
         (late_pace_percent && precopy_rate))) {
        queue_recheck_arm(fd, &info, precopy_rate, bounded,
                          late_pace_percent);
    }
    return 0;
}

void postcopy_queue_bound_incoming(QEMUFile *f)
{
    int fd = queue_tcp_fd(f);
    int rcvbuf = queue_tune.rcvbuf ? queue_tune.rcvbuf
                                   : POSTCOPY_RCVBUF_DEFAULT;

    if (fd < 0 || queue_tune.no_receive) {
        return;
    }
    /* The kernel doubles it for its own bookkeeping, and stops autotuning. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf))) {
        warn_report("postcopy: cannot bound the receive queue (SO_RCVBUF): "
                    "%s", strerror(errno));
        return;
    }
    trace_postcopy_queue_bound("destination", "rcvbuf", rcvbuf);
}

unsigned int postcopy_queue_prepage(void)
{
    return queue_tune.prepage;
}

bool postcopy_queue_placer_wanted(void)
{
    return !queue_tune.no_placer;
}

bool postcopy_queue_placer_always(void)
{
    return queue_tune.placer_always;
}

void postcopy_queue_init(void)
{
    Error *err = NULL;

    if (!postcopy_queue_tune_parse(g_getenv("QEMU_POSTCOPY_TUNE"),
                                   &queue_tune, &err)) {
        error_prepend(&err, "QEMU_POSTCOPY_TUNE ignored: ");
        warn_report_err(err);
    }
    migration_add_notifier(&queue_notifier, queue_source_notify);
}
