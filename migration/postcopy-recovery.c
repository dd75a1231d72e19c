/*
 * Postcopy: pause and recovery on the destination.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A pause, in order (savevm.c's postcopy_pause_incoming() drives steps 2
 * to 4 on the load thread; QEMU 10.0 and 10.2 alike):
 *
 *  1. The main channel breaks: the network, migrate-pause, or a thread of
 *     this module that cannot go on (postcopy_pause_for_error() shuts the
 *     return path's socket, which is the main channel's).
 *  2. The load thread's read fails.  It closes the main channel and the
 *     return path (mis->to_src_file is NULL from then on, under
 *     rp_mutex), shuts the preempt channel and takes
 *     postcopy_prio_thread_mutex to close it, which the preempt thread
 *     holds while it loads and gives up when it parks
 *     (postcopy_recovery_preempt_park()) or ends, and sets the state to
 *     postcopy-paused.
 *  3. It calls postcopy_fault_thread_notify(): the pause is counted, every
 *     page handed to the placer is placed or dropped unmarked (so that the
 *     received bitmap the recovery sends is true), and the fault thread is
 *     woken.
 *  4. The fault thread waits (postcopy_recovery_fault_thread_wait()): it
 *     sends no request until the resume, whatever return path it finds.
 *     The load thread waits on postcopy_pause_sem_dst.
 *
 * A recovery, in order:
 *
 *  5. migrate-recover brings a new main channel: migration.c sets
 *     mis->to_src_file to its return path and the state to
 *     postcopy-recover, and wakes the load thread.
 *  6. The source asks, and the load thread sends, each RAMBlock's received
 *     bitmap; the source sends only what is not in it.
 *  7. The resume (loadvm_postcopy_handle_resume()): mis->last_rb is reset,
 *     the state goes back to postcopy-active, the load thread acknowledges
 *     the resume and sends again the requests still pending (mis->last_rb
 *     unlocked: nobody else may send meanwhile), then posts
 *     postcopy_pause_sem_fault once, whatever the number of pauses since
 *     the last resume, and, with preempt, waits for the new preempt
 *     channel and posts postcopy_pause_sem_fast_load.
 *  8. The fault thread sees every pause counted so far resolved, bounds
 *     the new main channel's receive queue as the old one was, and serves
 *     faults again; the preempt thread loads from the new channel.
 *
 * A pause can come again at any step from 5 on (a recovery that fails),
 * and one resume then ends them all.  The source's half of step 8 is in
 * postcopy-tcp-queue-qemu.c (its watch sets a recovery's new main channel
 * up as the old one).
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/error-report.h"
#include "migration.h"
#include "qemu-file.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-tcp-queue.h"
#include "postcopy-inject.h"
#include "trace.h"

void postcopy_pause_for_error(MigrationIncomingState *mis, const char *why,
                              int err)
{
    /* QEMU pauses only once the guest runs; before, the load fails. */
    bool before_run = postcopy_state_get() == POSTCOPY_INCOMING_LISTENING;

    error_report("postcopy: %s: %s; %s", why, strerror(err),
                 before_run ? "the guest has not run here yet, so the "
                 "migration fails" : "the migration pauses for a recovery");
    /* The return path shares the main channel's socket. */
    WITH_QEMU_LOCK_GUARD(&mis->rp_mutex) {
        if (mis->to_src_file) {
            qemu_file_shutdown(mis->to_src_file);
        }
    }
}

/* Step 3. */
void postcopy_fault_thread_notify(MigrationIncomingState *mis)
{
    /*
     * Counted first, whatever the state: a migrate-recover may already
     * have moved it on from postcopy-paused and given the destination a
     * new return path while this thread drains, and the fault thread must
     * not use that path before the resume.
     */
    qatomic_inc(&postcopy_in.pauses);
    if (qemu_thread_is_self(&mis->listen_thread)) {
        if (postcopy_inject_hit(POSTCOPY_INJECT_PAUSE_LATE)) {
            g_usleep(G_USEC_PER_SEC);
        }
        /* The load thread hands no page over until it resumes. */
        postcopy_placer_drain(mis);
    }
    postcopy_fault_thread_wake(mis);
}

/* --- The fault thread ----------------------------------------------------- */

void postcopy_recovery_fault_thread_start(void)
{
    postcopy_in.pauses_seen = qatomic_read(&postcopy_in.pauses);
}

bool postcopy_recovery_under_way(MigrationIncomingState *mis)
{
    MigrationStatus state = qatomic_read(&mis->state);

    return postcopy_is_paused(state) ||
           state == MIGRATION_STATUS_POSTCOPY_RECOVER;
}

bool postcopy_recovery_pause_missed(void)
{
    return qatomic_read(&postcopy_in.pauses) != postcopy_in.pauses_seen;
}

bool postcopy_recovery_fault_thread_wait(MigrationIncomingState *mis,
                                         bool fault_waits)
{
    /*
     * After the post of step 7, every pause counted so far is resolved,
     * unless a new one is under way: the state is read after the count,
     * and a pause sets it first.
     */
    do {
        trace_postcopy_fault_thread_pause();
        while (qemu_sem_timedwait(&mis->postcopy_pause_sem_fault, 100) < 0) {
            if (qatomic_read(&mis->fault_thread_quit)) {
                return false;
            }
            /* No recovery follows a load that failed before RUN. */
            postcopy_ram_check_failed_before_run(mis, fault_waits);
        }
        /* Pairs with the full barrier of the count's increment. */
        postcopy_in.pauses_seen = qatomic_load_acquire(&postcopy_in.pauses);
    } while (postcopy_recovery_under_way(mis));
    trace_postcopy_fault_thread_resume(postcopy_in.pauses_seen);
    /* The recovery brought a new main channel, autotuned again. */
    postcopy_queue_bound_incoming(mis);
    return true;
}

/* --- The preempt thread --------------------------------------------------- */

bool postcopy_recovery_preempt_park(MigrationIncomingState *mis)
{
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        postcopy_in.preempt_idle = true;
        qemu_cond_broadcast(&mis->page_request_cond);
        /*
         * The stop, which sets QUIT under this lock, has begun: it reads
         * preempt_parked after that, so do not park.
         */
        if (postcopy_preempt_told_to_quit(mis)) {
            return false;
        }
        postcopy_in.preempt_parked = true;
    }
    trace_postcopy_preempt_thread_pause();
    /* Step 2: the load thread takes it to close the channel. */
    qemu_mutex_unlock(&mis->postcopy_prio_thread_mutex);
    qemu_sem_wait(&mis->postcopy_pause_sem_fast_load);
    qemu_mutex_lock(&mis->postcopy_prio_thread_mutex);
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        postcopy_in.preempt_parked = false;
        postcopy_in.preempt_idle = false;
    }
    trace_postcopy_preempt_thread_resume();
    return true;
}
