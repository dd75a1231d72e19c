/*
 * Postcopy: fault points that tests arm to make the module fail on demand.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Some failures cannot be produced from outside on demand: a UFFDIO_COPY
 * that fails, a userfaultfd that cannot be read, a page request written
 * to a return path that just broke.  Each has a fault point here.  They
 * are off unless the destination QEMU starts with, in its environment,
 *
 *   QEMU_POSTCOPY_INJECT=point[=N[:K]][,point[=N[:K]]...]
 *
 * which makes the point fire on its Nth to (N+K-1)th pass (N and K
 * default to 1).  The points are listed in postcopy_inject_names[]
 * (postcopy-inject.c) and in docs/devel/migration/postcopy-ram-module.rst.
 * An armed point is reported once, as a warning, so that it is never on
 * unseen.
 *
 * Cost when nothing is armed: one load of a read-mostly flag.
 */
#ifndef QEMU_POSTCOPY_INJECT_H
#define QEMU_POSTCOPY_INJECT_H

typedef enum PostcopyInjectPoint {
    /* postcopy_install() returns -EIO without placing the page. */
    POSTCOPY_INJECT_INSTALL_FAIL,
    /*
     * The placer thread places nothing until a pause drains it or the
     * cleanup stops it, as if it were descheduled all that time: its
     * slots stay full.  Not counted: N:K is ignored.
     */
    POSTCOPY_INJECT_PLACER_HOLD,
    /* A placement of the placer thread fails with -EIO. */
    POSTCOPY_INJECT_PLACER_FAIL,
    /* A page request fails as if the return path had just broken. */
    POSTCOPY_INJECT_REQUEST_FAIL,
    /* Reading the userfaultfd fails with EIO. */
    POSTCOPY_INJECT_UFFD_READ_FAIL,
    /*
     * The load thread's placement of a page the placer left in its ring
     * (after the placer stalled, at the end of the stream, at a pause)
     * fails with -EIO.
     */
    POSTCOPY_INJECT_PLACE_LEFTOVERS,
    /* A placement on the preempt thread fails with -EIO. */
    POSTCOPY_INJECT_PLACE_PREEMPT,
    /*
     * A placement on the preempt thread waits until the main stream has
     * ended, then fails with -EIO: a requested page still on the preempt
     * channel when nothing more will be sent.
     */
    POSTCOPY_INJECT_PREEMPT_AT_END,
    /*
     * The zero page placed for RAM that a RamDiscardManager (virtio-mem)
     * discarded fails with -EIO.
     */
    POSTCOPY_INJECT_PLACE_ZERO,
    /*
     * At a pause, the load thread reaches the module 1 s late, as if it
     * were descheduled: long enough for a migrate-recover to move the
     * state on from "paused" meanwhile.
     */
    POSTCOPY_INJECT_PAUSE_LATE,
    /*
     * The request for another process's fault (a vhost-user back-end's)
     * fails as if the return path had just broken.
     */
    POSTCOPY_INJECT_SHARED_REQUEST_FAIL,
    /*
     * A wake of another process's userfaultfd after a placement
     * (postcopy_shared_wake_placed()) is done, then reported failed with
     * -ESRCH, as when that process has gone.
     */
    POSTCOPY_INJECT_SHARED_WAKE_FAIL,
    /*
     * A collapse into a huge page is refused with EINVAL, as by a kernel
     * before 6.1 (postcopy-collapse-qemu.c).
     */
    POSTCOPY_INJECT_COLLAPSE_REFUSED,
    POSTCOPY_INJECT__MAX,
} PostcopyInjectPoint;

typedef struct PostcopyInjectArm {
    bool armed;
    /* Fire on passes first .. first + count - 1, counted from 1. */
    uint64_t first;
    uint64_t count;
} PostcopyInjectArm;

/*
 * Parse @spec (the format above) into @arms[POSTCOPY_INJECT__MAX].  False
 * with @errp naming the bad part; @arms is then unchanged.  Pure.
 */
bool postcopy_inject_parse(const char *spec, PostcopyInjectArm *arms,
                           Error **errp);

/* Whether pass @pass (counted from 1) of a point armed as @arm fires.  Pure. */
bool postcopy_inject_fires(const PostcopyInjectArm *arm, uint64_t pass);
/* The name of @point as QEMU_POSTCOPY_INJECT spells it.  Pure. */
const char *postcopy_inject_point_name(PostcopyInjectPoint point);

/* The last pass that fires, UINT64_MAX when none ends it.  Pure. */
uint64_t postcopy_inject_last_pass(const PostcopyInjectArm *arm);

/*
 * Read QEMU_POSTCOPY_INJECT once, when the first incoming postcopy
 * migration starts listening.  A bad value is reported and ignored.
 */
void postcopy_inject_init(void);

/* Whether @point is armed at all. */
bool postcopy_inject_armed(PostcopyInjectPoint point);

/*
 * Count one pass of @point and say whether it fires now.  Any thread.
 * Always false while the point is not armed.
 */
bool postcopy_inject_hit(PostcopyInjectPoint point);

#endif
