/*
 * Postcopy: the device notifier list and the destination's postcopy state.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Pure logic: no syscalls, no trace events, so that tests/unit drives it
 * with nothing but libqemuutil.
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/notify.h"
#include "qapi/error.h"
#include "exec/cpu-common.h"
#include "postcopy-ram.h"

/*
 * Devices that must agree to postcopy (vhost-user).  Changed only by the
 * main thread (device realize/unrealize); walked by the main thread and the
 * main load thread while no device can be added or removed.
 */
static NotifierWithReturnList postcopy_notifiers =
    NOTIFIER_WITH_RETURN_LIST_INITIALIZER(postcopy_notifiers);

static const char *const notify_reason_names[] = {
    [POSTCOPY_NOTIFY_PROBE] = "probe",
    [POSTCOPY_NOTIFY_INBOUND_ADVISE] = "inbound-advise",
    [POSTCOPY_NOTIFY_INBOUND_LISTEN] = "inbound-listen",
    [POSTCOPY_NOTIFY_INBOUND_END] = "inbound-end",
};


/*
 * QEMU's list adds at the head; append instead so that devices are asked
 * in the order they registered.  Registration is rare, the walk is cheap.
 */
void postcopy_add_notifier(NotifierWithReturn *nn)
{
    NotifierWithReturn *last = QLIST_FIRST(&postcopy_notifiers.notifiers);

    if (!last) {
        notifier_with_return_list_add(&postcopy_notifiers, nn);
        return;
    }
    while (QLIST_NEXT(last, node)) {
        last = QLIST_NEXT(last, node);
    }
    QLIST_INSERT_AFTER(last, nn, node);
}

void postcopy_remove_notifier(NotifierWithReturn *n)
{
    notifier_with_return_remove(n);
}

int postcopy_notify(enum PostcopyNotifyReason reason, Error **errp)
{
    struct PostcopyNotifyData data = { .reason = reason };
    Error *local_err = NULL;
    int ret;

    ret = notifier_with_return_list_notify(&postcopy_notifiers, &data,
                                           &local_err);
    if (ret && !local_err) {
        /* A notifier that fails silently still must not fail silently. */
        error_setg(&local_err, "postcopy: a device refused the %s step "
                   "without saying why (error %d)",
                   notify_reason_names[reason], ret);
    }
    if (local_err) {
        error_propagate(errp, local_err);
        return ret ? ret : -1;
    }
    return 0;
}

/*
 * Not part of MigrationIncomingState: the cleanup at the end of a
 * migration reads it while that state is being torn down.
 */
static PostcopyState incoming_state = POSTCOPY_INCOMING_NONE;

PostcopyState postcopy_state_get(void)
{
    return qatomic_load_acquire(&incoming_state);
}

PostcopyState postcopy_state_set(PostcopyState new_state)
{
    return qatomic_xchg(&incoming_state, new_state);
}

const char *postcopy_state_name(PostcopyState state)
{
    static const char *const names[] = {
        [POSTCOPY_INCOMING_NONE] = "none",
        [POSTCOPY_INCOMING_ADVISE] = "advise",
        [POSTCOPY_INCOMING_DISCARD] = "discard",
        [POSTCOPY_INCOMING_LISTENING] = "listening",
        [POSTCOPY_INCOMING_RUNNING] = "running",
        [POSTCOPY_INCOMING_END] = "end",
    };

    if ((unsigned int)state >= ARRAY_SIZE(names)) {
        return "invalid";
    }
    return names[state];
}
