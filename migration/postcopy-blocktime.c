/*
 * Postcopy: per-vCPU blocktime accounting.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Pure logic (tests/unit drives it with synthetic clocks).
 *
 * Layout: one waiter record per vCPU, then POSTCOPY_BLOCKTIME_OTHERS
 * records for the faults of other threads (device emulation, the main
 * loop), taken from a free list; and a small open-addressed table from
 * page address to the chain of waiters on that page, linked through the
 * records.  At most as many pages as records are waited on at once, so a
 * table of at least twice that many slots never fills and stays at most
 * half full; everything is allocated once, so neither a fault nor a
 * placement allocates.
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/atomic.h"
#include "qemu/host-utils.h"
#include "qemu/thread.h"
#include "postcopy-blocktime.h"

#define NO_WAITER (-1)

typedef struct BlocktimeWaiter {
    bool waiting;
    /* While waiting: the page, and since when */
    uint64_t page;
    uint64_t since_ns;
    /* Next waiter on the same page, or NO_WAITER */
    int next;
    /* vCPUs: sum of finished waits, and faults.  Others: the thread id. */
    uint64_t blocked_ns;
    uint64_t faults;
    uint32_t tid;
} BlocktimeWaiter;

typedef struct BlocktimeSlot {
    uint64_t page;
    /* First waiter of the page's chain; NO_WAITER marks a free slot */
    int first;
} BlocktimeSlot;

struct PostcopyBlocktime {
    /* Protects every field below but the lock-free reads of the counts */
    QemuMutex lock;
    unsigned int nr_vcpus;
    /* vCPUs waiting now; written under lock, read atomically anywhere */
    unsigned int nr_waiting;
    /* Other threads waiting now; same rules */
    unsigned int nr_others_waiting;
    /* Valid while nr_waiting == nr_vcpus */
    uint64_t all_blocked_since_ns;
    uint64_t total_ns;
    uint64_t faults;
    uint64_t longest_ns;
    /* Finished waits of other threads; faults of theirs not counted */
    uint64_t others_ns;
    uint64_t others_faults;
    uint64_t others_untracked;
    /* Finished waits of anyone, by the log2 of their microseconds */
    uint64_t latency_dist[POSTCOPY_BLOCKTIME_BUCKETS];
    unsigned int slot_mask;
    BlocktimeSlot *slots;
    /* nr_vcpus vCPUs, then POSTCOPY_BLOCKTIME_OTHERS other threads */
    BlocktimeWaiter *waiters;
    /* Free records of other threads, linked through next */
    int free_others;
};

PostcopyBlocktime *postcopy_blocktime_new(unsigned int nr_vcpus)
{
    PostcopyBlocktime *bt = g_new0(PostcopyBlocktime, 1);
    unsigned int nr_waiters = nr_vcpus + POSTCOPY_BLOCKTIME_OTHERS;
    unsigned int nr_slots = pow2ceil(2 * nr_waiters);
    unsigned int i;

    qemu_mutex_init(&bt->lock);
    bt->nr_vcpus = nr_vcpus;
    bt->slot_mask = nr_slots - 1;
    bt->slots = g_new(BlocktimeSlot, nr_slots);
    for (i = 0; i < nr_slots; i++) {
        bt->slots[i].first = NO_WAITER;
    }
    bt->waiters = g_new0(BlocktimeWaiter, nr_waiters);
    bt->free_others = NO_WAITER;
    for (i = nr_waiters; i-- > nr_vcpus;) {
        bt->waiters[i].next = bt->free_others;
        bt->free_others = i;
    }
    return bt;
}

void postcopy_blocktime_free(PostcopyBlocktime *bt)
{
    if (!bt) {
        return;
    }
    qemu_mutex_destroy(&bt->lock);
    g_free(bt->slots);
    g_free(bt->waiters);
    g_free(bt);
}

static unsigned int slot_hash(PostcopyBlocktime *bt, uint64_t page)
{
    /* Fibonacci hashing: page addresses differ mostly in middle bits. */
    return (page * 0x9e3779b97f4a7c15ULL) >> 40 & bt->slot_mask;
}

/* The slot holding @page, or the free slot where it would go. */
static unsigned int slot_find(PostcopyBlocktime *bt, uint64_t page)
{
    unsigned int i = slot_hash(bt, page);

    while (bt->slots[i].first != NO_WAITER && bt->slots[i].page != page) {
        i = (i + 1) & bt->slot_mask;
    }
    return i;
}

/* Whether @home lies cyclically in (@hole, @pos]. */
static bool slot_between(unsigned int hole, unsigned int home,
                         unsigned int pos)
{
    if (hole <= pos) {
        return hole < home && home <= pos;
    }
    return hole < home || home <= pos;
}

/*
 * Free slot @hole.  Linear probing needs no tombstones if each later entry
 * of the run that could not stay where it is moves back into the hole.
 */
static void slot_remove(PostcopyBlocktime *bt, unsigned int hole)
{
    unsigned int pos = hole;

    for (;;) {
        bt->slots[hole].first = NO_WAITER;
        do {
            pos = (pos + 1) & bt->slot_mask;
            if (bt->slots[pos].first == NO_WAITER) {
                return;
            }
        } while (slot_between(hole, slot_hash(bt, bt->slots[pos].page), pos));
        bt->slots[hole] = bt->slots[pos];
        hole = pos;
    }
}

static bool is_vcpu(PostcopyBlocktime *bt, int waiter)
{
    return waiter < (int)bt->nr_vcpus;
}

/* Bucket N counts waits of [2^N, 2^(N+1)) us; shorter ones go to 0. */
static void latency_dist_add(PostcopyBlocktime *bt, uint64_t waited_ns)
{
    uint64_t us = waited_ns / 1000;
    unsigned int bucket = us ? 63 - clz64(us) : 0;

    bt->latency_dist[MIN(bucket, POSTCOPY_BLOCKTIME_BUCKETS - 1)]++;
}

/*
 * Ends waiter @w's wait at @now_ns; an other thread's record goes back to
 * the free list.  Caller holds the lock.
 */
static void waiter_stop_waiting(PostcopyBlocktime *bt, int w, uint64_t now_ns)
{
    BlocktimeWaiter *v = &bt->waiters[w];
    uint64_t waited = now_ns > v->since_ns ? now_ns - v->since_ns : 0;

    v->waiting = false;
    latency_dist_add(bt, waited);
    if (!is_vcpu(bt, w)) {
        bt->others_ns += waited;
        qatomic_set(&bt->nr_others_waiting, bt->nr_others_waiting - 1);
        v->next = bt->free_others;
        bt->free_others = w;
        return;
    }
    v->blocked_ns += waited;
    bt->longest_ns = MAX(bt->longest_ns, waited);
    if (bt->nr_waiting == bt->nr_vcpus &&
        now_ns > bt->all_blocked_since_ns) {
        bt->total_ns += now_ns - bt->all_blocked_since_ns;
    }
    qatomic_set(&bt->nr_waiting, bt->nr_waiting - 1);
}

/*
 * Unlink @cpu from the chain of the page it waits on.  Only when a vCPU
 * faults on a new page before its old one arrived, which a vCPU thread
 * cannot normally do: a chain walk is fine here.
 */
static void vcpu_abandon_page(PostcopyBlocktime *bt, int cpu, uint64_t now_ns)
{
    BlocktimeWaiter *v = &bt->waiters[cpu];
    unsigned int slot = slot_find(bt, v->page);
    int *link = &bt->slots[slot].first;

    while (*link != cpu) {
        link = &bt->waiters[*link].next;
    }
    *link = v->next;
    if (bt->slots[slot].first == NO_WAITER) {
        slot_remove(bt, slot);
    }
    waiter_stop_waiting(bt, cpu, now_ns);
}

/* Put waiter @w at the head of @page's chain, waiting since @now_ns. */
static void waiter_start_waiting(PostcopyBlocktime *bt, int w, uint64_t page,
                                 uint64_t now_ns)
{
    BlocktimeWaiter *v = &bt->waiters[w];
    unsigned int slot = slot_find(bt, page);

    if (bt->slots[slot].first == NO_WAITER) {
        bt->slots[slot].page = page;
    }
    v->next = bt->slots[slot].first;
    bt->slots[slot].first = w;
    v->page = page;
    v->since_ns = now_ns;
    v->waiting = true;
}

bool postcopy_blocktime_fault(PostcopyBlocktime *bt, unsigned int cpu,
                              uint64_t page, uint64_t now_ns)
{
    BlocktimeWaiter *v;

    g_assert(cpu < bt->nr_vcpus);
    v = &bt->waiters[cpu];

    QEMU_LOCK_GUARD(&bt->lock);
    if (v->waiting) {
        if (v->page == page) {
            return false;
        }
        vcpu_abandon_page(bt, cpu, now_ns);
    }
    waiter_start_waiting(bt, cpu, page, now_ns);
    v->faults++;
    bt->faults++;
    qatomic_set(&bt->nr_waiting, bt->nr_waiting + 1);
    if (bt->nr_waiting == bt->nr_vcpus) {
        bt->all_blocked_since_ns = now_ns;
    }
    return true;
}

/* Whether thread @tid already waits on @page. */
static bool other_waits_on(PostcopyBlocktime *bt, uint32_t tid, uint64_t page)
{
    int w = bt->slots[slot_find(bt, page)].first;

    for (; w != NO_WAITER; w = bt->waiters[w].next) {
        if (!is_vcpu(bt, w) && bt->waiters[w].tid == tid) {
            return true;
        }
    }
    return false;
}

bool postcopy_blocktime_other_fault(PostcopyBlocktime *bt, uint32_t tid,
                                    uint64_t page, uint64_t now_ns)
{
    int w;

    QEMU_LOCK_GUARD(&bt->lock);
    if (other_waits_on(bt, tid, page)) {
        return false;
    }
    w = bt->free_others;
    if (w == NO_WAITER) {
        bt->others_untracked++;
        return false;
    }
    bt->free_others = bt->waiters[w].next;
    bt->waiters[w].tid = tid;
    waiter_start_waiting(bt, w, page, now_ns);
    bt->others_faults++;
    qatomic_set(&bt->nr_others_waiting, bt->nr_others_waiting + 1);
    return true;
}

unsigned int postcopy_blocktime_page_arrived(PostcopyBlocktime *bt,
                                             uint64_t page, uint64_t now_ns)
{
    unsigned int slot, released = 0;
    int w;

    QEMU_LOCK_GUARD(&bt->lock);
    slot = slot_find(bt, page);
    w = bt->slots[slot].first;
    if (w == NO_WAITER) {
        return 0;
    }
    while (w != NO_WAITER) {
        /* Stopping puts an other thread's record on the free list. */
        int next = bt->waiters[w].next;

        waiter_stop_waiting(bt, w, now_ns);
        released++;
        w = next;
    }
    slot_remove(bt, slot);
    return released;
}

bool postcopy_blocktime_has_waiters(PostcopyBlocktime *bt)
{
    return qatomic_read(&bt->nr_waiting) != 0 ||
           qatomic_read(&bt->nr_others_waiting) != 0;
}

unsigned int postcopy_blocktime_nr_vcpus(PostcopyBlocktime *bt)
{
    return bt->nr_vcpus;
}

uint64_t postcopy_blocktime_total_ns(PostcopyBlocktime *bt)
{
    QEMU_LOCK_GUARD(&bt->lock);
    return bt->total_ns;
}

uint64_t postcopy_blocktime_vcpu_ns(PostcopyBlocktime *bt, unsigned int cpu)
{
    g_assert(cpu < bt->nr_vcpus);
    QEMU_LOCK_GUARD(&bt->lock);
    return bt->waiters[cpu].blocked_ns;
}

uint64_t postcopy_blocktime_vcpu_faults(PostcopyBlocktime *bt,
                                        unsigned int cpu)
{
    g_assert(cpu < bt->nr_vcpus);
    QEMU_LOCK_GUARD(&bt->lock);
    return bt->waiters[cpu].faults;
}

void postcopy_blocktime_others(PostcopyBlocktime *bt, uint64_t *waited_ns,
                               uint64_t *faults, uint64_t *untracked)
{
    QEMU_LOCK_GUARD(&bt->lock);
    *waited_ns = bt->others_ns;
    *faults = bt->others_faults;
    *untracked = bt->others_untracked;
}

void postcopy_blocktime_latency_dist(PostcopyBlocktime *bt,
                                     uint64_t dist[POSTCOPY_BLOCKTIME_BUCKETS])
{
    QEMU_LOCK_GUARD(&bt->lock);
    memcpy(dist, bt->latency_dist, sizeof(bt->latency_dist));
}

uint64_t postcopy_blocktime_faults(PostcopyBlocktime *bt)
{
    QEMU_LOCK_GUARD(&bt->lock);
    return bt->faults;
}

uint64_t postcopy_blocktime_longest_ns(PostcopyBlocktime *bt)
{
    QEMU_LOCK_GUARD(&bt->lock);
    return bt->longest_ns;
}
