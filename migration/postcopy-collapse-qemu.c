/*
 * Postcopy: the thread that rebuilds transparent huge pages over guest RAM
 * once postcopy is done (see postcopy-collapse.h for why).  Linux only.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Its life:
 *  1. LISTEN (postcopy_collapse_track()): a plan of every RAMBlock of base
 *     pages that the kernel can back with transparent huge pages;
 *  2. each fault the fault thread reads marks its huge page hot
 *     (postcopy_collapse_note_fault());
 *  3. when every page is in, the userfaultfd is gone and MADV_HUGEPAGE is
 *     back (postcopy_ram_incoming_cleanup()), postcopy_collapse_start()
 *     hands the plan to the thread "mig/dst/thp"; after a failed
 *     migration postcopy_collapse_forget() drops it instead;
 *  4. the thread collapses the hot huge pages, then the others, each with
 *     MADV_COLLAPSE, resting between them so that it takes about
 *     collapse=PERCENT of one CPU (QEMU_POSTCOPY_TUNE), and exits;
 *  5. an outgoing migration of this guest (its setup notifier) or QEMU's
 *     exit stops it and joins it first.
 *
 * The kernel may refuse: EINVAL from a kernel before 6.1 or for a mapping
 * it cannot back with huge pages (shmem with shmem_enabled=deny), which
 * ends the work on that RAMBlock; EAGAIN or ENOMEM when memory is short,
 * which skips that huge page.  Each refusal is traced and nothing else
 * happens: the migration completed before this thread started, and the
 * guest runs the same on base pages, only slower.
 *
 * vhost-user back-ends map guest RAM themselves: their page tables are
 * theirs to rebuild.  hugetlbfs blocks are huge pages already and are not
 * in the plan.  KVM's MMU notifiers follow a collapse like any other
 * change of the host's page tables.
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/main-loop.h"
#include "qemu/notify.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "migration/misc.h"
#include "system/system.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "ram.h"
#include "postcopy-internal.h"
#include "postcopy-collapse.h"
#include "postcopy-inject.h"
#include "postcopy-tune.h"
#include "trace.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25        /* Linux 6.1's value; older glibc lacks it */
#endif

#define POSTCOPY_THREAD_DST_COLLAPSE "mig/dst/thp"  /* 15 characters at most */
#define THP_SIZE_FILE "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"

/*
 * The module's collapse state; one per process, since a QEMU receives one
 * incoming migration.
 *
 * field        written by                          read by
 * plan         the load thread (track, at LISTEN), the collapse thread,
 *              the fault thread (note), then the   once the fault thread,
 *              collapse thread, which frees it at  which reads it till
 *              its end (or forget() does)          then, was joined
 * by_block     the load thread (track)             the fault thread
 * lock         -                                   start, stop
 * running      start, stop, under lock             start, stop
 * closed       stop at QEMU's exit, under lock     start
 * quit         stop (atomic)                       the collapse thread
 * rest         stop posts it to end a rest early   the collapse thread
 *
 * The fault thread is joined before postcopy_collapse_start() runs, and
 * qemu_thread_create() orders the plan's writes before the new thread's
 * reads: the plan needs no lock.
 */
typedef struct PostcopyCollapse {
    PostcopyCollapsePlan plan;
    GHashTable *by_block;       /* RAMBlock * -> range index + 1 */
    QemuMutex lock;
    QemuThread thread;
    bool running;
    bool closed;
    bool quit;
    QemuSemaphore rest;
    unsigned int percent;
    Notifier exit_notifier;
    NotifierWithReturn migration_notifier;
} PostcopyCollapse;

static PostcopyCollapse collapse;

/* What the thread did, for its trace line. */
typedef struct CollapseCounts {
    uint64_t collapsed, empty, refused, blocks_refused;
} CollapseCounts;

static uint64_t collapse_huge_size(void)
{
    g_autofree char *text = NULL;
    guint64 size;

    if (!g_file_get_contents(THP_SIZE_FILE, &text, NULL, NULL) ||
        !g_ascii_string_to_unsigned(g_strstrip(text), 10, 1, G_MAXUINT64,
                                    &size, NULL) ||
        !is_power_of_2(size)) {
        return 0;
    }
    return size;
}

/* Guest RAM in base pages: hugetlbfs blocks are huge already. */
static bool collapse_block_wanted(RAMBlock *rb)
{
    return qemu_ram_pagesize(rb) == qemu_real_host_page_size();
}

void postcopy_collapse_track(MigrationIncomingState *mis)
{
    uint64_t huge_size;
    RAMBlock *rb;

    postcopy_collapse_forget();
    collapse.percent = postcopy_tune()->collapse_percent;
    if (!collapse.percent) {
        trace_postcopy_collapse_off("collapse=off");
        return;
    }
    huge_size = collapse_huge_size();
    if (!huge_size || huge_size <= qemu_real_host_page_size()) {
        trace_postcopy_collapse_off("no transparent huge pages on this host");
        return;
    }
    postcopy_collapse_plan_init(&collapse.plan, huge_size);
    collapse.by_block = g_hash_table_new(NULL, NULL);
    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        uintptr_t host = (uintptr_t)qemu_ram_get_host_addr(rb);
        int range;

        if (!collapse_block_wanted(rb)) {
            continue;
        }
        range = postcopy_collapse_plan_add(&collapse.plan,
                                           qemu_ram_get_idstr(rb), host,
                                           rb->postcopy_length);
        if (range >= 0) {
            g_hash_table_insert(collapse.by_block, rb,
                                GINT_TO_POINTER(range + 1));
        }
    }
}

void postcopy_collapse_note_fault(RAMBlock *rb, ram_addr_t offset)
{
    int range;

    if (!collapse.by_block) {
        return;
    }
    range = GPOINTER_TO_INT(g_hash_table_lookup(collapse.by_block, rb)) - 1;
    if (range >= 0) {
        postcopy_collapse_plan_note(&collapse.plan, range, offset);
    }
}

void postcopy_collapse_forget(void)
{
    g_clear_pointer(&collapse.by_block, g_hash_table_destroy);
    postcopy_collapse_plan_free(&collapse.plan);
}

/*
 * Whether the huge page at @host holds guest data (see
 * postcopy_collapse_has_data()); true when @pagemap cannot tell.
 */
static bool collapse_chunk_has_data(int pagemap, void *host, uint64_t size,
                                    bool shared)
{
    size_t pages = size / qemu_real_host_page_size();
    g_autofree uint64_t *entries = g_new(uint64_t, pages);
    off_t at = (uintptr_t)host / qemu_real_host_page_size() *
               sizeof(uint64_t);
    ssize_t len = pages * sizeof(uint64_t);

    if (pagemap < 0 || pread(pagemap, entries, len, at) != len) {
        return true;
    }
    return postcopy_collapse_has_data(entries, pages, shared);
}

/* 0, or the negative errno of the kernel's refusal. */
static int collapse_one(void *host, uint64_t size)
{
    if (postcopy_inject_hit(POSTCOPY_INJECT_COLLAPSE_REFUSED)) {
        return -EINVAL;
    }
    return madvise(host, size, MADV_COLLAPSE) ? -errno : 0;
}

/*
 * Collapse @chunk if its RAMBlock is still there and holds data there.
 * Returns false when the rest of the block is to be left alone.
 */
static bool collapse_chunk(const PostcopyCollapseChunk *chunk, int pagemap,
                           CollapseCounts *counts)
{
    uint64_t size = collapse.plan.huge_size;
    RAMBlock *rb;
    void *host;
    int err;

    RCU_READ_LOCK_GUARD();
    /* Guest RAM may have been unplugged since the plan was made. */
    rb = qemu_ram_block_by_name(chunk->block);
    if (!rb || chunk->offset + size > qemu_ram_get_used_length(rb)) {
        return true;
    }
    host = qemu_ram_get_host_addr(rb) + chunk->offset;
    if (!collapse_chunk_has_data(pagemap, host, size,
                                 qemu_ram_is_shared(rb))) {
        counts->empty++;
        return true;
    }
    err = collapse_one(host, size);
    trace_postcopy_collapse_chunk(chunk->block, chunk->offset, chunk->hot,
                                  err);
    if (!err) {
        counts->collapsed++;
        return true;
    }
    counts->refused++;
    trace_postcopy_collapse_refused(chunk->block, chunk->offset,
                                    strerror(-err));
    /* EINVAL: not this kernel, or not this mapping; the rest won't do. */
    return err != -EINVAL;
}

static void *postcopy_collapse_thread(void *opaque)
{
    const char *refused_block = NULL;
    CollapseCounts counts = { 0 };
    PostcopyCollapseChunk chunk;
    PostcopyCollapsePace pace;
    int64_t began = get_clock();
    int pagemap;

    rcu_register_thread();
    pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    postcopy_collapse_pace_init(&pace, collapse.percent);
    while (!qatomic_read(&collapse.quit) &&
           postcopy_collapse_plan_next(&collapse.plan, &chunk)) {
        int64_t took = get_clock();
        uint64_t rest_ms;

        if (refused_block && !strcmp(refused_block, chunk.block)) {
            continue;
        }
        if (!collapse_chunk(&chunk, pagemap, &counts)) {
            refused_block = chunk.block;
            counts.blocks_refused++;
        }
        took = get_clock() - took;
        rest_ms = postcopy_collapse_pace_after(&pace, took);
        if (rest_ms) {
            qemu_sem_timedwait(&collapse.rest, rest_ms);
        }
    }
    if (pagemap >= 0) {
        close(pagemap);
    }
    postcopy_collapse_plan_free(&collapse.plan);
    trace_postcopy_collapse_done(counts.collapsed, counts.empty,
                                 counts.refused, counts.blocks_refused,
                                 qatomic_read(&collapse.quit),
                                 (get_clock() - began) / SCALE_MS);
    rcu_unregister_thread();
    return NULL;
}

void postcopy_collapse_start(void)
{
    QEMU_LOCK_GUARD(&collapse.lock);
    /* The fault thread, the last to read it, is gone. */
    g_clear_pointer(&collapse.by_block, g_hash_table_destroy);
    if (!collapse.plan.ranges || collapse.closed || collapse.running) {
        postcopy_collapse_plan_free(&collapse.plan);
        return;
    }
    trace_postcopy_collapse_start(collapse.plan.ranges->len,
                                  collapse.plan.huge_size, collapse.percent);
    qatomic_set(&collapse.quit, false);
    collapse.running = true;
    qemu_thread_create(&collapse.thread, POSTCOPY_THREAD_DST_COLLAPSE,
                       postcopy_collapse_thread, NULL, QEMU_THREAD_JOINABLE);
}

/* Stop the thread if it runs, and join it; with @close, for good. */
static void postcopy_collapse_stop(bool close, const char *why)
{
    QEMU_LOCK_GUARD(&collapse.lock);
    collapse.closed |= close;
    if (!collapse.running) {
        return;
    }
    trace_postcopy_collapse_stop(why);
    qatomic_set(&collapse.quit, true);
    qemu_sem_post(&collapse.rest);
    qemu_thread_join(&collapse.thread);
    collapse.running = false;
    /* A post the thread did not take would cut its next rest short. */
    while (!qemu_sem_timedwait(&collapse.rest, 0)) {
        /* drained */
    }
}

static void postcopy_collapse_exit(Notifier *n, void *data)
{
    postcopy_collapse_stop(true, "QEMU exits");
}

/*
 * Outgoing: this guest leaves again.  The migration wants the CPU, and
 * the source sends what is there whatever its pages' size.
 */
static int postcopy_collapse_migration(NotifierWithReturn *n,
                                       MigrationEvent *e, Error **errp)
{
    if (e->type == MIG_EVENT_PRECOPY_SETUP) {
        postcopy_collapse_stop(false, "an outgoing migration starts");
    }
    return 0;
}

void postcopy_collapse_init(void)
{
    qemu_mutex_init(&collapse.lock);
    qemu_sem_init(&collapse.rest, 0);
    collapse.exit_notifier.notify = postcopy_collapse_exit;
    qemu_add_exit_notifier(&collapse.exit_notifier);
    migration_add_notifier(&collapse.migration_notifier,
                           postcopy_collapse_migration);
}
