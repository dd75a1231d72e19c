# Shared helpers for this project's shell scripts.  Sourced, not run.

# shellcheck disable=SC2034
PCRAM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QEMU_VERSION=10.0.2
QEMU_DEB_VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
QEMU_TARBALL=qemu_10.0.2+ds.orig.tar.xz
QEMU_SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1
# Everything downloaded or built lives here (git-ignored).
PCRAM_CACHE=${PCRAM_CACHE:-$PCRAM_ROOT/build}

log()
{
    printf '[%s] %s\n' "$(basename "$0")" "$*" >&2
}

die()
{
    printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}
