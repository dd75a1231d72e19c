/*
 * Postcopy: the placer thread, a second thread placing background pages.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Why: during postcopy the main load thread is the bottleneck, and most
 * of its time is UFFDIO_COPY.  In a 4 GiB run here (perf, see
 * docs/devel/migration/postcopy.rst) the load thread was busy 100% of the
 * time, 87% of it inside that ioctl, mostly the kernel copying into pages
 * it had just allocated; meanwhile the second core idled, because the
 * vCPUs were waiting for pages.  Two threads placing pages at once
 * place them about twice as fast on that machine.
 *
 * How: when ram.c hands the load thread a whole page, the thread copies
 * it into a free slot of a small ring (postcopy-placeq.c) and goes back
 * to reading the stream; the placer thread places the slots in order.
 * When every slot is taken, the load thread places the page itself, so
 * both threads place pages in parallel and neither ever waits for the
 * other.  Not handed over (placed at once by the thread that got them):
 *  - pages a vCPU is waiting for, so a fault is never served later;
 *  - pages of the preempt channel, which are the urgent ones;
 *  - huge pages, for which a second copy would cost more than it saves;
 *  - anything, on a host where QEMU may run on one CPU only.
 *
 * A page in a slot is not marked received until it is placed: a vCPU that
 * faults on it meanwhile asks the source, which ignores the request (the
 * page was sent) while the placer's UFFDIO_COPY wakes the vCPU.
 *
 * Wake-ups: the load thread wakes a sleeping placer once per
 * PLACER_WAKE_BATCH pages handed over, not once per page.  When the link
 * sets the pace the placer keeps up and sleeps after nearly every page;
 * woken per page, it preempted the load thread about 26,000 times in a
 * one-second 1 GiB run here (docs/bench/matrix.md).  A page may then wait
 * in a slot for the next few, unless something waits for it: the load
 * thread, after queueing a page, wakes the placer if that page is now
 * requested, and the fault thread, after each fault's request, wakes it
 * if any page is queued (postcopy_placer_kick; the barriers on both sides
 * make sure one of the two sees the other).  Stop and drain wake it too.
 *
 * Threads: the main load thread (mis->listen_thread) is the only
 * producer; the placer thread the only consumer.  Setup and cleanup run
 * on the load thread's side (see postcopy_ram_incoming_setup/cleanup),
 * before the first page and after the last one.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "exec/ramblock.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-placeq.h"
#include "trace.h"

/* 64 pages of 4 KiB: enough to ride out the placer's scheduling hiccups. */
#define PLACER_SLOTS 64
/* Pages handed over per wake-up of a sleeping placer; see the top. */
#define PLACER_WAKE_BATCH 8

typedef struct PlacerSlot {
    RAMBlock *rb;
    void *host;
} PlacerSlot;

typedef struct Placer {
    MigrationIncomingState *mis;
    QemuThread thread;
    /* Set and cleared with no other thread running: see the top. */
    bool running;
    size_t page_size;
    PostcopyPlaceQueue queue;
    /* Slot i's destination and, at pages + i * page_size, its data */
    PlacerSlot slots[PLACER_SLOTS];
    uint8_t *pages;
    /*
     * Set by the producer every PLACER_WAKE_BATCH hand-overs, by kick,
     * drain and stop; waited on when idle.  Initialised on the first start
     * and never destroyed, so that the fault thread may set it at any time
     * (it outlives the placer in cleanup).  @wake_ready: atomic, set once
     * @wake is initialised.
     */
    QemuEvent wake;
    bool wake_ready;
    /* Producer only: hand-overs since it last set @wake */
    unsigned int unwoken;
    /* Atomic.  Set by stop(): place what is queued, then exit. */
    bool quit;
    /*
     * Atomic.  The first placement error (negative errno), sticky: the
     * placer drops the rest and the load thread fails the migration.
     */
    int error;
    /* Statistics for the trace: producer's and consumer's own. */
    uint64_t handed;
    uint64_t ring_full;
    uint64_t placed;
} Placer;

static Placer placer;

static uint8_t *placer_page(int slot)
{
    return placer.pages + (size_t)slot * placer.page_size;
}

static void placer_place_slot(int slot)
{
    PlacerSlot *s = &placer.slots[slot];
    int ret = 0;

    if (!qatomic_read(&placer.error)) {
        WITH_RCU_READ_LOCK_GUARD() {
            ret = postcopy_install(placer.mis, s->rb, s->host,
                                   placer_page(slot));
        }
        if (ret) {
            qatomic_cmpxchg(&placer.error, 0, ret);
        } else {
            placer.placed++;
        }
    }
    postcopy_placeq_release(&placer.queue);
}

static void *placer_thread(void *opaque)
{
    MigrationIncomingState *mis = opaque;

    rcu_register_thread();
    qemu_sem_post(&mis->thread_sync_sem);
    for (;;) {
        int slot = postcopy_placeq_peek(&placer.queue);

        if (slot >= 0) {
            placer_place_slot(slot);
            continue;
        }
        if (qatomic_read(&placer.quit)) {
            break;
        }
        /* Reset, then look again, so that no hand-over is missed. */
        qemu_event_reset(&placer.wake);
        if (postcopy_placeq_peek(&placer.queue) < 0 &&
            !qatomic_read(&placer.quit)) {
            qemu_event_wait(&placer.wake);
        }
    }
    rcu_unregister_thread();
    return NULL;
}

/* The CPUs this process may run on: one means nothing runs in parallel. */
static bool placer_worth_starting(void)
{
    cpu_set_t cpus;

    if (sched_getaffinity(0, sizeof(cpus), &cpus)) {
        return false;
    }
    return CPU_COUNT(&cpus) > 1;
}

bool postcopy_placer_start(MigrationIncomingState *mis, Error **errp)
{
    if (!placer_worth_starting()) {
        trace_postcopy_placer_off("this process may use one CPU only");
        return true;
    }
    placer.mis = mis;
    placer.page_size = qemu_real_host_page_size();
    placer.pages = postcopy_map_anonymous(PLACER_SLOTS * placer.page_size,
                                          "the postcopy placer's slots",
                                          errp);
    if (!placer.pages) {
        return false;
    }
    postcopy_placeq_init(&placer.queue, PLACER_SLOTS);
    if (!qatomic_read(&placer.wake_ready)) {
        qemu_event_init(&placer.wake, false);
        qatomic_store_release(&placer.wake_ready, true);
    }
    placer.unwoken = 0;
    placer.quit = false;
    placer.error = 0;
    placer.handed = placer.ring_full = placer.placed = 0;
    postcopy_thread_create(mis, &placer.thread, POSTCOPY_THREAD_DST_PLACER,
                           placer_thread, QEMU_THREAD_JOINABLE);
    placer.running = true;
    trace_postcopy_placer_start(PLACER_SLOTS, placer.page_size);
    return true;
}

int postcopy_placer_stop(MigrationIncomingState *mis)
{
    int error;

    if (!placer.running) {
        return 0;
    }
    qatomic_set(&placer.quit, true);
    qemu_event_set(&placer.wake);
    qemu_thread_join(&placer.thread);
    placer.running = false;
    munmap(placer.pages, PLACER_SLOTS * placer.page_size);
    placer.pages = NULL;
    error = qatomic_read(&placer.error);
    trace_postcopy_placer_stop(placer.handed, placer.placed,
                               placer.ring_full, error);
    return error;
}

int postcopy_placer_error(void)
{
    return qatomic_read(&placer.error);
}

bool postcopy_placer_offer(MigrationIncomingState *mis, RAMBlock *rb,
                           void *host, const void *from)
{
    int slot;

    if (!placer.running || qemu_ram_pagesize(rb) != placer.page_size ||
        !qemu_thread_is_self(&mis->listen_thread) ||
        postcopy_page_requested(mis, host)) {
        return false;
    }
    slot = postcopy_placeq_reserve(&placer.queue);
    if (slot < 0) {
        placer.ring_full++;
        return false;
    }
    placer.slots[slot] = (PlacerSlot) { .rb = rb, .host = host };
    /* @from is ram.c's buffer, which it reuses as soon as we return. */
    memcpy(placer_page(slot), from, placer.page_size);
    postcopy_placeq_publish(&placer.queue);
    /*
     * Pairs with the barrier in postcopy_placer_kick(): either we see the
     * fault thread's request for the page we just queued (it faulted
     * after our check above) and wake the placer, or the fault thread's
     * kick, after that request, sees the page queued.
     */
    smp_mb();
    if (++placer.unwoken >= PLACER_WAKE_BATCH ||
        postcopy_page_requested(mis, host)) {
        placer.unwoken = 0;
        qemu_event_set(&placer.wake);
    }
    placer.handed++;
    trace_postcopy_placer_handoff(host, slot);
    return true;
}

void postcopy_placer_kick(void)
{
    /* Pairs with the barrier in postcopy_placer_offer() */
    smp_mb();
    if (qatomic_load_acquire(&placer.wake_ready) &&
        !postcopy_placeq_is_empty(&placer.queue)) {
        qemu_event_set(&placer.wake);
    }
}

void postcopy_placer_drain(void)
{
    /* Fewer than PLACER_WAKE_BATCH pages may wait for a wake-up. */
    postcopy_placer_kick();
    /* Rare (pause) and short (at most PLACER_SLOTS placements): poll. */
    while (!postcopy_placeq_is_empty(&placer.queue)) {
        g_usleep(100);
    }
}
