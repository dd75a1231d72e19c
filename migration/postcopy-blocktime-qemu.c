/*
 * Postcopy: blocktime accounting wired to QEMU's vCPUs, clock and
 * query-migrate (the postcopy-blocktime capability).
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The accounting itself is pure logic in postcopy-blocktime.c.  Here a
 * fault's thread id becomes a vCPU index (faults of other threads, such
 * as device emulation, are timed apart: they are not a vCPU's blocktime),
 * and the totals go to query-migrate on the destination.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "qemu/userfaultfd.h"
#include "hw/boards.h"
#include "hw/core/cpu.h"
#include "system/system.h"
#include "migration.h"
#include "options.h"
#include "ram.h"
#include "postcopy-ram.h"
#include "postcopy-compat.h"
#include "postcopy-internal.h"
#include "postcopy-blocktime.h"
#include "trace.h"

/*
 * Lives from a migration's LISTEN until the next migration or QEMU's
 * exit, so that query-migrate still reports it after completion.
 */
struct PostcopyBlocktimeContext {
    PostcopyBlocktime *acct;
    /* vCPU thread id -> cpu_index + 1; read-only once built */
    GHashTable *vcpu_by_tid;
    Notifier exit_notifier;
};

static void blocktime_context_free(struct PostcopyBlocktimeContext *ctx)
{
    notifier_remove(&ctx->exit_notifier);
    g_hash_table_destroy(ctx->vcpu_by_tid);
    postcopy_blocktime_free(ctx->acct);
    g_free(ctx);
}

static void blocktime_at_exit(Notifier *n, void *data)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    struct PostcopyBlocktimeContext *ctx =
        container_of(n, struct PostcopyBlocktimeContext, exit_notifier);

    if (mis->blocktime_ctx == ctx) {
        mis->blocktime_ctx = NULL;
    }
    blocktime_context_free(ctx);
}

/* vCPU threads exist and keep their ids for the whole migration. */
static GHashTable *blocktime_map_vcpu_threads(void)
{
    GHashTable *map = g_hash_table_new(g_direct_hash, g_direct_equal);
    CPUState *cpu;

    CPU_FOREACH(cpu) {
        g_hash_table_insert(map, GUINT_TO_POINTER(cpu->thread_id),
                            GUINT_TO_POINTER(cpu->cpu_index + 1));
    }
    return map;
}

void postcopy_blocktime_setup(MigrationIncomingState *mis,
                              uint64_t uffd_features)
{
    /*
     * cpu_index runs up to max_cpus - 1: a vCPU hot-plugged before this
     * migration may have any index below it.
     */
    unsigned int nr_vcpus = MACHINE(qdev_get_machine())->smp.max_cpus;
    struct PostcopyBlocktimeContext *ctx;

    if (!migrate_postcopy_blocktime()) {
        return;
    }
    if (!(uffd_features & UFFD_FEATURE_THREAD_ID)) {
        warn_report("postcopy: postcopy-blocktime needs userfaultfd's "
                    "THREAD_ID feature, which this kernel lacks; no "
                    "blocktime will be reported");
        return;
    }
    if (mis->blocktime_ctx) {
        blocktime_context_free(mis->blocktime_ctx);
    }
    ctx = g_new0(struct PostcopyBlocktimeContext, 1);
    ctx->acct = postcopy_blocktime_new(nr_vcpus);
    ctx->vcpu_by_tid = blocktime_map_vcpu_threads();
    ctx->exit_notifier.notify = blocktime_at_exit;
    qemu_add_exit_notifier(&ctx->exit_notifier);
    mis->blocktime_ctx = ctx;
    trace_postcopy_blocktime_setup(nr_vcpus);
}

static uint64_t blocktime_now_ns(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

/* Start @tid's wait on @page: false if it waited on it already. */
static bool blocktime_start_wait(struct PostcopyBlocktimeContext *ctx,
                                 uint32_t tid, void *page, uint64_t now)
{
    gpointer found = g_hash_table_lookup(ctx->vcpu_by_tid,
                                         GUINT_TO_POINTER(tid));
    unsigned int cpu;

    if (!found) {
        if (!postcopy_blocktime_other_fault(ctx->acct, tid, (uintptr_t)page,
                                            now)) {
            return false;
        }
        trace_postcopy_blocktime_begin_other(tid, page);
        return true;
    }
    cpu = GPOINTER_TO_UINT(found) - 1;
    if (!postcopy_blocktime_fault(ctx->acct, cpu, (uintptr_t)page, now)) {
        return false;
    }
    trace_postcopy_blocktime_begin(cpu, page);
    return true;
}

void postcopy_blocktime_fault_read(MigrationIncomingState *mis, RAMBlock *rb,
                                   uint32_t tid, void *page)
{
    struct PostcopyBlocktimeContext *ctx = mis->blocktime_ctx;
    uint64_t now;

    if (!ctx || !tid) {
        return;
    }
    now = blocktime_now_ns();
    if (!blocktime_start_wait(ctx, tid, page, now)) {
        return;
    }
    /*
     * The page may have been placed between the fault and now; placement
     * saw no waiter then.  Pairs with the barrier in
     * postcopy_blocktime_page_placed() below.
     */
    smp_mb();
    if (postcopy_received(rb, qemu_ram_block_host_offset(rb, page))) {
        postcopy_blocktime_page_arrived(ctx->acct, (uintptr_t)page, now);
    }
}

void postcopy_blocktime_page_placed(MigrationIncomingState *mis, void *page)
{
    struct PostcopyBlocktimeContext *ctx = mis->blocktime_ctx;
    unsigned int released;

    if (!ctx) {
        return;
    }
    /* receivedmap is set: order it before reading the waiter count. */
    smp_mb();
    if (!postcopy_blocktime_has_waiters(ctx->acct)) {
        return;
    }
    released = postcopy_blocktime_page_arrived(ctx->acct, (uintptr_t)page,
                                               blocktime_now_ns());
    if (released) {
        trace_postcopy_blocktime_end(page, released);
    }
}

uint64_t postcopy_blocktime_total_ms(MigrationIncomingState *mis)
{
    struct PostcopyBlocktimeContext *ctx = mis->blocktime_ctx;

    return ctx ? postcopy_blocktime_total_ns(ctx->acct) / SCALE_MS : 0;
}

static uint32_t ns_to_ms32(uint64_t ns)
{
    return MIN(ns / SCALE_MS, UINT32_MAX);
}

#if POSTCOPY_QEMU_AT_LEAST(10, 1)
/*
 * QEMU 10.1 added fault latencies to query-migrate: per vCPU, of other
 * threads, of all, in nanoseconds, and their spread over
 * POSTCOPY_BLOCKTIME_BUCKETS buckets.
 */
static void fill_latencies(MigrationInfo *info, PostcopyBlocktime *acct,
                           int nr_listed)
{
    uint64_t dist[POSTCOPY_BLOCKTIME_BUCKETS];
    uint64_t waited, faults, untracked, all_waited, all_faults;
    uint64List *per_vcpu = NULL, *buckets = NULL;
    int cpu, i;

    postcopy_blocktime_others(acct, &waited, &faults, &untracked);
    info->has_postcopy_non_vcpu_latency = true;
    info->postcopy_non_vcpu_latency = faults ? waited / faults : 0;
    all_waited = waited;
    all_faults = faults;
    for (cpu = nr_listed - 1; cpu >= 0; cpu--) {
        uint64_t ns = postcopy_blocktime_vcpu_ns(acct, cpu);
        uint64_t n = postcopy_blocktime_vcpu_faults(acct, cpu);

        QAPI_LIST_PREPEND(per_vcpu, n ? ns / n : 0);
        all_waited += ns;
        all_faults += n;
    }
    info->has_postcopy_vcpu_latency = true;
    info->postcopy_vcpu_latency = per_vcpu;
    info->has_postcopy_latency = true;
    info->postcopy_latency = all_faults ? all_waited / all_faults : 0;

    postcopy_blocktime_latency_dist(acct, dist);
    for (i = POSTCOPY_BLOCKTIME_BUCKETS - 1; i >= 0; i--) {
        QAPI_LIST_PREPEND(buckets, dist[i]);
    }
    info->has_postcopy_latency_dist = true;
    info->postcopy_latency_dist = buckets;
}
#endif

void fill_destination_postcopy_migration_info(MigrationInfo *info)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    struct PostcopyBlocktimeContext *ctx = mis->blocktime_ctx;
    uint32List *per_vcpu = NULL;
    int nr_listed = 0;
    CPUState *cs;
    int cpu;

    if (!ctx) {
        return;
    }
    /* The table has room for max_cpus; list the vCPUs that exist. */
    CPU_FOREACH(cs) {
        nr_listed = MAX(nr_listed, cs->cpu_index + 1);
    }
    nr_listed = MIN(nr_listed, postcopy_blocktime_nr_vcpus(ctx->acct));
    for (cpu = nr_listed - 1; cpu >= 0; cpu--) {
        QAPI_LIST_PREPEND(per_vcpu,
            ns_to_ms32(postcopy_blocktime_vcpu_ns(ctx->acct, cpu)));
    }
    info->has_postcopy_blocktime = true;
    info->postcopy_blocktime =
        ns_to_ms32(postcopy_blocktime_total_ns(ctx->acct));
    info->has_postcopy_vcpu_blocktime = true;
    info->postcopy_vcpu_blocktime = per_vcpu;
#if POSTCOPY_QEMU_AT_LEAST(10, 1)
    fill_latencies(info, ctx->acct, nr_listed);
#endif
}
