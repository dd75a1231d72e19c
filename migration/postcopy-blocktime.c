/*
 * Postcopy: per-vCPU blocktime accounting.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Pure logic (tests/unit drives it with synthetic clocks).
 *
 * Layout: one record per vCPU, and a small open-addressed table from page
 * address to the chain of vCPUs waiting on that page, linked through the
 * vCPU records.  At most nr_vcpus pages are waited on at once, so a table
 * of at least twice that many slots never fills and stays at most half
 * full; it is allocated once, so neither a fault nor a placement allocates.
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/atomic.h"
#include "qemu/host-utils.h"
#include "qemu/thread.h"
#include "postcopy-blocktime.h"

#define NO_VCPU (-1)

typedef struct BlocktimeVcpu {
    bool waiting;
    /* While waiting: the page, and since when */
    uint64_t page;
    uint64_t since_ns;
    /* Next vCPU waiting on the same page, or NO_VCPU */
    int next;
    /* Sum of finished waits */
    uint64_t blocked_ns;
} BlocktimeVcpu;

typedef struct BlocktimeSlot {
    uint64_t page;
    /* First vCPU of the page's chain; NO_VCPU marks a free slot */
    int first;
} BlocktimeSlot;

struct PostcopyBlocktime {
    /* Protects every field below but nr_waiting's lock-free reads */
    QemuMutex lock;
    unsigned int nr_vcpus;
    /* vCPUs waiting now; written under lock, read atomically anywhere */
    unsigned int nr_waiting;
    /* Valid while nr_waiting == nr_vcpus */
    uint64_t all_blocked_since_ns;
    uint64_t total_ns;
    uint64_t faults;
    uint64_t longest_ns;
    unsigned int slot_mask;
    BlocktimeSlot *slots;
    BlocktimeVcpu *vcpus;
};

PostcopyBlocktime *postcopy_blocktime_new(unsigned int nr_vcpus)
{
    PostcopyBlocktime *bt = g_new0(PostcopyBlocktime, 1);
    unsigned int nr_slots = pow2ceil(MAX(2 * nr_vcpus, 4));
    unsigned int i;

    qemu_mutex_init(&bt->lock);
    bt->nr_vcpus = nr_vcpus;
    bt->slot_mask = nr_slots - 1;
    bt->slots = g_new(BlocktimeSlot, nr_slots);
    for (i = 0; i < nr_slots; i++) {
        bt->slots[i].first = NO_VCPU;
    }
    bt->vcpus = g_new0(BlocktimeVcpu, nr_vcpus);
    return bt;
}

void postcopy_blocktime_free(PostcopyBlocktime *bt)
{
    if (!bt) {
        return;
    }
    qemu_mutex_destroy(&bt->lock);
    g_free(bt->slots);
    g_free(bt->vcpus);
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

    while (bt->slots[i].first != NO_VCPU && bt->slots[i].page != page) {
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
        bt->slots[hole].first = NO_VCPU;
        do {
            pos = (pos + 1) & bt->slot_mask;
            if (bt->slots[pos].first == NO_VCPU) {
                return;
            }
        } while (slot_between(hole, slot_hash(bt, bt->slots[pos].page), pos));
        bt->slots[hole] = bt->slots[pos];
        hole = pos;
    }
}

/* Ends @v's wait at @now_ns.  Caller holds the lock. */
static void vcpu_stop_waiting(PostcopyBlocktime *bt, BlocktimeVcpu *v,
                              uint64_t now_ns)
{
    uint64_t waited = now_ns > v->since_ns ? now_ns - v->since_ns : 0;

    v->blocked_ns += waited;
    bt->longest_ns = MAX(bt->longest_ns, waited);
    v->waiting = false;
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
    BlocktimeVcpu *v = &bt->vcpus[cpu];
    unsigned int slot = slot_find(bt, v->page);
    int *link = &bt->slots[slot].first;

    while (*link != cpu) {
        link = &bt->vcpus[*link].next;
    }
    *link = v->next;
    if (bt->slots[slot].first == NO_VCPU) {
        slot_remove(bt, slot);
    }
    vcpu_stop_waiting(bt, v, now_ns);
}

bool postcopy_blocktime_fault(PostcopyBlocktime *bt, unsigned int cpu,
                              uint64_t page, uint64_t now_ns)
{
    BlocktimeVcpu *v;
    unsigned int slot;

    g_assert(cpu < bt->nr_vcpus);
    v = &bt->vcpus[cpu];

    QEMU_LOCK_GUARD(&bt->lock);
    if (v->waiting) {
        if (v->page == page) {
            return false;
        }
        vcpu_abandon_page(bt, cpu, now_ns);
    }

    slot = slot_find(bt, page);
    if (bt->slots[slot].first == NO_VCPU) {
        bt->slots[slot].page = page;
    }
    v->next = bt->slots[slot].first;
    bt->slots[slot].first = cpu;
    v->page = page;
    v->since_ns = now_ns;
    v->waiting = true;
    bt->faults++;
    qatomic_set(&bt->nr_waiting, bt->nr_waiting + 1);
    if (bt->nr_waiting == bt->nr_vcpus) {
        bt->all_blocked_since_ns = now_ns;
    }
    return true;
}

unsigned int postcopy_blocktime_page_arrived(PostcopyBlocktime *bt,
                                             uint64_t page, uint64_t now_ns)
{
    unsigned int slot, released = 0;
    int cpu;

    QEMU_LOCK_GUARD(&bt->lock);
    slot = slot_find(bt, page);
    cpu = bt->slots[slot].first;
    if (cpu == NO_VCPU) {
        return 0;
    }
    while (cpu != NO_VCPU) {
        BlocktimeVcpu *v = &bt->vcpus[cpu];

        vcpu_stop_waiting(bt, v, now_ns);
        released++;
        cpu = v->next;
    }
    slot_remove(bt, slot);
    return released;
}

bool postcopy_blocktime_has_waiters(PostcopyBlocktime *bt)
{
    return qatomic_read(&bt->nr_waiting) != 0;
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
    return bt->vcpus[cpu].blocked_ns;
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
