/*
 * Postcopy: bounding the TCP queues ahead of a requested page (see
 * postcopy-tcp-queue.h): the socket options on both sides.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <netinet/tcp.h>
#include "qemu/error-report.h"
#include "qemu/lockable.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "io/channel-socket.h"
#include "io/channel-tls.h"
#include "migration/misc.h"
#include "migration.h"
#include "options.h"
#include "qemu-file.h"
#include "postcopy-compat.h"
#include "postcopy-tcp-queue.h"
#include "postcopy-tune.h"
#include "trace.h"

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
                              info->min_rtt, info->busy_time,
                              info->rwnd_limited);
    return true;
}

/*
 * The path's own round trip, for the send bound: the least the kernel has
 * seen.  The smoothed one also counts the time spent in the queues the
 * bound is there to shorten, up to several times the path's (precopy fills
 * them), and would size the bound to them.  The smoothed one only where
 * the kernel has no least one yet (all ones before its first sample).
 */
static uint32_t queue_path_rtt(const QueueTcpInfo *info)
{
    if (!info->min_rtt || info->min_rtt == UINT32_MAX) {
        return info->base.tcpi_rtt;
    }
    return info->min_rtt;
}

/*
 * Bound what is written to @fd but not sent to @lowat bytes.  Returns the
 * bound set: @lowat, or 0 if none (0 asked, or the kernel refused).
 */
static uint32_t queue_bound_send(int fd, uint32_t lowat)
{
    if (!lowat) {
        return 0;
    }
    if (setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat,
                   sizeof(lowat))) {
        warn_report("postcopy: cannot bound the send queue "
                    "(TCP_NOTSENT_LOWAT): %s", strerror(errno));
        return 0;
    }
    trace_postcopy_queue_bound("source", "notsent-lowat", lowat);
    return lowat;
}

/* Whether pace= wants the main channel paced where the path limits it. */
static bool queue_pace_wanted(void)
{
    const PostcopyTune *tune = postcopy_tune();

    return tune->pace_percent &&
           (tune->pace_forced || migrate_postcopy_preempt());
}

/*
 * Pace @fd at @rate bytes per second.  Returns the rate set: @rate, or 0
 * if none (0 asked, too fast to need pacing, or the kernel refused).
 */
static uint64_t queue_pace(int fd, uint64_t rate)
{
    /* The 32-bit form: every kernel takes it; 4 GB/s needs no pacing. */
    uint32_t rate32;

    if (!rate || rate >= UINT32_MAX) {
        return 0;
    }
    rate32 = rate;
    if (setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &rate32,
                   sizeof(rate32))) {
        warn_report("postcopy: cannot pace the main channel "
                    "(SO_MAX_PACING_RATE): %s", strerror(errno));
        return 0;
    }
    return rate;
}

/*
 * The source's watch over its main channel through postcopy, a main-loop
 * timer that queue_source_notify() arms at the switch.  It does two jobs:
 *
 * - the second look, POSTCOPY_RECHECK_MS into postcopy
 *   (postcopy_queue_recheck()).  During precopy the source's vCPUs compete
 *   with the migration for a small host's CPU, and the receiver's window
 *   can seem to limit a sender that, once they stop, the path limits;
 * - a recovery's new main channel: every POSTCOPY_WATCH_MS it checks
 *   that the main channel is still the socket it set up, and sets up a
 *   new one as the old one was (recovery=keep).
 *
 * The notifier runs under the BQL (postcopy_start() holds it for the
 * notifiers), and the timer in the main loop, which holds it too: nothing
 * else orders them.  The watch ends with postcopy.
 */
typedef struct QueueWatch {
    QEMUTimer *timer;           /* created on first use, then kept */
    /*
     * The main channel's socket it set up.  A new connection can get the
     * old descriptor's number, not its inode while the old one is open.
     */
    int fd;
    ino_t ino;
    uint32_t lowat;             /* the send bound set on it; 0: none */
    uint64_t pace_bps;          /* its pacing rate; 0: none */
    /* The second look, while it is due: from what reading, and when. */
    bool look_due;
    QueueTcpInfo look_from;
    int64_t look_from_ms;       /* QEMU_CLOCK_REALTIME */
    uint64_t precopy_rate;      /* B/s, 0: none worth pacing at */
    /* The share to pace at if the path limits; 0: unwanted or paced. */
    unsigned int pace_percent;
} QueueWatch;

static QueueWatch watch;

static ino_t queue_socket_ino(int fd)
{
    struct stat st;

    return fstat(fd, &st) ? 0 : st.st_ino;
}

/* The second look: what the main channel did since watch.look_from. */
static void queue_watch_look(int64_t now_ms)
{
    const QueueTcpInfo *then = &watch.look_from;
    int64_t interval_ms = MAX(now_ms - watch.look_from_ms, 1);
    uint64_t busy, rwnd, acked;
    PostcopyQueueRecheck verdict;
    QueueTcpInfo now;

    watch.look_due = false;
    if (!queue_read_path(watch.fd, &now) ||
        now.busy_time < then->busy_time ||
        now.rwnd_limited < then->rwnd_limited ||
        now.bytes_acked < then->bytes_acked) {
        return;
    }
    busy = now.busy_time - then->busy_time;
    rwnd = now.rwnd_limited - then->rwnd_limited;
    acked = now.bytes_acked - then->bytes_acked;
    verdict = postcopy_queue_recheck(busy, rwnd, acked, interval_ms * 1000,
                                     watch.precopy_rate, watch.pace_percent);
    trace_postcopy_queue_recheck(busy, rwnd, verdict.rate_bps,
                                 watch.precopy_rate, interval_ms,
                                 verdict.bound, verdict.pace_bps);
    if (verdict.bound && !watch.lowat) {
        uint32_t lowat = postcopy_queue_lowat(now.delivery_rate,
                                              queue_path_rtt(&now));

        watch.lowat = queue_bound_send(watch.fd, lowat);
    }
    if (queue_pace(watch.fd, verdict.pace_bps)) {
        watch.pace_bps = verdict.pace_bps;
        trace_postcopy_queue_pace(verdict.pace_bps, busy, interval_ms);
    }
}

/*
 * A recovery connected the main channel anew: set it up as the old one
 * was, and measure the second look from now if it is still due.
 */
static void queue_watch_new_channel(int fd, ino_t ino, int64_t now_ms)
{
    trace_postcopy_queue_new_channel(watch.lowat, watch.pace_bps,
                                     watch.look_due);
    watch.fd = fd;
    watch.ino = ino;
    watch.lowat = queue_bound_send(fd, watch.lowat);
    watch.pace_bps = queue_pace(fd, watch.pace_bps);
    watch.look_due = watch.look_due && queue_read_path(fd, &watch.look_from);
    watch.look_from_ms = now_ms;
}

/* Whether the watch has anything left to do on a later tick. */
static bool queue_watch_wanted(void)
{
    const PostcopyTune *tune = postcopy_tune();

    return watch.look_due ||
           (!tune->no_recovery_keep && (watch.lowat || watch.pace_bps));
}

static void queue_watch_arm(int64_t now_ms)
{
    int64_t next_ms = now_ms + POSTCOPY_WATCH_MS;
    int64_t look_ms = watch.look_from_ms + POSTCOPY_RECHECK_MS;

    if (watch.look_due && look_ms > now_ms) {
        next_ms = MIN(next_ms, look_ms);
    }
    timer_mod(watch.timer, next_ms);
}

static void queue_watch_run(void *opaque)
{
    const PostcopyTune *tune = postcopy_tune();
    MigrationState *s = migrate_get_current();
    int64_t now_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    MigrationStatus state;
    int fd;
    ino_t ino;

    /* Postcopy's pause and the cleanup swap the channel under this lock. */
    QEMU_LOCK_GUARD(&s->qemu_file_lock);
    /* The migration thread and the return path change it without a lock. */
    state = qatomic_read(&s->state);
    if (!postcopy_source_in_postcopy(state)) {
        return;                 /* postcopy is over, and so is the watch */
    }
    fd = state == MIGRATION_STATUS_POSTCOPY_ACTIVE ?
         queue_tcp_fd(s->to_dst_file) : -1;
    /* Paused, or recovered over another kind of channel: nothing to do. */
    if (fd >= 0) {
        ino = queue_socket_ino(fd);
        if (fd != watch.fd || ino != watch.ino) {
            if (tune->no_recovery_keep) {
                return;
            }
            queue_watch_new_channel(fd, ino, now_ms);
        } else if (watch.look_due &&
                   now_ms >= watch.look_from_ms + POSTCOPY_RECHECK_MS) {
            queue_watch_look(now_ms);
        }
    }
    if (queue_watch_wanted()) {
        queue_watch_arm(now_ms);
    }
}

/*
 * Start watching the main channel @fd, which the switch set up with send
 * bound @lowat and pacing rate @pace_bps (0: none); a second look is due
 * where @look_pace_percent or no bound asks for one (queue_watch_look()).
 * @info: the switch's reading, NULL if the kernel gave none.
 */
static void queue_watch_start(int fd, uint32_t lowat, uint64_t pace_bps,
                              const QueueTcpInfo *info,
                              uint64_t precopy_rate,
                              unsigned int look_pace_percent)
{
    const PostcopyTune *tune = postcopy_tune();
    int64_t now_ms = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    if (!watch.timer) {
        watch.timer = timer_new_ms(QEMU_CLOCK_REALTIME, queue_watch_run,
                                   NULL);
    }
    timer_del(watch.timer);
    watch.fd = fd;
    watch.ino = queue_socket_ino(fd);
    watch.lowat = lowat;
    watch.pace_bps = pace_bps;
    watch.look_due = info && !tune->no_recheck &&
                     ((!lowat && !tune->lowat) ||
                      (look_pace_percent && precopy_rate));
    if (info) {
        watch.look_from = *info;
    }
    watch.look_from_ms = now_ms;
    watch.precopy_rate = precopy_rate;
    watch.pace_percent = look_pace_percent;
    if (queue_watch_wanted()) {
        queue_watch_arm(now_ms);
    }
}

/*
 * postcopy_start() calls the migration notifiers with PRECOPY_DONE in the
 * DEVICE state, after the device state and before any page is requested;
 * the end of a precopy migration calls them in another state.
 */
static int queue_source_notify(NotifierWithReturn *notifier,
                               MigrationEvent *e, Error **errp)
{
    const PostcopyTune *tune = postcopy_tune();
    MigrationState *s = migrate_get_current();
    int64_t elapsed_ms = MAX(qemu_clock_get_ms(QEMU_CLOCK_REALTIME) -
                             s->start_time, 0);
    bool path_limited;
    uint64_t precopy_rate, pace_rate = 0;
    uint32_t lowat = 0;
    QueueTcpInfo info;
    int fd;

    if (e->type != MIG_EVENT_PRECOPY_DONE ||
        s->state != MIGRATION_STATUS_DEVICE || !migrate_postcopy_ram() ||
        tune->no_send) {
        return 0;
    }
    fd = queue_tcp_fd(s->to_dst_file);
    if (fd < 0) {
        return 0;
    }
    if (!queue_read_path(fd, &info)) {
        /* An old kernel: the smallest bound, and no pacing. */
        lowat = tune->lowat ? tune->lowat : POSTCOPY_QUEUE_MIN;
        queue_watch_start(fd, queue_bound_send(fd, lowat), 0, NULL, 0, 0);
        return 0;
    }
    path_limited = !tune->recheck_only &&
                   postcopy_queue_send_bound_wanted(info.busy_time,
                                                    info.rwnd_limited,
                                                    elapsed_ms * 1000);
    if (tune->lowat) {
        lowat = tune->lowat;
    } else if (path_limited || tune->send_always) {
        lowat = postcopy_queue_lowat(info.delivery_rate,
                                     queue_path_rtt(&info));
    } else {
        trace_postcopy_queue_bound("source", tune->recheck_only ?
                                   "left to the second look, no bound" :
                                   "path not the bottleneck, no bound", 0);
    }
    lowat = queue_bound_send(fd, lowat);
    precopy_rate = postcopy_queue_pace_rate(info.bytes_acked, info.busy_time,
                                            elapsed_ms * 1000, 100);
    /* The rate of a receiver-limited sender is the receiver's. */
    if (queue_pace_wanted() && (path_limited || tune->pace_forced)) {
        pace_rate = precopy_rate * tune->pace_percent / 100;
        trace_postcopy_queue_pace(pace_rate, info.busy_time, elapsed_ms);
        pace_rate = queue_pace(fd, pace_rate);
    }
    queue_watch_start(fd, lowat, pace_rate, &info, precopy_rate,
                      queue_pace_wanted() && !pace_rate ?
                      tune->pace_percent : 0);
    return 0;
}

void postcopy_queue_bound_incoming(MigrationIncomingState *mis)
{
    const PostcopyTune *tune = postcopy_tune();
    int rcvbuf = tune->rcvbuf ? tune->rcvbuf : POSTCOPY_RCVBUF_DEFAULT;
    int fd;

    if (tune->no_receive) {
        return;
    }
    /*
     * The return path shares the main channel's socket, and a pause closes
     * it under this lock: the socket stays open while we hold it.
     */
    QEMU_LOCK_GUARD(&mis->rp_mutex);
    fd = queue_tcp_fd(mis->to_src_file);
    if (fd < 0) {
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

void postcopy_queue_init(void)
{
    migration_add_notifier(&queue_notifier, queue_source_notify);
}
