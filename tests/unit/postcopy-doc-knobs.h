/*
 * Unit tests: the knob table of the design doc
 * (docs/devel/migration/postcopy-ram-module.rst, "Knobs").
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef POSTCOPY_DOC_KNOBS_H
#define POSTCOPY_DOC_KNOBS_H

/*
 * The first column of each row of the table, without its quotes
 * ("queue=", "lowat=BYTES", "install-fail", ...), read from the file that
 * PCRAM_DESIGN_DOC names (meson sets it).  Free with g_ptr_array_unref().
 */
GPtrArray *postcopy_doc_knobs(void);

#endif
