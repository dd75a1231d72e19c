#!/usr/bin/env bash
# The side-by-side benchmark: this module against upstream's, on
# the same QEMU 10.0.2, guest and links, interleaved.  Builds both QEMUs
# and the test guest first.  Needs root (namespaces, tc, userfaultfd).
#
#   scripts/bench.sh                 the default set: random access and a
#                                    working set, 1 and 4 GiB, loopback
#                                    and 10 Gbit/s, with and without
#                                    preempt, 2 reps
#   scripts/bench.sh --full          the full matrix (hours)
#   scripts/bench.sh --qemu 10.2.2 ... both modules built into that QEMU
#                                    (10.0.2, the default, 10.0.13, 10.2.2)
#   scripts/bench.sh --reps 3 --sizes 1,2 --links loopback,1gbit ...
#                                    any part of it: --patterns, --sizes,
#                                    --vcpus, --links, --preempt (off,on),
#                                    --backends (anon,memfd)
#   scripts/bench.sh --patterns redis ...
#                                    the Linux guest: Debian's kernel and
#                                    redis-server driven by redis-benchmark
#                                    in it (scripts/build-linux-guest.sh)
#   scripts/bench.sh --after 0 ...   each guest runs on for S seconds after
#                                    its migration (default 60), its rate
#                                    and huge pages followed: the whole
#                                    cost; 0 leaves that out
#   scripts/bench.sh --render results/bench/bench.json
#                                    the report of an earlier run again
#                                    (its bench.md), building nothing
#
# Output: results/bench/bench.{md,json} and results/bench/*.png.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

main()
{
    if [ "${1:-}" = --render ]; then
        exec_pcram bench "$@"
    fi
    [ "$(id -u)" = 0 ] ||
        die "run as root: the benchmark creates network namespaces, shapes" \
            "them with tc, and QEMU needs /dev/userfaultfd"
    local ours upstream guest command="scripts/bench.sh${*:+ $*}"
    take_qemu_option "$@"
    set -- "${REST[@]}"
    # The report names the version, also the default.
    export PCRAM_QEMU_VERSION=$QEMU_VERSION
    ours=$("$here/build.sh" qemu-system-x86_64)
    upstream=$("$here/build.sh" --upstream qemu-system-x86_64)
    guest=$("$here/build-guest.sh" pcguest.bin delay-relay)
    # The Linux guest (the redis pattern) only when a pattern asks for it.
    local linux=()
    case " $* " in
    *redis*) linux=(--linux-guest "$("$here/build-linux-guest.sh")") ;;
    esac
    # The caller's directory stays the current one: a relative --out is
    # relative to it (the default is results/bench in the repository).
    # The report quotes the command as typed, without the paths added here.
    PCRAM_BENCH_COMMAND=$command exec_pcram bench \
        --ours "$ours/qemu-system-x86_64" \
        --upstream "$upstream/qemu-system-x86_64" \
        --guest "$guest" "${linux[@]}" \
        --relay "$(our_build_dir)/delay-relay" "$@"
}

main "$@"
