#!/usr/bin/env bash
# The main job (the README's first command): builds what is missing, then
# postcopy-migrates a running test guest on this machine and reports.
#
#   scripts/main-job.sh [--qemu VERSION] [--upstream] [main-job options]
#
# Default: 1 GiB, 2 vCPUs, random access with 50% writes, 2 s of precopy.
# --upstream uses QEMU with upstream's module; --qemu one of the QEMU
# versions in common.sh (default 10.0.2).  Other options:
# scripts/main-job.sh --help.  Needs root (userfaultfd, /dev/kvm).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

main()
{
    local build_args=() module=ours results=main-job
    while [ $# -gt 0 ]; do
        case "$1" in
        --upstream) build_args+=(--upstream); module=upstream; shift ;;
        --qemu) use_qemu_version "${2:-}"; shift 2 ;;
        *) break ;;
        esac
    done
    if [ "$QEMU_VERSION" != "$QEMU_DEFAULT_VERSION" ]; then
        results=main-job-$QEMU_VERSION
    fi
    case "${1:-}" in
    -h|--help)
        cd "$here" && exec /usr/bin/python3 -m pcram.main_job --help ;;
    esac
    [ "$(id -u)" = 0 ] ||
        die "run as root: QEMU needs /dev/userfaultfd and /dev/kvm"
    local build guest
    build=$("$here/build.sh" "${build_args[@]}" qemu-system-x86_64)
    guest=$("$here/build-guest.sh")
    mkdir -p "$PCRAM_ROOT/results"
    cd "$here"
    exec /usr/bin/python3 -m pcram.main_job \
        --qemu "$build/qemu-system-x86_64" --guest "$guest" \
        --module "$module module, QEMU $QEMU_VERSION" \
        --json "$PCRAM_ROOT/results/$results-$module.json" "$@"
}

main "$@"
