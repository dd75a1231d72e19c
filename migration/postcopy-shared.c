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
 * generation moves; every placement wakes the other processes through
 * postcopy_notify_shared_wake().
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/error-report.h"
#include "qemu/userfaultfd.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-inject.h"
#include "trace.h"

/*
 * Guards changes to mis->postcopy_remote_fds and the generation below.
 * Devices register and unregister from the main thread; the fault thread
 * copies the list when the generation moves; placement reads the count.
 */
static QemuMutex shared_fds_lock;
static unsigned int shared_fds_generation;
static unsigned int shared_fds_count;

void postcopy_shared_init(void)
{
    qemu_mutex_init(&shared_fds_lock);
}

void postcopy_register_shared_ufd(struct PostCopyFD *pcfd)
{
    MigrationIncomingState *mis = migration_incoming_get_current();

    WITH_QEMU_LOCK_GUARD(&shared_fds_lock) {
        g_array_append_val(mis->postcopy_remote_fds, *pcfd);
        qatomic_set(&shared_fds_count, mis->postcopy_remote_fds->len);
        qatomic_inc(&shared_fds_generation);
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
    WITH_QEMU_LOCK_GUARD(&shared_fds_lock) {
        for (i = 0; i < fds->len; i++) {
            if (g_array_index(fds, struct PostCopyFD, i).fd == pcfd->fd) {
                g_array_remove_index(fds, i);
                qatomic_set(&shared_fds_count, fds->len);
                qatomic_inc(&shared_fds_generation);
                trace_postcopy_shared_fd_unregister(pcfd->idstr, pcfd->fd);
                break;
            }
        }
    }
}

unsigned int postcopy_shared_fds_generation(void)
{
    return qatomic_read(&shared_fds_generation);
}

GArray *postcopy_shared_fds_copy(void)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    GArray *copy = g_array_new(false, false, sizeof(struct PostCopyFD));

    QEMU_LOCK_GUARD(&shared_fds_lock);
    g_array_append_vals(copy, mis->postcopy_remote_fds->data,
                        mis->postcopy_remote_fds->len);
    return copy;
}

/*
 * A failed wake is reported once (each one is traced): a back-end that
 * has gone fails every wake from then on.
 */
static bool shared_wake_failure_reported;

static void postcopy_shared_wake_failed(struct PostCopyFD *pcfd, RAMBlock *rb,
                                        uint64_t offset, int err)
{
    trace_postcopy_shared_wake_failed(pcfd->idstr, qemu_ram_get_idstr(rb),
                                      offset, err);
    if (!qatomic_xchg(&shared_wake_failure_reported, true)) {
        warn_report("postcopy: could not wake %s for the page at %s+0x%"
                    PRIx64 ": %s; the page is in place, and a process that "
                    "cannot be woken has nothing waiting on it (further "
                    "failures are traced only)", pcfd->idstr,
                    qemu_ram_get_idstr(rb), offset, strerror(-err));
    }
}

void postcopy_notify_shared_wake(RAMBlock *rb, uint64_t offset)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    guint i;

    /* Called for every page placed; almost always nobody shares RAM. */
    if (!qatomic_read(&shared_fds_count)) {
        return;
    }
    /*
     * Before RUN the devices are not started, so no back-end has touched
     * guest RAM nor waits on a page.  And the main thread is still loading
     * the device state, whose memory transactions replace the vhost
     * device's region table that vhost-user's waker reads without a lock
     * (AddressSanitizer caught the use-after-free under 10.2.2: the design
     * doc, "Another process's fault"): wake nobody until then.
     */
    if (postcopy_state_get() < POSTCOPY_INCOMING_RUNNING) {
        return;
    }
    QEMU_LOCK_GUARD(&shared_fds_lock);
    for (i = 0; i < mis->postcopy_remote_fds->len; i++) {
        struct PostCopyFD *pcfd = &g_array_index(mis->postcopy_remote_fds,
                                                 struct PostCopyFD, i);
        int ret = pcfd->waker(pcfd, rb, offset);

        /* The wake was done; only its result is replaced. */
        if (!ret && postcopy_inject_hit(POSTCOPY_INJECT_SHARED_WAKE_FAIL)) {
            ret = -ESRCH;
        }
        if (ret) {
            postcopy_shared_wake_failed(pcfd, rb, offset, ret);
        }
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
