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
 * How long each vCPU waited for pages that were not there yet, how long
 * all of them waited at once (the guest made no progress at all), and how
 * long other threads waited; and how the waits of everyone spread over
 * power-of-two buckets of microseconds.
 *
 * A thread starts waiting when the fault thread reads its fault and stops
 * when the page it waits for is placed.  Times are nanoseconds of any
 * monotonic clock the caller chooses; the caller passes "now" in, so the
 * accounting is exact under test.
 *
 * Thread safety: every function may be called from any thread; an
 * internal mutex serialises updates.  postcopy_blocktime_has_waiters()
 * reads without the lock; see its comment.
 */
typedef struct PostcopyBlocktime PostcopyBlocktime;

/*
 * Faults of threads other than vCPUs that can be timed at once; a fault
 * beyond them is counted as untracked.  Such threads are few (device
 * emulation, the main loop), and each waits on one page at a time.
 */
#define POSTCOPY_BLOCKTIME_OTHERS 32
/* Bucket N: waits of [2^N, 2^(N+1)) us; the last also takes longer ones. */
#define POSTCOPY_BLOCKTIME_BUCKETS 24

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
 * Thread @tid, not a vCPU, faulted on the page at @page.  Returns false
 * when it already waited for that page, or when POSTCOPY_BLOCKTIME_OTHERS
 * waits are timed already.  A thread that waits for a page stays in the
 * kernel until it arrives, so it cannot wait for two.
 */
bool postcopy_blocktime_other_fault(PostcopyBlocktime *bt, uint32_t tid,
                                    uint64_t page, uint64_t now_ns);

/*
 * The page at @page is in place: every thread waiting for it stops
 * waiting.  Returns how many did.  O(1) in the number of threads that do
 * not wait on it.
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
/* Faults of @cpu counted so far. */
uint64_t postcopy_blocktime_vcpu_faults(PostcopyBlocktime *bt,
                                        unsigned int cpu);
/*
 * Other threads: time of their finished waits, their faults timed, and
 * their faults that could not be timed, so far.
 */
void postcopy_blocktime_others(PostcopyBlocktime *bt, uint64_t *waited_ns,
                               uint64_t *faults, uint64_t *untracked);
/* Finished waits of all threads by bucket (POSTCOPY_BLOCKTIME_BUCKETS). */
void postcopy_blocktime_latency_dist(PostcopyBlocktime *bt,
                                     uint64_t dist[POSTCOPY_BLOCKTIME_BUCKETS]);
/* vCPU faults counted so far, and the longest single wait of any vCPU. */
uint64_t postcopy_blocktime_faults(PostcopyBlocktime *bt);
uint64_t postcopy_blocktime_longest_ns(PostcopyBlocktime *bt);

#endif
