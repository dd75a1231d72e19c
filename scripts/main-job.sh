#!/usr/bin/env bash
# The main job (the README's first command): builds what is missing, then
# postcopy-migrates a running test guest on this machine and reports.
#
#   scripts/main-job.sh [--upstream] [main-job options]
#
# Default: 1 GiB, 2 vCPUs, random access with 50% writes, 2 s of precopy.
# --upstream uses QEMU with upstream's module.  Other options:
# scripts/main-job.sh --help.  Needs root (userfaultfd, /dev/kvm).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

main()
{
    local build_args=() module=ours
    if [ "${1:-}" = --upstream ]; then
        build_args=(--upstream)
        module=upstream
        shift
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
        --module "$module" \
        --json "$PCRAM_ROOT/results/main-job-$module.json" "$@"
}

main "$@"
