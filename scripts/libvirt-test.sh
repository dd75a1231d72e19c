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
    local compare=1 args=() arg
    parse_module_options "$@"
    for arg in "${REST[@]+"${REST[@]}"}"; do
        case "$arg" in
        --no-compare) compare= ;;
        *) args+=("$arg") ;;
        esac
    done
    "$here/install-deps.sh" --libvirt
    build_qemu_and_guest
    if [ -n "$compare" ]; then
        # The other module, built into the same QEMU.
        local other=upstream other_flavour=(--upstream) other_qemu
        if [ "$MODULE" = upstream ]; then
            other=ours
            other_flavour=()
        fi
        other_qemu=$("$here/build.sh" "${other_flavour[@]}" \
                     qemu-system-x86_64)
        args+=(--compare-qemu "$other_qemu/qemu-system-x86_64"
               --compare-module "$other, QEMU $QEMU_VERSION")
    fi
    mkdir -p "$PCRAM_ROOT/results"
    local suffix=$MODULE
    [ "$QEMU_VERSION" = "$QEMU_DEFAULT_VERSION" ] ||
        suffix=$QEMU_VERSION-$MODULE
    exec_pcram libvirt_test --qemu "$QEMU_BIN" \
        --module "$MODULE, QEMU $QEMU_VERSION" --guest "$GUEST_BIN" \
        --json "$PCRAM_ROOT/results/libvirt-$suffix.json" \
        "${args[@]+"${args[@]}"}"
}

main "$@"
