/*
 * Postcopy: batching of the source's discard ranges.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Pure logic: the caller supplies the function that puts a batch on the
 * wire, so tests/unit checks the batching without a migration stream.
 */

#include "qemu/osdep.h"
#include "postcopy-discard.h"

void postcopy_discard_batch_init(PostcopyDiscardBatch *batch,
                                 const char *block_name, uint64_t page_size)
{
    *batch = (PostcopyDiscardBatch) {
        .block_name = block_name,
        .page_size = page_size,
    };
}

void postcopy_discard_batch_flush(PostcopyDiscardBatch *batch,
                                  PostcopyDiscardSendFunc send, void *opaque)
{
    if (!batch->count) {
        return;
    }
    send(batch, opaque);
    batch->ranges_sent += batch->count;
    batch->commands_sent++;
    batch->count = 0;
}

void postcopy_discard_batch_add(PostcopyDiscardBatch *batch,
                                uint64_t start, uint64_t npages,
                                PostcopyDiscardSendFunc send, void *opaque)
{
    uint64_t offset = start * batch->page_size;
    uint64_t length = npages * batch->page_size;
    unsigned int last = batch->count - 1;

    if (!length) {
        return;
    }
    batch->ranges_added++;
    if (batch->count &&
        batch->starts[last] + batch->lengths[last] == offset) {
        batch->lengths[last] += length;
        return;
    }
    batch->starts[batch->count] = offset;
    batch->lengths[batch->count] = length;
    batch->count++;
    if (batch->count == POSTCOPY_DISCARD_BATCH_MAX) {
        postcopy_discard_batch_flush(batch, send, opaque);
    }
}
