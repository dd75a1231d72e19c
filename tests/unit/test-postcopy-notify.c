/*
 * Unit tests: postcopy device notifiers and incoming state
 * (migration/postcopy-notify.c)
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/notify.h"
#include "qapi/error.h"
#include "exec/cpu-common.h"
#include "postcopy-ram.h"

typedef struct TestNotifier {
    NotifierWithReturn n;
    const char *name;
    int ret;             /* what to answer */
    bool set_error;      /* whether to set an Error when failing */
    GString *log;        /* shared: who was called, in order */
    int last_reason;
} TestNotifier;

static int test_notify(NotifierWithReturn *n, void *data, Error **errp)
{
    TestNotifier *t = container_of(n, TestNotifier, n);
    struct PostcopyNotifyData *pnd = data;

    g_string_append(t->log, t->name);
    t->last_reason = pnd->reason;
    if (t->ret && t->set_error) {
        error_setg(errp, "%s refuses", t->name);
    }
    return t->ret;
}

static void notifier_init(TestNotifier *t, const char *name, GString *log)
{
    *t = (TestNotifier) {
        .n.notify = test_notify, .name = name, .log = log, .last_reason = -1,
    };
}

static void test_called_in_registration_order(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestNotifier a, b, c;

    notifier_init(&a, "a", log);
    notifier_init(&b, "b", log);
    notifier_init(&c, "c", log);
    postcopy_add_notifier(&a.n);
    postcopy_add_notifier(&b.n);
    postcopy_add_notifier(&c.n);
    g_assert_cmpint(postcopy_notify(POSTCOPY_NOTIFY_INBOUND_LISTEN,
                                    &error_abort), ==, 0);
    g_assert_cmpstr(log->str, ==, "abc");
    g_assert_cmpint(b.last_reason, ==, POSTCOPY_NOTIFY_INBOUND_LISTEN);

    /* removing the middle one keeps the others' order */
    postcopy_remove_notifier(&b.n);
    g_string_truncate(log, 0);
    g_assert_cmpint(postcopy_notify(POSTCOPY_NOTIFY_INBOUND_END,
                                    &error_abort), ==, 0);
    g_assert_cmpstr(log->str, ==, "ac");
    g_assert_cmpint(c.last_reason, ==, POSTCOPY_NOTIFY_INBOUND_END);
    postcopy_remove_notifier(&a.n);
    postcopy_remove_notifier(&c.n);
}

static void test_first_failure_stops_the_walk(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestNotifier a, b, c;
    Error *err = NULL;

    notifier_init(&a, "a", log);
    notifier_init(&b, "b", log);
    notifier_init(&c, "c", log);
    b.ret = -EINVAL;
    b.set_error = true;
    postcopy_add_notifier(&a.n);
    postcopy_add_notifier(&b.n);
    postcopy_add_notifier(&c.n);
    g_assert_cmpint(postcopy_notify(POSTCOPY_NOTIFY_PROBE, &err), ==,
                    -EINVAL);
    g_assert_cmpstr(log->str, ==, "ab");
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, "b refuses");
    error_free(err);
    postcopy_remove_notifier(&a.n);
    postcopy_remove_notifier(&b.n);
    postcopy_remove_notifier(&c.n);
}

static void test_silent_failure_still_explains(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestNotifier a;
    Error *err = NULL;

    notifier_init(&a, "a", log);
    a.ret = -1;
    postcopy_add_notifier(&a.n);
    g_assert_cmpint(postcopy_notify(POSTCOPY_NOTIFY_INBOUND_ADVISE, &err), <,
                    0);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(error_get_pretty(err), "inbound-advise"));
    error_free(err);
    postcopy_remove_notifier(&a.n);
}

static void test_no_notifiers_is_success(void)
{
    g_assert_cmpint(postcopy_notify(POSTCOPY_NOTIFY_PROBE, &error_abort), ==,
                    0);
}

static void test_state_set_returns_previous(void)
{
    static const PostcopyState path[] = {
        POSTCOPY_INCOMING_ADVISE, POSTCOPY_INCOMING_DISCARD,
        POSTCOPY_INCOMING_LISTENING, POSTCOPY_INCOMING_RUNNING,
        POSTCOPY_INCOMING_END, POSTCOPY_INCOMING_NONE,
    };
    PostcopyState prev = POSTCOPY_INCOMING_NONE;
    unsigned int i;

    postcopy_state_set(POSTCOPY_INCOMING_NONE);
    for (i = 0; i < ARRAY_SIZE(path); i++) {
        g_assert_cmpint(postcopy_state_set(path[i]), ==, prev);
        g_assert_cmpint(postcopy_state_get(), ==, path[i]);
        prev = path[i];
    }
}

static void test_state_names(void)
{
    g_assert_cmpstr(postcopy_state_name(POSTCOPY_INCOMING_NONE), ==, "none");
    g_assert_cmpstr(postcopy_state_name(POSTCOPY_INCOMING_LISTENING), ==,
                    "listening");
    g_assert_cmpstr(postcopy_state_name(POSTCOPY_INCOMING_END), ==, "end");
    g_assert_cmpstr(postcopy_state_name(POSTCOPY_INCOMING_END + 1), ==,
                    "invalid");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/notify/order",
                    test_called_in_registration_order);
    g_test_add_func("/postcopy/notify/first-failure-stops",
                    test_first_failure_stops_the_walk);
    g_test_add_func("/postcopy/notify/silent-failure",
                    test_silent_failure_still_explains);
    g_test_add_func("/postcopy/notify/empty", test_no_notifiers_is_success);
    g_test_add_func("/postcopy/state/set-get",
                    test_state_set_returns_previous);
    g_test_add_func("/postcopy/state/names", test_state_names);
    return g_test_run();
}
