/*
 * Unit tests: parsing QEMU_POSTCOPY_INJECT and when a fault point fires.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "postcopy-inject.h"
#include "postcopy-doc-knobs.h"

static void test_parse_defaults(void)
{
    PostcopyInjectArm arms[POSTCOPY_INJECT__MAX];

    g_assert_true(postcopy_inject_parse("uffd-read-fail", arms,
                                        &error_abort));
    g_assert_true(arms[POSTCOPY_INJECT_UFFD_READ_FAIL].armed);
    g_assert_cmpuint(arms[POSTCOPY_INJECT_UFFD_READ_FAIL].first, ==, 1);
    g_assert_cmpuint(arms[POSTCOPY_INJECT_UFFD_READ_FAIL].count, ==, 1);
    g_assert_false(arms[POSTCOPY_INJECT_INSTALL_FAIL].armed);
    g_assert_false(arms[POSTCOPY_INJECT_REQUEST_FAIL].armed);
}

static void test_parse_passes(void)
{
    PostcopyInjectArm arms[POSTCOPY_INJECT__MAX];
    PostcopyInjectArm *install = &arms[POSTCOPY_INJECT_INSTALL_FAIL];
    PostcopyInjectArm *request = &arms[POSTCOPY_INJECT_REQUEST_FAIL];

    g_assert_true(postcopy_inject_parse("install-fail=2000:2,,request-fail=3",
                                        arms, &error_abort));
    g_assert_true(install->armed);
    g_assert_cmpuint(install->first, ==, 2000);
    g_assert_cmpuint(install->count, ==, 2);
    g_assert_true(request->armed);
    g_assert_cmpuint(request->first, ==, 3);
    g_assert_cmpuint(request->count, ==, 1);
}

static void test_parse_errors(void)
{
    static const char *const bad[] = {
        "no-such-point", "install-fail=0", "install-fail=x",
        "install-fail=3:0", "install-fail=3:", "install-fail=-1",
        "request-fail=1,nope",
    };
    PostcopyInjectArm arms[POSTCOPY_INJECT__MAX] = {
        [POSTCOPY_INJECT_INSTALL_FAIL] = { .armed = true, .first = 7,
                                           .count = 1 },
    };
    unsigned int i;

    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        Error *err = NULL;

        g_assert_false(postcopy_inject_parse(bad[i], arms, &err));
        g_assert_nonnull(err);
        g_test_message("%s: %s", bad[i], error_get_pretty(err));
        error_free(err);
        /* A bad value leaves what was armed before alone. */
        g_assert_cmpuint(arms[POSTCOPY_INJECT_INSTALL_FAIL].first, ==, 7);
        g_assert_false(arms[POSTCOPY_INJECT_REQUEST_FAIL].armed);
    }
}

static void test_fires(void)
{
    PostcopyInjectArm arm = { .armed = true, .first = 5, .count = 2 };
    PostcopyInjectArm off = { .armed = false, .first = 1, .count = 1 };
    uint64_t pass;

    for (pass = 1; pass < 10; pass++) {
        g_assert_cmpint(postcopy_inject_fires(&arm, pass), ==,
                        pass == 5 || pass == 6);
        g_assert_false(postcopy_inject_fires(&off, pass));
    }
}

/*
 * The warning that names an armed point's passes: first + count - 1
 * must not wrap for a count that runs to the end of uint64_t.
 */
static void test_last_pass(void)
{
    PostcopyInjectArm two = { .armed = true, .first = 5, .count = 2 };
    PostcopyInjectArm all = { .armed = true, .first = 1,
                              .count = UINT64_MAX };
    PostcopyInjectArm late = { .armed = true, .first = UINT64_MAX - 1,
                               .count = 1000 };
    PostcopyInjectArm to_end = { .armed = true, .first = 2,
                                 .count = UINT64_MAX - 1 };

    g_assert_cmpuint(postcopy_inject_last_pass(&two), ==, 6);
    g_assert_cmpuint(postcopy_inject_last_pass(&all), ==, UINT64_MAX);
    g_assert_cmpuint(postcopy_inject_last_pass(&late), ==, UINT64_MAX);
    g_assert_cmpuint(postcopy_inject_last_pass(&to_end), ==, UINT64_MAX);
}

/* The points this file's parser knows, by the names tests use. */
static void test_names(void)
{
    PostcopyInjectArm arms[POSTCOPY_INJECT__MAX];

    g_assert_true(postcopy_inject_parse("place-leftovers,place-preempt=2,"
                                        "place-zero=1:3", arms,
                                        &error_abort));
    g_assert_true(arms[POSTCOPY_INJECT_PLACE_LEFTOVERS].armed);
    g_assert_cmpuint(arms[POSTCOPY_INJECT_PLACE_PREEMPT].first, ==, 2);
    g_assert_cmpuint(arms[POSTCOPY_INJECT_PLACE_ZERO].count, ==, 3);
}

/*
 * The design doc's table lists every fault point (its rows without '='),
 * and no point that does not exist.
 */
static void test_points_documented(void)
{
    g_autoptr(GPtrArray) rows = postcopy_doc_knobs();
    unsigned int documented = 0, r;
    int point;

    for (point = 0; point < POSTCOPY_INJECT__MAX; point++) {
        const char *name = postcopy_inject_point_name(point);
        bool found = false;

        for (r = 0; r < rows->len; r++) {
            found |= !strcmp(g_ptr_array_index(rows, r), name);
        }
        g_test_message("%s: %s", name, found ? "documented" : "missing");
        g_assert_true(found);
    }
    for (r = 0; r < rows->len; r++) {
        documented += !strchr(g_ptr_array_index(rows, r), '=');
    }
    g_assert_cmpuint(documented, ==, POSTCOPY_INJECT__MAX);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/postcopy/inject/parse-defaults", test_parse_defaults);
    g_test_add_func("/postcopy/inject/parse-passes", test_parse_passes);
    g_test_add_func("/postcopy/inject/parse-errors", test_parse_errors);
    g_test_add_func("/postcopy/inject/fires", test_fires);
    g_test_add_func("/postcopy/inject/last-pass", test_last_pass);
    g_test_add_func("/postcopy/inject/names", test_names);
    g_test_add_func("/postcopy/inject/documented", test_points_documented);
    return g_test_run();
}
