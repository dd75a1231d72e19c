/*
 * Postcopy: the destination's state that this module owns, beside QEMU's
 * MigrationIncomingState.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One instance, postcopy_in, for the process's incoming migration.  The
 * table says which file owns each field (writes it, but for the preempt
 * flags, which the preempt thread and its park in the recovery share),
 * which threads touch it and what orders the accesses.  "load" is the
 * thread that loads the main channel (the listen thread after LISTEN),
 * "fault", "preempt" and "placer" the module's threads, "placing" any
 * thread that places a page (load, placer, preempt, fault for zero
 * pages), "main" the main loop under the BQL.
 *
 * field                 file            written by    read by    ordered by
 * --------------------- --------------- ------------- ---------- ----------
 * fds_open              -ram.c          load          load       one thread
 * pauses                -recovery.c     load          fault      atomic inc;
 *                                                                 acquire
 * pauses_seen           -recovery.c     fault         fault      one thread
 * shared_request_failed -fault.c        fault         fault      one thread
 * shared_unresolved_    -fault.c        fault         fault      one thread
 * reported
 * pages_missing         -place.c        load at       load,      page_request_
 *                                       LISTEN, then  placing    mutex for a
 *                                       placing                  placement;
 *                                                                atomic reads
 * placer                -placer-qemu.c  load          fault,     set before
 *                                                     placing    the fault
 *                                                                thread starts,
 *                                                                freed after
 *                                                                its join
 * preempt_idle,         -preempt.c,     preempt, load preempt,   page_request_
 * preempt_parked,       -recovery.c                   load       mutex, with
 * preempt_draining,                                              page_request_
 * preempt_started                                                cond (reset
 *                                                                before the
 *                                                                thread is
 *                                                                created)
 * shared_fds_generation -shared.c       main          fault      shared_fds_
 *                                                                lock to
 *                                                                write; atomic
 *                                                                read
 * shared_waiters,       -shared.c       fault, placing, fault,   page_request_
 * shared_waiter_count                   main (a fd     placing   mutex; the
 *                                       unregistered,            count also
 *                                       cleanup)                 read
 *                                                                atomically
 * shared_wake_failure_  -shared.c       placing       placing    atomic xchg
 * reported
 * load_failed_before_   -ram.c          load (10.2)   fault      atomic; full
 * run                                                            barriers,
 *                                                                paired with
 *                                                                the request
 *                                                                count
 *
 * The cleanup writes what "load" writes after joining the module's
 * threads, on the main thread where QEMU runs it there (10.2, and a
 * migration that never reached LISTEN): the joins order those writes.
 *
 * Lock order: mis->page_request_mutex, then shared_fds_lock.  Functions
 * that must be called with a lock held assert it (postcopy_assert_held()).
 *
 * The module's other mutable globals, each for a reason:
 *  - its other state struct, the huge-page rebuild's (PostcopyCollapse in
 *    postcopy-collapse-qemu.c, with its own table): it outlives the
 *    migration and stops on QEMU's exit and on an outgoing migration;
 *  - what QEMU's contract forces, its calls into the module taking no
 *    context to keep it in: the postcopy state and the notifiers
 *    (postcopy_state_get()/set(), postcopy_add_notifier(), in
 *    postcopy-notify.c), the source's discard batch
 *    (postcopy_discard_send_init()/range()/finish(), in
 *    postcopy-discard-qemu.c), and the source's migration notifier with
 *    its watch over the main channel (postcopy-tcp-queue-qemu.c: the main
 *    loop's, under the BQL);
 *  - the process's configuration, read once and then only read: the
 *    tuning (postcopy-tune.c) and fault points (postcopy-inject.c, whose
 *    pass counts are atomic) from the environment, and the kernel's
 *    userfaultfd features (postcopy-probe.c).
 */
#ifndef QEMU_POSTCOPY_INCOMING_H
#define QEMU_POSTCOPY_INCOMING_H

#include "qemu/thread.h"

typedef struct PostcopyIncoming {
    /* mis->userfault_fd and mis->userfault_event_fd are open. */
    bool fds_open;

    /*
     * Pauses of the migration so far, counted when the load thread
     * pauses; @pauses_seen, those the resumes that the fault thread
     * waited for resolved.  Different: a pause the fault thread has not
     * waited for, even if a recovery already gave it a new return path.
     */
    unsigned int pauses;
    unsigned int pauses_seen;

    /*
     * The request that another process's fault handler made through
     * postcopy_request_shared_page() failed as QEMU's own can, which a
     * recovery mends, rather than in the handler itself.
     */
    bool shared_request_failed;
    /* A fault another process could not resolve has been reported. */
    bool shared_unresolved_reported;

    /* The placer thread's state, or NULL. */
    struct PostcopyPlacer *placer;

    /*
     * What the preempt thread and the end of postcopy on the load thread
     * tell each other; page_request_cond is signalled on each change the
     * drain waits for.
     * preempt_idle: the thread places nothing more: a load from the
     *   channel failed (until a recovery hands over a new channel), or it
     *   has ended.
     * preempt_parked: and it waits on postcopy_pause_sem_fast_load for
     *   that, which a recovery posts, or the stop, which finds it parked.
     * preempt_draining: the main stream has ended and the load thread
     *   waits for the requested pages still on this channel.  The source
     *   sends nothing more (it fails rather than pauses once all of RAM is
     *   sent): a failure now loses those pages, and no pause follows.
     * preempt_started: the thread has its first channel; before, it waits
     *   on postcopy_qemufile_dst_done, which the stop posts if it never
     *   came.
     */
    bool preempt_idle;
    bool preempt_parked;
    bool preempt_draining;
    bool preempt_started;

    /*
     * Guards changes to mis->postcopy_remote_fds and the generation, which
     * moves on each, so that the fault thread knows to copy the list again.
     */
    QemuMutex shared_fds_lock;
    unsigned int shared_fds_generation;
    /* QEMU's host address of a page -> the other processes' waiters. */
    GHashTable *shared_waiters;
    /* How many are recorded: placement looks no further while it is 0. */
    unsigned int shared_waiter_count;
    /* A failed wake is reported once; each one is traced. */
    bool shared_wake_failure_reported;

    /*
     * The load failed before RUN (postcopy_ram_load_failed()): no page can
     * come any more, and a fault left waiting ends the destination
     * (postcopy_ram_check_failed_before_run()).
     */
    bool load_failed_before_run;

    /*
     * Target pages of guest RAM not in place yet: counted at LISTEN, then
     * lowered by every placement.  Written on every placement: a cache
     * line of its own, away from the fields read on every request and
     * hand-over.
     */
    uint64_t pages_missing QEMU_ALIGNED(64);
} PostcopyIncoming;

extern PostcopyIncoming postcopy_in;

/*
 * Assert that @mutex is held.  A held mutex cannot be taken again, so the
 * check fails only where nobody holds it; another thread holding it at
 * that moment hides a missing lock, which the next call will show.  One
 * failed atomic exchange: only on paths that do more than that already.
 */
static inline void postcopy_assert_held(QemuMutex *mutex)
{
    bool nobody_held_it = !qemu_mutex_trylock(mutex);

    assert(!nobody_held_it);
}

#endif
