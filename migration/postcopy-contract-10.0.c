/*
 * Postcopy: the module's contract with QEMU 10.0's savevm.c and ram.c.
 * Every host builds it; postcopy.build picks it for QEMU < 10.2.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * In 10.0 savevm.c owns the listen thread: it calls
 * postcopy_ram_incoming_setup() on the LISTEN command and
 * postcopy_ram_incoming_cleanup() when the stream ends, and ignores the
 * latter's result (see postcopy_fail_unplaced()).  All that differs from
 * 10.2 on the module's side is how errors leave the init below.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"

int postcopy_ram_incoming_init(MigrationIncomingState *mis)
{
    Error *err = NULL;

    if (!postcopy_ram_empty_blocks(&err)) {
        error_report_err(err);
        return -1;
    }
    return 0;
}
