/*
 * pcguest: what guest.c and boot.S share.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef PCGUEST_H
#define PCGUEST_H

#include <stdbool.h>
#include <stdint.h>

/* boot.S: the multiboot information's address, saved at entry */
extern uint32_t mbi_addr;
/* boot.S: the AP trampoline, copied to 0x8000 before the APs start */
extern char trampoline_start[], trampoline_end[];
/* boot.S: stop this CPU (kernel mode; also SYSCALL's entry point) */
extern char halt[];

/*
 * disk.c: a virtio-blk disk, if the guest has one, driven by CPU 0.  Its
 * ring and buffers take the last DISK_AREA_SIZE bytes of RAM, at
 * disk_area (guest.c takes them off the test pages): the end of RAM is
 * what postcopy's background stream sends last, so the buffers are still
 * missing when the guest uses them.
 */
#define DISK_AREA_SIZE          (32ULL << 20)
extern uint64_t disk_area;
/* What each 8-byte word of the disk holds: a magic | its byte offset */
#define DISK_READ_MAGIC         0x5043475200000000ULL   /* "PCGR" */
#define DISK_WRITE_MAGIC        0x5043475700000000ULL   /* "PCGW" */

typedef struct DiskStats {
    bool present;
    uint64_t reads, writes, bad_reads, errors;
    uint64_t first_bad_offset, first_bad_value;
    /* A read disk_aim_read() placed, done: where, and whether it was right */
    bool aimed_done, aimed_good;
    uint64_t aimed_addr;
} DiskStats;

extern DiskStats disk_stats;

/* At boot: whether there is a disk; then disk_init() sets it up. */
bool disk_probe(void);
bool disk_init(void);
/* Until disk_start(): dirty every data buffer (see disk.c). */
void disk_keep_dirty(void);
/* Start reading and writing (the command 'd'); disk_stop() ends it. */
void disk_start(void);
void disk_stop(void);
/*
 * The next read's data goes to guest-physical @addr (4 KiB, the command
 * 'b'), instead of a buffer of the disk's area.
 */
void disk_aim_read(uint64_t addr);
/* Between rounds: completes a request and issues the next; false if off. */
bool disk_poll(void);
/* Whether a request is still in flight (completes it if it is done). */
bool disk_busy(void);

/* guest.c, called by boot.S on the bootstrap processor */
void bsp_main(void);
/* guest.c, called by boot.S on application processor @index (1, 2, ...) */
void ap_main(unsigned int index);

#endif
