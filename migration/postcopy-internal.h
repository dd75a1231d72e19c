/*
 * Postcopy: declarations shared by the module's own files only.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The destination's files call each other one way only, from the top of
 * this list to the bottom; none calls a file above it:
 *
 *   postcopy-ram.c            lifecycle (setup, cleanup), the public
 *                             placement entry points
 *   postcopy-fault.c          the fault thread: faults become requests
 *   postcopy-preempt.c        the preempt thread
 *   postcopy-recovery.c       pause and recovery, which the threads call
 *   postcopy-placer-qemu.c    the placer thread
 *   postcopy-probe.c          can this host receive postcopy?
 *   postcopy-place.c          placing one page, request bookkeeping
 *   postcopy-shared.c         shared (vhost-user) userfaultfds
 *   postcopy-tcp-queue-qemu.c bounding the TCP queues ahead of a request
 *   postcopy-blocktime-qemu.c blocktime accounting wired to QEMU
 *   postcopy-collapse-qemu.c  huge pages rebuilt where every page is in
 *
 * Below them all: the pure logic (postcopy-blocktime.c, -placer.c,
 * -discard.c, -notify.c, -inject.c, -tcp-queue.c, -tune.c, -collapse.c) and
 * postcopy-common.c.
 */
#ifndef QEMU_POSTCOPY_INTERNAL_H
#define QEMU_POSTCOPY_INTERNAL_H

#include "postcopy-ram.h"
#include "postcopy-incoming.h"

/* postcopy-ram.c, and postcopy-stubs.c on other hosts */

/*
 * Empty every RAMBlock before precopy, so that only pages received from
 * the source are ever present.  False with @errp set.
 */
bool postcopy_ram_empty_blocks(Error **errp);
/*
 * The load is over: place every page still handed over to the placer and
 * wait for the requested pages still on the preempt channel, before the
 * migration may be marked completed.  0, or the first placement that
 * failed (negative errno; -EIO for the preempt channel's).  The listen
 * thread.
 */
int postcopy_ram_incoming_finish(MigrationIncomingState *mis);
/*
 * QEMU 10.2's listen thread: its load failed.  Before RUN, with a page
 * requested, which may never come now, this ends the destination (and
 * does not return); from then on, the fault thread's check does, when a
 * fault waits.
 */
void postcopy_ram_load_failed(MigrationIncomingState *mis);
/*
 * The fault thread, after a round of faults and while it waits for a
 * recovery: once the load failed before RUN, end the destination (no
 * return) if a fault waits: @fault_waits (one it read and could not
 * serve), a page requested, or a fault queued on the userfaultfd.
 */
void postcopy_ram_check_failed_before_run(MigrationIncomingState *mis,
                                          bool fault_waits);

/* postcopy-fault.c */

/* The fault thread's body; @opaque is the MigrationIncomingState. */
void *postcopy_fault_thread(void *opaque);
/*
 * Ask for the host page of @rb at @offset (aligned) that @haddr lies in,
 * for thread @tid (0: not known), unless it is already on its way.  0, or
 * negative when the return path is broken or the page could not be served
 * (which pauses the migration): either way, retry after the recovery.
 */
int postcopy_request_page(MigrationIncomingState *mis, RAMBlock *rb,
                          ram_addr_t offset, uint64_t haddr, uint32_t tid);

/* postcopy-preempt.c */

/* Start the thread that loads pages from the preempt channel. */
void postcopy_preempt_thread_start(MigrationIncomingState *mis);
/*
 * Load thread, once the main stream has ended: wait for the requested
 * pages still on the preempt channel.  False when some never come (the
 * preempt thread failed; nothing is sent any more).
 */
bool postcopy_preempt_drain(MigrationIncomingState *mis);
/* Drain, then stop and join that thread.  False as the drain. */
bool postcopy_preempt_thread_stop(MigrationIncomingState *mis);

/* postcopy-recovery.c: pause and recovery (the order of events: there) */

/*
 * A thread of the module cannot go on (@why, errno @err): break the main
 * connection, as migrate-pause does, so that the load thread pauses the
 * migration (or, before the guest ran, fails it) and a recovery can send
 * again whatever was not placed.  Any thread.
 */
void postcopy_pause_for_error(MigrationIncomingState *mis, const char *why,
                              int err);
/* The fault thread starts: every pause so far is behind it. */
void postcopy_recovery_fault_thread_start(void);
/* Between a pause and its resume.  Any thread. */
bool postcopy_recovery_under_way(MigrationIncomingState *mis);
/* A pause the fault thread has not waited for yet.  Fault thread. */
bool postcopy_recovery_pause_missed(void);
/*
 * Wait for the resume of every pause counted so far, then set the new
 * main channel up.  False when the thread must quit instead (the
 * migration ended while it waited).  @fault_waits: a fault read and not
 * served waits too (for postcopy_ram_check_failed_before_run()).  Fault
 * thread.
 */
bool postcopy_recovery_fault_thread_wait(MigrationIncomingState *mis,
                                         bool fault_waits);
/*
 * The preempt channel broke, or a page from it could not be placed: give
 * the channel's mutex up so that the load thread can close the channel,
 * and wait until a recovery hands over a new one or the stop wakes us.
 * False when the thread must quit instead.  Preempt thread, holding
 * postcopy_prio_thread_mutex.
 */
bool postcopy_recovery_preempt_park(MigrationIncomingState *mis);

/* postcopy-placer-qemu.c: a second thread placing background pages */

#define POSTCOPY_THREAD_DST_PLACER "mig/dst/place"

/*
 * Start the placer thread, unless this process may use one CPU only.
 * False with @errp set when its slots cannot be mapped.  Load thread.
 */
bool postcopy_placer_start(MigrationIncomingState *mis, Error **errp);
/*
 * Stop and join the thread, then place what it left.  0, or the first
 * placement that failed (negative errno): a page then is not in place.
 * Load thread only.
 */
int postcopy_placer_stop(MigrationIncomingState *mis);
/* Free what start() allocated, once no thread may kick any more. */
void postcopy_placer_free(void);
/*
 * Hand the page ram.c assembled at @from over to the placer, which will
 * place it at @host.  False when the caller must place it itself (see
 * postcopy-placer-qemu.c for which pages are handed over).  Load thread only.
 */
bool postcopy_placer_offer(MigrationIncomingState *mis, RAMBlock *rb,
                           void *host, const void *from);
/*
 * If the placer stalled on a page it could not place, place that page and
 * the ones after it on this thread.  0, or the first of those placements
 * that failed (negative errno).  Any thread; only the load thread acts.
 */
int postcopy_placer_take_over(MigrationIncomingState *mis);
/*
 * Before the load thread places a page itself: take_over(), and in the
 * stream's tail (postcopy-placer-qemu.c) first wait until the placer placed
 * everything it was handed.  0, or the first failure (negative errno),
 * which must fail the load.  Any thread; only the load thread acts.
 */
int postcopy_placer_settle(MigrationIncomingState *mis);
/*
 * Place every page handed over, or drop the ones that cannot be placed
 * (they are not marked received).  Load thread, when it pauses.
 */
void postcopy_placer_drain(MigrationIncomingState *mis);
/*
 * Wake the placer, if there is one, to place what waits in its slots:
 * something may be waiting for one of those pages.  Any thread.
 */
void postcopy_placer_kick(void);

/* postcopy-probe.c */

/*
 * The userfaultfd features this kernel offers, read once per process.
 * False with @errp naming the cause (permissions, kernel support).
 */
bool postcopy_uffd_supported_features(uint64_t *features, Error **errp);
/* The features the module asks for on its own userfaultfd. */
uint64_t postcopy_uffd_wanted_features(uint64_t supported);

/* postcopy-place.c */

/*
 * Count the guest RAM not received yet, once the source's discards are
 * done (LISTEN).  Load thread.
 */
void postcopy_count_missing(void);
/*
 * Bytes of guest RAM not in place yet, pages a thread holds to place
 * included.  Exact when the source sends every page the destination lacks;
 * too high where it never sends some (RAM a RamDiscardManager discarded
 * and no fault asked for).  Any thread.
 */
uint64_t postcopy_bytes_missing(void);
/* Private anonymous memory of @size bytes, or NULL with @errp set. */
void *postcopy_map_anonymous(size_t size, const char *what, Error **errp);
/*
 * Place the host page of @rb at @host from @from (NULL: zeroes, with
 * UFFDIO_ZEROPAGE), mark it received and wake whoever waits for it.  A
 * page this module placed already counts as placed.  0, or a negative
 * errno after reporting the cause.  Any thread.
 */
int postcopy_install(MigrationIncomingState *mis, RAMBlock *rb, void *host,
                     void *from);
/*
 * postcopy_install() of @pages consecutive host pages of @rb, @host on,
 * from as many consecutive pages at @from: one UFFDIO_COPY for the run,
 * which costs far less per page than one each, then page by page for
 * whatever that one did not place (a page there already, a failure), so
 * that each page ends as postcopy_install() would leave it.  Sets
 * *@placed to the pages placed, all of them on success; else returns the
 * negative errno of page *@placed.  Any thread.
 */
int postcopy_install_run(MigrationIncomingState *mis, RAMBlock *rb,
                         void *host, void *from, unsigned int pages,
                         unsigned int *placed);
/* postcopy_install() of a page of zeroes, in the way @rb allows. */
int postcopy_install_zero(MigrationIncomingState *mis, RAMBlock *rb,
                          void *host);
/*
 * Whether the host page at @host was asked for and is not placed yet.
 * Any thread; the answer can be stale by the time it returns.
 */
bool postcopy_page_requested(MigrationIncomingState *mis, void *host);
/*
 * Whether the main stream has ended and the load thread waits for the
 * requested pages still on the preempt channel (preempt_draining).  Any
 * thread.
 */
bool postcopy_main_stream_ended(MigrationIncomingState *mis);

/* postcopy-shared.c: the shared (vhost-user) userfaultfds */

/* Once, at start-up. */
void postcopy_shared_init(void);

/*
 * Bumped whenever a shared fd is registered or unregistered, so that the
 * fault thread knows to copy the list again.
 */
unsigned int postcopy_shared_fds_generation(void);
/* A copy of the registered shared fds (caller frees with g_array_free). */
GArray *postcopy_shared_fds_copy(void);
/*
 * The thread of @pcfd's process that faulted at @client_addr waits for
 * the page at @offset of @rb: false if that page is received already (the
 * caller wakes it), else true and recorded, for the placement to wake.
 * Fault thread.
 */
bool postcopy_shared_wait(MigrationIncomingState *mis,
                          const struct PostCopyFD *pcfd, RAMBlock *rb,
                          uint64_t offset, uint64_t client_addr);
/*
 * The host pages of @rb in [@host, @host + @size) are placed and marked
 * received: wake the other processes' threads recorded on them.  Called
 * with mis->page_request_mutex held, by the thread that placed them.
 */
void postcopy_shared_wake_placed(MigrationIncomingState *mis, RAMBlock *rb,
                                 void *host, size_t size);
/* At the end of the migration: forget every recorded waiter. */
void postcopy_shared_waiters_free(MigrationIncomingState *mis);

/* postcopy-blocktime-qemu.c: blocktime accounting wired to QEMU */

/*
 * Start accounting for this migration (postcopy-blocktime capability);
 * @uffd_features: those of the migration's userfaultfd.
 */
void postcopy_blocktime_setup(MigrationIncomingState *mis,
                              uint64_t uffd_features);
/* The fault thread read a fault of thread @tid on host page @page. */
void postcopy_blocktime_fault_read(MigrationIncomingState *mis, RAMBlock *rb,
                                   uint32_t tid, void *page);
/* The host page at @page was placed and its bit set in receivedmap. */
void postcopy_blocktime_page_placed(MigrationIncomingState *mis, void *page);
/* Total blocktime in milliseconds, 0 without accounting. */
uint64_t postcopy_blocktime_total_ms(MigrationIncomingState *mis);

/* postcopy-collapse-qemu.c: huge pages rebuilt where every page is in */

/* Once, at start-up: stop the thread on an outgoing migration and exit. */
void postcopy_collapse_init(void);
/*
 * At LISTEN, once guest RAM is registered with the userfaultfd and before
 * any thread places a page: the plan of guest RAM to collapse, and the
 * thread that collapses while pages come in.  Load thread.
 */
void postcopy_collapse_track(void);
/* The guest faulted at @offset of @rb: collapse there first.  Fault thread. */
void postcopy_collapse_note_fault(RAMBlock *rb, ram_addr_t offset);
/* @size bytes from @offset of @rb are newly in place.  Placing threads. */
void postcopy_collapse_note_placed(RAMBlock *rb, ram_addr_t offset,
                                   size_t size);
/*
 * Every page is in and RAM is unregistered: rebuild the rest of the huge
 * pages.  Once the fault thread and the placing threads are gone.
 */
void postcopy_collapse_start(void);
/*
 * The migration failed: stop the thread and drop the plan.  Once the
 * fault thread and the placing threads are gone.
 */
void postcopy_collapse_forget(void);

/* postcopy-common.c */

/*
 * Make the fault thread look at its eventfd: to quit, for a broken path,
 * or for a new shared fd.  Any thread.
 */
void postcopy_fault_thread_wake(MigrationIncomingState *mis);
/* The load thread told the preempt thread to quit.  Any thread. */
bool postcopy_preempt_told_to_quit(MigrationIncomingState *mis);

#endif
