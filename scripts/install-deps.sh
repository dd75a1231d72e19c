#!/usr/bin/env bash
# Installs, from Debian's archive, everything this project needs to build
# QEMU 10.0.2 with its postcopy module and to run its tests and benchmarks.
# Idempotent: a second run only checks.  Needs root (apt-get).
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
    iproute2 socat
    python3-matplotlib
)
# Packages that need bookworm-backports (QEMU 10.0 wants meson >= 1.5).
BACKPORT_PKGS=(meson python3-pycotap qemu-system-data)

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
    APT_UPDATED=
}

main()
{
    [ "$(id -u)" = 0 ] || die "install-deps needs root for apt-get (run as root)"
    ensure_backports_sources
    if all_installed "${BASE_PKGS[@]}" "${BACKPORT_PKGS[@]}" &&
       [ -n "$(apt-cache showsrc qemu 2>/dev/null | head -n1)" ]; then
        log "build dependencies already installed"
        return 0
    fi
    log "apt-get update"
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    log "installing ${BASE_PKGS[*]}"
    apt-get install -y -qq --no-install-recommends "${BASE_PKGS[@]}" >/dev/null
    log "installing from bookworm-backports: ${BACKPORT_PKGS[*]}"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports \
        "${BACKPORT_PKGS[@]}" >/dev/null
    log "build dependencies installed"
}

main "$@"
