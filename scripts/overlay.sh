#!/usr/bin/env bash
# Puts this project's postcopy module into an unpacked QEMU tree in place of
# upstream's:
#  - migration/postcopy-*.{c,h} become links to this repository's files
#    (upstream's postcopy-ram.c is replaced, so it is never compiled);
#  - migration/meson.build compiles them (migration/postcopy.build);
#  - migration/trace-events carries their events instead of the
#    "# postcopy-ram.c" section;
#  - docs/devel/migration/postcopy-ram-module.rst (listed in QEMU's
#    features.rst, after its own postcopy.rst) and the tests in tests/qtest
#    are ours.
# Idempotent; files are rewritten only when their content changes, so that
# ninja rebuilds no more than it must.
#
#   scripts/overlay.sh QEMU_TREE
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

# Write stdin to $1 unless $1 already has exactly that content.
write_if_changed()
{
    local tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$1"
        log "updated ${1#"$tree"/}"
    fi
}

# Keep upstream's version of a file we rewrite, as $1.orig.
pristine()
{
    [ -f "$1.orig" ] || cp "$1" "$1.orig"
    echo "$1.orig"
}

link_sources()
{
    local f dst
    for f in "$PCRAM_ROOT"/migration/postcopy*.[ch]; do
        dst="$tree/migration/$(basename "$f")"
        if [ "$(readlink "$dst" 2>/dev/null)" != "$f" ]; then
            [ -e "$dst" ] && [ ! -L "$dst" ] && pristine "$dst" >/dev/null
            ln -sfn "$f" "$dst"
        fi
    done
}

patch_meson()
{
    local build="$tree/migration/meson.build" orig
    orig=$(pristine "$build")
    grep -q "^  'postcopy-ram.c',$" "$orig" ||
        die "$orig: no 'postcopy-ram.c' line to replace (not QEMU $QEMU_VERSION?)"
    {
        grep -v "^  'postcopy-ram.c',$" "$orig"
        echo
        cat "$PCRAM_ROOT/migration/postcopy.build"
    } | write_if_changed "$build"
}

patch_trace_events()
{
    local events="$tree/migration/trace-events" orig
    orig=$(pristine "$events")
    grep -q '^# postcopy-ram.c$' "$orig" ||
        die "$orig: no '# postcopy-ram.c' section (not QEMU $QEMU_VERSION?)"
    {
        # Upstream's section runs from its header to the next blank line.
        awk '/^# postcopy-ram.c$/ { skip = 1; next }
             skip && /^$/ { skip = 0; next }
             !skip' "$orig"
        echo
        cat "$PCRAM_ROOT/migration/trace-events"
    } | write_if_changed "$events"
}

# Our qtests, built like QEMU's own, with migration-test's QMP helpers.
add_qtests()
{
    local build="$tree/tests/qtest/meson.build" orig f
    for f in "$PCRAM_ROOT"/tests/qtest/*.c; do
        ln -sfn "$f" "$tree/tests/qtest/$(basename "$f")"
    done
    orig=$(pristine "$build")
    grep -q '^qtest_executables = {}$' "$orig" ||
        die "$orig: no 'qtest_executables = {}' line (not QEMU $QEMU_VERSION?)"
    awk -v ours="$PCRAM_ROOT/tests/qtest/meson.build.inc" '
        /^qtest_executables = \{\}$/ {
            while ((getline line < ours) > 0) print line
            print ""
        }
        { print }' "$orig" | write_if_changed "$build"
}

# QEMU's own postcopy.rst stays whole (a tree overlaid before it was kept
# gets it back); the module's design is a page of its own, listed after it
# in the migration features' index.
copy_docs()
{
    local dir="$tree/docs/devel/migration"
    local doc="$PCRAM_ROOT/docs/devel/migration/postcopy-ram-module.rst"
    local index="$dir/features.rst"
    if [ -f "$dir/postcopy.rst.orig" ]; then
        write_if_changed "$dir/postcopy.rst" < "$dir/postcopy.rst.orig"
    fi
    write_if_changed "$dir/postcopy-ram-module.rst" < "$doc"
    grep -q '^   postcopy$' "$(pristine "$index")" ||
        die "$index: no 'postcopy' entry (not QEMU $QEMU_VERSION?)"
    sed 's/^   postcopy$/   postcopy\n   postcopy-ram-module/' \
        "$(pristine "$index")" | write_if_changed "$index"
}

main()
{
    [ $# -eq 1 ] || die "usage: overlay.sh QEMU_TREE"
    tree=$(cd "$1" && pwd)
    [ -f "$tree/migration/postcopy-ram.c" ] ||
        die "$tree is not a QEMU source tree"
    link_sources
    patch_meson
    patch_trace_events
    add_qtests
    copy_docs
}

main "$@"
