#!/usr/bin/env bash
# Soak: one guest through many postcopy recoveries, or many hops, with
# each QEMU's fds, threads and own memory counted on the way
# (scripts/pcram/soak.py says how, and what passes).  Builds QEMU and the
# guest first.  Ends with a line "soak: N recoveries|hops, clean, fd
# growth 0, thread growth 0, rss growth N MiB".
#
#   scripts/soak.sh --recoveries 100 [--out DIR]
#   scripts/soak.sh --hops 10 [--out DIR]
#   scripts/soak.sh --upstream ...    the same with upstream's module
#   scripts/soak.sh --qemu VERSION ...
# --upstream and --qemu may come anywhere among the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

main()
{
    [ "$(id -u)" = 0 ] || die "run as root: QEMU needs /dev/userfaultfd"
    parse_module_options "$@"
    build_qemu_and_guest
    exec_pcram soak --qemu "$QEMU_BIN" --guest "$GUEST_BIN" \
        --module "$MODULE" "${REST[@]}"
}

main "$@"
