/*
 * Postcopy live migration of RAM: the destination's lifecycle (setup at
 * LISTEN, the pause for a recovery, cleanup) and the entry points through
 * which ram.c places pages.  Linux only.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * How one faulting guest access is served:
 *  1. the vCPU touches a page that is not there yet; the kernel parks the
 *     thread and queues a message on mis->userfault_fd;
 *  2. the fault thread (postcopy-fault.c) reads it, finds the RAMBlock and
 *     asks the source for that host page over the return path;
 *  3. the page arrives on the main or the preempt channel; ram.c assembles
 *     it in a temp page and calls postcopy_place_page() below;
 *  4. postcopy_install() (postcopy-place.c) places it with UFFDIO_COPY,
 *     which installs it atomically and wakes every thread parked on it,
 *     then marks it received, drops the request and ends the vCPUs'
 *     blocktime.  A background page may go through the placer thread
 *     first (postcopy-placer-qemu.c).
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include <poll.h>
#include <sys/eventfd.h>
#include "qemu/error-report.h"
#include "qemu/madvise.h"
#include "qemu/rcu.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "exec/target_page.h"
#include "postcopy-compat.h"
#include "system/system.h"
#include "migration.h"
#include "options.h"
#include "ram.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-inject.h"
#include "postcopy-tcp-queue.h"
#include "postcopy-tune.h"
#include "trace.h"

PostcopyIncoming postcopy_in;

/* At QEMU's start-up, on every host (system/runstate.c). */
void postcopy_infrastructure_init(void)
{
    postcopy_shared_init();
    postcopy_tune_init();
    postcopy_queue_init();
    postcopy_collapse_init();
}

/* --- Destination: before precopy ------------------------------------------ */

bool postcopy_ram_empty_blocks(Error **errp)
{
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        const char *name = qemu_ram_get_idstr(rb);
        ram_addr_t length = qemu_ram_get_used_length(rb);

        /*
         * The size the source will send pages for.  ram.c moves it if the
         * source resizes the block during precopy.
         */
        rb->postcopy_length = length;
        trace_postcopy_block_empty(name, qemu_ram_get_host_addr(rb), length);
        /*
         * ROM contents and tables that board init wrote must go too: a
         * page that is present is never faulted on, so it would never be
         * replaced by the source's copy.
         */
        if (ram_discard_range(name, 0, length)) {
            error_setg(errp, "postcopy: could not empty RAMBlock %s "
                       "(0x" RAM_ADDR_FMT " bytes) before migration",
                       name, length);
            return false;
        }
    }
    return true;
}

int postcopy_ram_prepare_discard(MigrationIncomingState *mis)
{
    RAMBlock *rb;

    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            trace_postcopy_block_thp_off(qemu_ram_get_idstr(rb),
                                         rb->postcopy_length);
            /*
             * Discarding 4 KiB out of a transparent huge page only splits
             * it: with THP on, discarded pages would stay present and no
             * fault would ever ask for them.
             */
            qemu_madvise(qemu_ram_get_host_addr(rb), rb->postcopy_length,
                         QEMU_MADV_NOHUGEPAGE);
        }
    }
    postcopy_state_set(POSTCOPY_INCOMING_DISCARD);
    return 0;
}

/* --- Destination: LISTEN -------------------------------------------------- */

/* @wanted: set to the features asked for on mis->userfault_fd */
static bool postcopy_open_fds(MigrationIncomingState *mis, uint64_t *wanted,
                              Error **errp)
{
    uint64_t supported;

    if (!postcopy_uffd_supported_features(&supported, errp)) {
        return false;
    }
    *wanted = postcopy_uffd_wanted_features(supported);
    mis->userfault_fd = uffd_create_fd(*wanted, true);
    if (mis->userfault_fd < 0) {
        error_setg_errno(errp, errno, "postcopy: cannot create a userfaultfd "
                         "with features 0x%" PRIx64, *wanted);
        return false;
    }
    mis->userfault_event_fd = eventfd(0, EFD_CLOEXEC);
    if (mis->userfault_event_fd < 0) {
        error_setg_errno(errp, errno, "postcopy: cannot create the eventfd "
                         "that wakes the fault thread");
        close(mis->userfault_fd);
        return false;
    }
    postcopy_in.fds_open = true;
    trace_postcopy_fds_open(mis->userfault_fd, mis->userfault_event_fd,
                            *wanted);
    return true;
}

static bool postcopy_register_block(MigrationIncomingState *mis,
                                    RAMBlock *rb, Error **errp)
{
    const char *name = qemu_ram_get_idstr(rb);
    void *host = qemu_ram_get_host_addr(rb);
    uint64_t ioctls;

    if (uffd_register_memory(mis->userfault_fd, host, rb->postcopy_length,
                             UFFDIO_REGISTER_MODE_MISSING, &ioctls)) {
        error_setg_errno(errp, errno, "postcopy: cannot register RAMBlock "
                         "%s (%p, 0x" RAM_ADDR_FMT " bytes) with userfaultfd",
                         name, host, rb->postcopy_length);
        return false;
    }
    if (!(ioctls & BIT_ULL(_UFFDIO_COPY))) {
        error_setg(errp, "postcopy: userfaultfd cannot place pages "
                   "(UFFDIO_COPY) into RAMBlock %s", name);
        return false;
    }
    /* hugetlbfs has no UFFDIO_ZEROPAGE: such blocks copy a zero page. */
    if (ioctls & BIT_ULL(_UFFDIO_ZEROPAGE)) {
        qemu_ram_set_uf_zeroable(rb);
    }
    trace_postcopy_block_register(name, host, rb->postcopy_length, ioctls);
    return true;
}

static bool postcopy_register_all_blocks(MigrationIncomingState *mis,
                                         Error **errp)
{
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        if (!postcopy_register_block(mis, rb, errp)) {
            return false;
        }
    }
    return true;
}

/*
 * One temp page per channel, where ram.c assembles a host page out of
 * target pages before placing it, and one page of zeroes for blocks that
 * cannot use UFFDIO_ZEROPAGE.  All of the largest host page size.
 */
static bool postcopy_temp_pages_alloc(MigrationIncomingState *mis,
                                      Error **errp)
{
    unsigned int i;

    mis->postcopy_channels = migrate_postcopy_preempt() ? RAM_CHANNEL_MAX : 1;
    mis->postcopy_tmp_pages = g_new0(PostcopyTmpPage, mis->postcopy_channels);
    for (i = 0; i < mis->postcopy_channels; i++) {
        PostcopyTmpPage *tmp = &mis->postcopy_tmp_pages[i];

        tmp->tmp_huge_page = postcopy_map_anonymous(mis->largest_page_size,
                                                    "a postcopy temp page",
                                                    errp);
        if (!tmp->tmp_huge_page) {
            return false;
        }
        postcopy_temp_page_reset(tmp);
    }
    /* Fresh anonymous memory reads as zeroes: no memset needed. */
    mis->postcopy_tmp_zero_page = postcopy_map_anonymous(
        mis->largest_page_size, "the postcopy zero page", errp);
    return mis->postcopy_tmp_zero_page != NULL;
}

static void postcopy_temp_pages_free(MigrationIncomingState *mis)
{
    unsigned int i;

    for (i = 0; mis->postcopy_tmp_pages && i < mis->postcopy_channels; i++) {
        if (mis->postcopy_tmp_pages[i].tmp_huge_page) {
            munmap(mis->postcopy_tmp_pages[i].tmp_huge_page,
                   mis->largest_page_size);
        }
    }
    g_clear_pointer(&mis->postcopy_tmp_pages, g_free);
    if (mis->postcopy_tmp_zero_page) {
        munmap(mis->postcopy_tmp_zero_page, mis->largest_page_size);
        mis->postcopy_tmp_zero_page = NULL;
    }
}

/*
 * On failure the caller (savevm.c) calls postcopy_ram_incoming_cleanup(),
 * which undoes whatever part of this was done.
 */
int postcopy_ram_incoming_setup(MigrationIncomingState *mis)
{
    Error *err = NULL;
    uint64_t features;

    trace_postcopy_incoming_setup(migrate_postcopy_preempt(),
                                  migrate_postcopy_blocktime());
    postcopy_inject_init();
    if (!postcopy_open_fds(mis, &features, &err) ||
        !postcopy_register_all_blocks(mis, &err)) {
        error_report_err(err);
        return -1;
    }
    /* Before any thread places a page: it counts them from now on. */
    postcopy_collapse_track();
    if (!postcopy_temp_pages_alloc(mis, &err) ||
        !postcopy_placer_start(mis, &err)) {
        error_report_err(err);
        return -1;
    }
    /* The source's discards came before LISTEN: this is what it will send. */
    postcopy_count_missing();
    postcopy_blocktime_setup(mis, features);
    postcopy_queue_bound_incoming(mis);

    postcopy_thread_create(mis, &mis->fault_thread, MIGRATION_THREAD_DST_FAULT,
                           postcopy_fault_thread, QEMU_THREAD_JOINABLE);
    mis->have_fault_thread = true;
    /* Needs the temp pages: it takes the postcopy channel's at once. */
    if (migrate_postcopy_preempt()) {
        postcopy_preempt_thread_start(mis);
    }
    return 0;
}

/* --- Destination: end of migration ---------------------------------------- */

static void postcopy_fault_thread_stop(MigrationIncomingState *mis)
{
    qatomic_set(&mis->fault_thread_quit, true);
    postcopy_fault_thread_wake(mis);
    trace_postcopy_fault_thread_join();
    qemu_thread_join(&mis->fault_thread);
    mis->have_fault_thread = false;
}

/* Every page is in now: hand RAM back to the kernel's ordinary care. */
static int postcopy_unregister_all_blocks(MigrationIncomingState *mis)
{
    RAMBlock *rb;
    int ret = 0;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        void *host = qemu_ram_get_host_addr(rb);

        trace_postcopy_block_unregister(qemu_ram_get_idstr(rb), host,
                                        rb->postcopy_length);
        qemu_madvise(host, rb->postcopy_length, QEMU_MADV_HUGEPAGE);
        /* A block never registered (failed setup) unregisters as a no-op. */
        if (uffd_unregister_memory(mis->userfault_fd, host,
                                   rb->postcopy_length)) {
            error_report("postcopy: cannot unregister RAMBlock %s from "
                         "userfaultfd: %s", qemu_ram_get_idstr(rb),
                         strerror(errno));
            ret = -1;
        }
    }
    return ret;
}

static void postcopy_close_fds(MigrationIncomingState *mis)
{
    close(mis->userfault_fd);
    close(mis->userfault_event_fd);
    mis->userfault_fd = -1;
    mis->userfault_event_fd = -1;
    postcopy_in.fds_open = false;
}

/*
 * The guest runs, and the last pages of the migration could not be
 * placed: the placer's and the load thread's (@err), or requested pages
 * that the preempt thread failed (@err 0).  Once the userfaultfd is gone
 * a vCPU touching such a page would run on zeroes: end the destination
 * instead, as QEMU 10.0's listen thread does itself when a postcopy load
 * fails.  (That thread ignores the cleanup's result and would mark the
 * migration completed; 10.2's, which is ours, asks
 * postcopy_ram_incoming_finish() first, and would otherwise exit only
 * with exit-on-error.)
 */
static G_NORETURN void postcopy_fail_unplaced(MigrationIncomingState *mis,
                                              int err)
{
    error_report("postcopy: the last pages of the migration could not be "
                 "placed (%s); the guest cannot run without them, so this "
                 "destination exits",
                 err ? strerror(-err) : "the preempt channel failed after "
                 "the main stream ended");
    migrate_set_state(&mis->state, mis->state, MIGRATION_STATUS_FAILED);
    exit(EXIT_FAILURE);
}

/*
 * The load failed before RUN, where no pause follows (QEMU pauses only
 * once the guest runs), so a page requested then may never come: the
 * main stream is gone (the preempt channel may still bring what the
 * source had sent on it).
 * Before RUN no vCPU runs: what waits for it is mostly QEMU's main thread,
 * loading the device state (a virtio device's load reads its rings from
 * guest RAM), which holds the BQL and the main loop.  On 10.2 nothing
 * would ever run the listen thread's teardown or answer QMP, whatever
 * exit-on-error says; on 10.0, once the cleanup removed the userfaultfd,
 * it would load zeroes as device state (and could start the guest on
 * them) before the listen thread exits.  So end the destination, without
 * exit(): qemu_run_exit_notifiers() takes the BQL, which the waiting thread
 * holds (the notifiers' work, a tap's down script or the pidfile's
 * removal, is skipped).  The guest never ran here; the source still has
 * it.
 */
static G_NORETURN void postcopy_end_before_run(MigrationIncomingState *mis,
                                               const char *who)
{
    int waiting = qatomic_read(&mis->page_requested_count);

    trace_postcopy_end_before_run(who, waiting);
    if (waiting) {
        error_report("postcopy: the migration failed before the guest ran, "
                     "while QEMU waited for %d requested page%s of guest "
                     "RAM, which may never come now; this destination exits "
                     "(the source still has the guest)",
                     waiting, waiting == 1 ? "" : "s");
    } else {
        error_report("postcopy: the migration failed before the guest ran, "
                     "while QEMU may wait for pages of guest RAM, which may "
                     "never come now; this destination exits (the source "
                     "still has the guest)");
    }
    fflush(NULL);
    _exit(EXIT_FAILURE);
}

void postcopy_ram_load_failed(MigrationIncomingState *mis)
{
    if (!migrate_postcopy_ram() ||
        postcopy_state_get() != POSTCOPY_INCOMING_LISTENING) {
        return;
    }
    qatomic_set(&postcopy_in.load_failed_before_run, true);
    /*
     * Pairs with the barrier in postcopy_ram_check_failed_before_run(),
     * after a request was counted: one of the two sees the other's write.
     */
    smp_mb();
    if (qatomic_read(&mis->page_requested_count)) {
        postcopy_end_before_run(mis, "the failed load");
    }
}

/*
 * Whether a fault is queued on QEMU's userfaultfd, not read yet (a
 * vhost-user back-end's fd is not looked at: back-ends start at RUN).
 */
static bool postcopy_fault_queued(MigrationIncomingState *mis)
{
    struct pollfd pfd = { .fd = mis->userfault_fd, .events = POLLIN };

    return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

void postcopy_ram_check_failed_before_run(MigrationIncomingState *mis,
                                          bool fault_waits)
{
    /* Pairs with postcopy_ram_load_failed(): a request counted before. */
    smp_mb();
    if (qatomic_read(&postcopy_in.load_failed_before_run) &&
        (fault_waits || qatomic_read(&mis->page_requested_count) ||
         postcopy_fault_queued(mis))) {
        postcopy_end_before_run(mis, "the fault thread");
    }
}

/*
 * QEMU 10.0's listen thread, when its load failed, marks the migration
 * failed, calls the cleanup and exits.  Before RUN the main thread may
 * still be loading the device state: end the destination first, before a
 * drain waits for pages that cannot come or the userfaultfd goes.
 */
static bool postcopy_listen_load_failed_before_run(MigrationIncomingState *mis)
{
    return !POSTCOPY_CONTRACT_10_2 && migrate_postcopy_ram() &&
           mis->have_listen_thread &&
           qemu_thread_is_self(&mis->listen_thread) &&
           postcopy_state_get() == POSTCOPY_INCOMING_LISTENING &&
           qatomic_read(&mis->state) == MIGRATION_STATUS_FAILED;
}

/*
 * With every page in place and THP allowed again, huge pages can come
 * back (postcopy-collapse-qemu.c); not after a failed migration, whose
 * guest does not run here.  On 10.0 the listen thread calls this in
 * RUNNING, with the state still postcopy-active or failed; on 10.2 its
 * listen thread has set END already, and the state completed or failed.
 */
static void postcopy_rebuild_huge_pages(MigrationIncomingState *mis,
                                        int cleanup_ret)
{
    PostcopyState ps = postcopy_state_get();
    bool guest_runs = ps == POSTCOPY_INCOMING_RUNNING ||
                      ps == POSTCOPY_INCOMING_END;

    if (!cleanup_ret && guest_runs &&
        mis->state != MIGRATION_STATUS_FAILED) {
        postcopy_collapse_start();
    } else {
        postcopy_collapse_forget();
    }
}

int postcopy_ram_incoming_cleanup(MigrationIncomingState *mis)
{
    Error *err = NULL;
    int ret = 0;
    int placer_err;

    trace_postcopy_incoming_cleanup(mis->have_fault_thread,
                                    qatomic_read(&mis->preempt_thread_status));
    if (postcopy_listen_load_failed_before_run(mis)) {
        postcopy_end_before_run(mis, "the listen thread's cleanup");
    }
    /*
     * First: pages still in its slots may be ones the preempt thread's
     * stop waits for.  What the placer could not place, this thread
     * places; only if that fails too is a page lost.
     */
    placer_err = postcopy_placer_stop(mis);
    if (placer_err && postcopy_state_get() == POSTCOPY_INCOMING_RUNNING) {
        postcopy_fail_unplaced(mis, placer_err);
    }
    if (placer_err) {
        /* Before RUN: the load failed anyway, and no vCPU has run. */
        ret = -1;
    }
    if (qatomic_read(&mis->preempt_thread_status) == PREEMPT_THREAD_CREATED &&
        !postcopy_preempt_thread_stop(mis)) {
        if (postcopy_state_get() == POSTCOPY_INCOMING_RUNNING) {
            postcopy_fail_unplaced(mis, 0);
        }
        ret = -1;
    }
    if (mis->have_fault_thread) {
        postcopy_fault_thread_stop(mis);
        if (postcopy_notify(POSTCOPY_NOTIFY_INBOUND_END, &err)) {
            error_report_err(err);
            ret = -1;
        }
    }
    /* The fault thread, their last user, is gone. */
    postcopy_placer_free();
    postcopy_shared_waiters_free(mis);
    if (postcopy_in.fds_open) {
        ret |= postcopy_unregister_all_blocks(mis);
        postcopy_close_fds(mis);
        postcopy_rebuild_huge_pages(mis, ret);
    }
    /* userfaultfd and mlock exclude each other; the probe unlocked. */
    if (should_mlock(mlock_state) &&
        os_mlock(is_mlock_on_fault(mlock_state)) < 0) {
        /* The guest's state is whole: warn, do not fail the migration. */
        warn_report("postcopy: could not lock guest memory again: %s",
                    strerror(errno));
    }
    postcopy_temp_pages_free(mis);
    trace_postcopy_incoming_cleanup_done(postcopy_blocktime_total_ms(mis));
    return ret;
}

int postcopy_ram_incoming_finish(MigrationIncomingState *mis)
{
    int ret = postcopy_placer_stop(mis);
    bool preempt_lost = false;

    /*
     * Here, on the listen thread once the stream ended well, the wait for
     * the preempt channel's last pages: the main thread's cleanup, which
     * holds the BQL, then finds none to wait for.
     */
    if (!ret &&
        qatomic_read(&mis->preempt_thread_status) == PREEMPT_THREAD_CREATED) {
        preempt_lost = !postcopy_preempt_drain(mis);
    }
    /*
     * The guest runs: after cleanup it would read zeroes where the pages
     * are missing, even with exit-on-error off.  End it, as on 10.0.
     */
    if ((ret || preempt_lost) &&
        postcopy_state_get() == POSTCOPY_INCOMING_RUNNING) {
        postcopy_fail_unplaced(mis, ret);
    }
    return ret ? ret : preempt_lost ? -EIO : 0;
}

/* --- Destination: placing pages ------------------------------------------- */

int postcopy_place_page(MigrationIncomingState *mis, void *host, void *from,
                        RAMBlock *rb)
{
    /*
     * A page the placer failed to place is the load thread's to retry, and
     * near the end of the stream every page is (postcopy-placer-qemu.c).
     */
    int ret = postcopy_placer_settle(mis);

    trace_postcopy_place_page(qemu_ram_get_idstr(rb), host);
    if (ret) {
        return ret;
    }
    if (postcopy_placer_offer(mis, rb, host, from)) {
        return 0;
    }
    return postcopy_install(mis, rb, host, from);
}

int postcopy_place_page_zero(MigrationIncomingState *mis, void *host,
                             RAMBlock *rb)
{
    int ret = postcopy_placer_settle(mis);

    trace_postcopy_place_page_zero(qemu_ram_get_idstr(rb), host);
    if (ret) {
        return ret;
    }
    return postcopy_install_zero(mis, rb, host);
}
