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
 * The items, QEMU_POSTCOPY_TUNE=item=value,... in the environment of
 * either QEMU, are listed once, in tune_items[] (postcopy-tune.c); what
 * each does and its default is the design doc's table
 * (docs/devel/migration/postcopy-ram-module.rst, "Knobs"), which the unit
 * test holds to that list.
 */
#ifndef QEMU_POSTCOPY_TUNE_H
#define QEMU_POSTCOPY_TUNE_H

/* What lowat= and rcvbuf= accept, in bytes. */
#define POSTCOPY_TUNE_BYTES_MIN (4 * 1024)
#define POSTCOPY_TUNE_BYTES_MAX (16 * 1024 * 1024)

/*
 * pace=auto's share of the path's rate, in percent: the lowest fault
 * service on the emulated 1 Gbit/s link with the postcopy time unchanged.
 */
#define POSTCOPY_PACE_PERCENT   97
/*
 * The most consecutive pages of its ring the placer thread places with
 * one UFFDIO_COPY (placerun=), by default and at most: a run is never
 * waited for, only taken when it is there (postcopy-placer-qemu.c).
 */
#define POSTCOPY_PLACER_RUN_DEFAULT 16
#define POSTCOPY_PLACER_RUN_MAX     64

typedef struct PostcopyTune {
    bool no_send;               /* queue=off or queue=receive */
    bool send_always;           /* queue=send or on: whatever limits */
    bool no_receive;            /* unless queue=receive or queue=on */
    uint32_t lowat;             /* 0: from the path */
    uint32_t rcvbuf;            /* 0: the TCP queue's default */
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
    /* collapse-early=off: not while pages still come in */
    bool no_collapse_early;
} PostcopyTune;

/*
 * Parse QEMU_POSTCOPY_TUNE's text (NULL or "" for the defaults) into
 * @tune.  False with @errp naming the bad item; @tune then holds the
 * defaults, as for an unset QEMU_POSTCOPY_TUNE, so that a caller that
 * warns and goes on runs as the warning says.
 */
bool postcopy_tune_parse(const char *text, PostcopyTune *tune, Error **errp);

/* The name of item @i of QEMU_POSTCOPY_TUNE; NULL past the last.  Pure. */
const char *postcopy_tune_item_name(unsigned int i);

/*
 * Read QEMU_POSTCOPY_TUNE, once, at start-up: a text that does not parse
 * is ignored, and the first postcopy_tune() warns about it.
 */
void postcopy_tune_init(void);
/*
 * The process's tuning, valid once postcopy_tune_init() ran at start-up
 * (postcopy_infrastructure_init()); all zeroes before.  Any thread.
 */
const PostcopyTune *postcopy_tune(void);

#endif
