/*
 * Postcopy: the destination's preempt thread, which loads the pages that
 * faults asked for from the preempt channel (postcopy-preempt-channel.c)
 * until the source ends the stream or the load thread asks it to quit.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "migration.h"
#include "qemu-file.h"
#include "ram.h"
#include "postcopy-ram.h"
#include "postcopy-compat.h"
#include "postcopy-internal.h"
#include "trace.h"

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
    if (postcopy_main_stream_ended(mis)) {
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
        postcopy_in.preempt_started = true;
    }

    /*
     * Held while loading, so that the main load thread can only close the
     * channel (on a network failure) while this thread is paused.
     */
    qemu_mutex_lock(&mis->postcopy_prio_thread_mutex);
    while (!postcopy_preempt_told_to_quit(mis)) {
        int ret = ram_load_postcopy(mis->postcopy_qemufile_dst,
                                    RAM_CHANNEL_POSTCOPY);

        /* 0: the source ended the stream (EOS). */
        if (!ret || postcopy_preempt_told_to_quit(mis)) {
            break;
        }
        preempt_thread_load_failed(mis, ret);
        if (!postcopy_recovery_preempt_park(mis)) {
            break;
        }
    }
    qemu_mutex_unlock(&mis->postcopy_prio_thread_mutex);
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        postcopy_in.preempt_idle = true;
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
    postcopy_in.preempt_idle = false;
    postcopy_in.preempt_parked = false;
    postcopy_in.preempt_draining = false;
    postcopy_in.preempt_started = false;
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
    postcopy_in.preempt_draining = true;
    while ((missing = qatomic_read(&mis->page_requested_count)) &&
           !postcopy_in.preempt_idle) {
        trace_postcopy_preempt_wait_requests(missing);
        if (!qemu_cond_timedwait(&mis->page_request_cond,
                                 &mis->page_request_mutex,
                                 report_every_ms)) {
            warn_report("postcopy: still waiting for %d requested pages "
                        "on the preempt channel", missing);
        }
    }
    trace_postcopy_preempt_drained(missing, postcopy_in.preempt_idle);
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
        parked = postcopy_in.preempt_parked;
        started = postcopy_in.preempt_started;
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
