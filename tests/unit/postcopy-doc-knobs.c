/*
 * Unit tests: the knob table of the design doc.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "postcopy-doc-knobs.h"

/* The table's rule lines are all '=' and ' ' and start with "====". */
static bool is_rule(const char *line)
{
    return g_str_has_prefix(line, "====") &&
           strspn(line, "= ") == strlen(line);
}

GPtrArray *postcopy_doc_knobs(void)
{
    const char *path = g_getenv("PCRAM_DESIGN_DOC");
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    GPtrArray *knobs = g_ptr_array_new_with_free_func(g_free);
    bool in_section = false;
    int rules = 0, i;

    g_assert_nonnull(path);
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i] && rules < 3; i++) {
        if (!strcmp(lines[i], "Knobs") && lines[i + 1] &&
            g_str_has_prefix(lines[i + 1], "=====")) {
            in_section = true;
            i++;
        } else if (in_section && is_rule(lines[i])) {
            /* Above the header, below it, and at the end. */
            rules++;
        } else if (in_section && rules == 2 &&
                   g_str_has_prefix(lines[i], "``")) {
            const char *end = strstr(lines[i] + 2, "``");

            g_assert_nonnull(end);
            g_ptr_array_add(knobs, g_strndup(lines[i] + 2,
                                             end - lines[i] - 2));
        }
    }
    g_assert_cmpint(rules, ==, 3);
    g_assert_cmpuint(knobs->len, >, 0);
    return knobs;
}
