/*
 * pcguest: a virtio-blk disk, driven by polling from CPU 0's workload, to
 * make a vhost-user back-end touch guest pages during postcopy.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The device is found on PCI bus 0 as a virtio-blk function and driven
 * through the virtio 1 interface (libvhost-user, behind every QEMU
 * vhost-user back-end, refuses legacy drivers), reaching its registers
 * through the PCI configuration access capability (VIRTIO_PCI_CAP_PCI_CFG)
 * rather than its memory BAR: port I/O works in user mode here, and needs
 * no mapping of a BAR that firmware may put above what boot.S maps.
 * Interrupts stay off; CPU 0 looks at the used ring between rounds of its
 * accesses.  One request is in flight at a time.
 *
 * The disk's first half is read, its second half written, 4 KiB at a
 * time, alternately.  The harness fills the first half before the guest
 * starts: each 8-byte word holds DISK_READ_MAGIC | its byte offset on the
 * disk.  The guest writes DISK_WRITE_MAGIC | offset into the second half;
 * the harness checks the disk afterwards.  Every read is checked here.
 *
 * Why the buffers are where they are: the point is a page that the back-end
 * is the first to touch on the destination, while postcopy still misses
 * it.  Until the command 'd' (sent once postcopy started), CPU 0 writes a
 * word into every data buffer each report interval, so that the pages are
 * dirty at the switch (the destination discards them and must ask for
 * them); after it, the guest leaves a read's buffer alone until the device
 * says it is done, so the back-end's write into it is the first access.
 * Each request takes another buffer, round the DISK_BUFFERS of them.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guest.h"
#include "io.h"

#define PCI_CONFIG_ADDR         0xCF8
#define PCI_CONFIG_DATA         0xCFC
#define PCI_VENDOR_VIRTIO       0x1af4
#define PCI_DEVICE_BLK          0x1001  /* transitional */
#define PCI_DEVICE_BLK_MODERN   0x1042
#define PCI_COMMAND             0x04
#define PCI_COMMAND_IO          (1 << 0)
#define PCI_COMMAND_MEMORY      (1 << 1)
#define PCI_COMMAND_MASTER      (1 << 2)
#define PCI_STATUS_CAP_LIST     (1 << 20)   /* in the dword at 0x04 */
#define PCI_CAPABILITY_LIST     0x34
#define PCI_CAP_ID_VNDR         0x09

/* virtio_pci_cap: cfg_type at +3, bar at +4, offset at +8 */
#define VIRTIO_PCI_CAP_COMMON   1
#define VIRTIO_PCI_CAP_NOTIFY   2
#define VIRTIO_PCI_CAP_DEVICE   4
#define VIRTIO_PCI_CAP_PCI_CFG  5

/* virtio_pci_common_cfg */
#define COMMON_DF_SELECT        0
#define COMMON_DF               4
#define COMMON_GF_SELECT        8
#define COMMON_GF               12
#define COMMON_STATUS           20
#define COMMON_Q_SELECT         22
#define COMMON_Q_SIZE           24
#define COMMON_Q_ENABLE         28
#define COMMON_Q_NOTIFY_OFF     30
#define COMMON_Q_DESC           32
#define COMMON_Q_AVAIL          40
#define COMMON_Q_USED           48

#define STATUS_ACK              1
#define STATUS_DRIVER           2
#define STATUS_DRIVER_OK        4
#define STATUS_FEATURES_OK      8
#define STATUS_FAILED           0x80
#define F_VERSION_1_HIGH        (1u << 0)   /* feature 32 */

#define VRING_DESC_F_NEXT       1
#define VRING_DESC_F_WRITE      2

#define BLK_T_IN                0
#define BLK_T_OUT               1
#define BLK_S_OK                0

#define SECTOR                  512
#define BLOCK                   4096ULL
#define QUEUE_MAX               256

/* The area: the ring, then the request header and status, then buffers */
#define RING_BYTES              (16 * 1024)
#define REQ_OFFSET              RING_BYTES
#define BUFFERS_OFFSET          (64 * 1024)
#define DISK_BUFFERS            ((DISK_AREA_SIZE - BUFFERS_OFFSET) / BLOCK)
#define BUFFER_STRIDE           509

typedef struct VringDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
} VringDesc;

typedef struct VringUsedElem {
    uint32_t id, len;
} VringUsedElem;

typedef struct BlkReq {
    uint32_t type, reserved;
    uint64_t sector;
} BlkReq;

DiskStats disk_stats;

/* Where a region of the device's registers is: BAR and offset in it. */
typedef struct Region {
    uint8_t bar;
    uint32_t offset;
} Region;

static struct {
    unsigned int dev;                   /* PCI device number on bus 0 */
    uint8_t window;                     /* the PCI_CFG capability */
    Region common, notify, device;
    unsigned int num;                   /* queue size */
    VringDesc *desc;
    /* volatile: the device reads and writes these under our feet */
    volatile uint16_t *avail;           /* flags, idx, ring[num] */
    volatile uint16_t *used;            /* flags, idx, then elements */
    BlkReq *req;
    volatile uint8_t *status;           /* volatile: the device's */
    uint64_t blocks;                    /* 4 KiB blocks in each half */
    uint16_t avail_idx, used_seen;
    bool started, busy, busy_read;
    uint64_t busy_block, next_op;
    uint8_t *busy_buf;
    uint64_t aim;                       /* the next read's buffer, or 0 */
    bool busy_aimed;
} d;

static void pci_select(unsigned int off)
{
    outl(PCI_CONFIG_ADDR, 0x80000000u | d.dev << 11 | (off & 0xfc));
}

static uint32_t pci_read32(unsigned int off)
{
    pci_select(off);
    return inl(PCI_CONFIG_DATA);
}

static uint8_t pci_read8(unsigned int off)
{
    pci_select(off);
    return inb(PCI_CONFIG_DATA + (off & 3));
}

static void pci_write8(unsigned int off, uint8_t v)
{
    pci_select(off);
    outb(PCI_CONFIG_DATA + (off & 3), v);
}

static void pci_write32(unsigned int off, uint32_t v)
{
    pci_select(off);
    outl(PCI_CONFIG_DATA, v);
}

/* The window: virtio_pci_cfg_cap's bar, offset, length, then the data. */
static void window_at(const Region *r, uint32_t off, unsigned int len)
{
    pci_write8(d.window + 4, r->bar);
    pci_write32(d.window + 8, r->offset + off);
    pci_write32(d.window + 12, len);
}

static uint32_t vread(const Region *r, uint32_t off, unsigned int len)
{
    uint32_t v;

    window_at(r, off, len);
    v = pci_read32(d.window + 16);
    return len == 4 ? v : v & ((1u << (len * 8)) - 1);
}

static void vwrite(const Region *r, uint32_t off, unsigned int len,
                   uint32_t v)
{
    window_at(r, off, len);
    pci_write32(d.window + 16, v);
}

static void vwrite64(const Region *r, uint32_t off, uint64_t v)
{
    vwrite(r, off, 4, (uint32_t)v);
    vwrite(r, off + 4, 4, (uint32_t)(v >> 32));
}

/* The first virtio-blk function on bus 0: sets d.dev; false if none. */
static bool find_device(void)
{
    for (d.dev = 0; d.dev < 32; d.dev++) {
        uint32_t id = pci_read32(0);

        if ((id & 0xffff) == PCI_VENDOR_VIRTIO &&
            (id >> 16 == PCI_DEVICE_BLK ||
             id >> 16 == PCI_DEVICE_BLK_MODERN)) {
            return true;
        }
    }
    return false;
}

/* Reads the virtio capabilities; false if one the driver needs is not. */
static bool find_regions(uint32_t *notify_multiplier)
{
    bool common = false, notify = false, device = false;
    uint8_t cap;

    if (!(pci_read32(PCI_COMMAND) & PCI_STATUS_CAP_LIST)) {
        return false;
    }
    for (cap = pci_read8(PCI_CAPABILITY_LIST) & 0xfc; cap;
         cap = pci_read8(cap + 1) & 0xfc) {
        Region r;

        if (pci_read8(cap) != PCI_CAP_ID_VNDR) {
            continue;
        }
        r.bar = pci_read8(cap + 4);
        r.offset = pci_read32(cap + 8);
        switch (pci_read8(cap + 3)) {
        case VIRTIO_PCI_CAP_COMMON:
            d.common = r;
            common = true;
            break;
        case VIRTIO_PCI_CAP_NOTIFY:
            d.notify = r;
            *notify_multiplier = pci_read32(cap + 16);
            notify = true;
            break;
        case VIRTIO_PCI_CAP_DEVICE:
            d.device = r;
            device = true;
            break;
        case VIRTIO_PCI_CAP_PCI_CFG:
            d.window = cap;
            break;
        }
    }
    return common && notify && device && d.window;
}

/*
 * Request @n's buffer.  Not in address order: after a page request the
 * source streams the pages that follow the requested one, which would
 * bring the next buffers in before the device touches them.  The stride is
 * prime, so coprime with DISK_BUFFERS: every buffer is used in turn.
 */
static uint8_t *buffer(uint64_t n)
{
    return (uint8_t *)(disk_area + BUFFERS_OFFSET +
                       n * BUFFER_STRIDE % DISK_BUFFERS * BLOCK);
}

static void setup_queue(void)
{
    uint64_t ring = disk_area, used;
    uint8_t *p = (uint8_t *)ring;
    uint64_t i;

    for (i = 0; i < RING_BYTES; i++) {
        p[i] = 0;
    }
    d.desc = (VringDesc *)ring;
    d.avail = (volatile uint16_t *)(ring +      /* volatile: shared */
                                    d.num * sizeof(VringDesc));
    /* The used ring on a page of its own: the back-end writes it. */
    used = ((uint64_t)(d.avail + 3 + d.num) + BLOCK - 1) & ~(BLOCK - 1);
    d.used = (volatile uint16_t *)used;         /* volatile: shared */
    d.req = (BlkReq *)(disk_area + REQ_OFFSET);
    d.status = (volatile uint8_t *)(d.req + 1); /* volatile: shared */
    vwrite(&d.common, COMMON_Q_SIZE, 2, d.num);
    vwrite64(&d.common, COMMON_Q_DESC, (uint64_t)d.desc);
    vwrite64(&d.common, COMMON_Q_AVAIL, (uint64_t)d.avail);
    vwrite64(&d.common, COMMON_Q_USED, used);
    vwrite(&d.common, COMMON_Q_ENABLE, 2, 1);
}

static uint32_t notify_offset;

bool disk_probe(void)
{
    return find_device();
}

/* virtio 1.0, 3.1.1: the driver's side of the device's initialisation. */
bool disk_init(void)
{
    uint32_t multiplier = 0;
    uint64_t sectors;
    uint8_t status = STATUS_ACK | STATUS_DRIVER;

    if (!find_regions(&multiplier)) {
        return false;
    }
    pci_write32(PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY |
                             PCI_COMMAND_MASTER);
    vwrite(&d.common, COMMON_STATUS, 1, 0);
    vwrite(&d.common, COMMON_STATUS, 1, status);
    vwrite(&d.common, COMMON_DF_SELECT, 4, 1);
    if (!(vread(&d.common, COMMON_DF, 4) & F_VERSION_1_HIGH)) {
        vwrite(&d.common, COMMON_STATUS, 1, STATUS_FAILED);
        return false;
    }
    vwrite(&d.common, COMMON_GF_SELECT, 4, 0);
    vwrite(&d.common, COMMON_GF, 4, 0);
    vwrite(&d.common, COMMON_GF_SELECT, 4, 1);
    vwrite(&d.common, COMMON_GF, 4, F_VERSION_1_HIGH);
    status |= STATUS_FEATURES_OK;
    vwrite(&d.common, COMMON_STATUS, 1, status);
    if (!(vread(&d.common, COMMON_STATUS, 1) & STATUS_FEATURES_OK)) {
        vwrite(&d.common, COMMON_STATUS, 1, STATUS_FAILED);
        return false;
    }
    vwrite(&d.common, COMMON_Q_SELECT, 2, 0);
    d.num = vread(&d.common, COMMON_Q_SIZE, 2);
    if (d.num > QUEUE_MAX) {
        d.num = QUEUE_MAX;
    }
    if (!d.num) {
        vwrite(&d.common, COMMON_STATUS, 1, STATUS_FAILED);
        return false;
    }
    notify_offset = vread(&d.common, COMMON_Q_NOTIFY_OFF, 2) * multiplier;
    setup_queue();
    vwrite(&d.common, COMMON_STATUS, 1, status | STATUS_DRIVER_OK);
    sectors = vread(&d.device, 0, 4) | (uint64_t)vread(&d.device, 4, 4) << 32;
    d.blocks = sectors * SECTOR / BLOCK / 2;
    disk_stats.present = d.blocks > 0;
    return disk_stats.present;
}

void disk_keep_dirty(void)
{
    uint64_t i;

    if (!disk_stats.present || d.started) {
        return;
    }
    for (i = 0; i < DISK_BUFFERS; i++) {
        /* volatile: a store the compiler must not drop */
        ((volatile uint64_t *)buffer(i))[1] = i;
    }
}

void disk_start(void)
{
    d.started = disk_stats.present;
}

static void submit(bool read, uint64_t block, uint8_t *buf)
{
    uint64_t offset = (read ? block : d.blocks + block) * BLOCK;
    uint16_t slot;

    if (!read) {
        uint64_t i;

        for (i = 0; i < BLOCK / 8; i++) {
            ((uint64_t *)buf)[i] = DISK_WRITE_MAGIC | (offset + i * 8);
        }
    }
    d.req->type = read ? BLK_T_IN : BLK_T_OUT;
    d.req->reserved = 0;
    d.req->sector = offset / SECTOR;
    *d.status = 0xff;
    d.desc[0] = (VringDesc){ (uint64_t)d.req, sizeof(BlkReq),
                             VRING_DESC_F_NEXT, 1 };
    d.desc[1] = (VringDesc){ (uint64_t)buf, BLOCK,
                             VRING_DESC_F_NEXT |
                             (read ? VRING_DESC_F_WRITE : 0), 2 };
    d.desc[2] = (VringDesc){ (uint64_t)d.status, 1, VRING_DESC_F_WRITE, 0 };
    slot = d.avail_idx % d.num;
    d.avail[2 + slot] = 0;
    /* The descriptors before the index, the index before the notify. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    d.avail[1] = ++d.avail_idx;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    vwrite(&d.notify, notify_offset, 2, 0);
    d.busy = true;
    d.busy_read = read;
    d.busy_block = block;
    d.busy_buf = buf;
}

/* Whether the read just done brought the right block; counted if not. */
static bool check_read(void)
{
    const uint64_t *w = (const uint64_t *)d.busy_buf;
    uint64_t offset = d.busy_block * BLOCK, i;

    for (i = 0; i < BLOCK / 8; i++) {
        if (w[i] != (DISK_READ_MAGIC | (offset + i * 8))) {
            if (!disk_stats.bad_reads++) {
                disk_stats.first_bad_offset = offset + i * 8;
                disk_stats.first_bad_value = w[i];
            }
            return false;
        }
    }
    return true;
}

static void complete(void)
{
    bool good = false;

    d.used_seen++;
    d.busy = false;
    if (*d.status != BLK_S_OK) {
        disk_stats.errors++;
    } else if (d.busy_read) {
        good = check_read();
    }
    if (d.busy_aimed) {
        d.busy_aimed = false;
        disk_stats.aimed_good = good;
        disk_stats.aimed_done = true;
    }
    if (d.busy_read) {
        disk_stats.reads++;
    } else {
        disk_stats.writes++;
    }
}

bool disk_poll(void)
{
    uint64_t op;
    uint8_t *buf;
    bool read;

    if (!d.started) {
        return false;
    }
    if (d.busy) {
        /* The device's writes before its index. */
        if (d.used[1] == d.used_seen) {
            return true;
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        complete();
    }
    op = d.next_op++;
    read = !(op & 1);
    buf = buffer(op);
    d.busy_aimed = read && d.aim;
    if (d.busy_aimed) {
        buf = (uint8_t *)d.aim;
        disk_stats.aimed_addr = d.aim;
        d.aim = 0;
    }
    submit(read, op / 2 % d.blocks, buf);
    return true;
}

void disk_aim_read(uint64_t addr)
{
    d.aim = addr & ~(BLOCK - 1);
}

void disk_stop(void)
{
    d.started = false;
}

bool disk_busy(void)
{
    if (d.busy && d.used[1] != d.used_seen) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        complete();
    }
    return d.busy;
}
