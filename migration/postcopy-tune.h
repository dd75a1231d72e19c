/*
 * Postcopy: QEMU_POSTCOPY_TUNE, the knobs for benchmarks.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One place for every item of QEMU_POSTCOPY_TUNE: the struct, its parser
 * (pure: tests/unit drives it) and the process's tuning, read from the
 * environment once at start-up.  The files that act on a knob read it
 * here; none asks another for it.
 *
 * The items (the environment of either QEMU):
 *
 *   QEMU_POSTCOPY_TUNE=queue=auto           the default, as above
 *   QEMU_POSTCOPY_TUNE=queue=off            leave the kernel's autotuning
 *                                           (and the source's pacing)
 *   QEMU_POSTCOPY_TUNE=queue=send           bound the send queue always
 *   QEMU_POSTCOPY_TUNE=queue=receive|on     the receive queue only, or both
 *   QEMU_POSTCOPY_TUNE=lowat=BYTES,rcvbuf=BYTES
 *                                           fixed bounds instead of sized
 *                                           (rcvbuf= turns the receive
 *                                           bound on; not with queue=off)
 *   QEMU_POSTCOPY_TUNE=prepage=PAGES        the destination asks for up to
 *                                           PAGES pages ahead of a walking
 *                                           vCPU's faults (pre-paging,
 *                                           postcopy-prepage.h); 0, the
 *                                           default, never
 *   QEMU_POSTCOPY_TUNE=pace=auto|off|PERCENT
 *                                           auto, the default: with the
 *                                           preempt channel, pace the main
 *                                           channel at
 *                                           POSTCOPY_PACE_PERCENT of the
 *                                           path's rate, where the path is
 *                                           the bottleneck (as above);
 *                                           PERCENT: at that share, with
 *                                           or without preempt, even where
 *                                           the receiver seemed to limit
 *                                           the sender; off: never
 *   QEMU_POSTCOPY_TUNE=recheck=auto|off|only
 *                                           auto, the default: the source
 *                                           looks again into postcopy
 *                                           where the switch left the
 *                                           send bound or pacing unset
 *                                           (as above); off: never;
 *                                           only: the switch sets neither
 *                                           (unless fixed or forced) and
 *                                           the second look decides
 *   QEMU_POSTCOPY_TUNE=recovery=keep|off    keep, the default: after a
 *                                           postcopy recovery the new main
 *                                           channel gets the send bound
 *                                           and pacing the old one had,
 *                                           and the second look if it was
 *                                           still due; off: the kernel's
 *                                           defaults
 *   QEMU_POSTCOPY_TUNE=placer=auto|on|off   auto, the default: the
 *                                           destination hands background
 *                                           pages to the placer thread
 *                                           (postcopy-placer.c) while a
 *                                           fault waits for a page; on:
 *                                           always; off: never, every page
 *                                           is placed by the thread that
 *                                           read it, as upstream's module
 *                                           does
 *   QEMU_POSTCOPY_TUNE=placerun=PAGES       the most pages the placer
 *                                           places with one UFFDIO_COPY
 *                                           (1 to POSTCOPY_PLACER_RUN_MAX)
 *   QEMU_POSTCOPY_TUNE=collapse=off|PERCENT once every page is in, the
 *                                           destination rebuilds huge
 *                                           pages over guest RAM taking
 *                                           about PERCENT of one CPU
 *                                           (postcopy-collapse.h; default
 *                                           POSTCOPY_COLLAPSE_PERCENT);
 *                                           off: leaves it to khugepaged
 *
 */
#ifndef QEMU_POSTCOPY_TUNE_H
#define QEMU_POSTCOPY_TUNE_H

/* What lowat= and rcvbuf= accept, in bytes. */
#define POSTCOPY_TUNE_BYTES_MIN (4 * 1024)
#define POSTCOPY_TUNE_BYTES_MAX (16 * 1024 * 1024)

/*
 * pace=auto's share of the path's rate, in percent: the lowest fault
 * service on the emulated 1 Gbit/s link with the postcopy time unchanged
 * (docs/notes/2026-12-02-fault-path.md, "Pacing the main channel").
 */
#define POSTCOPY_PACE_PERCENT   97
/*
 * The most consecutive pages of its ring the placer thread places with
 * one UFFDIO_COPY (placerun=), by default and at most: a run is never
 * waited for, only taken when it is there (postcopy-placer.c).
 */
#define POSTCOPY_PLACER_RUN_DEFAULT 16
#define POSTCOPY_PLACER_RUN_MAX     64

typedef struct PostcopyTune {
    bool no_send;               /* queue=off or queue=receive */
    bool send_always;           /* queue=send or on: whatever limits */
    bool no_receive;            /* unless queue=receive or queue=on */
    uint32_t lowat;             /* 0: from the path */
    uint32_t rcvbuf;            /* 0: the TCP queue's default */
    uint32_t prepage;           /* pages to ask for ahead of a walk; 0: off */
    bool no_placer;             /* placer=off */
    /* placerun=: pages the placer places per UFFDIO_COPY, at most */
    uint32_t placer_run;
    bool placer_always;         /* placer=on: even while no fault waits */
    /* pace=: percent of the path's rate; 0 never */
    uint32_t pace_percent;
    /* pace=PERCENT: with or without preempt, whoever seemed to limit */
    bool pace_forced;
    bool no_recheck;            /* recheck=off: the switch decides alone */
    bool recheck_only;          /* recheck=only: the second look alone */
    /* recovery=off: a recovery's new main channel keeps the defaults */
    bool no_recovery_keep;
    /* collapse=: percent of a CPU to rebuild huge pages with; 0 never */
    uint32_t collapse_percent;
} PostcopyTune;

/*
 * Parse QEMU_POSTCOPY_TUNE's text (NULL or "" for the defaults) into
 * @tune.  False with @errp naming the bad item; @tune then holds the
 * defaults, as for an unset QEMU_POSTCOPY_TUNE, so that a caller that
 * warns and goes on runs as the warning says.
 */
bool postcopy_tune_parse(const char *text, PostcopyTune *tune, Error **errp);

/* Read QEMU_POSTCOPY_TUNE; a text that does not parse warns. Once. */
void postcopy_tune_init(void);
/*
 * The process's tuning, valid once postcopy_tune_init() ran at start-up
 * (postcopy_infrastructure_init()); all zeroes before.
 */
const PostcopyTune *postcopy_tune(void);

#endif
