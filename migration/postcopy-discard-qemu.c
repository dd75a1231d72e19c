/*
 * Postcopy: the source sends the ranges the destination must discard.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "exec/target_page.h"
#include "migration.h"
#include "savevm.h"
#include "postcopy-ram.h"
#include "postcopy-discard.h"
#include "trace.h"

/* Used by the migration thread alone, between init and finish. */
static PostcopyDiscardBatch discard_batch;

static void postcopy_discard_send(PostcopyDiscardBatch *batch, void *opaque)
{
    MigrationState *ms = opaque;

    trace_postcopy_discard_send(batch->block_name, batch->count);
    qemu_savevm_send_postcopy_ram_discard(ms->to_dst_file, batch->block_name,
                                          batch->count, batch->starts,
                                          batch->lengths);
}

void postcopy_discard_send_init(MigrationState *ms, const char *name)
{
    postcopy_discard_batch_init(&discard_batch, name,
                                qemu_target_page_size());
}

void postcopy_discard_send_range(MigrationState *ms, unsigned long start,
                                 unsigned long length)
{
    trace_postcopy_discard_range(discard_batch.block_name, start, length);
    postcopy_discard_batch_add(&discard_batch, start, length,
                               postcopy_discard_send, ms);
}

void postcopy_discard_send_finish(MigrationState *ms)
{
    postcopy_discard_batch_flush(&discard_batch, postcopy_discard_send, ms);
    trace_postcopy_discard_finish(discard_batch.block_name,
                                  discard_batch.ranges_added,
                                  discard_batch.ranges_sent,
                                  discard_batch.commands_sent);
}
