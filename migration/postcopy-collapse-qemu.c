/*
 * Postcopy: the thread that rebuilds transparent huge pages over guest RAM
 * where every page is in (see postcopy-collapse.h for why).  Linux only.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Its life:
 *  1. LISTEN (postcopy_collapse_track(), once guest RAM is registered
 *     with the userfaultfd): a plan of every RAMBlock of base pages that
 *     the kernel can back with transparent huge pages, with the bytes of
 *     each huge page in place already, and the thread "mig/dst/thp"
 *     starts (unless collapse-early=off);
 *  2. while pages come in, the threads that place pages count them in the
 *     plan (postcopy_collapse_note_placed()), the fault thread marks the
 *     huge page of each fault hot (postcopy_collapse_note_fault()), and
 *     the thread collapses each huge page of private memory all of whose
 *     base pages are in place, once (collapse_while_incoming());
 *  3. when every page is in, the userfaultfd is gone and MADV_HUGEPAGE is
 *     back (postcopy_ram_incoming_cleanup()), postcopy_collapse_start()
 *     moves the thread on to the rest of the plan (starting it with
 *     collapse-early=off); after a failed migration
 *     postcopy_collapse_forget() stops it and drops the plan instead;
 *  4. the thread collapses the hot huge pages, then the others, but none
 *     it collapsed in 2., resting between them so that it takes about
 *     collapse=PERCENT of one CPU (QEMU_POSTCOPY_TUNE), frees the plan
 *     and exits;
 *  5. an outgoing migration of this guest (its setup notifier) or QEMU's
 *     exit stops it and joins it first.
 *
 * It keeps to the host's THP policy, which MADV_COLLAPSE itself ignores:
 * nothing when transparent huge pages are "never", and no huge page with
 * more base pages without data, or swapped out, than khugepaged would
 * take (max_ptes_none, max_ptes_swap; read from /proc/self/pagemap, and
 * nothing at all without it).
 *
 * The kernel may refuse: EINVAL from a kernel before 6.1, for a mapping it
 * cannot back with huge pages (shmem with shmem_enabled=deny), or for a
 * page it could not take this time (under migration, a memory error); a
 * RAMBlock that refuses POSTCOPY_COLLAPSE_REFUSALS_MAX times in a row is
 * given up.  EAGAIN, EBUSY or ENOMEM (memory short, a cgroup's charge)
 * skip that huge page (while pages come in, until the end).  Each refusal
 * is traced and nothing else happens: a huge page is collapsed only once
 * all of its pages are in, and the guest runs the same on base pages,
 * only slower.
 *
 * vhost-user back-ends map guest RAM themselves: their page tables are
 * theirs to rebuild.  hugetlbfs blocks are huge pages already and are not
 * in the plan.  KVM's MMU notifiers follow a collapse like any other
 * change of the host's page tables.
 */

#include "qemu/osdep.h"
#include "qemu/lockable.h"
#include "qemu/madvise.h"
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
#define THP_DIR "/sys/kernel/mm/transparent_hugepage/"

/*
 * The module's collapse state; one per process, since a QEMU receives one
 * incoming migration.
 *
 * field         written by                        read by
 * plan          the load thread (track); then     the collapse thread
 *               hot bits: the fault thread;
 *               placed counters: the threads
 *               that place pages (atomic);
 *               tried and done bits, cursors:
 *               the collapse thread
 * by_block      track, start and forget clear it  note_fault, note_placed
 * lock          -                                 track, start, stop
 * running       track, start, stop, under lock    start, stop
 * closed        stop at QEMU's exit, under lock   track, start
 * quit          stop, thread_create (atomic)      the collapse thread
 * incoming_over start, thread_create (atomic)     the collapse thread
 * rest          stop posts it to end a rest or a  the collapse thread
 *               wait early
 * pagemap       track opens it; the collapse      the collapse thread
 *               thread, start or forget closes
 *               it with the plan
 *
 * qemu_thread_create() orders the plan's writes before the new thread's
 * reads.  The plan is freed only where no thread can write it any more:
 * by forget() or start(), once the threads that place pages and the fault
 * thread are gone, or by the collapse thread after its last pass, which
 * start() allowed only then (the store-release of incoming_over, read
 * with a load-acquire, also orders the fault thread's hot bits before the
 * collapse thread reads them).  A thread stopped at QEMU's exit while
 * pages came in leaves the plan to the process's end.
 */
typedef struct PostcopyCollapse {
    PostcopyCollapsePlan plan;
    GHashTable *by_block;       /* RAMBlock * -> range index + 1 */
    QemuMutex lock;
    QemuThread thread;
    bool running;
    bool closed;
    bool quit;
    bool incoming_over;
    QemuSemaphore rest;
    int pagemap;                /* /proc/self/pagemap, with the plan */
    unsigned int percent;
    /* khugepaged's limits (postcopy_collapse_worth()), read at track */
    unsigned int max_none, max_swap;
    Notifier exit_notifier;
    NotifierWithReturn migration_notifier;
} PostcopyCollapse;

static PostcopyCollapse collapse;

/* What the thread did, for its trace lines. */
typedef struct CollapseCounts {
    uint64_t collapsed, skipped, refused, blocks_refused;
} CollapseCounts;

/*
 * collapse_chunk()'s answer for a huge page to look at again in a later
 * sweep: not all in place yet, or THP may not be allowed there yet.
 */
#define COLLAPSE_NOT_NOW 2

/*
 * While pages come in, the thread sweeps the plan for huge pages all in
 * place, then waits this long before the next sweep (a sweep reads one
 * counter per huge page not tried yet).
 */
#define COLLAPSE_SWEEP_WAIT_MS 100

/* The number in the file at @path, or @otherwise. */
static uint64_t file_number(const char *path, uint64_t otherwise)
{
    g_autofree char *text = NULL;
    guint64 value;

    if (!g_file_get_contents(path, &text, NULL, NULL) ||
        !g_ascii_string_to_unsigned(g_strstrip(text), 10, 0, G_MAXUINT64,
                                    &value, NULL)) {
        return otherwise;
    }
    return value;
}

/* The number in THP_DIR/@name, or @otherwise. */
static uint64_t thp_setting(const char *name, uint64_t otherwise)
{
    g_autofree char *path = g_strconcat(THP_DIR, name, NULL);

    return file_number(path, otherwise);
}

/* Why not to rebuild huge pages on this host, or NULL. */
static const char *collapse_refused_by_host(uint64_t huge_size)
{
    g_autofree char *enabled = NULL;

    if (!is_power_of_2(huge_size) ||
        huge_size <= qemu_real_host_page_size()) {
        return "no transparent huge pages on this host";
    }
    if (g_file_get_contents(THP_DIR "enabled", &enabled, NULL, NULL) &&
        strstr(enabled, "[never]")) {
        return "transparent huge pages are 'never' on this host";
    }
    if (access("/proc/self/pagemap", R_OK)) {
        return "/proc/self/pagemap cannot be read";
    }
    return NULL;
}

/*
 * Guest RAM of base pages that this process's mapping holds: not hugetlbfs
 * (huge already), not a private mapping of a file (a collapse would work
 * on the file's page cache, not on the guest's pages).
 */
static bool collapse_block_wanted(RAMBlock *rb)
{
    return qemu_ram_pagesize(rb) == qemu_real_host_page_size() &&
           (qemu_ram_get_fd(rb) < 0 || qemu_ram_is_shared(rb));
}

/* Free the plan and close the pagemap that goes with it. */
static void collapse_plan_drop(void)
{
    postcopy_collapse_plan_free(&collapse.plan);
    if (collapse.pagemap >= 0) {
        close(collapse.pagemap);
        collapse.pagemap = -1;
    }
}

/*
 * Whether to collapse the huge page at @host (postcopy_collapse_worth(),
 * with at most @max_none base pages without data and @max_swap swapped
 * out); false when @pagemap cannot tell.
 */
static bool collapse_chunk_worth(int pagemap, void *host, uint64_t size,
                                 bool shared, unsigned int max_none,
                                 unsigned int max_swap)
{
    size_t pages = size / qemu_real_host_page_size();
    g_autofree uint64_t *entries = g_new(uint64_t, pages);
    off_t at = (uintptr_t)host / qemu_real_host_page_size() *
               sizeof(uint64_t);
    ssize_t len = pages * sizeof(uint64_t);

    if (pread(pagemap, entries, len, at) != len) {
        return false;
    }
    return postcopy_collapse_worth(entries, pages, shared, max_none,
                                   max_swap);
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
 * While pages come in, THP stays off over guest RAM but for the huge
 * pages about to be collapsed, which MADV_COLLAPSE needs (it refuses
 * where MADV_NOHUGEPAGE holds).  THP on over a range with pages missing
 * would have a vCPU's first write fault there allocate and clear a huge
 * page before the kernel hands the fault to the userfaultfd.  Each call
 * may split guest RAM's mapping; the splits merge again as neighbours
 * follow, and at the end (postcopy_ram_incoming_cleanup()).
 */
static bool collapse_allow_huge(void *host, uint64_t size)
{
    return !qemu_madvise(host, size, QEMU_MADV_HUGEPAGE);
}

/*
 * Collapse @chunk if its RAMBlock is still where the plan saw it and the
 * huge page is worth it; 0, 1 when skipped, or the negative errno of the
 * kernel's refusal.  While pages come in (@incoming), only a huge page of
 * private memory whose base pages are all in place and hold data (the
 * kernel would refuse a zero page there, a userfaultfd being armed), and
 * COLLAPSE_NOT_NOW for one with pages still to come, or where THP may not
 * be allowed yet (postcopy_collapse_plan_may_allow()).
 */
static int collapse_chunk(const PostcopyCollapseChunk *chunk, bool incoming)
{
    uint64_t size = collapse.plan.huge_size;
    RAMBlock *rb;
    void *host;
    int err;

    if (incoming && (!postcopy_collapse_plan_whole(&collapse.plan, chunk) ||
                     !postcopy_collapse_plan_may_allow(&collapse.plan,
                                                       chunk))) {
        return COLLAPSE_NOT_NOW;
    }
    RCU_READ_LOCK_GUARD();
    /* Guest RAM may have been unplugged (or replaced) since the plan. */
    rb = qemu_ram_block_by_name(chunk->block);
    if (!rb || chunk->offset + size > qemu_ram_get_used_length(rb)) {
        return 1;
    }
    host = qemu_ram_get_host_addr(rb) + chunk->offset;
    if (!QEMU_IS_ALIGNED((uintptr_t)host, size) ||
        (incoming && qemu_ram_is_shared(rb)) ||
        !collapse_chunk_worth(collapse.pagemap, host, size,
                              qemu_ram_is_shared(rb),
                              incoming ? 0 : collapse.max_none,
                              incoming ? 0 : collapse.max_swap)) {
        return 1;
    }
    if (incoming) {
        if (!collapse_allow_huge(host, size)) {
            return 1;
        }
        postcopy_collapse_plan_allowed(&collapse.plan, chunk);
    }
    err = collapse_one(host, size);
    if (incoming) {
        trace_postcopy_collapse_chunk_incoming(chunk->block, chunk->offset,
                                               err);
    } else {
        trace_postcopy_collapse_chunk(chunk->block, chunk->offset,
                                      chunk->hot, err);
    }
    if (err) {
        trace_postcopy_collapse_refused(chunk->block, chunk->offset,
                                        strerror(-err));
    }
    return err;
}

/* Count what became of a collapse of @chunk: collapse_chunk()'s @ret. */
static void collapse_count(const PostcopyCollapseChunk *chunk, int ret,
                           CollapseCounts *counts)
{
    if (ret) {
        counts->refused++;
    } else {
        counts->collapsed++;
    }
    /* Only EINVAL may mean that none of the block will do. */
    if ((!ret || ret == -EINVAL) &&
        postcopy_collapse_plan_result(&collapse.plan, chunk, ret != 0)) {
        counts->blocks_refused++;
    }
}

/* After a collapse that began at @began: rest as the pace says. */
static void collapse_rest(PostcopyCollapsePace *pace, int64_t began)
{
    uint64_t rest_ms = postcopy_collapse_pace_after(pace,
                                                    get_clock() - began);

    if (rest_ms) {
        qemu_sem_timedwait(&collapse.rest, rest_ms);
    }
}

static bool collapse_incoming_over(void)
{
    return qatomic_read(&collapse.quit) ||
           qatomic_load_acquire(&collapse.incoming_over);
}

/*
 * While pages come in: sweep the plan again and again for huge pages of
 * private memory whose base pages are all in place, and collapse each
 * once, at the same pace as later.  No fault can come in such a range
 * any more, and the vCPUs, waiting for pages, leave CPU idle: what is
 * collapsed now is not left to collapse once the guest runs at full
 * speed.  Until postcopy_collapse_start() says that every page is in,
 * which the thread sees within a sweep's wait or a rest.
 */
static void collapse_while_incoming(CollapseCounts *counts,
                                    PostcopyCollapsePace *pace)
{
    PostcopyCollapseSweep sweep = { 0 };
    PostcopyCollapseChunk chunk;
    uint64_t sweeps = 0;

    while (!collapse_incoming_over()) {
        int64_t began = get_clock();
        int ret;

        if (!postcopy_collapse_plan_next_untried(&collapse.plan, &sweep,
                                                 &chunk)) {
            sweeps++;
            qemu_sem_timedwait(&collapse.rest, COLLAPSE_SWEEP_WAIT_MS);
            continue;
        }
        ret = collapse_chunk(&chunk, true);
        if (ret == COLLAPSE_NOT_NOW) {
            continue;
        }
        postcopy_collapse_plan_tried(&collapse.plan, &chunk, ret == 0);
        if (ret > 0) {
            continue;
        }
        collapse_count(&chunk, ret, counts);
        collapse_rest(pace, began);
    }
    trace_postcopy_collapse_incoming_done(counts->collapsed, counts->refused,
                                          sweeps);
}

static void *postcopy_collapse_thread(void *opaque)
{
    CollapseCounts counts = { 0 };
    PostcopyCollapseChunk chunk;
    PostcopyCollapsePace pace;
    int64_t began = get_clock();

    rcu_register_thread();
    postcopy_collapse_pace_init(&pace, collapse.percent);
    collapse_while_incoming(&counts, &pace);
    while (!qatomic_read(&collapse.quit) &&
           postcopy_collapse_plan_next(&collapse.plan, &chunk)) {
        int64_t took = get_clock();
        int ret = collapse_chunk(&chunk, false);

        if (ret > 0) {
            counts.skipped++;
            continue;
        }
        collapse_count(&chunk, ret, &counts);
        collapse_rest(&pace, took);
    }
    /* Only once no thread can note anything in it (start() said so). */
    if (qatomic_load_acquire(&collapse.incoming_over)) {
        collapse_plan_drop();
    }
    trace_postcopy_collapse_done(counts.collapsed, counts.skipped,
                                 counts.refused, counts.blocks_refused,
                                 qatomic_read(&collapse.quit),
                                 (get_clock() - began) / SCALE_MS);
    rcu_unregister_thread();
    return NULL;
}

/*
 * Start the thread, with @incoming while pages still come in.  Under
 * collapse.lock.
 */
static void collapse_thread_create(bool incoming)
{
    trace_postcopy_collapse_start(collapse.plan.ranges->len,
                                  collapse.plan.huge_size, collapse.percent,
                                  incoming);
    qatomic_set(&collapse.quit, false);
    qatomic_set(&collapse.incoming_over, !incoming);
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

void postcopy_collapse_forget(void)
{
    postcopy_collapse_stop(false, "the incoming migration failed");
    g_clear_pointer(&collapse.by_block, g_hash_table_destroy);
    collapse_plan_drop();
}

/* The bytes of @rb in place before LISTEN, huge page by huge page. */
static void collapse_count_placed(int range, RAMBlock *rb)
{
    PostcopyCollapseRange *r = &g_array_index(collapse.plan.ranges,
                                              PostcopyCollapseRange, range);
    unsigned int bits = qemu_target_page_bits();
    uint64_t pages = collapse.plan.huge_size >> bits;
    uint64_t i;

    if (!rb->receivedmap) {
        return;
    }
    for (i = 0; i < r->count; i++) {
        uint64_t offset = r->start + i * collapse.plan.huge_size;
        uint64_t in_place = bitmap_count_one_with_offset(rb->receivedmap,
                                                         offset >> bits,
                                                         pages);

        postcopy_collapse_plan_placed(&collapse.plan, range, offset,
                                      in_place << bits);
    }
}

void postcopy_collapse_track(void)
{
    uint64_t huge_size = thp_setting("hpage_pmd_size", 0);
    bool early = !postcopy_tune()->no_collapse_early;
    const char *refused;
    RAMBlock *rb;

    postcopy_collapse_forget();
    collapse.percent = postcopy_tune()->collapse_percent;
    if (!collapse.percent) {
        trace_postcopy_collapse_off("collapse=off");
        return;
    }
    refused = collapse_refused_by_host(huge_size);
    if (refused) {
        trace_postcopy_collapse_off(refused);
        return;
    }
    collapse.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (collapse.pagemap < 0) {
        trace_postcopy_collapse_off("/proc/self/pagemap cannot be opened");
        return;
    }
    collapse.max_none = thp_setting("khugepaged/max_ptes_none",
                                    huge_size / qemu_real_host_page_size() - 1);
    collapse.max_swap = thp_setting("khugepaged/max_ptes_swap", 0);
    postcopy_collapse_plan_init(&collapse.plan, huge_size);
    /* Each island may cost two mappings: keep far from the limit. */
    collapse.plan.islands_max = MIN(collapse.plan.islands_max,
                                    file_number("/proc/sys/vm/max_map_count",
                                                65530) / 16);
    collapse.by_block = g_hash_table_new(NULL, NULL);
    WITH_RCU_READ_LOCK_GUARD() {
        RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
            int range;

            if (!collapse_block_wanted(rb)) {
                continue;
            }
            range = postcopy_collapse_plan_add(
                &collapse.plan, qemu_ram_get_idstr(rb),
                (uintptr_t)qemu_ram_get_host_addr(rb), rb->postcopy_length);
            if (range < 0) {
                continue;
            }
            g_hash_table_insert(collapse.by_block, rb,
                                GINT_TO_POINTER(range + 1));
            collapse_count_placed(range, rb);
        }
    }
    postcopy_collapse_plan_skip_whole(&collapse.plan);
    if (early && collapse.plan.ranges->len) {
        QEMU_LOCK_GUARD(&collapse.lock);
        if (!collapse.closed) {
            collapse_thread_create(true);
        }
    }
}

/* @rb's range in the plan, or -1; the plan must exist (by_block). */
static int collapse_range_of(RAMBlock *rb)
{
    return GPOINTER_TO_INT(g_hash_table_lookup(collapse.by_block, rb)) - 1;
}

void postcopy_collapse_note_fault(RAMBlock *rb, ram_addr_t offset)
{
    int range;

    if (!collapse.by_block) {
        return;
    }
    range = collapse_range_of(rb);
    if (range >= 0) {
        postcopy_collapse_plan_note(&collapse.plan, range, offset);
    }
}

void postcopy_collapse_note_placed(RAMBlock *rb, ram_addr_t offset,
                                   size_t size)
{
    int range;

    if (!collapse.by_block) {
        return;
    }
    range = collapse_range_of(rb);
    if (range >= 0) {
        postcopy_collapse_plan_placed(&collapse.plan, range, offset, size);
    }
}

void postcopy_collapse_start(void)
{
    QEMU_LOCK_GUARD(&collapse.lock);
    /* The fault thread and the placing threads, its readers, are gone. */
    g_clear_pointer(&collapse.by_block, g_hash_table_destroy);
    if (collapse.running) {
        /* It has run since LISTEN: on to the rest of the plan. */
        qatomic_store_release(&collapse.incoming_over, true);
        return;
    }
    if (!collapse.plan.ranges || !collapse.plan.ranges->len ||
        collapse.closed) {
        collapse_plan_drop();
        return;
    }
    collapse_thread_create(false);
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
    collapse.pagemap = -1;
    collapse.exit_notifier.notify = postcopy_collapse_exit;
    qemu_add_exit_notifier(&collapse.exit_notifier);
    migration_add_notifier(&collapse.migration_notifier,
                           postcopy_collapse_migration);
}
