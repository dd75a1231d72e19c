#!/usr/bin/env bash
# The main job (the README's first command): builds what is missing, then
# postcopy-migrates a running test guest on this machine and reports.
#
#   scripts/main-job.sh [--qemu VERSION] [--upstream] [main-job options]
#   (--qemu and --upstream anywhere among the options)
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
    local results=main-job
    parse_module_options "$@"
    set -- "${REST[@]+"${REST[@]}"}"
    if [ "$QEMU_VERSION" != "$QEMU_DEFAULT_VERSION" ]; then
        results=main-job-$QEMU_VERSION
    fi
    case "${1:-}" in
    -h|--help) exec_pcram main_job --help ;;
    esac
    [ "$(id -u)" = 0 ] ||
        die "run as root: QEMU needs /dev/userfaultfd and /dev/kvm"
    build_qemu_and_guest
    mkdir -p "$PCRAM_ROOT/results"
    exec_pcram main_job --qemu "$QEMU_BIN" --guest "$GUEST_BIN" \
        --module "$MODULE module, QEMU $QEMU_VERSION" \
        --json "$PCRAM_ROOT/results/$results-$MODULE.json" "$@"
}

main "$@"
