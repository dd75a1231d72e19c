#!/usr/bin/env bash
# Fetches the selected QEMU version's source (PCRAM_QEMU_VERSION, default
# in common.sh) from Debian's source package, checks its sha256 and keeps
# it in the cache.  Prints the tarball's path.
#
# 10.0.2 comes from bookworm-backports, whose deb-src install-deps.sh adds
# to the machine's apt sources.  The others (trixie, sid) come through a
# private apt configuration under the cache: the machine's sources and
# package lists are left alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

# apt-get options for a private configuration knowing only $1's deb-src.
private_apt_opts()
{
    local suite=$1 dir="$PCRAM_CACHE/download/apt-$1"
    mkdir -p "$dir/lists/partial"
    printf 'deb-src %s %s main\n' "$(debian_mirror)" "$suite" \
        > "$dir/sources.list"
    echo "-o Dir::Etc::SourceList=$dir/sources.list" \
         "-o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$dir/lists"
}

main()
{
    local dl="$PCRAM_CACHE/download" tarball opts=()
    tarball="$dl/$QEMU_TARBALL"
    mkdir -p "$dl"
    if [ -f "$tarball" ] &&
       echo "$QEMU_SHA256  $tarball" | sha256sum -c --status; then
        echo "$tarball"
        return 0
    fi
    log "fetching QEMU $QEMU_VERSION source ($QEMU_DEB_VERSION, $QEMU_SUITE)"
    if [ "$QEMU_SUITE" != bookworm-backports ]; then
        read -r -a opts <<< "$(private_apt_opts "$QEMU_SUITE")"
        apt-get "${opts[@]}" update -qq >/dev/null 2>&1 ||
            die "apt-get update for $QEMU_SUITE's sources failed"
    fi
    # apt-get may fail on the .dsc or .debian.tar.xz (gone from the
    # archive) after the orig tarball has arrived: judge by the checksum.
    (cd "$dl" && apt-get "${opts[@]}" source --download-only -qq \
        "qemu=$QEMU_DEB_VERSION" >/dev/null 2>&1) || true
    [ -f "$tarball" ] ||
        die "could not download $QEMU_TARBALL from $QEMU_SUITE (for" \
            "bookworm-backports, run scripts/install-deps.sh)"
    echo "$QEMU_SHA256  $tarball" | sha256sum -c --status ||
        die "$tarball: sha256 mismatch, expected $QEMU_SHA256"
    echo "$tarball"
}

main "$@"
