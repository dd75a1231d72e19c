#!/usr/bin/env bash
# The fault-injection suite: migrates the test guest between two network
# namespaces and breaks the migration in every phase, on either channel,
# then recovers it as an operator would and checks the guest's memory.
# Prints a table (fault x phase x channel -> outcome, pages lost) and a
# last line "faults: N cases, N survived, N pages lost".  Builds QEMU and
# the guest first.  Needs root (namespaces, userfaultfd).
#
#   scripts/faults.sh                 every case (about 10 minutes under TCG)
#   scripts/faults.sh --quick         the test command's subset (13 cases)
#   scripts/faults.sh --faults pause-src,kill-src --phases early,late \
#                     --preempt on --out DIR
#   scripts/faults.sh --upstream ...  the same with upstream's module
#   scripts/faults.sh --qemu VERSION  the same built into QEMU VERSION
#                                     (10.0.2, the default, 10.0.13, 10.2.2)
#   scripts/faults.sh --sanitize ...  our module under ASan and UBSan
#                                     (a report aborts the QEMU that made
#                                     it, which fails its case)
#   scripts/faults.sh --faults kill-src --phases recovery --preempt off \
#                     --repeat 300    one case 300 times, stopping at the
#                                     first failure (a loop after a race)
# --upstream, --sanitize and --qemu may come anywhere among the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

main()
{
    [ "$(id -u)" = 0 ] ||
        die "run as root: the suite creates network namespaces and QEMU" \
            "needs /dev/userfaultfd"
    local command="scripts/faults.sh${*:+ $*}"
    parse_module_options "$@"
    take_sanitize_option "${REST[@]+"${REST[@]}"}"
    build_qemu_and_guest
    PCRAM_FAULTS_COMMAND=$command exec_pcram faults --qemu "$QEMU_BIN" \
        --guest "$GUEST_BIN" --module "$MODULE" "${REST[@]}"
}

main "$@"
