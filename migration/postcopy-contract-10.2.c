/*
 * Postcopy: the module's contract with QEMU 10.2's savevm.c, ram.c and
 * migration.c, which moved the destination's listen thread into the
 * module.  Every host builds it; postcopy.build picks it for QEMU >= 10.2.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * On the LISTEN command savevm.c calls postcopy_incoming_setup(), which
 * starts the listen thread.  From then on that thread reads the main
 * channel (RAM pages, and the package with the device state that savevm.c
 * loads on the main thread), and it is the "load thread" of the rest of
 * the module.  When the stream ends it makes sure every page is in place,
 * marks the migration completed or failed and has the main thread tear
 * the incoming side down, which calls postcopy_incoming_cleanup().
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qapi/error.h"
#include "migration.h"
#include "options.h"
#include "savevm.h"
#include "postcopy-ram.h"
#include "postcopy-compat.h"
#include "postcopy-internal.h"
#include "trace.h"

int postcopy_ram_incoming_init(MigrationIncomingState *mis, Error **errp)
{
    return postcopy_ram_empty_blocks(errp) ? 0 : -1;
}

void mark_postcopy_blocktime_begin(uintptr_t addr, uint32_t ptid,
                                   RAMBlock *rb)
{
    /* postcopy_blocktime_fault_read() started this wait already. */
}

/*
 * The stream ended in error.  Only a migration of dirty bitmaps alone
 * may go on without them (the guest has all of its RAM and devices);
 * anything else leaves the guest without state it needs.
 */
static bool listen_load_error_is_fatal(void)
{
    return !(postcopy_state_get() == POSTCOPY_INCOMING_RUNNING &&
             !migrate_postcopy_ram() && migrate_dirty_bitmaps());
}

static void listen_fail(MigrationIncomingState *mis, Error *err)
{
    migrate_set_error(migrate_get_current(), err);
    error_report_err(err);
    migrate_set_state(&mis->state, mis->state, MIGRATION_STATUS_FAILED);
}

/*
 * Main thread, once the listen thread has returned: tear the incoming
 * side down (which joins the thread) and, if the migration failed before
 * the guest could run and the user asked for it, exit.
 */
static void listen_thread_done_bh(void *opaque)
{
    MigrationIncomingState *mis = opaque;
    bool failed = mis->state == MIGRATION_STATUS_FAILED;

    migration_incoming_state_destroy();
    if (failed && mis->exit_on_error) {
        /* listen_fail() reported why. */
        exit(EXIT_FAILURE);
    }
}

/* Returns false when the migration failed (reported). */
static bool listen_thread_load(MigrationIncomingState *mis)
{
    Error *err = NULL;
    int ret;

    /* A thread, not a coroutine: it cannot yield, so it must block. */
    postcopy_file_set_blocking(mis->from_src_file, true);
    ret = qemu_loadvm_state_main(mis->from_src_file, mis, &err);
    /*
     * Re-read mis->from_src_file: a recovery may have replaced it.  Back
     * to non-blocking so that nothing blocks in the cleanup.
     */
    postcopy_file_set_blocking(mis->from_src_file, false);
    trace_postcopy_listen_thread_loaded(ret);
    if (ret >= 0) {
        return true;
    }
    qemu_file_set_error(mis->from_src_file, ret);
    dirty_bitmap_mig_cancel_incoming();
    error_prepend(&err, "postcopy: the load failed (%d): ", ret);
    if (!listen_load_error_is_fatal()) {
        error_append_hint(&err, "Everything but dirty bitmaps arrived; the "
                          "bitmaps that did arrive are valid.\n");
        error_report_err(err);
        return true;
    }
    listen_fail(mis, err);
    /* Its teardown runs on the main thread, which may wait for a page. */
    postcopy_ram_load_failed(mis);
    return false;
}

static void *postcopy_listen_thread(void *opaque)
{
    MigrationIncomingState *mis = opaque;
    MigrationState *ms = migrate_get_current();
    int ret;

    /* migration_incoming_state_destroy() may run before we return. */
    object_ref(OBJECT(ms));
    /*
     * With a return path the source stays in postcopy-device until the
     * destination says the device state loaded (the RUN command).
     */
    migrate_set_state(&mis->state, MIGRATION_STATUS_ACTIVE,
                      mis->to_src_file ? MIGRATION_STATUS_POSTCOPY_DEVICE :
                                         MIGRATION_STATUS_POSTCOPY_ACTIVE);
    postcopy_thread_sync_signal(mis);
    rcu_register_thread();
    trace_postcopy_listen_thread_start();

    if (listen_thread_load(mis)) {
        /* The main thread may still be loading the device state. */
        qemu_event_wait(&mis->main_thread_load_event);
        ret = migrate_postcopy_ram() ? postcopy_ram_incoming_finish(mis) : 0;
        if (ret < 0) {
            Error *err = NULL;

            error_setg_errno(&err, -ret, "postcopy: the last pages of the "
                             "migration could not be placed");
            listen_fail(mis, err);
        } else {
            migrate_set_state(&mis->state, MIGRATION_STATUS_POSTCOPY_ACTIVE,
                              MIGRATION_STATUS_COMPLETED);
        }
    }

    trace_postcopy_listen_thread_exit(MigrationStatus_str(mis->state));
    rcu_unregister_thread();
    postcopy_state_set(POSTCOPY_INCOMING_END);
    migration_bh_schedule(listen_thread_done_bh, mis);
    object_unref(OBJECT(ms));
    return NULL;
}

/*
 * savevm.c reads have_listen_thread to know that the listen thread, not
 * the main thread, finishes the migration.
 */
static void listen_thread_start(MigrationIncomingState *mis)
{
    mis->have_listen_thread = true;
    postcopy_thread_create(mis, &mis->listen_thread,
                           MIGRATION_THREAD_DST_LISTEN,
                           postcopy_listen_thread, QEMU_THREAD_JOINABLE);
}

int postcopy_incoming_setup(MigrationIncomingState *mis, Error **errp)
{
    /*
     * From here a fault asks the source for its page.  No vCPU runs yet:
     * the guest starts on the RUN command.
     */
    if (migrate_postcopy_ram() && postcopy_ram_incoming_setup(mis)) {
        postcopy_ram_incoming_cleanup(mis);
        error_setg(errp, "postcopy: could not set up guest RAM to receive "
                   "pages on demand (the cause is reported above)");
        return -1;
    }
    /* vhost-user and other listeners get ready for faults of their own. */
    if (postcopy_notify(POSTCOPY_NOTIFY_INBOUND_LISTEN, errp) != 0) {
        return -1;
    }
    listen_thread_start(mis);
    return 0;
}

int postcopy_incoming_cleanup(MigrationIncomingState *mis)
{
    bool started = mis->have_listen_thread;

    mis->have_listen_thread = false;
    if (started) {
        /* Normally it scheduled our caller and has returned, or will. */
        qemu_thread_join(&mis->listen_thread);
    }
    if (!migrate_postcopy_ram()) {
        return 0;
    }
    return postcopy_ram_incoming_cleanup(mis);
}
