/*
 * Postcopy: per-vCPU blocktime accounting.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef QEMU_POSTCOPY_BLOCKTIME_H
#define QEMU_POSTCOPY_BLOCKTIME_H

/*
 * How long each vCPU waited for pages that were not there yet, and how
 * long all of them waited at once (the guest made no progress at all).
 *
 * A vCPU starts waiting when the fault thread reads its fault and stops
 * when the page it waits for is placed.  Times are nanoseconds of any
 * monotonic clock the caller chooses; the caller passes "now" in, so the
 * accounting is exact under test.
 *
 * Thread safety: every function may be called from any thread; an
 * internal mutex serialises updates.  postcopy_blocktime_has_waiters()
 * reads without the lock; see its comment.
 */
typedef struct PostcopyBlocktime PostcopyBlocktime;

PostcopyBlocktime *postcopy_blocktime_new(unsigned int nr_vcpus);
void postcopy_blocktime_free(PostcopyBlocktime *bt);

/*
 * vCPU @cpu faulted on the page at @page (any unique page address).
 * Returns false when @cpu already waited for that same page (the kernel
 * delivers a fault again after a signal), which keeps its first start.
 */
bool postcopy_blocktime_fault(PostcopyBlocktime *bt, unsigned int cpu,
                              uint64_t page, uint64_t now_ns);

/*
 * The page at @page is in place: every vCPU waiting for it stops waiting.
 * Returns how many did.  O(1) in the number of vCPUs that do not wait on it.
 */
unsigned int postcopy_blocktime_page_arrived(PostcopyBlocktime *bt,
                                             uint64_t page, uint64_t now_ns);

/*
 * Whether any vCPU waits, read without the lock: placement calls it for
 * every page, and almost always nobody waits.  A fault recorded
 * concurrently is caught by the fault thread itself, which re-checks the
 * received bitmap after recording (both sides order with smp_mb()).
 */
bool postcopy_blocktime_has_waiters(PostcopyBlocktime *bt);

unsigned int postcopy_blocktime_nr_vcpus(PostcopyBlocktime *bt);
/* Time all vCPUs spent waiting at once, so far. */
uint64_t postcopy_blocktime_total_ns(PostcopyBlocktime *bt);
/* Time @cpu spent waiting, so far (finished waits only). */
uint64_t postcopy_blocktime_vcpu_ns(PostcopyBlocktime *bt, unsigned int cpu);
/* Faults counted so far, and the longest single wait of any vCPU. */
uint64_t postcopy_blocktime_faults(PostcopyBlocktime *bt);
uint64_t postcopy_blocktime_longest_ns(PostcopyBlocktime *bt);

#endif
