#!/usr/bin/env bash
# A vhost-user back-end through postcopy (scripts/pcram/vhost_user.py):
# qemu-storage-daemon serving a vhost-user-blk disk on each side, the test
# guest doing disk I/O into pages that only the back-end touches, and the
# destination's fault thread serving the back-end's userfaultfd.  Builds
# QEMU, the back-end (scripts/build.sh --backend) and the guest first.
# Needs root (userfaultfd).  Prints a line per case and a last line
# "vhost-user: N cases, N clean".
#
#   scripts/vhost-user-test.sh                  every case: main channel,
#                                               a pause and recovery while
#                                               the back-end faults,
#                                               preempt, the destination's
#                                               back-end killed in postcopy,
#                                               a pc-dimm plugged into the
#                                               destination in postcopy,
#                                               the back-end's request
#                                               failing, every wake of it
#                                               failing, its zero page for
#                                               unplugged virtio-mem RAM
#                                               failing (these three: ours
#                                               only)
#   scripts/vhost-user-test.sh --cases main,preempt
#   scripts/vhost-user-test.sh --upstream ...   upstream's module
#   scripts/vhost-user-test.sh --qemu VERSION ...
#   scripts/vhost-user-test.sh --sanitize ...   our module under ASan/UBSan
# --upstream, --sanitize and --qemu may come anywhere among the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

ALL_CASES=main,pause,preempt,kill-backend,hotplug,retry,wake-fail,place-zero

case_options()
{
    case "$1" in
    main) ;;
    pause) echo --pause ;;
    preempt) echo --preempt ;;
    kill-backend) echo --kill-backend ;;
    hotplug) echo --hotplug ;;
    retry) echo --retry ;;
    wake-fail) echo --wake-fail ;;
    place-zero) echo --place-zero ;;
    *) die "unknown case $1 (cases: $ALL_CASES)" ;;
    esac
}

main()
{
    [ "$(id -u)" = 0 ] || die "run as root: QEMU needs /dev/userfaultfd"
    local backend cases c clean=0 total=0 opts
    parse_module_options "$@"
    take_sanitize_option "${REST[@]+"${REST[@]}"}"
    # Upstream's module has no fault points.
    cases=$ALL_CASES
    [ "$MODULE" = ours ] || cases=${ALL_CASES%,retry,wake-fail,place-zero}
    set -- "${REST[@]+"${REST[@]}"}"
    while [ $# -gt 0 ]; do
        case "$1" in
        --cases) cases=${2:-}; shift 2 ;;
        *) die "usage: vhost-user-test.sh [--qemu VERSION] [--upstream]" \
               "[--sanitize] [--cases $ALL_CASES]" ;;
        esac
    done
    for c in ${cases//,/ }; do
        case_options "$c" > /dev/null
    done
    build_qemu_and_guest
    # The back-end is a program of its own that speaks the vhost-user
    # protocol to whichever QEMU runs the guest: one build of it, from the
    # default version's tree, serves every version.
    backend=$("$here/build.sh" --qemu "$QEMU_DEFAULT_VERSION" --backend)
    for c in ${cases//,/ }; do
        read -r -a opts <<< "$(case_options "$c")"
        total=$((total + 1))
        if run_pcram vhost_user --qemu "$QEMU_BIN" \
                --qsd "$backend/storage-daemon/qemu-storage-daemon" \
                --guest "$GUEST_BIN" --module "$MODULE" \
                "${opts[@]+"${opts[@]}"}"; then
            clean=$((clean + 1))
        fi
    done
    echo "vhost-user: $total cases, $clean clean"
    [ "$clean" -eq "$total" ]
}

main "$@"
