#!/usr/bin/env bash
# Installs, from Debian's archive, everything this project needs to build
# QEMU 10.0.2 with its postcopy module and to run its tests and benchmarks.
# Idempotent: a second run only checks.  Needs root (apt-get).
#
#   scripts/install-deps.sh            build and test dependencies
#   scripts/install-deps.sh --libvirt  those, and libvirt for
#                                      scripts/libvirt-test.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

BACKPORTS_LIST=/etc/apt/sources.list.d/pcram-bookworm-backports.list

# Packages from bookworm itself.
BASE_PKGS=(
    build-essential ninja-build pkgconf flex bison bzip2 xz-utils
    python3-venv libglib2.0-dev libpixman-1-dev libslirp-dev libfdt-dev
    libgnutls28-dev libtasn1-6-dev libzstd-dev
    seabios ipxe-qemu
    iproute2 socat gdb ccache cpio
    python3-matplotlib
)
# Packages that need bookworm-backports (QEMU 10.0 wants meson >= 1.5).
BACKPORT_PKGS=(meson python3-pycotap qemu-system-data)

# libvirt for scripts/libvirt-test.sh: bookworm's 9.0.  bookworm-backports'
# 11.3 does not serve: its destination libvirtd dies (SIGSEGV) on every
# `virsh migrate --postcopy-resume`, since qemuMigrationDstPrepareResume()
# passes a NULL fd that qemuProcessIncomingDefNew() dereferences.  9.0's
# QEMU driver needs no Debian QEMU: the domain's <emulator> is ours.
LIBVIRT_VERSION=9.0.0
LIBVIRT_PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
              libvirt0)

# One `apt-get update` per run, whatever installs after it.
APT_UPDATED=
apt_update()
{
    [ -z "$APT_UPDATED" ] || return 0
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
}

all_installed()
{
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
            grep -q '^install ok installed$' || return 1
    done
}

ensure_backports_sources()
{
    [ -f "$BACKPORTS_LIST" ] && return 0
    local mirror
    mirror=$(debian_mirror)
    log "adding bookworm-backports (deb and deb-src) from $mirror"
    printf 'deb %s bookworm-backports main\ndeb-src %s bookworm-backports main\n' \
        "$mirror" "$mirror" > "$BACKPORTS_LIST"
}

# The QEMU driver resolves its built-in user and group (Debian's:
# libvirt-qemu) when it starts, whatever qemu.conf says, and fails to start
# without them.  libvirt-daemon-system creates both, with services and
# network configuration the test has no use for; this creates only them.
LIBVIRT_QEMU_USER=libvirt-qemu

ensure_libvirt_qemu_user()
{
    getent group "$LIBVIRT_QEMU_USER" >/dev/null ||
        groupadd --system "$LIBVIRT_QEMU_USER"
    getent passwd "$LIBVIRT_QEMU_USER" >/dev/null ||
        useradd --system --gid "$LIBVIRT_QEMU_USER" --no-create-home \
            --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
            "$LIBVIRT_QEMU_USER"
}

libvirt_installed()
{
    all_installed "${LIBVIRT_PKGS[@]}" &&
        [ "$(libvirtd --version 2>/dev/null | awk '{print $NF}')" = \
          "$LIBVIRT_VERSION" ]
}

install_libvirt()
{
    ensure_libvirt_qemu_user
    libvirt_installed && return 0
    apt_update
    local pkgs=() p
    for p in "${LIBVIRT_PKGS[@]}"; do
        pkgs+=("$p/bookworm")
    done
    log "installing libvirt $LIBVIRT_VERSION: ${LIBVIRT_PKGS[*]}"
    # --allow-downgrades: from backports' 11.3, if a machine has it; the
    # downgrade drops libvirt-common's files, which libvirt0 then owns.
    apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "${pkgs[@]}" >/dev/null
    apt-get install -y -qq --reinstall libvirt0 >/dev/null
    libvirt_installed ||
        die "libvirt $LIBVIRT_VERSION did not install: libvirtd says" \
            "'$(libvirtd --version 2>&1)'"
}

install_build_deps()
{
    apt_update
    log "installing ${BASE_PKGS[*]}"
    apt-get install -y -qq --no-install-recommends "${BASE_PKGS[@]}" >/dev/null
    log "installing from bookworm-backports: ${BACKPORT_PKGS[*]}"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
        "${BACKPORT_PKGS[@]}" >/dev/null
    log "build dependencies installed"
}

main()
{
    [ "$(id -u)" = 0 ] || die "install-deps needs root for apt-get (run as root)"
    local libvirt=
    case "${1:-}" in
    --libvirt) libvirt=1 ;;
    '') ;;
    *) die "install-deps: unknown option $1 (--libvirt)" ;;
    esac
    export DEBIAN_FRONTEND=noninteractive
    ensure_backports_sources
    if all_installed "${BASE_PKGS[@]}" "${BACKPORT_PKGS[@]}" &&
       [ -n "$(apt-cache showsrc qemu 2>/dev/null | head -n1)" ]; then
        log "build dependencies already installed"
    else
        install_build_deps
    fi
    [ -z "$libvirt" ] || install_libvirt
}

main "$@"
