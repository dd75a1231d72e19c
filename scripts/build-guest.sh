#!/usr/bin/env bash
# Builds this repository's own meson project in _build/: the test guest,
# and the unit tests once a QEMU tree with this module is built (they link
# its libqemuutil).  Prints pcguest.bin's path.  For a QEMU version other
# than the default (PCRAM_QEMU_VERSION) the unit tests link that version's
# tree, in _build-VERSION/.
#
#   scripts/build-guest.sh [ninja targets...]   (default: pcguest.bin)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

out=$(our_build_dir)
tree=$(qemu_tree ours)
opts=()
if [ -f "$tree/build/libqemuutil.a" ]; then
    opts=(-Dqemu_source="$tree" -Dqemu_build="$tree/build")
fi
mkdir -p "$PCRAM_CACHE"
if [ ! -f "$out/build.ninja" ]; then
    meson setup "$out" "$PCRAM_ROOT" "${opts[@]}" > "$PCRAM_CACHE/guest-setup.log" 2>&1 ||
        { cat "$PCRAM_CACHE/guest-setup.log" >&2; die "meson setup failed"; }
elif [ ${#opts[@]} -gt 0 ] &&
     ! grep -q "$tree/build" "$out/meson-info/intro-buildoptions.json"; then
    meson configure "$out" "${opts[@]}" >&2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pcguest.bin)
ninja -C "$out" "${targets[@]}" >&2 || die "building ${targets[*]} failed"
echo "$out/pcguest.bin"
