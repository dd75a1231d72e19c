#!/usr/bin/env bash
# Builds QEMU for x86_64 (KVM and TCG) with this project's postcopy RAM
# module in place of upstream's, or with upstream's module untouched.
#
#   scripts/build.sh [--qemu VERSION]
#                    [--upstream | --sanitize | --tsan | --backend]
#                    [ninja targets...]
#
# VERSION: 10.0.2 (the default), 10.0.13 or 10.2.2, each from Debian's
# source package (scripts/fetch-qemu.sh).  Trees of the default version:
# build/qemu-ours/ and build/qemu-upstream/ (git-ignored); of the others,
# build/qemu-VERSION-ours/ and build/qemu-VERSION-upstream/.  Each has
# its own build/ directory.  --sanitize builds our tree again in
# build/qemu-ours/build-sanitize/ with AddressSanitizer and
# UndefinedBehaviorSanitizer, --tsan in build-tsan/ with ThreadSanitizer,
# --backend builds qemu-storage-daemon, the vhost-user back-end of the
# tests, from a tree of its own (build/qemu-backend/, or
# build/qemu-VERSION-backend/) whose libvhost-user
# scripts/fix-libvhost-user.py mended for postcopy.  Unpacking and
# configuring happen once; after an edit to the module only ninja runs
# again.  Prints the build directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

DEFAULT_TARGETS=(qemu-system-x86_64 tests/qtest/migration-test)

CONFIGURE_OPTS=(
    --python=/usr/bin/python3
    --cc=/usr/lib/ccache/gcc --cxx=/usr/lib/ccache/g++
    --target-list=x86_64-softmmu
    --enable-kvm
    --disable-docs --disable-user --disable-tools --disable-guest-agent
    --disable-install-blobs --disable-werror
)

unpack_tree()
{
    local tree=$1 tarball
    [ -f "$tree/.pcram-unpacked" ] && return 0
    tarball=$("$here/fetch-qemu.sh")
    log "unpacking $(basename "$tarball") into $tree"
    rm -rf "$tree" "$tree.tmp"
    mkdir -p "$tree.tmp"
    tar -C "$tree.tmp" --strip-components=1 -xf "$tarball"
    # The +ds tarball drops the edk2 images; meson insists on finding them
    # for x86 but SeaBIOS never uses them, so empty archives will do.
    local fd
    for fd in $(grep -o "'edk2-[a-z0-9_-]*\.fd'" "$tree.tmp/pc-bios/meson.build" |
                tr -d "'"); do
        [ -f "$tree.tmp/pc-bios/$fd.bz2" ] ||
            bzip2 < /dev/null > "$tree.tmp/pc-bios/$fd.bz2"
    done
    touch "$tree.tmp/.pcram-unpacked"
    mv "$tree.tmp" "$tree"
}

# Every tree compiles through ccache, whose cache lives outside the clone
# (PCRAM_CCACHE_DIR, /var/cache/pcram-ccache by default), so that a fresh
# clone on a machine that has built before, as CI's is, compiles little.
# Paths are hashed relative to the clone, and the working directory not at
# all, so that a clone elsewhere hits the same entries.
use_ccache()
{
    export CCACHE_DIR=${PCRAM_CCACHE_DIR:-/var/cache/pcram-ccache}
    export CCACHE_BASEDIR=$PCRAM_ROOT
    export CCACHE_NOHASHDIR=1
    export CCACHE_MAXSIZE=${PCRAM_CCACHE_SIZE:-25G}
    mkdir -p "$CCACHE_DIR"
}

# Extra configure options of each build directory of our tree.
sanitizer_opts()
{
    case "$1" in
    build-sanitize)
        # QEMU's own options; frame pointers for readable reports.
        echo --enable-asan --enable-ubsan \
             --extra-cflags=-fno-omit-frame-pointer ;;
    build-tsan)
        # No other sanitizer may join TSan; gcc's libtsan has the fiber
        # interface QEMU's coroutines need.
        echo --enable-tsan --extra-cflags=-fno-omit-frame-pointer ;;
    build-backend)
        # The later --enable-tools wins over CONFIGURE_OPTS' disable.
        echo --enable-tools ;;
    esac
}

# QEMU 10.2's pc-bios/dtb/meson.build wants its device trees built with dtc
# or present prebuilt, and the +ds tarball has neither; they serve ppc and
# microblaze boards, never x86_64, so empty files will do.
fill_missing_dtbs()
{
    local tree=$1 dtb
    [ -f "$tree/pc-bios/dtb/meson.build" ] || return 0
    for dtb in $(grep -o "'[a-z0-9_-]*\.dtb'" "$tree/pc-bios/dtb/meson.build" |
                 tr -d "'"); do
        [ -f "$tree/pc-bios/dtb/$dtb" ] || : > "$tree/pc-bios/dtb/$dtb"
    done
}

configure_tree()
{
    local tree=$1 dir=$2 extra
    [ -f "$tree/$dir/build.ninja" ] && return 0
    log "configuring $tree/$dir"
    mkdir -p "$tree/$dir"
    read -r -a extra <<< "$(sanitizer_opts "$dir")"
    (cd "$tree/$dir" && ../configure "${CONFIGURE_OPTS[@]}" "${extra[@]}" \
        > configure.log 2>&1) ||
        die "configure failed, see $tree/$dir/configure.log"
}

# QEMU run from its build directory looks for firmware in the bundle
# directory; Debian's seabios, ipxe-qemu and qemu-system-data have it all.
link_firmware()
{
    local bundle="$1/qemu-bundle/usr/local/share/qemu" f
    mkdir -p "$bundle"
    for f in /usr/share/qemu/* /usr/share/seabios/* /usr/lib/ipxe/qemu/*; do
        [ -e "$f" ] || continue
        # meson's own links stay, even dangling ones (trace-events-all).
        [ -e "$bundle/$(basename "$f")" ] || [ -L "$bundle/$(basename "$f")" ] ||
            ln -s "$f" "$bundle/"
    done
}

# ninja prints a line per step when not on a terminal: keep every 100th
# step and the last, and everything that is not a step (warnings, errors).
show_progress()
{
    awk '/^\[[0-9]+\/[0-9]+\] / {
             split(substr($1, 2), n, "/");
             if (n[1] % 100 == 0 || n[1] == n[2] + 0) print;
             next
         }
         { print }'
}

main()
{
    local flavour=ours dir=build
    while [ $# -gt 0 ]; do
        case "$1" in
        --upstream) flavour=upstream; shift ;;
        --sanitize) dir="build-sanitize"; shift ;;
        --tsan) dir="build-tsan"; shift ;;
        --backend) flavour=backend; dir="build-backend"; shift ;;
        --qemu) use_qemu_version "${2:-}"; shift 2 ;;
        *) break ;;
        esac
    done
    local targets=("$@")
    if [ ${#targets[@]} -eq 0 ]; then
        if [ "$flavour" = backend ]; then
            targets=(storage-daemon/qemu-storage-daemon)
        else
            targets=("${DEFAULT_TARGETS[@]}")
        fi
    fi

    "$here/install-deps.sh"
    local tree
    tree=$(qemu_tree "$flavour")
    unpack_tree "$tree"
    fill_missing_dtbs "$tree"
    case $flavour in
    ours) "$here/overlay.sh" "$tree" ;;
    backend) "$here/fix-libvhost-user.py" "$tree" ||
             die "could not mend libvhost-user in $tree" ;;
    esac
    use_ccache
    configure_tree "$tree" "$dir"
    link_firmware "$tree/$dir"
    log "ninja (QEMU $QEMU_VERSION, ${flavour}, $dir): ${targets[*]}"
    ninja -C "$tree/$dir" "${targets[@]}" 2>&1 | show_progress >&2 ||
        die "build of $flavour ($dir) failed"
    echo "$tree/$dir"
}

main "$@"
