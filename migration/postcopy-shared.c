/*
 * Postcopy: the registry of shared userfaultfds, those of other processes
 * (vhost-user back-ends) that map guest RAM and fault on it too.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Devices register and unregister their fds from the main thread; the
 * fault thread polls a copy of the list, taken again whenever the
 * generation moves, and records the threads that wait on a missing page
 * (postcopy_shared_wait()); the placement of that page wakes them
 * (postcopy_shared_wake_placed()).
 */

#include "qemu/osdep.h"
#include <sys/ioctl.h>
#include "qemu/lockable.h"
#include "qemu/error-report.h"
#include "qemu/userfaultfd.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-inject.h"
#include "trace.h"

static void shared_waiters_drop(MigrationIncomingState *mis, int fd);

void postcopy_shared_init(void)
{
    qemu_mutex_init(&postcopy_in.shared_fds_lock);
}

void postcopy_register_shared_ufd(struct PostCopyFD *pcfd)
{
    MigrationIncomingState *mis = migration_incoming_get_current();

    WITH_QEMU_LOCK_GUARD(&postcopy_in.shared_fds_lock) {
        g_array_append_val(mis->postcopy_remote_fds, *pcfd);
        qatomic_inc(&postcopy_in.shared_fds_generation);
    }
    trace_postcopy_shared_fd_register(pcfd->idstr, pcfd->fd);
    /* The fault thread polls the new fd from its next wake-up. */
    if (mis->have_fault_thread) {
        postcopy_fault_thread_wake(mis);
    }
}

void postcopy_unregister_shared_ufd(struct PostCopyFD *pcfd)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    GArray *fds = mis->postcopy_remote_fds;
    guint i;

    /* Gone already when the migration's state was freed. */
    if (!fds) {
        return;
    }
    WITH_QEMU_LOCK_GUARD(&postcopy_in.shared_fds_lock) {
        for (i = 0; i < fds->len; i++) {
            if (g_array_index(fds, struct PostCopyFD, i).fd == pcfd->fd) {
                g_array_remove_index(fds, i);
                qatomic_inc(&postcopy_in.shared_fds_generation);
                trace_postcopy_shared_fd_unregister(pcfd->idstr, pcfd->fd);
                break;
            }
        }
    }
    /* The number may come back as another file. */
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        shared_waiters_drop(mis, pcfd->fd);
    }
}

unsigned int postcopy_shared_fds_generation(void)
{
    return qatomic_read(&postcopy_in.shared_fds_generation);
}

GArray *postcopy_shared_fds_copy(void)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    GArray *copy = g_array_new(false, false, sizeof(struct PostCopyFD));

    QEMU_LOCK_GUARD(&postcopy_in.shared_fds_lock);
    g_array_append_vals(copy, mis->postcopy_remote_fds->data,
                        mis->postcopy_remote_fds->len);
    return copy;
}

static void postcopy_shared_wake_failed(const struct PostCopyFD *pcfd,
                                        RAMBlock *rb, uint64_t offset, int err)
{
    trace_postcopy_shared_wake_failed(pcfd->idstr, qemu_ram_get_idstr(rb),
                                      offset, err);
    if (!qatomic_xchg(&postcopy_in.shared_wake_failure_reported, true)) {
        warn_report("postcopy: could not wake %s for the page at %s+0x%"
                    PRIx64 ": %s; the page is in place, and a process that "
                    "cannot be woken has nothing waiting on it (further "
                    "failures are traced only)", pcfd->idstr,
                    qemu_ram_get_idstr(rb), offset, strerror(-err));
    }
}

/*
 * The other processes' threads waiting on a page, as their faults told:
 * once the page is placed, the wake goes to the address each one faulted
 * on.  So placement never calls a device's waker, which would translate
 * the page through the device's region table: vhost-user's table is
 * rebuilt by the main thread, under the BQL only, whenever the RAM layout
 * changes (device-state load, memory hot-plug), and neither that lock nor
 * a lock of ours held across the rebuild can be taken here: the rebuild
 * waits for the back-end, which may itself wait for this very wake.  And
 * only a thread that faulted can be waiting: a page nobody faulted on
 * costs no wake.
 *
 * Guarded by mis->page_request_mutex, which also guards marking pages
 * received: a fault either finds its page received (and is woken at
 * once) or is recorded before the placement takes the records.  Lock
 * order: page_request_mutex, then postcopy_in.shared_fds_lock.
 */
typedef struct SharedWaiter {
    struct PostCopyFD pcfd;     /* a copy: its fd and owner's name */
    uint64_t client_page;       /* where it faulted, rounded to the page */
    struct SharedWaiter *next;  /* another waiter on the same page */
} SharedWaiter;

static bool shared_fd_registered(MigrationIncomingState *mis, int fd)
{
    guint i;

    QEMU_LOCK_GUARD(&postcopy_in.shared_fds_lock);
    for (i = 0; mis->postcopy_remote_fds &&
                i < mis->postcopy_remote_fds->len; i++) {
        if (g_array_index(mis->postcopy_remote_fds, struct PostCopyFD,
                          i).fd == fd) {
            return true;
        }
    }
    return false;
}

/* The ioctl itself: uffd_wakeup() would report every failure. */
static void shared_waiter_wake(const SharedWaiter *w, RAMBlock *rb,
                               uint64_t offset)
{
    struct uffdio_range range = {
        .start = w->client_page, .len = qemu_ram_pagesize(rb),
    };
    int ret;

    trace_postcopy_shared_wake_placed(w->pcfd.idstr, qemu_ram_get_idstr(rb),
                                      offset, w->client_page);
    ret = ioctl(w->pcfd.fd, UFFDIO_WAKE, &range) ? -errno : 0;
    /* The wake was done; only its result is replaced. */
    if (!ret && postcopy_inject_hit(POSTCOPY_INJECT_SHARED_WAKE_FAIL)) {
        ret = -ESRCH;
    }
    if (ret) {
        postcopy_shared_wake_failed(&w->pcfd, rb, offset, ret);
    }
}

bool postcopy_shared_wait(MigrationIncomingState *mis,
                          const struct PostCopyFD *pcfd, RAMBlock *rb,
                          uint64_t offset, uint64_t client_addr)
{
    void *host = qemu_ram_get_host_addr(rb) + offset;
    uint64_t client_page = ROUND_DOWN(client_addr, qemu_ram_pagesize(rb));
    SharedWaiter *first, *w;

    QEMU_LOCK_GUARD(&mis->page_request_mutex);
    if (postcopy_received(rb, offset)) {
        return false;
    }
    /*
     * Unregistered meanwhile (the fault thread works on its own copy of
     * the list): its number may come back as another file, which a wake
     * must not reach.  Nothing waits that could be woken.
     */
    if (!shared_fd_registered(mis, pcfd->fd)) {
        return true;
    }
    if (!postcopy_in.shared_waiters) {
        postcopy_in.shared_waiters = g_hash_table_new(NULL, NULL);
    }
    first = g_hash_table_lookup(postcopy_in.shared_waiters, host);
    for (w = first; w; w = w->next) {
        /* Asked again (a retry after a recovery): one wake will do. */
        if (w->pcfd.fd == pcfd->fd && w->client_page == client_page) {
            return true;
        }
    }
    /*
     * An allocation on a back-end's fault, which also sends a request
     * across the network: never on placement, nor on QEMU's own faults.
     */
    w = g_new(SharedWaiter, 1);
    *w = (SharedWaiter) { .pcfd = *pcfd, .client_page = client_page,
                          .next = first };
    g_hash_table_insert(postcopy_in.shared_waiters, host, w);
    qatomic_inc(&postcopy_in.shared_waiter_count);
    return true;
}

void postcopy_shared_wake_placed(MigrationIncomingState *mis, RAMBlock *rb,
                                 void *host, size_t size)
{
    size_t page_size, off;
    ram_addr_t offset;

    /* Every placement comes here; almost always nothing waits. */
    if (!qatomic_read(&postcopy_in.shared_waiter_count)) {
        return;
    }
    postcopy_assert_held(&mis->page_request_mutex);
    page_size = qemu_ram_pagesize(rb);
    offset = qemu_ram_block_host_offset(rb, host);
    for (off = 0; off < size; off += page_size) {
        SharedWaiter *w, *next;

        if (!qatomic_read(&postcopy_in.shared_waiter_count)) {
            return;
        }
        if (!g_hash_table_steal_extended(postcopy_in.shared_waiters,
                                         (uint8_t *)host + off, NULL,
                                         (gpointer *)&w)) {
            continue;
        }
        for (; w; w = next) {
            next = w->next;
            shared_waiter_wake(w, rb, offset + off);
            qatomic_dec(&postcopy_in.shared_waiter_count);
            g_free(w);
        }
    }
}

/* Drop @fd's waiters (or all, for -1); @mis->page_request_mutex held. */
static void shared_waiters_drop(MigrationIncomingState *mis, int fd)
{
    GHashTableIter iter;
    gpointer key, value;

    postcopy_assert_held(&mis->page_request_mutex);
    if (!postcopy_in.shared_waiters) {
        return;
    }
    g_hash_table_iter_init(&iter, postcopy_in.shared_waiters);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        SharedWaiter *w = value, **link = &w;

        while (*link) {
            SharedWaiter *cur = *link;

            if (fd < 0 || cur->pcfd.fd == fd) {
                *link = cur->next;
                qatomic_dec(&postcopy_in.shared_waiter_count);
                g_free(cur);
            } else {
                link = &cur->next;
            }
        }
        if (w) {
            g_hash_table_iter_replace(&iter, w);
        } else {
            g_hash_table_iter_remove(&iter);
        }
    }
}

void postcopy_shared_waiters_free(MigrationIncomingState *mis)
{
    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        shared_waiters_drop(mis, -1);
        g_clear_pointer(&postcopy_in.shared_waiters, g_hash_table_destroy);
    }
}

int postcopy_wake_shared(struct PostCopyFD *pcfd, uint64_t client_addr,
                         RAMBlock *rb)
{
    uint64_t size = qemu_ram_pagesize(rb);

    trace_postcopy_shared_wake(pcfd->idstr, qemu_ram_get_idstr(rb),
                               client_addr);
    return uffd_wakeup(pcfd->fd, (void *)(uintptr_t)ROUND_DOWN(client_addr,
                                                               size), size);
}
