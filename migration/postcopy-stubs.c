/*
 * Postcopy on hosts without Linux's userfaultfd: such a host can be the
 * source of a postcopy migration, never its destination.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * postcopy_ram_supported_by_host() refuses with a clear error, so that
 * migrate-set-capabilities fails and nothing below it is ever reached on
 * the destination.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "migration.h"
#include "postcopy-ram.h"
#include "postcopy-internal.h"

void postcopy_infrastructure_init(void)
{
}

bool postcopy_ram_supported_by_host(MigrationIncomingState *mis, Error **errp)
{
    error_setg(errp, "postcopy: this host cannot receive a postcopy "
               "migration: QEMU was built for a host without Linux's "
               "userfaultfd");
    return false;
}

void fill_destination_postcopy_migration_info(MigrationInfo *info)
{
}

/*
 * Everything else belongs to a destination, which this host never is: the
 * refused capability keeps migration code from calling it.
 */
static G_NORETURN void not_a_destination(const char *what)
{
    error_report("postcopy: %s called on a host that cannot be a postcopy "
                 "destination", what);
    abort();
}

bool postcopy_ram_empty_blocks(Error **errp)
{
    error_setg(errp, "postcopy: no userfaultfd on this host");
    return false;
}

int postcopy_ram_incoming_finish(MigrationIncomingState *mis)
{
    not_a_destination(__func__);
}

int postcopy_ram_incoming_setup(MigrationIncomingState *mis)
{
    not_a_destination(__func__);
}

/*
 * QEMU 10.2's listen thread, which also runs for dirty bitmaps alone,
 * calls this when its load fails: no guest RAM waits for pages here.
 */
void postcopy_ram_load_failed(MigrationIncomingState *mis)
{
}

/*
 * QEMU 10.0's migration.c calls this when a migration that advised
 * postcopy for dirty bitmaps only ends: there is nothing to clean up.
 */
int postcopy_ram_incoming_cleanup(MigrationIncomingState *mis)
{
    return 0;
}

int postcopy_ram_prepare_discard(MigrationIncomingState *mis)
{
    not_a_destination(__func__);
}

int postcopy_place_page(MigrationIncomingState *mis, void *host, void *from,
                        RAMBlock *rb)
{
    not_a_destination(__func__);
}

int postcopy_place_page_zero(MigrationIncomingState *mis, void *host,
                             RAMBlock *rb)
{
    not_a_destination(__func__);
}

void postcopy_fault_thread_notify(MigrationIncomingState *mis)
{
    not_a_destination(__func__);
}

void postcopy_register_shared_ufd(struct PostCopyFD *pcfd)
{
    not_a_destination(__func__);
}

void postcopy_unregister_shared_ufd(struct PostCopyFD *pcfd)
{
}

int postcopy_wake_shared(struct PostCopyFD *pcfd, uint64_t client_addr,
                         RAMBlock *rb)
{
    not_a_destination(__func__);
}

int postcopy_request_shared_page(struct PostCopyFD *pcfd, RAMBlock *rb,
                                 uint64_t client_addr, uint64_t offset)
{
    not_a_destination(__func__);
}
