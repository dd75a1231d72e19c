/*
 * Postcopy: the part of the module that every host builds, userfaultfd or
 * not.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-compat.h"
#include "postcopy-internal.h"
#include "trace.h"

void postcopy_thread_create(MigrationIncomingState *mis,
                            QemuThread *thread, const char *name,
                            void *(*fn)(void *), int joinable)
{
    trace_postcopy_thread_create(name);
    postcopy_thread_sync_init(mis);
    qemu_thread_create(thread, name, fn, mis, joinable);
    /* @fn signals once it is registered with RCU and has read its state. */
    postcopy_thread_sync_wait(mis);
}

bool postcopy_preempt_told_to_quit(MigrationIncomingState *mis)
{
    return qatomic_read(&mis->preempt_thread_status) == PREEMPT_THREAD_QUIT;
}

void postcopy_fault_thread_wake(MigrationIncomingState *mis)
{
    uint64_t one = 1;

    /* An eventfd write only fails if the counter would overflow. */
    if (write(mis->userfault_event_fd, &one, sizeof(one)) != sizeof(one)) {
        error_report("postcopy: cannot wake the fault thread: %s",
                     strerror(errno));
    }
}

bool postcopy_is_paused(MigrationStatus status)
{
    switch (status) {
    case MIGRATION_STATUS_POSTCOPY_PAUSED:
    case MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP:
        return true;
    default:
        return false;
    }
}

void postcopy_temp_page_reset(PostcopyTmpPage *tmp_page)
{
    tmp_page->host_addr = NULL;
    tmp_page->target_pages = 0;
    /* Cleared by ram.c as soon as one non-zero target page comes in. */
    tmp_page->all_zero = true;
}
