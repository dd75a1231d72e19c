/*
 * Postcopy: which QEMU the module is built into.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A leaf: it uses QEMU_VERSION_MAJOR and _MINOR from config-host.h, which
 * every file includes through qemu/osdep.h, and nothing of the module, so
 * that every file may test the version without depending on another.
 */
#ifndef QEMU_POSTCOPY_VERSION_H
#define QEMU_POSTCOPY_VERSION_H

#define POSTCOPY_QEMU_AT_LEAST(major, minor) \
    (QEMU_VERSION_MAJOR > (major) || \
     (QEMU_VERSION_MAJOR == (major) && QEMU_VERSION_MINOR >= (minor)))

/*
 * 10.2 has the module own the listen thread (postcopy-contract-10.2.c),
 * passes the faulting thread's id with each page request and reports
 * fault latencies in query-migrate.
 */
#define POSTCOPY_CONTRACT_10_2 POSTCOPY_QEMU_AT_LEAST(10, 2)

#endif
