/*
 * Postcopy: the placer thread, a second thread placing background pages.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Why: during postcopy the main load thread is often the bottleneck, and
 * most of its time goes to UFFDIO_COPY, the kernel copying into pages it
 * has just allocated, while the vCPUs wait for pages and another core
 * idles.  A second thread placing pages beside it places them faster.
 *
 * How: when ram.c hands the load thread a whole page, the thread copies
 * it into a free slot of a small ring (postcopy-placer.c) and goes
 * back to reading the stream; the placer thread places the slots in order.
 * Slots whose pages follow one another in a RAMBlock, as the background
 * stream's mostly do, it places with one UFFDIO_COPY per run, which costs
 * less per page than a call each (tools/uffd-place-bench).  It takes the
 * run that is there and never waits for one to grow, so no page waits
 * longer for it.
 * Only while some fault waits for a page (unless QEMU_POSTCOPY_TUNE asks
 * for placer=on): the hand-over costs CPU (a copy, a second thread's
 * cache misses and wake-ups), which is spare while the vCPUs wait, but
 * which a guest whose working set is already in would have used.  The
 * price is a longer postcopy phase while the vCPUs run.
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
 * woken per page, it would preempt the load thread about as often.  A
 * page may then wait in a slot for the next few, unless something waits
 * for it: the load thread, after queueing a page, wakes the placer if
 * that page is now requested, and the fault thread, after each fault's
 * request, wakes it if any page is queued (postcopy_placer_kick; the
 * barriers on both sides make sure one of the two sees the other).  Stop
 * and drain wake it too.
 *
 * Failures: the placer never drops a page.  When it cannot place one, it
 * leaves that page and every later one in their slots, says so in
 * @stalled and touches the queue no more.  The load thread, which
 * produced them, places them itself (postcopy_placer_take_over()) at the
 * first of: its next page, its pause for a recovery, the stream's tail.
 * Its own failure then fails the load as upstream's module would: during
 * postcopy that pauses the migration, and the pages not placed, which are
 * not marked received, are sent again after the recovery.  A recovery
 * thus starts with an empty ring and no stored error.
 *
 * The tail: a page still in the ring when the stream ends could only be
 * placed after the load returned, where a failure can no longer pause the
 * migration.  So once no more than PLACER_TAIL_BYTES of guest RAM are
 * missing, the load thread waits for the ring to empty, places every later
 * page itself and hands nothing over any more: the end of the stream
 * finds the ring empty, and every failure there fails the load.
 *
 * Threads: the main load thread (mis->listen_thread) is the only
 * producer; the placer thread is the consumer, except while @stalled is
 * set or after it was joined, when the load thread is.  The fault thread
 * only kicks.  Lifetime: postcopy_placer_start() in the migration's setup
 * allocates it, postcopy_placer_stop() joins the thread at the start of
 * the cleanup and postcopy_placer_free() frees it at the end, after the
 * fault thread is gone.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-inject.h"
#include "postcopy-placer.h"
#include "postcopy-tune.h"
#include "trace.h"

/* 64 pages of 4 KiB: enough to ride out the placer's scheduling hiccups. */
#define PLACER_SLOTS 64
/* Pages handed over per wake-up of a sleeping placer; see the top. */
#define PLACER_WAKE_BATCH 8
/*
 * The stream's tail, where pages are no longer handed over (see the top).
 * It needs to exceed only the ring; beyond that, the larger it is, the
 * likelier a failure in it finds the source still sending rather than
 * completing, where QEMU's source fails the migration instead of pausing
 * it.  What the source may have sent ahead of the destination is what the
 * sockets hold: TCP autotunes a receive buffer up to net.ipv4.tcp_rmem's
 * maximum (32 MiB on the kernels this was tested on) on top of a send
 * buffer of up to 4 MiB.
 * The load thread alone places the last 64 MiB of a migration.
 */
#define PLACER_TAIL_BYTES (64 * MiB)

typedef struct PostcopyPlacer {
    MigrationIncomingState *mis;
    QemuThread thread;
    /* Load thread only: the thread is running (not joined yet). */
    bool running;
    /* Load thread only: in the stream's tail, nothing is handed over. */
    bool tail;
    /* Set at start: hand pages over even while no fault waits. */
    bool always;
    /* Set at start: the most slots placed with one UFFDIO_COPY. */
    unsigned int run_max;
    size_t page_size;
    PostcopyPlacerRing queue;
    /* Slot i's destination and, at pages + i * page_size, its data */
    PostcopyPlaceTarget slots[PLACER_SLOTS];
    uint8_t *pages;
    /*
     * Set by the producer every PLACER_WAKE_BATCH hand-overs, by kick,
     * take-over, drain and stop; waited on when idle.
     */
    QemuEvent wake;
    /* Producer only: hand-overs since it last set @wake */
    unsigned int unwoken;
    /* Atomic.  Set by stop(): place what is queued, then exit. */
    bool quit;
    /* Atomic.  Set by drain() while the load thread waits for the ring. */
    bool draining;
    /*
     * Atomic, store-release and load-acquire.  0, or the negative errno
     * of the placement that failed.  Set by the placer after its last
     * access to the queue, cleared by the load thread after taking over:
     * whoever reads it non-zero may not touch the queue, and the other
     * way round (see the top).
     */
    int stalled;
    /*
     * Statistics for the trace: the producer's own; @placed, the
     * placer's (atomic: drain's trace reads it while the placer runs);
     * @runs, the placer's UFFDIO_COPY calls, read after the join only.
     */
    uint64_t handed;
    uint64_t ring_full;
    uint64_t unwaited;
    uint64_t placed;
    uint64_t runs;
    uint64_t taken_over;
} PostcopyPlacer;

static uint8_t *placer_page(PostcopyPlacer *p, int slot)
{
    return p->pages + (size_t)slot * p->page_size;
}

static int placer_install_slot(PostcopyPlacer *p, int slot)
{
    PostcopyPlaceTarget *s = &p->slots[slot];

    RCU_READ_LOCK_GUARD();
    return postcopy_install(p->mis, s->rb, s->host, placer_page(p, slot));
}

/*
 * The placer thread: place the run of slots at the head of the ring, or
 * as much of it as it can and then stall (see the top).
 */
static void placer_place_run(PostcopyPlacer *p)
{
    int slot = postcopy_placer_ring_peek(&p->queue);
    PostcopyPlaceTarget *s = &p->slots[slot];
    unsigned int pages = postcopy_placer_ring_run(&p->queue, p->slots,
                                                  p->page_size, p->run_max);
    unsigned int placed = 0;
    int ret;

    if (postcopy_inject_hit(POSTCOPY_INJECT_PLACER_FAIL)) {
        ret = -EIO;
    } else {
        RCU_READ_LOCK_GUARD();
        ret = postcopy_install_run(p->mis, s->rb, s->host,
                                   placer_page(p, slot), pages, &placed);
    }
    qatomic_set(&p->placed, p->placed + placed);
    p->runs++;
    postcopy_placer_ring_release_n(&p->queue, placed);
    if (ret) {
        trace_postcopy_placer_stalled((uint8_t *)s->host +
                                      (size_t)placed * p->page_size, ret);
        qatomic_store_release(&p->stalled, ret);
    }
}

/* Placer thread: whether a slot waits that it may place now. */
static bool placer_has_work(PostcopyPlacer *p)
{
    if (qatomic_load_acquire(&p->stalled)) {
        return false;
    }
    /* Fault point: hold every page until the stop or a pause. */
    if (postcopy_inject_armed(POSTCOPY_INJECT_PLACER_HOLD) &&
        !qatomic_read(&p->quit) && !qatomic_read(&p->draining)) {
        return false;
    }
    return postcopy_placer_ring_peek(&p->queue) >= 0;
}

static void *placer_thread(void *opaque)
{
    PostcopyPlacer *p = opaque;

    rcu_register_thread();
    postcopy_thread_sync_signal(p->mis);
    for (;;) {
        if (placer_has_work(p)) {
            placer_place_run(p);
            continue;
        }
        if (qatomic_read(&p->quit)) {
            break;
        }
        /* Reset, then look again, so that no hand-over is missed. */
        qemu_event_reset(&p->wake);
        if (!placer_has_work(p) && !qatomic_read(&p->quit)) {
            qemu_event_wait(&p->wake);
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

/* Wrapper: postcopy_thread_create() passes the MigrationIncomingState. */
static void *placer_thread_start(void *opaque)
{
    return placer_thread(postcopy_in.placer);
}

bool postcopy_placer_start(MigrationIncomingState *mis, Error **errp)
{
    PostcopyPlacer *p;

    assert(!postcopy_in.placer);
    if (!placer_worth_starting()) {
        trace_postcopy_placer_off("this process may use one CPU only");
        return true;
    }
    if (postcopy_tune()->no_placer) {
        trace_postcopy_placer_off("QEMU_POSTCOPY_TUNE=placer=off");
        return true;
    }
    p = g_new0(PostcopyPlacer, 1);
    p->mis = mis;
    p->always = postcopy_tune()->placer_always;
    p->run_max = postcopy_tune()->placer_run;
    p->page_size = qemu_real_host_page_size();
    p->pages = postcopy_map_anonymous(PLACER_SLOTS * p->page_size,
                                      "the postcopy placer's slots", errp);
    if (!p->pages) {
        g_free(p);
        return false;
    }
    postcopy_placer_ring_init(&p->queue, PLACER_SLOTS);
    qemu_event_init(&p->wake, false);
    postcopy_in.placer = p;
    postcopy_thread_create(mis, &p->thread, POSTCOPY_THREAD_DST_PLACER,
                           placer_thread_start, QEMU_THREAD_JOINABLE);
    p->running = true;
    trace_postcopy_placer_start(PLACER_SLOTS, p->page_size, p->always,
                                p->run_max);
    return true;
}

/*
 * Load thread, while the placer is stalled or joined: place every page
 * left in the slots.  Returns the first failure (negative errno), having
 * tried every page all the same: each one placed is one fewer to send
 * again.
 */
static int placer_place_leftovers(PostcopyPlacer *p)
{
    int first_err = 0;
    int slot;

    while ((slot = postcopy_placer_ring_peek(&p->queue)) >= 0) {
        int ret = postcopy_inject_hit(POSTCOPY_INJECT_PLACE_LEFTOVERS) ?
                  -EIO : placer_install_slot(p, slot);

        if (ret && !first_err) {
            first_err = ret;
        }
        p->taken_over++;
        postcopy_placer_ring_release(&p->queue);
    }
    return first_err;
}

int postcopy_placer_take_over(MigrationIncomingState *mis)
{
    PostcopyPlacer *p = postcopy_in.placer;
    int stalled, ret;

    if (!p || !qemu_thread_is_self(&mis->listen_thread) ||
        likely(!qatomic_load_acquire(&p->stalled))) {
        return 0;
    }
    stalled = qatomic_read(&p->stalled);
    ret = placer_place_leftovers(p);
    trace_postcopy_placer_take_over(stalled, ret);
    qatomic_store_release(&p->stalled, 0);
    qemu_event_set(&p->wake);
    return ret;
}

int postcopy_placer_stop(MigrationIncomingState *mis)
{
    PostcopyPlacer *p = postcopy_in.placer;
    int ret;

    if (!p || !p->running) {
        return 0;
    }
    qatomic_set(&p->quit, true);
    qemu_event_set(&p->wake);
    qemu_thread_join(&p->thread);
    p->running = false;
    /* The load thread is the only consumer now. */
    ret = placer_place_leftovers(p);
    trace_postcopy_placer_stop(p->handed, p->placed, p->runs, p->ring_full,
                               p->unwaited, p->taken_over, ret);
    return ret;
}

void postcopy_placer_free(void)
{
    PostcopyPlacer *p = postcopy_in.placer;

    if (!p) {
        return;
    }
    assert(!p->running);
    postcopy_in.placer = NULL;
    munmap(p->pages, PLACER_SLOTS * p->page_size);
    qemu_event_destroy(&p->wake);
    g_free(p);
}

bool postcopy_placer_offer(MigrationIncomingState *mis, RAMBlock *rb,
                           void *host, const void *from)
{
    PostcopyPlacer *p = postcopy_in.placer;
    int slot;

    /* @running and @tail are the load thread's: ask which thread first. */
    if (!p || !qemu_thread_is_self(&mis->listen_thread) || !p->running ||
        p->tail || qemu_ram_pagesize(rb) != p->page_size ||
        postcopy_page_requested(mis, host)) {
        return false;
    }
    /*
     * While no fault waits, the vCPUs run and want the CPU the placer's
     * hand-over costs; while one waits, they leave it idle (see the top).
     */
    if (!p->always && !qatomic_read(&mis->page_requested_count)) {
        p->unwaited++;
        return false;
    }
    slot = postcopy_placer_ring_reserve(&p->queue);
    if (slot < 0) {
        p->ring_full++;
        return false;
    }
    p->slots[slot] = (PostcopyPlaceTarget) { .rb = rb, .host = host };
    /* @from is ram.c's buffer, which it reuses as soon as we return. */
    memcpy(placer_page(p, slot), from, p->page_size);
    postcopy_placer_ring_publish(&p->queue);
    /*
     * Pairs with the barrier in postcopy_placer_kick(): either we see the
     * fault thread's request for the page we just queued (it faulted
     * after our check above) and wake the placer, or the fault thread's
     * kick, after that request, sees the page queued.
     */
    smp_mb();
    if (++p->unwoken >= PLACER_WAKE_BATCH ||
        postcopy_page_requested(mis, host)) {
        p->unwoken = 0;
        qemu_event_set(&p->wake);
    }
    p->handed++;
    trace_postcopy_placer_handoff(host, slot);
    return true;
}

void postcopy_placer_kick(void)
{
    PostcopyPlacer *p = postcopy_in.placer;

    /* Pairs with the barrier in postcopy_placer_offer() */
    smp_mb();
    if (p && !postcopy_placer_ring_is_empty(&p->queue)) {
        qemu_event_set(&p->wake);
    }
}

/*
 * Load thread: wait until the placer placed every page handed over, or
 * place what it left when it stalls.  Returns the first failure (negative
 * errno); a page that failed is not marked received.
 */
static int placer_empty_ring(PostcopyPlacer *p, MigrationIncomingState *mis)
{
    int first_err = 0, ret;

    qatomic_set(&p->draining, true);
    /* Fewer than PLACER_WAKE_BATCH pages may wait for a wake-up. */
    qemu_event_set(&p->wake);
    /* Rare (pause, tail) and short (at most PLACER_SLOTS pages): poll. */
    while (!postcopy_placer_ring_is_empty(&p->queue)) {
        ret = postcopy_placer_take_over(mis);
        if (ret && !first_err) {
            first_err = ret;
        }
        if (!postcopy_placer_ring_is_empty(&p->queue)) {
            g_usleep(100);
        }
    }
    qatomic_set(&p->draining, false);
    p->unwoken = 0;
    return first_err;
}

int postcopy_placer_settle(MigrationIncomingState *mis)
{
    PostcopyPlacer *p = postcopy_in.placer;
    uint64_t missing;
    int ret;

    if (!p || !qemu_thread_is_self(&mis->listen_thread) || p->tail) {
        return 0;
    }
    missing = postcopy_bytes_missing();
    if (likely(missing > PLACER_TAIL_BYTES)) {
        return postcopy_placer_take_over(mis);
    }
    p->tail = true;
    ret = p->running ? placer_empty_ring(p, mis) : 0;
    trace_postcopy_placer_tail(missing, p->handed, ret);
    return ret;
}

void postcopy_placer_drain(MigrationIncomingState *mis)
{
    PostcopyPlacer *p = postcopy_in.placer;
    int ret;

    if (!p) {
        return;
    }
    ret = placer_empty_ring(p, mis);
    if (ret) {
        /* Not marked received: the source sends them again. */
        warn_report("postcopy: pages left unplaced at the pause (%s) "
                    "will be asked for again after the recovery",
                    strerror(-ret));
    }
    trace_postcopy_placer_drained(p->handed, qatomic_read(&p->placed),
                                  p->taken_over);
}
