/*
 * Postcopy: the preempt channel, a second connection that carries the pages
 * faults asked for, so that they do not queue behind background pages.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Source: postcopy_preempt_setup() starts an asynchronous connect (then a
 * TLS handshake when the migration uses TLS); the migration thread waits
 * for it in postcopy_preempt_establish_channel().  Both outcomes post
 * s->postcopy_qemufile_src_sem once; a NULL s->postcopy_qemufile_src
 * tells failure.
 *
 * Destination: the channel arrives through postcopy_preempt_new_channel();
 * the preempt thread loads pages from it until the source ends the stream
 * or the main load thread asks it to quit.
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "io/channel-tls.h"
#include "migration.h"
#include "options.h"
#include "qemu-file.h"
#include "ram.h"
#include "socket.h"
#include "tls.h"
#include "yank_functions.h"
#include "postcopy-ram.h"
#include "postcopy-compat.h"
#include "postcopy-internal.h"
#include "trace.h"

/* --- Source --------------------------------------------------------------- */

/* The connect finished, well (@err NULL) or not; wake the waiter. */
static void preempt_channel_ready(MigrationState *s, QIOChannel *ioc,
                                  Error *err)
{
    if (err) {
        error_prepend(&err, "postcopy: preempt channel: ");
        migrate_set_error(s, err);
        trace_postcopy_preempt_channel_failed(error_get_pretty(err));
        error_free(err);
    } else {
        migration_ioc_register_yank(ioc);
        s->postcopy_qemufile_src = qemu_file_new_output(ioc);
        trace_postcopy_preempt_channel_ready("source");
    }
    qemu_sem_post(&s->postcopy_qemufile_src_sem);
}

static void preempt_tls_handshake_done(QIOTask *task, gpointer opaque)
{
    g_autoptr(QIOChannel) ioc = QIO_CHANNEL(qio_task_get_source(task));
    Error *err = NULL;

    qio_task_propagate_error(task, &err);
    preempt_channel_ready(opaque, ioc, err);
}

static void preempt_connected(QIOTask *task, gpointer opaque)
{
    g_autoptr(QIOChannel) ioc = QIO_CHANNEL(qio_task_get_source(task));
    MigrationState *s = opaque;
    QIOChannelTLS *tls;
    Error *err = NULL;

    if (qio_task_propagate_error(task, &err) ||
        !migrate_channel_requires_tls_upgrade(ioc)) {
        preempt_channel_ready(s, ioc, err);
        return;
    }
    tls = migration_tls_client_create(ioc, s->hostname, &err);
    if (!tls) {
        preempt_channel_ready(s, ioc, err);
        return;
    }
    trace_postcopy_preempt_tls_handshake();
    qio_channel_set_name(QIO_CHANNEL(tls), "migration-tls-preempt");
    /* The handshake's callback finishes the job. */
    qio_channel_tls_handshake(tls, preempt_tls_handshake_done, s, NULL, NULL);
}

void postcopy_preempt_setup(MigrationState *s)
{
    trace_postcopy_preempt_connect();
    socket_send_channel_create(preempt_connected, s);
}

int postcopy_preempt_establish_channel(MigrationState *s)
{
    bool connect_here;

    if (!migrate_postcopy_preempt()) {
        return 0;
    }
    /*
     * QEMU 7.1 and 7.2 machines connected the channel during setup, so the
     * connect is only started here for newer ones.
     */
    connect_here = !s->preempt_pre_7_2;
    trace_postcopy_preempt_establish(connect_here);
    if (connect_here && migrate_has_error(s)) {
        /*
         * Paused or failed since this recovery began (migration_connect()
         * clears the error): open no new channel.  QEMU 10.0's destination
         * takes a connection that lands while it pauses for a fresh
         * migration, and aborts (scripts/pcram/channel_race.py).
         */
        trace_postcopy_preempt_channel_failed("the migration already failed");
        return -1;
    }
    if (connect_here) {
        postcopy_preempt_setup(s);
    }
    /* Posted by preempt_channel_ready() on success and on failure alike. */
    qemu_sem_wait(&s->postcopy_qemufile_src_sem);
    if (!s->postcopy_qemufile_src) {
        return -1;
    }
    return 0;
}

/* --- Destination ---------------------------------------------------------- */

void postcopy_preempt_new_channel(MigrationIncomingState *mis, QEMUFile *file)
{
    /* Its thread blocks in reads, like the main channel's. */
    postcopy_file_set_blocking(file, true);
    mis->postcopy_qemufile_dst = file;
    qemu_sem_post(&mis->postcopy_qemufile_dst_done);
    trace_postcopy_preempt_channel_ready("destination");
}

static bool preempt_thread_told_to_quit(MigrationIncomingState *mis)
{
    return qatomic_read(&mis->preempt_thread_status) == PREEMPT_THREAD_QUIT;
}

/*
 * What the preempt thread and the end of postcopy on the load thread
 * (postcopy_preempt_drain(), postcopy_preempt_thread_stop()) tell each
 * other, all under mis->page_request_mutex, with page_request_cond
 * signalled on each change the drain waits for:
 *
 * preempt_idle: the thread places nothing more: a load from the channel
 *   failed (until a recovery hands over a new channel), or it has ended.
 * preempt_parked: and it waits on postcopy_pause_sem_fast_load for that,
 *   which a recovery posts, or the stop, which finds it parked.
 * preempt_draining: the main stream has ended and the load thread waits
 *   for the requested pages still on this channel.  The source sends
 *   nothing more (it fails rather than pauses once all of RAM is sent):
 *   a failure now loses those pages, and no pause follows.
 * preempt_started: the thread has its first channel; before, it waits on
 *   postcopy_qemufile_dst_done, which the stop posts if it never came.
 */
static bool preempt_idle;
static bool preempt_parked;
static bool preempt_draining;
static bool preempt_started;

/*
 * The channel broke, or a page from it could not be placed.  Drop the
 * channel's mutex so that the main load thread can close it, and wait
 * until a recovery hands over a new channel or the stop wakes us.  False
 * when the thread must quit instead.
 */
static bool preempt_thread_pause(MigrationIncomingState *mis)
{
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        preempt_idle = true;
        qemu_cond_broadcast(&mis->page_request_cond);
        /*
         * The stop, which sets QUIT under this lock, has begun: it reads
         * preempt_parked after that, so do not park.
         */
        if (preempt_thread_told_to_quit(mis)) {
            return false;
        }
        preempt_parked = true;
    }
    trace_postcopy_preempt_thread_pause();
    qemu_mutex_unlock(&mis->postcopy_prio_thread_mutex);
    qemu_sem_wait(&mis->postcopy_pause_sem_fast_load);
    qemu_mutex_lock(&mis->postcopy_prio_thread_mutex);
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        preempt_parked = false;
        preempt_idle = false;
    }
    trace_postcopy_preempt_thread_resume();
    return true;
}

static bool preempt_main_stream_ended(MigrationIncomingState *mis)
{
    QEMU_LOCK_GUARD(&mis->page_request_mutex);
    return preempt_draining;
}

/*
 * Loading from the channel failed with @ret.  If the channel itself broke,
 * the load thread pauses the migration on its own (it checks this
 * channel's error too, and a pause shuts the channel).  Anything else (a
 * page that could not be placed, a stream that makes no sense) leaves the
 * channel readable, and no one would pause: the source has already
 * cleared the dirty bits of the pages it sent here, so every later
 * requested page would wait on a channel nobody reads.  Pause then;
 * unless the main stream has ended, when no pause can follow and the
 * drain reports the pages lost.
 */
static void preempt_thread_load_failed(MigrationIncomingState *mis, int ret)
{
    QEMUFile *f = mis->postcopy_qemufile_dst;
    int channel_err = qemu_file_get_error(f);

    trace_postcopy_preempt_load_failed(ret, channel_err);
    if (channel_err) {
        return;
    }
    qemu_file_set_error(f, ret);
    if (preempt_main_stream_ended(mis)) {
        error_report("postcopy: a page from the preempt channel could not "
                     "be loaded after the main stream ended: %s",
                     strerror(-ret));
        return;
    }
    postcopy_pause_for_error(mis, "loading a page from the preempt channel "
                             "failed", -ret);
}

/* Declared in ram.h. */
void *postcopy_preempt_thread(void *opaque)
{
    MigrationIncomingState *mis = opaque;

    rcu_register_thread();
    trace_postcopy_preempt_thread_start();
    postcopy_thread_sync_signal(mis);

    /* The source connects asynchronously: wait for the channel. */
    qemu_sem_wait(&mis->postcopy_qemufile_dst_done);
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        preempt_started = true;
    }

    /*
     * Held while loading, so that the main load thread can only close the
     * channel (on a network failure) while this thread is paused.
     */
    qemu_mutex_lock(&mis->postcopy_prio_thread_mutex);
    while (!preempt_thread_told_to_quit(mis)) {
        int ret = ram_load_postcopy(mis->postcopy_qemufile_dst,
                                    RAM_CHANNEL_POSTCOPY);

        /* 0: the source ended the stream (EOS). */
        if (!ret || preempt_thread_told_to_quit(mis)) {
            break;
        }
        preempt_thread_load_failed(mis, ret);
        if (!preempt_thread_pause(mis)) {
            break;
        }
    }
    qemu_mutex_unlock(&mis->postcopy_prio_thread_mutex);
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        preempt_idle = true;
        qemu_cond_broadcast(&mis->page_request_cond);
    }

    rcu_unregister_thread();
    trace_postcopy_preempt_thread_exit();
    return NULL;
}

/*
 * The status is set before the thread starts, which reads it (ThreadSanitizer
 * caught the write after the thread's first read).  Written by the load
 * thread, read by the preempt thread and the placer: atomics throughout.
 */
void postcopy_preempt_thread_start(MigrationIncomingState *mis)
{
    preempt_idle = false;
    preempt_parked = false;
    preempt_draining = false;
    preempt_started = false;
    qatomic_set(&mis->preempt_thread_status, PREEMPT_THREAD_CREATED);
    postcopy_thread_create(mis, &mis->postcopy_prio_thread,
                           MIGRATION_THREAD_DST_PREEMPT,
                           postcopy_preempt_thread, QEMU_THREAD_JOINABLE);
}

/*
 * The main stream has ended, but pages that faults asked for may still be
 * on their way over the preempt channel: wait for the last one (its
 * placement signals page_request_cond).  The wait cannot be cut short
 * without losing those pages, so a long one is reported rather than
 * abandoned; but an idle thread places nothing more, and the source sends
 * nothing more.  False when pages are lost that way.
 */
bool postcopy_preempt_drain(MigrationIncomingState *mis)
{
    const int64_t report_every_ms = 10 * 1000;
    int missing;

    QEMU_LOCK_GUARD(&mis->page_request_mutex);
    preempt_draining = true;
    while ((missing = qatomic_read(&mis->page_requested_count)) &&
           !preempt_idle) {
        trace_postcopy_preempt_wait_requests(missing);
        if (!qemu_cond_timedwait(&mis->page_request_cond,
                                 &mis->page_request_mutex,
                                 report_every_ms)) {
            warn_report("postcopy: still waiting for %d requested pages "
                        "on the preempt channel", missing);
        }
    }
    trace_postcopy_preempt_drained(missing, preempt_idle);
    return !missing;
}

/*
 * Drain, then close the channel and stop the thread, waking it if it is
 * parked.  False when requested pages were lost (postcopy_preempt_drain()).
 */
bool postcopy_preempt_thread_stop(MigrationIncomingState *mis)
{
    bool drained, parked, started;

    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        qatomic_set(&mis->preempt_thread_status, PREEMPT_THREAD_QUIT);
    }
    drained = postcopy_preempt_drain(mis);
    if (mis->postcopy_qemufile_dst) {
        qemu_file_shutdown(mis->postcopy_qemufile_dst);
    }
    /* A thread not parked by now sees QUIT and never parks. */
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        parked = preempt_parked;
        started = preempt_started;
    }
    if (parked) {
        qemu_sem_post(&mis->postcopy_pause_sem_fast_load);
    }
    /*
     * The channel never came (the migration failed before it did): the
     * thread still waits for it, and finds QUIT when woken.  (A channel
     * that comes right now posts too; the thread takes one post.)
     */
    if (!started) {
        qemu_sem_post(&mis->postcopy_qemufile_dst_done);
    }
    qemu_thread_join(&mis->postcopy_prio_thread);
    qatomic_set(&mis->preempt_thread_status, PREEMPT_THREAD_NONE);
    return drained;
}

/*
 * The fault point preempt-at-end: hold a placement until the main
 * stream has ended (a page requested at the end, still on this channel),
 * or at most @max_ms.
 */
void postcopy_preempt_hold_to_end(MigrationIncomingState *mis, int max_ms)
{
    while (!preempt_main_stream_ended(mis) && max_ms > 0) {
        g_usleep(10 * 1000);
        max_ms -= 10;
    }
}
