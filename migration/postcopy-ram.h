/*
 * Postcopy live migration of RAM: the module's interface to the rest of
 * QEMU's migration code.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The names, types and semantics declared here are the contract that
 * savevm.c, ram.c, migration.c, options.c, system/runstate.c, system/vl.c
 * and hw/virtio/vhost-user.c rely on.
 * docs/devel/migration/postcopy-ram-module.rst describes how the module
 * behind them works.
 */
#ifndef QEMU_POSTCOPY_RAM_H
#define QEMU_POSTCOPY_RAM_H

#include "qapi/qapi-types-migration.h"
/*
 * QEMU 10.2 changed the contract: the declarations that differ are at the
 * end of this header, and postcopy-compat.h hides the rest.
 */
#include "postcopy-version.h"

/*
 * Host capability probe.  True when this host (kernel userfaultfd, page
 * sizes of every RAMBlock, registered device notifiers) can receive a
 * postcopy migration; otherwise false with @errp naming what is missing.
 */
bool postcopy_ram_supported_by_host(MigrationIncomingState *mis,
                                    Error **errp);

/*
 * Destination, on the LISTEN command: register all guest RAM with a
 * userfaultfd and start the fault thread (and the preempt thread when
 * postcopy-preempt is on).  Returns 0 or -1 with the cause reported.
 */
int postcopy_ram_incoming_setup(MigrationIncomingState *mis);

/*
 * Destination, at the end of a migration that called
 * postcopy_ram_incoming_setup(): stop the module's threads and undo the
 * userfaultfd registration.  Returns 0 or -1.
 */
int postcopy_ram_incoming_cleanup(MigrationIncomingState *mis);

/*
 * Destination, on the first discard command: switch transparent huge pages
 * off so that discards really drop the pages precopy sent.
 */
int postcopy_ram_prepare_discard(MigrationIncomingState *mis);

/*
 * Source: discard ranges of one RAMBlock, between an init and a finish.
 * @start and @length count target pages within the block named in init;
 * ranges are sent to the destination in batches.
 */
void postcopy_discard_send_init(MigrationState *ms, const char *name);
void postcopy_discard_send_range(MigrationState *ms, unsigned long start,
                                 unsigned long length);
void postcopy_discard_send_finish(MigrationState *ms);

/*
 * Destination: atomically install one whole host page of @rb at @host,
 * copied from @from (any mapping of the page's size), waking every thread
 * that waits on it.  Returns 0 or a negative errno.
 */
int postcopy_place_page(MigrationIncomingState *mis, void *host, void *from,
                        RAMBlock *rb);

/* As postcopy_place_page(), for a host page of zeroes. */
int postcopy_place_page_zero(MigrationIncomingState *mis, void *host,
                             RAMBlock *rb);

/*
 * The destination's postcopy phase, driven by the commands of the
 * migration stream.  Read and written with atomics: the main load thread
 * writes it first, the listen thread later, and either may end it.
 */
typedef enum {
    POSTCOPY_INCOMING_NONE = 0,
    POSTCOPY_INCOMING_ADVISE,
    POSTCOPY_INCOMING_DISCARD,
    POSTCOPY_INCOMING_LISTENING,
    POSTCOPY_INCOMING_RUNNING,
    POSTCOPY_INCOMING_END
} PostcopyState;

PostcopyState postcopy_state_get(void);
/* Sets the state; returns the state it replaced. */
PostcopyState postcopy_state_set(PostcopyState new_state);
/* A short name of @state, for messages and trace events. */
const char *postcopy_state_name(PostcopyState state);

/* Wake the fault thread, to quit or to notice a broken return path. */
void postcopy_fault_thread_notify(MigrationIncomingState *mis);

/* Called once at start-up, before any device registers a notifier. */
void postcopy_infrastructure_init(void);

/*
 * Devices that must take part in postcopy (vhost-user) register a
 * NotifierWithReturn; its data is a struct PostcopyNotifyData.  Notifiers
 * run in the order they were added; the first to return non-zero stops the
 * walk and must set the Error it is handed.
 */
enum PostcopyNotifyReason {
    POSTCOPY_NOTIFY_PROBE = 0,
    POSTCOPY_NOTIFY_INBOUND_ADVISE,
    POSTCOPY_NOTIFY_INBOUND_LISTEN,
    POSTCOPY_NOTIFY_INBOUND_END,
};

struct PostcopyNotifyData {
    enum PostcopyNotifyReason reason;
};

void postcopy_add_notifier(NotifierWithReturn *nn);
void postcopy_remove_notifier(NotifierWithReturn *n);
int postcopy_notify(enum PostcopyNotifyReason reason, Error **errp);

/*
 * Start @fn(mis) in a new thread and return once it has signalled
 * mis->thread_sync_sem.  Not reentrant: callers are serialised.
 */
void postcopy_thread_create(MigrationIncomingState *mis,
                            QemuThread *thread, const char *name,
                            void *(*fn)(void *), int joinable);

/*
 * A userfaultfd owned by another process (a vhost-user back-end) that maps
 * guest RAM too.  The fault thread polls @fd and calls @handler with each
 * struct uffd_msg read from it; @waker is called for every page placed.
 */
struct PostCopyFD;

typedef int (*pcfdhandler)(struct PostCopyFD *pcfd, void *ufd);
typedef int (*pcfdwake)(struct PostCopyFD *pcfd, RAMBlock *rb,
                        uint64_t offset);

struct PostCopyFD {
    int fd;
    /* Handed back to @handler and @waker */
    void *data;
    pcfdhandler handler;
    pcfdwake waker;
    /* Names the owner in messages */
    const char *idstr;
};

void postcopy_register_shared_ufd(struct PostCopyFD *pcfd);
void postcopy_unregister_shared_ufd(struct PostCopyFD *pcfd);
/* Wake the threads of @pcfd's process waiting on @client_addr. */
int postcopy_wake_shared(struct PostCopyFD *pcfd, uint64_t client_addr,
                         RAMBlock *rb);
/* A shared fd's handler asks for the page at @offset of @rb. */
int postcopy_request_shared_page(struct PostCopyFD *pcfd, RAMBlock *rb,
                                 uint64_t client_addr, uint64_t offset);

/* The channels of a migration with postcopy-preempt. */
enum PostcopyChannels {
    RAM_CHANNEL_PRECOPY = 0,
    RAM_CHANNEL_POSTCOPY = 1,
    RAM_CHANNEL_MAX,
};

/* Destination: the preempt channel @file has connected. */
void postcopy_preempt_new_channel(MigrationIncomingState *mis, QEMUFile *file);
/* Source: start connecting the preempt channel (asynchronously). */
void postcopy_preempt_setup(MigrationState *s);
/* Source: connect the preempt channel if needed and wait; 0 or -1. */
int postcopy_preempt_establish_channel(MigrationState *s);
/* True for the states in which a postcopy migration waits for recovery. */
bool postcopy_is_paused(MigrationStatus status);

/*
 * Destination, before precopy starts: empty every RAMBlock so that only
 * pages received from the source are ever present.  Returns 0, or -1 with
 * the cause reported (up to 10.1) or in @errp (10.2).
 */
#if POSTCOPY_CONTRACT_10_2
int postcopy_ram_incoming_init(MigrationIncomingState *mis, Error **errp);

/*
 * Destination, on the LISTEN command (10.2): set up postcopy RAM and
 * start the listen thread, which loads the rest of the stream while the
 * main thread loads devices.  0, or -1 with @errp set.
 */
int postcopy_incoming_setup(MigrationIncomingState *mis, Error **errp);
/*
 * Destination, when the incoming migration is torn down (10.2): join the
 * listen thread and undo postcopy_incoming_setup().  0 or -1.
 */
int postcopy_incoming_cleanup(MigrationIncomingState *mis);
/*
 * 10.2's migration.c calls this whenever it sends a page request for a
 * thread.  The module starts a wait when the fault thread reads the
 * fault instead, which also covers a fault on a page already asked for.
 */
void mark_postcopy_blocktime_begin(uintptr_t addr, uint32_t ptid,
                                   RAMBlock *rb);
#else
int postcopy_ram_incoming_init(MigrationIncomingState *mis);
#endif

#endif
