/*
 * Postcopy: what differs between the QEMU versions the module builds into.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The module builds into QEMU 10.0.x and 10.2.x from one source.  Every
 * difference in the helpers it borrows from the rest of QEMU is hidden
 * here, behind one name each; the two contracts with savevm.c and ram.c
 * (who owns the listen thread, which entry points exist) are the files
 * postcopy-contract-10.0.c and postcopy-contract-10.2.c, of which
 * migration/postcopy.build compiles the one matching QEMU's version.
 * The version tests are in postcopy-version.h.
 */
#ifndef QEMU_POSTCOPY_COMPAT_H
#define QEMU_POSTCOPY_COMPAT_H

#include "qemu/error-report.h"
#include "qapi/error.h"
#include "exec/target_page.h"
#include "migration.h"
#include "qemu-file.h"
#include "postcopy-version.h"

#if POSTCOPY_CONTRACT_10_2
#include "system/ramblock.h"
#else
#include "exec/ramblock.h"
#endif

/*
 * A thread the module starts tells its creator (postcopy_thread_create())
 * that it is running: a semaphore up to 10.1, an event from 10.2.
 */
static inline void postcopy_thread_sync_init(MigrationIncomingState *mis)
{
#if POSTCOPY_CONTRACT_10_2
    qemu_event_init(&mis->thread_sync_event, false);
#else
    qemu_sem_init(&mis->thread_sync_sem, 0);
#endif
}

static inline void postcopy_thread_sync_signal(MigrationIncomingState *mis)
{
#if POSTCOPY_CONTRACT_10_2
    qemu_event_set(&mis->thread_sync_event);
#else
    qemu_sem_post(&mis->thread_sync_sem);
#endif
}

static inline void postcopy_thread_sync_wait(MigrationIncomingState *mis)
{
#if POSTCOPY_CONTRACT_10_2
    qemu_event_wait(&mis->thread_sync_event);
    qemu_event_destroy(&mis->thread_sync_event);
#else
    qemu_sem_wait(&mis->thread_sync_sem);
    qemu_sem_destroy(&mis->thread_sync_sem);
#endif
}

/*
 * Switch a channel between blocking and non-blocking reads.  10.2 reports
 * a failure through Error; a channel left in the wrong mode fails its
 * next read, which pauses or fails the migration, so a warning is enough.
 */
static inline void postcopy_file_set_blocking(QEMUFile *f, bool block)
{
#if POSTCOPY_CONTRACT_10_2
    Error *err = NULL;

    if (!qemu_file_set_blocking(f, block, &err)) {
        warn_report_err(err);
    }
#else
    qemu_file_set_blocking(f, block);
#endif
}

/*
 * Ask the source for the page of @rb at @offset that @haddr lies in, for
 * thread @tid (0: not known).  10.2's migration.c then calls
 * mark_postcopy_blocktime_begin(), which the module does not need.
 */
static inline int postcopy_send_page_request(MigrationIncomingState *mis,
                                             RAMBlock *rb, ram_addr_t offset,
                                             uint64_t haddr, uint32_t tid)
{
#if POSTCOPY_CONTRACT_10_2
    return migrate_send_rp_req_pages(mis, rb, offset, haddr, tid);
#else
    return migrate_send_rp_req_pages(mis, rb, offset, haddr);
#endif
}

/*
 * Whether the source in @state is switching to postcopy or in it, paused
 * or recovering; 10.2 has a state more for the switch.
 */
static inline bool postcopy_source_in_postcopy(MigrationStatus state)
{
    switch (state) {
    case MIGRATION_STATUS_DEVICE:
#if POSTCOPY_CONTRACT_10_2
    case MIGRATION_STATUS_POSTCOPY_DEVICE:
#endif
    case MIGRATION_STATUS_POSTCOPY_ACTIVE:
    case MIGRATION_STATUS_POSTCOPY_PAUSED:
    case MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP:
    case MIGRATION_STATUS_POSTCOPY_RECOVER:
        return true;
    default:
        return false;
    }
}

/*
 * Whether the page at byte @offset of @rb is received.  ram.c's
 * ramblock_recv_bitmap_test*() read receivedmap plainly, while placement
 * sets its bits atomically on other threads (ThreadSanitizer saw the
 * fault thread race with the listen thread): the module reads the word
 * atomically instead.
 */
static inline bool postcopy_received(RAMBlock *rb, uint64_t offset)
{
    unsigned long nr = offset >> qemu_target_page_bits();

    return qatomic_read(&rb->receivedmap[BIT_WORD(nr)]) & BIT_MASK(nr);
}

#endif
