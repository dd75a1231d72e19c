/*
 * Postcopy: the preempt channel, a second connection that carries the pages
 * faults asked for, so that they do not queue behind background pages.
 * Connecting it and handing it over; every host builds this file.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Source: postcopy_preempt_setup() starts an asynchronous connect (then a
 * TLS handshake when the migration uses TLS); the migration thread waits
 * for it in postcopy_preempt_establish_channel().  Both outcomes post
 * s->postcopy_qemufile_src_sem once; a NULL s->postcopy_qemufile_src
 * tells failure.
 *
 * Destination: the channel arrives through postcopy_preempt_new_channel(),
 * for the preempt thread (postcopy-preempt.c).
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "io/channel-tls.h"
#include "migration.h"
#include "options.h"
#include "qemu-file.h"
#include "socket.h"
#include "tls.h"
#include "yank_functions.h"
#include "postcopy-ram.h"
#include "postcopy-compat.h"
#include "trace.h"

/* --- Source --------------------------------------------------------------- */

/* The connect finished, well (@err NULL) or not; wake the waiter. */
static void preempt_channel_ready(MigrationState *s, QIOChannel *ioc,
                                  Error *err)
{
    if (err) {
        error_prepend(&err, "postcopy: preempt channel: ");
        migrate_set_error(s, err);
        trace_postcopy_preempt_channel_failed(error_get_pretty(err));
        error_free(err);
    } else {
        migration_ioc_register_yank(ioc);
        s->postcopy_qemufile_src = qemu_file_new_output(ioc);
        trace_postcopy_preempt_channel_ready("source");
    }
    qemu_sem_post(&s->postcopy_qemufile_src_sem);
}

static void preempt_tls_handshake_done(QIOTask *task, gpointer opaque)
{
    g_autoptr(QIOChannel) ioc = QIO_CHANNEL(qio_task_get_source(task));
    Error *err = NULL;

    qio_task_propagate_error(task, &err);
    preempt_channel_ready(opaque, ioc, err);
}

static void preempt_connected(QIOTask *task, gpointer opaque)
{
    g_autoptr(QIOChannel) ioc = QIO_CHANNEL(qio_task_get_source(task));
    MigrationState *s = opaque;
    QIOChannelTLS *tls;
    Error *err = NULL;

    if (qio_task_propagate_error(task, &err) ||
        !migrate_channel_requires_tls_upgrade(ioc)) {
        preempt_channel_ready(s, ioc, err);
        return;
    }
    tls = migration_tls_client_create(ioc, s->hostname, &err);
    if (!tls) {
        preempt_channel_ready(s, ioc, err);
        return;
    }
    trace_postcopy_preempt_tls_handshake();
    qio_channel_set_name(QIO_CHANNEL(tls), "migration-tls-preempt");
    /* The handshake's callback finishes the job. */
    qio_channel_tls_handshake(tls, preempt_tls_handshake_done, s, NULL, NULL);
}

void postcopy_preempt_setup(MigrationState *s)
{
    trace_postcopy_preempt_connect();
    socket_send_channel_create(preempt_connected, s);
}

int postcopy_preempt_establish_channel(MigrationState *s)
{
    bool connect_here;

    if (!migrate_postcopy_preempt()) {
        return 0;
    }
    /*
     * QEMU 7.1 and 7.2 machines connected the channel during setup, so the
     * connect is only started here for newer ones.
     */
    connect_here = !s->preempt_pre_7_2;
    trace_postcopy_preempt_establish(connect_here);
    if (connect_here && migrate_has_error(s)) {
        /*
         * Paused or failed since this recovery began (migration_connect()
         * clears the error): open no new channel.  QEMU 10.0's destination
         * takes a connection that lands while it pauses for a fresh
         * migration, and aborts (scripts/pcram/channel_race.py).
         */
        trace_postcopy_preempt_channel_failed("the migration already failed");
        return -1;
    }
    if (connect_here) {
        postcopy_preempt_setup(s);
    }
    /* Posted by preempt_channel_ready() on success and on failure alike. */
    qemu_sem_wait(&s->postcopy_qemufile_src_sem);
    if (!s->postcopy_qemufile_src) {
        return -1;
    }
    return 0;
}

/* --- Destination ---------------------------------------------------------- */

void postcopy_preempt_new_channel(MigrationIncomingState *mis, QEMUFile *file)
{
    /* Its thread blocks in reads, like the main channel's. */
    postcopy_file_set_blocking(file, true);
    mis->postcopy_qemufile_dst = file;
    qemu_sem_post(&mis->postcopy_qemufile_dst_done);
    trace_postcopy_preempt_channel_ready("destination");
}
