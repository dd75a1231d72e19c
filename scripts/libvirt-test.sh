#!/usr/bin/env bash
# libvirt drives the module: two libvirtd "hosts" on this
# machine, each in network, mount and UTS namespaces of its own, migrate
# the running test guest with `virsh migrate --postcopy` and nothing else.
# Installs libvirt (bookworm's 9.0, see install-deps.sh for why not 11.3),
# builds both QEMUs and the guest first.  Root only.
#
#   scripts/libvirt-test.sh                  every case with our module,
#                                            then with upstream's, side by
#                                            side
#   scripts/libvirt-test.sh --upstream       every case with upstream's
#                                            module, then with ours
#   scripts/libvirt-test.sh --qemu 10.2.2 .. another QEMU (10.0.2, the
#                                            default, 10.0.13, 10.2.2)
#   scripts/libvirt-test.sh --cases after-precopy --no-compare
#                                            one case, one module (what the
#                                            test command runs)
#
# Cases: after-precopy, switch, link-cut (see scripts/pcram/libvirt_test.py).
# Results: results/libvirt-<module>.json.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

main()
{
    [ "$(id -u)" = 0 ] ||
        die "run as root: the test installs libvirt, runs two libvirt" \
            "daemons in namespaces of their own, and QEMU needs" \
            "/dev/userfaultfd"
    local module=ours other=upstream compare=1 args=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --qemu) use_qemu_version "${2:-}"; shift 2 ;;
        --upstream) module=upstream; other=ours; shift ;;
        --no-compare) compare=; shift ;;
        *) args+=("$1"); shift ;;
        esac
    done
    "$here/install-deps.sh" --libvirt
    local qemu guest flavour=() other_flavour=(--upstream)
    if [ "$module" = upstream ]; then
        flavour=(--upstream)
        other_flavour=()
    fi
    qemu=$("$here/build.sh" "${flavour[@]}" qemu-system-x86_64)
    guest=$("$here/build-guest.sh")
    if [ -n "$compare" ]; then
        local other_qemu
        other_qemu=$("$here/build.sh" "${other_flavour[@]}" \
                     qemu-system-x86_64)
        args+=(--compare-qemu "$other_qemu/qemu-system-x86_64"
               --compare-module "$other, QEMU $QEMU_VERSION")
    fi
    mkdir -p "$PCRAM_ROOT/results"
    local suffix=$module
    [ "$QEMU_VERSION" = "$QEMU_DEFAULT_VERSION" ] ||
        suffix=$QEMU_VERSION-$module
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec /usr/bin/python3 \
        -m pcram.libvirt_test --qemu "$qemu/qemu-system-x86_64" \
        --module "$module, QEMU $QEMU_VERSION" --guest "$guest" \
        --json "$PCRAM_ROOT/results/libvirt-$suffix.json" "${args[@]}"
}

main "$@"
