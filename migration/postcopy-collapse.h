/*
 * Postcopy: transparent huge pages rebuilt where every page is in.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Postcopy leaves the destination's guest RAM in base pages: the discards
 * before LISTEN split the huge pages that precopy filled, userfaultfd
 * places base pages, and THP is off over guest RAM from the discards on.
 * khugepaged would rebuild them at its own pace (minutes per GiB at its
 * defaults), and meanwhile every TLB miss of the guest walks base-page
 * tables.  So a thread of the module
 * (postcopy-collapse-qemu.c) asks the kernel to collapse guest RAM into
 * huge pages itself (MADV_COLLAPSE), one huge page at a time: first those
 * the guest faulted on during postcopy, its working set, then the rest.
 * While pages still come in, it collapses each huge page all of whose
 * base pages are in, once (the plan counts the bytes placed in each), so
 * that little is left for the end.
 *
 * This header's first half is pure logic (postcopy-collapse.c, which
 * tests/unit drives): the plan of which huge pages to collapse in which
 * order, whether a huge page holds guest data at all, and the pace.
 */
#ifndef QEMU_POSTCOPY_COLLAPSE_H
#define QEMU_POSTCOPY_COLLAPSE_H

/* collapse=PERCENT's default: the share of one CPU the thread may take. */
#define POSTCOPY_COLLAPSE_PERCENT 50

/* A plan's islands_max, unless the host's vm.max_map_count wants fewer */
#define POSTCOPY_COLLAPSE_ISLANDS_MAX 1024

/*
 * Guest RAM to collapse: for each RAMBlock, the huge pages that lie wholly
 * inside it, and which of them the guest faulted on.
 */
typedef struct PostcopyCollapseRange {
    char *block;            /* the RAMBlock's idstr */
    uint64_t start;         /* offset of its first whole huge page */
    uint64_t count;         /* whole huge pages from @start on */
    unsigned long *hot;     /* @count bits: the guest faulted there */
    /*
     * @count bits each, the collapse thread's once it runs (tried is set
     * at LISTEN too, by postcopy_collapse_plan_skip_whole()): looked at
     * while pages still came in (whole by then), and collapsed then.
     */
    unsigned long *tried;
    unsigned long *done;
    /*
     * @count counters: bytes of each huge page in place, added to by the
     * threads that place pages (atomically), read by the collapse thread.
     */
    uint32_t *placed;
    /* @count bits: THP allowed there again (the collapse thread's) */
    unsigned long *allowed;
    /* Refusals (EINVAL) since its last collapse; past a few, given up */
    unsigned int refused_in_a_row;
    bool given_up;
} PostcopyCollapseRange;

typedef struct PostcopyCollapsePlan {
    GArray *ranges;         /* of PostcopyCollapseRange */
    uint64_t huge_size;     /* bytes per huge page */
    /*
     * Runs of huge pages with THP allowed again while pages come in, at
     * most (each may split guest RAM's mapping in three): counted when
     * one begins, not when two join.
     */
    uint64_t islands, islands_max;
    /* Where postcopy_collapse_plan_next() goes on */
    bool cold_pass;         /* the hot huge pages are done */
    guint range;
    uint64_t next;
} PostcopyCollapsePlan;

/* One huge page to collapse: @offset into the RAMBlock named @block. */
typedef struct PostcopyCollapseChunk {
    const char *block;
    uint64_t offset;
    bool hot;
    int range;              /* its index in the plan */
} PostcopyCollapseChunk;

/*
 * EINVAL in a row from one RAMBlock, with no collapse between them, after
 * which the rest of it is left alone: a kernel before 6.1, or a mapping
 * the kernel cannot back with huge pages, refuses every one; a page under
 * migration or a memory error refuses one.
 */
#define POSTCOPY_COLLAPSE_REFUSALS_MAX 8

void postcopy_collapse_plan_init(PostcopyCollapsePlan *plan,
                                 uint64_t huge_size);
void postcopy_collapse_plan_free(PostcopyCollapsePlan *plan);
/*
 * Add RAMBlock @block, @length bytes mapped at host address @host (only
 * its alignment matters); returns the range's index, or -1 when no whole
 * huge page fits in it.
 */
int postcopy_collapse_plan_add(PostcopyCollapsePlan *plan, const char *block,
                               uintptr_t host, uint64_t length);
/* The guest faulted at @offset of range @range (an index from add()). */
void postcopy_collapse_plan_note(PostcopyCollapsePlan *plan, int range,
                                 uint64_t offset);
/*
 * The next huge page to collapse once every page is in: every hot one,
 * range by range, then every other one, but none collapsed while pages
 * came in and none of a range given up.  False when the plan is done.
 */
bool postcopy_collapse_plan_next(PostcopyCollapsePlan *plan,
                                 PostcopyCollapseChunk *chunk);
/*
 * @length bytes from @offset of range @range are in place (newly: each
 * byte counted once); they may cover parts of several huge pages, or lie
 * partly outside the range's whole ones.  Any thread.
 */
void postcopy_collapse_plan_placed(PostcopyCollapsePlan *plan, int range,
                                   uint64_t offset, uint64_t length);
/* Whether every byte of @chunk is in place, as far as the plan counted. */
bool postcopy_collapse_plan_whole(PostcopyCollapsePlan *plan,
                                  const PostcopyCollapseChunk *chunk);

/*
 * At LISTEN, once the bytes in place are counted: the huge pages whole
 * already (no discard touched them; most are huge pages still) are left
 * to the last pass, which finds them huge and moves on.
 */
void postcopy_collapse_plan_skip_whole(PostcopyCollapsePlan *plan);

/*
 * While pages come in, THP is allowed again only where a huge page is
 * collapsed, and each run of such huge pages costs the process up to two
 * more mappings: whether @chunk may have THP allowed now (next to a run,
 * or within the plan's islands_max), and that it has.
 */
bool postcopy_collapse_plan_may_allow(PostcopyCollapsePlan *plan,
                                      const PostcopyCollapseChunk *chunk);
void postcopy_collapse_plan_allowed(PostcopyCollapsePlan *plan,
                                    const PostcopyCollapseChunk *chunk);

/* Where a sweep over the plan while pages come in stands. */
typedef struct PostcopyCollapseSweep {
    guint range;
    uint64_t next;
} PostcopyCollapseSweep;

/*
 * While pages come in: the next huge page from @sweep on that was not
 * tried yet (postcopy_collapse_plan_tried()), in a range not given up
 * (postcopy_collapse_plan_result() counts refusals then too).  False at
 * the end of the plan, where @sweep starts again from its beginning.
 */
bool postcopy_collapse_plan_next_untried(PostcopyCollapsePlan *plan,
                                         PostcopyCollapseSweep *sweep,
                                         PostcopyCollapseChunk *chunk);
/*
 * @chunk, whole, was tried while pages came in, and is a huge page now
 * if @collapsed; either way no sweep offers it again, and only a huge
 * page not collapsed is left for the end.
 */
void postcopy_collapse_plan_tried(PostcopyCollapsePlan *plan,
                                  const PostcopyCollapseChunk *chunk,
                                  bool collapsed);

/*
 * What became of @chunk: collapsed (@refused false), or refused with
 * EINVAL.  True when its range is given up now.
 */
bool postcopy_collapse_plan_result(PostcopyCollapsePlan *plan,
                                   const PostcopyCollapseChunk *chunk,
                                   bool refused);

/*
 * Whether to collapse a huge page whose base pages have the
 * /proc/PID/pagemap entries @entries[@n], within the limits khugepaged
 * keeps to (its max_ptes_none and max_ptes_swap), which MADV_COLLAPSE
 * itself ignores: no more than @max_none base pages without data and no
 * more than @max_swap swapped out.  A base page holds data when it is
 * present and, in private memory, mapped by this process alone: pages
 * that read as zeroes map the shared zero page and are never exclusive.
 * Shared memory (memfd) holds real pages wherever one is present.  A huge
 * page with no data at all is always left alone: collapsing it would turn
 * the zero page into 2 MiB of memory.
 */
bool postcopy_collapse_worth(const uint64_t *entries, size_t n, bool shared,
                             unsigned int max_none, unsigned int max_swap);

/*
 * The pace: after each collapse that took @took_ns, the thread rests so
 * that it takes about @percent of a CPU.  Rests shorter than
 * POSTCOPY_COLLAPSE_REST_MIN_MS are owed, not taken, so that sleeps stay
 * longer than a timer's slack.
 */
#define POSTCOPY_COLLAPSE_REST_MIN_MS 10

typedef struct PostcopyCollapsePace {
    unsigned int percent;   /* 1 to 100 */
    uint64_t owed_ns;
} PostcopyCollapsePace;

void postcopy_collapse_pace_init(PostcopyCollapsePace *pace,
                                 unsigned int percent);
/* Milliseconds to rest now (0: carry on) after a collapse of @took_ns. */
uint64_t postcopy_collapse_pace_after(PostcopyCollapsePace *pace,
                                      uint64_t took_ns);

#endif
