/*
 * Postcopy: can this host receive a postcopy migration?
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Called when the postcopy-ram capability is set and again when the source
 * advises postcopy.  Every refusal names what is missing, so that a user
 * can fix the host rather than guess.
 */

#include "qemu/osdep.h"
#include <sys/ioctl.h>
#include "qemu/mmap-alloc.h"
#include "qemu/units.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "exec/target_page.h"
#include "postcopy-compat.h"
#include "migration.h"
#include "options.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"
#include "trace.h"

/* Why userfaultfd(2) or /dev/userfaultfd refused us, in the user's terms. */
static void probe_explain_open_failure(int err, Error **errp)
{
    g_autofree char *sysctl = NULL;

    if (err == ENOSYS || err == EINVAL) {
        error_setg(errp, "this kernel has no userfaultfd "
                   "(CONFIG_USERFAULTFD is off)");
        return;
    }
    if (err == EPERM || err == EACCES) {
        g_file_get_contents("/proc/sys/vm/unprivileged_userfaultfd", &sysctl,
                            NULL, NULL);
        error_setg(errp, "userfaultfd is not permitted for this "
                   "QEMU process (uid %u): /dev/userfaultfd is not "
                   "accessible and vm.unprivileged_userfaultfd is %s; grant "
                   "access to /dev/userfaultfd, run with CAP_SYS_PTRACE, or "
                   "set vm.unprivileged_userfaultfd=1",
                   (unsigned int)getuid(),
                   sysctl ? g_strstrip(sysctl) : "unknown");
        return;
    }
    error_setg_errno(errp, err, "cannot open a userfaultfd");
}

/*
 * A userfaultfd answers UFFDIO_API once, so the features are read on a
 * throw-away fd.  They cannot change while QEMU runs: read them once.
 */
bool postcopy_uffd_supported_features(uint64_t *features, Error **errp)
{
    static uint64_t supported;
    static bool known;
    struct uffdio_api api = { .api = UFFD_API };
    int fd;

    if (known) {
        *features = supported;
        return true;
    }
    fd = uffd_open(O_CLOEXEC);
    if (fd < 0) {
        probe_explain_open_failure(errno, errp);
        return false;
    }
    if (ioctl(fd, UFFDIO_API, &api)) {
        error_setg_errno(errp, errno, "the userfaultfd API "
                         "handshake (UFFDIO_API) failed");
        close(fd);
        return false;
    }
    close(fd);
    trace_postcopy_probe_features(api.features);
    supported = api.features;
    known = true;
    *features = supported;
    return true;
}

uint64_t postcopy_uffd_wanted_features(uint64_t supported)
{
    /*
     * The faulting thread's id tells which vCPU waits, for blocktime and
     * for the trace; everything else the module needs is in the base API.
     */
    return supported & UFFD_FEATURE_THREAD_ID;
}

/* Whether userfaultfd can serve @rb, given the kernel's @features. */
static bool probe_block(RAMBlock *rb, uint64_t features, Error **errp)
{
    const char *name = qemu_ram_get_idstr(rb);
    ram_addr_t length = qemu_ram_get_used_length(rb);
    size_t pagesize = qemu_ram_pagesize(rb);
    bool shmem = qemu_ram_is_shared(rb);

    if (length % pagesize) {
        error_setg(errp, "RAMBlock %s is 0x" RAM_ADDR_FMT " bytes, "
                   "not a multiple of its page size 0x%zx", name, length,
                   pagesize);
        return false;
    }
    if (rb->fd >= 0) {
        switch (qemu_fd_getfs(rb->fd)) {
        case QEMU_FS_TYPE_TMPFS:
            shmem = true;
            break;
        case QEMU_FS_TYPE_HUGETLBFS:
            shmem = false;
            break;
        default:
            error_setg(errp, "RAMBlock %s is backed by a file "
                       "that is neither on tmpfs nor on hugetlbfs, and "
                       "userfaultfd serves no other file system", name);
            return false;
        }
    }
    if (pagesize != qemu_real_host_page_size() &&
        !(features & UFFD_FEATURE_MISSING_HUGETLBFS)) {
        error_setg(errp, "RAMBlock %s uses %zu KiB pages, and this "
                   "kernel's userfaultfd does not serve hugetlbfs", name,
                   pagesize / KiB);
        return false;
    }
    if (shmem && !(features & UFFD_FEATURE_MISSING_SHMEM)) {
        error_setg(errp, "RAMBlock %s is shared memory, and this "
                   "kernel's userfaultfd does not serve shmem", name);
        return false;
    }
    trace_postcopy_probe_block(name, length, pagesize, shmem);
    return true;
}

/*
 * Every RAMBlock, not only the migratable ones: this runs when the
 * capability is set, before ram_block_add() has marked which blocks
 * migrate.
 */
static bool probe_all_blocks(uint64_t features, Error **errp)
{
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH(rb) {
        if (!probe_block(rb, features, errp)) {
            return false;
        }
    }
    return true;
}

/*
 * Register one anonymous page for real and check that the kernel offers
 * the ioctls placement needs on it.
 */
static bool probe_trial_registration(Error **errp)
{
    const uint64_t needed = BIT_ULL(_UFFDIO_COPY) | BIT_ULL(_UFFDIO_ZEROPAGE) |
                            BIT_ULL(_UFFDIO_WAKE);
    size_t size = qemu_real_host_page_size();
    uint64_t ioctls = 0;
    bool ok = false;
    void *area;
    int fd;

    fd = uffd_create_fd(0, false);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create a userfaultfd "
                         "for the trial registration");
        return false;
    }
    area = postcopy_map_anonymous(size, "a trial page", errp);
    if (!area) {
        close(fd);
        return false;
    }
    if (uffd_register_memory(fd, area, size, UFFDIO_REGISTER_MODE_MISSING,
                             &ioctls)) {
        error_setg_errno(errp, errno, "a trial registration of "
                         "anonymous memory with userfaultfd failed");
    } else if ((ioctls & needed) != needed) {
        error_setg(errp, "this kernel's userfaultfd lacks ioctls "
                   "0x%" PRIx64 " (COPY, ZEROPAGE, WAKE are needed)",
                   needed & ~ioctls);
    } else {
        ok = true;
    }
    /* Closing the fd drops the registration. */
    munmap(area, size);
    close(fd);
    trace_postcopy_probe_trial(ioctls, ok);
    return ok;
}

bool postcopy_ram_supported_by_host(MigrationIncomingState *mis, Error **errp)
{
    uint64_t features;

    if (qemu_target_page_size() > qemu_real_host_page_size()) {
        error_setg(errp, "the target page size (%zu) is larger than "
                   "the host page size (%zu)", qemu_target_page_size(),
                   qemu_real_host_page_size());
        return false;
    }
    if (!postcopy_uffd_supported_features(&features, errp)) {
        return false;
    }
    /* Devices (vhost-user) may object too. */
    if (postcopy_notify(POSTCOPY_NOTIFY_PROBE, errp)) {
        return false;
    }
    if (!probe_all_blocks(features, errp)) {
        return false;
    }
    /* Locked pages are never missing; relocked in incoming_cleanup(). */
    if (munlockall()) {
        error_setg_errno(errp, errno, "munlockall() failed");
        return false;
    }
    return probe_trial_registration(errp);
}
