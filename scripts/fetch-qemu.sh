#!/usr/bin/env bash
# Fetches QEMU 10.0.2's source from Debian's source package, checks its
# sha256 and keeps it in the cache.  Prints the tarball's path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

main()
{
    local dl="$PCRAM_CACHE/download" tarball
    tarball="$dl/$QEMU_TARBALL"
    mkdir -p "$dl"
    if [ -f "$tarball" ] &&
       echo "$QEMU_SHA256  $tarball" | sha256sum -c --status; then
        echo "$tarball"
        return 0
    fi
    log "fetching QEMU $QEMU_VERSION source ($QEMU_DEB_VERSION)"
    # apt-get fails on the .dsc and .debian.tar.xz (gone from the archive)
    # after the orig tarball has arrived: judge by the checksum instead.
    (cd "$dl" && apt-get source --download-only -qq \
        "qemu=$QEMU_DEB_VERSION" >/dev/null 2>&1) || true
    [ -f "$tarball" ] ||
        die "could not download $QEMU_TARBALL (is bookworm-backports deb-src" \
            "configured?  run scripts/install-deps.sh)"
    echo "$QEMU_SHA256  $tarball" | sha256sum -c --status ||
        die "$tarball: sha256 mismatch, expected $QEMU_SHA256"
    echo "$tarball"
}

main "$@"
