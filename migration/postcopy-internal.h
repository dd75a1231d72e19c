/*
 * Postcopy: declarations shared by the module's own files only.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef QEMU_POSTCOPY_INTERNAL_H
#define QEMU_POSTCOPY_INTERNAL_H

#include "postcopy-ram.h"

/* postcopy-probe.c */

/*
 * The userfaultfd features this kernel offers, read once per process.
 * False with @errp naming the cause (permissions, kernel support).
 */
bool postcopy_uffd_supported_features(uint64_t *features, Error **errp);
/* The features the module asks for on its own userfaultfd. */
uint64_t postcopy_uffd_wanted_features(uint64_t supported);

/* postcopy-fault.c */

/* The fault thread's body; @opaque is the MigrationIncomingState. */
void *postcopy_fault_thread(void *opaque);
/*
 * Ask for the host page of @rb at @offset (aligned) that @haddr lies in,
 * unless it is already on its way.  0, or negative when the return path
 * is broken.
 */
int postcopy_request_page(MigrationIncomingState *mis, RAMBlock *rb,
                          ram_addr_t offset, uint64_t haddr);

/* postcopy-ram.c */

/* Private anonymous memory of @size bytes, or NULL with @errp set. */
void *postcopy_map_anonymous(size_t size, const char *what, Error **errp);

/* postcopy-ram.c: the shared (vhost-user) userfaultfds */

/*
 * Bumped whenever a shared fd is registered or unregistered, so that the
 * fault thread knows to copy the list again.
 */
unsigned int postcopy_shared_fds_generation(void);
/* A copy of the registered shared fds (caller frees with g_array_free). */
GArray *postcopy_shared_fds_copy(void);

/* postcopy-blocktime-qemu.c: blocktime accounting wired to QEMU */

/* Start accounting for this migration (postcopy-blocktime capability). */
void postcopy_blocktime_setup(MigrationIncomingState *mis);
/* The fault thread read a fault of thread @tid on host page @page. */
void postcopy_blocktime_fault_read(MigrationIncomingState *mis, RAMBlock *rb,
                                   uint32_t tid, void *page);
/* The host page at @page was placed and its bit set in receivedmap. */
void postcopy_blocktime_page_placed(MigrationIncomingState *mis, void *page);
/* Total blocktime in milliseconds, 0 without accounting. */
uint64_t postcopy_blocktime_total_ms(MigrationIncomingState *mis);

/* postcopy-preempt.c */

/* Start the thread that loads pages from the preempt channel. */
void postcopy_preempt_thread_start(MigrationIncomingState *mis);
/* Let every requested page arrive, then stop and join that thread. */
void postcopy_preempt_thread_stop(MigrationIncomingState *mis);

#endif
