/*
 * Postcopy: the fault thread, which turns userfaults into page requests.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The thread polls three kinds of fd:
 *  - mis->userfault_fd: faults of QEMU's own threads (vCPUs, devices) on
 *    guest RAM; it asks the source for each missing host page;
 *  - mis->userfault_event_fd: written by postcopy_fault_thread_wake() to
 *    make it quit, notice a broken return path, or see new shared fds;
 *  - the shared userfaultfds of other processes (vhost-user back-ends),
 *    whose messages it hands to the owner's handler.
 *
 * It never places a page itself (except zero pages for RAM discarded by a
 * RamDiscardManager): placement wakes the faulting threads.
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include <poll.h>
#include <sys/ioctl.h>
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qemu/userfaultfd.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "qemu-file.h"
#include "ram.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-inject.h"
#include "trace.h"

/* Faults read with one read(2); the rest wait for the next round. */
#define FAULT_BATCH 16

enum {
    POLL_UFFD,
    POLL_EVENT,
    POLL_SHARED_FIRST,
};

/* The fault thread's own state; nothing here is shared. */
typedef struct FaultThread {
    MigrationIncomingState *mis;
    /* POLL_UFFD, POLL_EVENT, then one entry per element of @shared */
    GArray *pollfds;
    GArray *shared;
    unsigned int shared_generation;
} FaultThread;

/* (Re)build the poll set when devices registered or dropped shared fds. */
static void fault_thread_refresh_pollfds(FaultThread *ft)
{
    struct pollfd own[] = {
        [POLL_UFFD] = { .fd = ft->mis->userfault_fd, .events = POLLIN },
        [POLL_EVENT] = { .fd = ft->mis->userfault_event_fd, .events = POLLIN },
    };
    guint i;

    ft->shared_generation = postcopy_shared_fds_generation();
    if (ft->shared) {
        g_array_free(ft->shared, true);
    }
    ft->shared = postcopy_shared_fds_copy();
    g_array_set_size(ft->pollfds, 0);
    g_array_append_vals(ft->pollfds, own, ARRAY_SIZE(own));
    for (i = 0; i < ft->shared->len; i++) {
        struct PostCopyFD *pcfd = &g_array_index(ft->shared,
                                                 struct PostCopyFD, i);
        struct pollfd p = { .fd = pcfd->fd, .events = POLLIN };

        g_array_append_val(ft->pollfds, p);
        trace_postcopy_fault_thread_shared_fd(pcfd->idstr, pcfd->fd);
    }
}

static struct pollfd *fault_thread_pollfd(FaultThread *ft, guint index)
{
    return &g_array_index(ft->pollfds, struct pollfd, index);
}

/*
 * A pause not waited for yet (postcopy-recovery.c), or no return path.
 * savevm.c's postcopy_pause_incoming() clears to_src_file under rp_mutex,
 * so the check takes it too.  migration.c's postcopy_try_recover() stores
 * the new one without it; a request finding that one is refused by
 * postcopy_request_page(), the state being postcopy-recover until the
 * resume.
 */
static bool fault_thread_must_pause(FaultThread *ft)
{
    MigrationIncomingState *mis = ft->mis;

    if (postcopy_recovery_pause_missed()) {
        return true;
    }
    QEMU_LOCK_GUARD(&mis->rp_mutex);
    return !mis->to_src_file;
}

/*
 * This thread cannot go on serving faults.  Left alone, the vCPUs would
 * wait for their pages forever and the migration would never say why:
 * pause the migration, then wait for the recovery like after a broken
 * return path.
 */
static bool fault_thread_give_up(FaultThread *ft, const char *why, int err)
{
    postcopy_pause_for_error(ft->mis, why, err);
    return postcopy_recovery_fault_thread_wait(ft->mis, false);
}

int postcopy_request_page(MigrationIncomingState *mis, RAMBlock *rb,
                          ram_addr_t offset, uint64_t haddr, uint32_t tid)
{
    size_t pagesize = qemu_ram_pagesize(rb);
    void *aligned = (void *)(uintptr_t)ROUND_DOWN(haddr, pagesize);

    assert(QEMU_IS_ALIGNED(offset, pagesize));
    /*
     * RAM that a RamDiscardManager (virtio-mem) discarded is never sent:
     * it reads as zeroes.  One bit of receivedmap stands for the whole
     * host page: ram.c sets all of a host page's bits at once.
     */
    if (ramblock_page_is_discarded(rb, offset)) {
        int ret;

        if (postcopy_received(rb, offset)) {
            return 0;
        }
        ret = postcopy_inject_hit(POSTCOPY_INJECT_PLACE_ZERO) ? -EIO :
              postcopy_install_zero(mis, rb, aligned);
        /*
         * Not a broken return path, which a recovery mends by itself:
         * nothing would start one.
         */
        if (ret) {
            postcopy_pause_for_error(mis, "placing a zero page for "
                                     "discarded RAM failed", -ret);
        }
        return ret;
    }
    /*
     * Several threads faulting on one page, or one thread faulting again
     * after a signal, need one request: the placement wakes them all.
     */
    if (postcopy_page_requested(mis, aligned)) {
        trace_postcopy_request_skip(qemu_ram_get_idstr(rb), offset);
        return 0;
    }
    /*
     * A pause since the round began: the return path may already be the
     * recovery's, where only the load thread sends until the resume.  (A
     * pause that begins between this check and the send mostly meets a
     * return path that is gone; only a recovery that also got as far as
     * a new one in those few instructions would let the request through:
     * QEMU's send takes its lock itself.)
     */
    if (postcopy_inject_hit(POSTCOPY_INJECT_REQUEST_FAIL) ||
        postcopy_recovery_pause_missed() ||
        postcopy_recovery_under_way(mis)) {
        return -EIO;
    }
    trace_postcopy_request_send(qemu_ram_get_idstr(rb), offset, tid);
    return postcopy_send_page_request(mis, rb, offset, haddr, tid);
}

static void fault_thread_serve_fault(FaultThread *ft,
                                     const struct uffd_msg *msg)
{
    MigrationIncomingState *mis = ft->mis;
    uint64_t haddr = msg->arg.pagefault.address;
    uint32_t tid = msg->arg.pagefault.feat.ptid;
    ram_addr_t offset;
    size_t pagesize;
    RAMBlock *rb;

    rb = qemu_ram_block_from_host((void *)(uintptr_t)haddr, true, &offset);
    if (!rb) {
        /* Only guest RAM is registered: this would be a kernel bug. */
        error_report("postcopy: userfault at 0x%" PRIx64 " is outside "
                     "guest RAM; ignoring it", haddr);
        return;
    }
    pagesize = qemu_ram_pagesize(rb);
    offset = ROUND_DOWN(offset, pagesize);
    trace_postcopy_fault(qemu_ram_get_idstr(rb), offset, haddr, tid);
    postcopy_collapse_note_fault(rb, offset);
    postcopy_blocktime_fault_read(mis, rb, tid,
                                  (void *)(uintptr_t)ROUND_DOWN(haddr,
                                                                pagesize));
    while (postcopy_request_page(mis, rb, offset, haddr, tid)) {
        /* The return path broke: retry once recovery rebuilt it. */
        if (!postcopy_recovery_fault_thread_wait(mis, true)) {
            return;
        }
    }
}

/* Returns false when the thread must quit. */
static bool fault_thread_read_faults(FaultThread *ft)
{
    MigrationIncomingState *mis = ft->mis;
    struct uffd_msg msgs[FAULT_BATCH];
    int i, n;

    if (postcopy_inject_hit(POSTCOPY_INJECT_UFFD_READ_FAIL)) {
        n = -1;
        errno = EIO;
    } else {
        n = uffd_read_events(mis->userfault_fd, msgs, FAULT_BATCH);
    }
    if (n < 0) {
        /* The faults stay queued in the kernel: read them after. */
        return fault_thread_give_up(ft, "reading the userfaultfd failed",
                                    errno);
    }
    trace_postcopy_fault_batch(n);
    for (i = 0; i < n; i++) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
            /* The module asks for no other event. */
            warn_report("postcopy: unexpected userfaultfd event %u",
                        msgs[i].event);
            continue;
        }
        fault_thread_serve_fault(ft, &msgs[i]);
    }
    return true;
}

/*
 * After a pause: whether @pcfd is still registered, the same fd of the
 * same owner (a number closed meanwhile may have been reused); if not,
 * its fault went with it.
 */
static bool fault_thread_shared_fd_still_there(const struct PostCopyFD *pcfd)
{
    g_autoptr(GArray) now = postcopy_shared_fds_copy();
    guint i;

    for (i = 0; i < now->len; i++) {
        struct PostCopyFD *p = &g_array_index(now, struct PostCopyFD, i);

        if (p->fd == pcfd->fd && p->data == pcfd->data &&
            p->handler == pcfd->handler) {
            return true;
        }
    }
    return false;
}

/*
 * @pcfd's owner could not resolve its fault at @addr (vhost-user's
 * handler finds no region while it rebuilds its table for a new layout).
 * Nothing recorded the waiting thread, so no placement would wake it:
 * wake it now, to fault again and be handled afresh.  Reported once,
 * traced each time.
 */
static void fault_thread_shared_unresolved(const struct PostCopyFD *pcfd,
                                           uint64_t addr)
{
    struct uffdio_range range = {
        .start = ROUND_DOWN(addr, qemu_real_host_page_size()),
        .len = qemu_real_host_page_size(),
    };

    trace_postcopy_shared_unresolved(pcfd->idstr, addr);
    if (!postcopy_in.shared_unresolved_reported) {
        postcopy_in.shared_unresolved_reported = true;
        error_report("postcopy: %s could not resolve a fault at 0x%" PRIx64
                     "; it is woken to fault again (further failures are "
                     "traced only)", pcfd->idstr, addr);
    }
    if (ioctl(pcfd->fd, UFFDIO_WAKE, &range)) {
        trace_postcopy_shared_wake_failed(pcfd->idstr, "-", addr, -errno);
    }
}

/*
 * Have @pcfd's owner resolve the fault @msg.  A request that failed as
 * QEMU's own can is asked again after the recovery, as QEMU's own faults
 * are: the message has been read, and for discarded RAM, which the source
 * never sends, nothing else would wake the other process before postcopy's
 * end unregisters its userfaultfd.
 */
static void fault_thread_resolve_shared(FaultThread *ft,
                                        struct PostCopyFD pcfd,
                                        struct uffd_msg *msg)
{
    uint64_t addr = msg->arg.pagefault.address;

    postcopy_in.shared_request_failed = false;
    while (pcfd.handler(&pcfd, msg)) {
        if (!postcopy_in.shared_request_failed) {
            fault_thread_shared_unresolved(&pcfd, addr);
            return;
        }
        trace_postcopy_shared_retry(pcfd.idstr, addr);
        if (!postcopy_recovery_fault_thread_wait(ft->mis, true)) {
            return;
        }
        if (!fault_thread_shared_fd_still_there(&pcfd)) {
            trace_postcopy_shared_gone(pcfd.idstr, addr);
            return;
        }
        postcopy_in.shared_request_failed = false;
    }
}

/* Hand one message of a shared fd to its owner's handler. */
static void fault_thread_serve_shared(FaultThread *ft, guint index)
{
    struct pollfd *p = fault_thread_pollfd(ft, index);
    struct PostCopyFD *pcfd = &g_array_index(ft->shared, struct PostCopyFD,
                                             index - POLL_SHARED_FIRST);
    struct uffd_msg msg;

    if (p->revents & (POLLERR | POLLHUP | POLLNVAL)) {
        error_report("postcopy: shared userfaultfd %d of %s failed "
                     "(revents 0x%x); no longer polling it", pcfd->fd,
                     pcfd->idstr, p->revents);
        p->fd = -1;
        return;
    }
    /* One message only: the other process may have left the fd blocking. */
    if (uffd_read_events(pcfd->fd, &msg, 1) != 1) {
        return;
    }
    if (msg.event != UFFD_EVENT_PAGEFAULT) {
        warn_report("postcopy: unexpected event %u on the shared userfaultfd "
                    "of %s", msg.event, pcfd->idstr);
        return;
    }
    fault_thread_resolve_shared(ft, *pcfd, &msg);
}

/* Returns false when the thread must quit. */
static bool fault_thread_consume_event(MigrationIncomingState *mis)
{
    uint64_t count;

    if (read(mis->userfault_event_fd, &count, sizeof(count)) !=
        sizeof(count)) {
        /* A wake-up was lost, not the reason for it: carry on. */
        warn_report("postcopy: reading the fault thread's eventfd: %s",
                    strerror(errno));
    }
    return !qatomic_read(&mis->fault_thread_quit);
}

/* One poll round.  Returns false when the thread must stop. */
static bool fault_thread_round(FaultThread *ft)
{
    MigrationIncomingState *mis = ft->mis;
    guint i;

    if (poll(fault_thread_pollfd(ft, 0), ft->pollfds->len, -1) < 0) {
        if (errno == EINTR) {
            return true;
        }
        return fault_thread_give_up(ft, "the fault thread's poll failed",
                                    errno);
    }
    if (fault_thread_pollfd(ft, POLL_EVENT)->revents) {
        if (!fault_thread_consume_event(mis)) {
            trace_postcopy_fault_thread_quit();
            return false;
        }
    }
    /* A pause wakes us (postcopy_fault_thread_notify()). */
    if (fault_thread_must_pause(ft) &&
        !postcopy_recovery_fault_thread_wait(mis, false)) {
        return false;
    }
    if (fault_thread_pollfd(ft, POLL_UFFD)->revents &&
        !fault_thread_read_faults(ft)) {
        return false;
    }
    for (i = POLL_SHARED_FIRST; i < ft->pollfds->len; i++) {
        if (fault_thread_pollfd(ft, i)->revents) {
            fault_thread_serve_shared(ft, i);
        }
    }
    /* A page faulted on may sit in the placer's slots, waiting for more. */
    postcopy_placer_kick();
    if (postcopy_shared_fds_generation() != ft->shared_generation) {
        fault_thread_refresh_pollfds(ft);
    }
    /* After a load that failed before RUN, no page comes any more. */
    postcopy_ram_check_failed_before_run(mis, false);
    return true;
}

void *postcopy_fault_thread(void *opaque)
{
    FaultThread ft = {
        .mis = opaque,
        .pollfds = g_array_new(false, false, sizeof(struct pollfd)),
    };

    rcu_register_thread();
    postcopy_recovery_fault_thread_start();
    trace_postcopy_fault_thread_start(ft.mis->userfault_fd,
                                      ft.mis->userfault_event_fd);
    /* No RAMBlock has been asked for on this return path yet. */
    ft.mis->last_rb = NULL;
    fault_thread_refresh_pollfds(&ft);
    postcopy_thread_sync_signal(ft.mis);

    while (fault_thread_round(&ft)) {
        /* Each round serves whatever poll reported. */
    }

    g_array_free(ft.pollfds, true);
    g_array_free(ft.shared, true);
    rcu_unregister_thread();
    trace_postcopy_fault_thread_exit();
    return NULL;
}

int postcopy_request_shared_page(struct PostCopyFD *pcfd, RAMBlock *rb,
                                 uint64_t client_addr, uint64_t offset)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    uint64_t page = ROUND_DOWN(offset, qemu_ram_pagesize(rb));
    bool waits;
    int ret;

    /*
     * RAM plugged in after the migration was set up (a pc-dimm during
     * postcopy): the source never sends it and no userfaultfd of this
     * module watches it.  A read through QEMU's own shared mapping gives
     * the shared memory its page; then the other process can go on.
     */
    if (!rb->receivedmap) {
        trace_postcopy_shared_outside(pcfd->idstr, qemu_ram_get_idstr(rb),
                                      offset);
        (void)qatomic_read((uint8_t *)qemu_ram_get_host_addr(rb) + page);
        return postcopy_wake_shared(pcfd, client_addr, rb);
    }
    waits = postcopy_shared_wait(mis, pcfd, rb, page, client_addr);

    trace_postcopy_shared_request(pcfd->idstr, qemu_ram_get_idstr(rb),
                                  offset, !waits);
    if (!waits) {
        /* Placed after the other process faulted: just wake it. */
        return postcopy_wake_shared(pcfd, client_addr, rb);
    }
    /*
     * Keyed by QEMU's own address of the page, as placement finds it: the
     * other process's address would never leave the request tree, and a
     * zero page for discarded RAM would be placed there.  The placement
     * wakes the thread recorded above.
     */
    if (postcopy_inject_hit(POSTCOPY_INJECT_SHARED_REQUEST_FAIL)) {
        ret = -EIO;
    } else {
        ret = postcopy_request_page(mis, rb, page,
                                    (uintptr_t)qemu_ram_get_host_addr(rb) +
                                    page, 0);
    }
    postcopy_in.shared_request_failed = ret != 0;
    return ret;
}
