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
/*
 * Whether the host page at @host was asked for and is not placed yet.
 * Any thread; the answer can be stale by the time it returns.
 */
bool postcopy_page_requested(MigrationIncomingState *mis, void *host);

/* postcopy-ram.c */

/* Private anonymous memory of @size bytes, or NULL with @errp set. */
void *postcopy_map_anonymous(size_t size, const char *what, Error **errp);
/*
 * Place the host page of @rb at @host from @from (NULL: zeroes, with
 * UFFDIO_ZEROPAGE), mark it received and wake whoever waits for it.  0, or
 * a negative errno after reporting the cause.  Any thread.
 */
int postcopy_install(MigrationIncomingState *mis, RAMBlock *rb, void *host,
                     void *from);

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

/* postcopy-placer.c: a second thread placing background pages */

#define POSTCOPY_THREAD_DST_PLACER "mig/dst/place"

/*
 * Start the placer thread, unless this process may use one CPU only.
 * False with @errp set when its slots cannot be mapped.
 */
bool postcopy_placer_start(MigrationIncomingState *mis, Error **errp);
/*
 * Place what is queued, stop and join the thread.  0, or the first
 * placement error (negative errno) the thread met.  Load thread only.
 */
int postcopy_placer_stop(MigrationIncomingState *mis);
/*
 * Hand the page ram.c assembled at @from over to the placer, which will
 * place it at @host.  False when the caller must place it itself (see
 * postcopy-placer.c for which pages are handed over).  Load thread only.
 */
bool postcopy_placer_offer(MigrationIncomingState *mis, RAMBlock *rb,
                           void *host, const void *from);
/* The placer's first placement error (negative errno), or 0.  Any thread. */
int postcopy_placer_error(void);
/* Wait until every page handed over is placed (or dropped after an error). */
void postcopy_placer_drain(void);
/*
 * Wake the placer, if it ever started, to place what waits in its slots:
 * something may be waiting for one of those pages.  Any thread, any time.
 */
void postcopy_placer_kick(void);

#endif
