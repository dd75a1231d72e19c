/*
 * Postcopy: batching of the source's discard ranges.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef QEMU_POSTCOPY_DISCARD_H
#define QEMU_POSTCOPY_DISCARD_H

/*
 * At most this many ranges go in one POSTCOPY_RAM_DISCARD command, which
 * keeps each command near 200 bytes on the wire.
 */
#define POSTCOPY_DISCARD_BATCH_MAX 12

/*
 * The ranges of one RAMBlock waiting to be sent.  Owned by the migration
 * thread, which alone sends discards: no locking.
 */
typedef struct PostcopyDiscardBatch {
    const char *block_name;
    /* Bytes per page of the page numbers handed to add() */
    uint64_t page_size;
    /* Pending ranges, in bytes from the start of the block */
    uint16_t count;
    uint64_t starts[POSTCOPY_DISCARD_BATCH_MAX];
    uint64_t lengths[POSTCOPY_DISCARD_BATCH_MAX];
    /* For the block so far: ranges handed in, ranges and commands sent */
    uint64_t ranges_added;
    uint64_t ranges_sent;
    uint64_t commands_sent;
} PostcopyDiscardBatch;

/* Sends @batch's pending ranges as one command. */
typedef void (*PostcopyDiscardSendFunc)(PostcopyDiscardBatch *batch,
                                        void *opaque);

void postcopy_discard_batch_init(PostcopyDiscardBatch *batch,
                                 const char *block_name, uint64_t page_size);
/*
 * Queue pages [@start, @start + @npages); a range that continues the last
 * one pending extends it.  Sends a full batch through @send.
 */
void postcopy_discard_batch_add(PostcopyDiscardBatch *batch,
                                uint64_t start, uint64_t npages,
                                PostcopyDiscardSendFunc send, void *opaque);
/* Sends whatever is pending. */
void postcopy_discard_batch_flush(PostcopyDiscardBatch *batch,
                                  PostcopyDiscardSendFunc send, void *opaque);

#endif
