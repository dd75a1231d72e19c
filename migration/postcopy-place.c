/*
 * Postcopy: placing one page, and the bookkeeping that goes with it.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The lowest layer of the destination: the load thread, the preempt
 * thread, the placer thread and the fault thread all place pages through
 * postcopy_install(), which calls nothing of the module but blocktime, the
 * shared-fd wake-ups and the collapse plan's count of bytes in place.
 *
 * A page is "received" (its receivedmap bit set) only once it is in
 * place: on recovery the destination sends receivedmap to the source,
 * which sends again every page without its bit.
 */

#include "qemu/osdep.h"
#include <sys/ioctl.h>
#include "qemu/bitmap.h"
#include "qemu/lockable.h"
#include "qemu/error-report.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "exec/target_page.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "qemu-file.h"
#include "ram.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "postcopy-inject.h"
#include "trace.h"

void postcopy_count_missing(void)
{
    unsigned int bits = qemu_target_page_bits();
    uint64_t missing = 0;
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_NOT_IGNORED(rb) {
        long nbits = rb->postcopy_length >> bits;

        missing += nbits - bitmap_count_one(rb->receivedmap, nbits);
    }
    qatomic_set(&postcopy_in.pages_missing, missing);
    trace_postcopy_count_missing(missing);
}

uint64_t postcopy_bytes_missing(void)
{
    return qatomic_read(&postcopy_in.pages_missing) <<
           qemu_target_page_bits();
}

void *postcopy_map_anonymous(size_t size, const char *what, Error **errp)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        error_setg_errno(errp, errno, "cannot map %zu bytes for %s", size,
                         what);
        return NULL;
    }
    return p;
}

bool postcopy_page_requested(MigrationIncomingState *mis, void *host)
{
    /* Most pages arrive while nothing is asked for: skip the lock then. */
    if (!qatomic_read(&mis->page_requested_count)) {
        return false;
    }
    QEMU_LOCK_GUARD(&mis->page_request_mutex);
    return g_tree_lookup(mis->page_requested, host) != NULL;
}

/*
 * Page request lock held: the host page at @host is in place, so whoever
 * asked for it has it.
 */
static void postcopy_request_done(MigrationIncomingState *mis, void *host)
{
    postcopy_assert_held(&mis->page_request_mutex);
    if (g_tree_remove(mis->page_requested, host)) {
        int left = qatomic_dec_fetch(&mis->page_requested_count);

        trace_postcopy_request_done(host, left);
        /* For postcopy_preempt_drain(), which waits under this lock. */
        if (!left) {
            qemu_cond_broadcast(&mis->page_request_cond);
        }
    }
}

/*
 * The host pages of @rb in [@host, @host + @size) are in place: mark them
 * received, drop their requests and wake the other processes' threads
 * that wait on them.  Called by the thread that placed them.
 */
static void postcopy_pages_received(MigrationIncomingState *mis, RAMBlock *rb,
                                    void *host, size_t size)
{
    size_t page_size = qemu_ram_pagesize(rb);
    size_t pages = size / qemu_target_page_size();
    uint64_t missing;
    size_t off;

    WITH_QEMU_LOCK_GUARD(&mis->page_request_mutex) {
        ramblock_recv_bitmap_set_range(rb, host, pages);
        /* A successful placement filled pages that were missing. */
        missing = postcopy_in.pages_missing;
        qatomic_set(&postcopy_in.pages_missing,
                    missing - MIN(missing, pages));
        for (off = 0; off < size; off += page_size) {
            if (!qatomic_read(&mis->page_requested_count)) {
                break;
            }
            postcopy_request_done(mis, (uint8_t *)host + off);
        }
        postcopy_shared_wake_placed(mis, rb, host, size);
    }
    postcopy_collapse_note_placed(rb, qemu_ram_block_host_offset(rb, host),
                                  size);
    for (off = 0; off < size; off += page_size) {
        postcopy_blocktime_page_placed(mis, (uint8_t *)host + off);
    }
}

bool postcopy_main_stream_ended(MigrationIncomingState *mis)
{
    QEMU_LOCK_GUARD(&mis->page_request_mutex);
    return postcopy_in.preempt_draining;
}

/*
 * The fault point preempt-at-end, on the preempt thread: hold a placement
 * until the main stream has ended (a page requested at the end, still on
 * the preempt channel), or at most @max_ms.
 */
static void place_hold_to_main_stream_end(MigrationIncomingState *mis,
                                          int max_ms)
{
    while (!postcopy_main_stream_ended(mis) && max_ms > 0) {
        g_usleep(10 * 1000);
        max_ms -= 10;
    }
}

/*
 * The ioctls themselves, rather than util/userfaultfd.c's wrappers: those
 * report every failure, and EEXIST on a page placed already is not one
 * (see postcopy_install()).  0 or a negative errno; wakes the waiters.
 */
static int postcopy_uffd_place(MigrationIncomingState *mis, void *host,
                               void *from, size_t size)
{
    struct uffdio_copy copy = {
        .dst = (uintptr_t)host, .src = (uintptr_t)from, .len = size,
    };
    struct uffdio_zeropage zero = {
        .range = { .start = (uintptr_t)host, .len = size },
    };
    int ret;

    if (postcopy_inject_hit(POSTCOPY_INJECT_INSTALL_FAIL)) {
        return -EIO;
    }
    if (postcopy_inject_armed(POSTCOPY_INJECT_PLACE_PREEMPT) &&
        qemu_thread_is_self(&mis->postcopy_prio_thread) &&
        postcopy_inject_hit(POSTCOPY_INJECT_PLACE_PREEMPT)) {
        return -EIO;
    }
    if (postcopy_inject_armed(POSTCOPY_INJECT_PREEMPT_AT_END) &&
        qemu_thread_is_self(&mis->postcopy_prio_thread) &&
        postcopy_inject_hit(POSTCOPY_INJECT_PREEMPT_AT_END)) {
        place_hold_to_main_stream_end(mis, 120 * 1000);
        return -EIO;
    }
    do {
        ret = from ? ioctl(mis->userfault_fd, UFFDIO_COPY, &copy)
                   : ioctl(mis->userfault_fd, UFFDIO_ZEROPAGE, &zero);
    } while (ret && errno == EINTR);
    return ret ? -errno : 0;
}

int postcopy_install(MigrationIncomingState *mis, RAMBlock *rb, void *host,
                     void *from)
{
    size_t size = qemu_ram_pagesize(rb);
    ram_addr_t offset = qemu_ram_block_host_offset(rb, host);
    int ret = postcopy_uffd_place(mis, host, from, size);

    /*
     * EEXIST: the page is there already.  Harmless when this module put
     * it there (the source sent it twice around a recovery: the same
     * data), and then it is received and accounted for already, and the
     * other processes' threads that waited on it are woken.
     */
    if (ret == -EEXIST && postcopy_received(rb, offset)) {
        trace_postcopy_place_again(qemu_ram_get_idstr(rb), offset);
        return 0;
    }
    if (ret) {
        error_report("postcopy: cannot place %s page at %s+0x" RAM_ADDR_FMT
                     ": %s", from ? "a" : "a zero", qemu_ram_get_idstr(rb),
                     offset, strerror(-ret));
        return ret;
    }
    postcopy_pages_received(mis, rb, host, size);
    return 0;
}

/*
 * One UFFDIO_COPY of @len bytes from @from to @host: the bytes it placed,
 * from the start, before whatever stopped it.  The kernel wakes the
 * waiters of those.
 */
static size_t postcopy_uffd_place_run(MigrationIncomingState *mis,
                                      void *host, void *from, size_t len)
{
    struct uffdio_copy copy = {
        .dst = (uintptr_t)host, .src = (uintptr_t)from, .len = len,
    };

    /* Injected failures count page by page: postcopy_install()'s. */
    if (postcopy_inject_armed(POSTCOPY_INJECT_INSTALL_FAIL)) {
        return 0;
    }
    if (!ioctl(mis->userfault_fd, UFFDIO_COPY, &copy)) {
        return len;
    }
    /* A failure on the first page leaves the negative errno here. */
    return copy.copy > 0 ? copy.copy : 0;
}

int postcopy_install_run(MigrationIncomingState *mis, RAMBlock *rb,
                         void *host, void *from, unsigned int pages,
                         unsigned int *placed)
{
    size_t page_size = qemu_ram_pagesize(rb);
    unsigned int done = 0, i;
    int ret;

    if (pages > 1) {
        done = postcopy_uffd_place_run(mis, host, from, pages * page_size) /
               page_size;
        trace_postcopy_place_run(host, pages, done);
    }
    if (done) {
        postcopy_pages_received(mis, rb, host, done * page_size);
    }
    for (i = done; i < pages; i++) {
        ret = postcopy_install(mis, rb, (uint8_t *)host + i * page_size,
                               (uint8_t *)from + i * page_size);
        if (ret) {
            *placed = i;
            return ret;
        }
    }
    *placed = pages;
    return 0;
}

int postcopy_install_zero(MigrationIncomingState *mis, RAMBlock *rb,
                          void *host)
{
    /* hugetlbfs has no UFFDIO_ZEROPAGE: copy a page of zeroes there. */
    return postcopy_install(mis, rb, host,
                            qemu_ram_is_uf_zeroable(rb) ?
                            NULL : mis->postcopy_tmp_zero_page);
}
