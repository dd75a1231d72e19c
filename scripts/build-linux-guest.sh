#!/usr/bin/env bash
# Builds the Linux test guest: Debian's kernel (linux-image-amd64's) and an
# initramfs of Debian's busybox-static, redis-server and redis-tools, with
# guest/linux-init.sh as its /init: redis-benchmark drives redis-server
# inside the guest and the init reports its rate in the test guest's
# format.  Everything comes from Debian's archive (apt-get download; nothing
# is installed on the host).  Prints the directory that holds vmlinuz and
# initramfs.cpio.gz; builds once, then only prints it.
#
#   scripts/build-linux-guest.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

OUT=$PCRAM_CACHE/linux-guest
# The programs and every library they load (Debian 12's redis 7.0 and its
# libsystemd0); the build checks that each program runs from the tree.
PACKAGES=(busybox-static redis-server redis-tools libc6 libjemalloc2
          liblzf1 libssl3 libsystemd0 libatomic1 libcap2 libgcrypt20
          libgpg-error0 liblz4-1 liblzma5 libzstd1 libstdc++6 libgcc-s1)
PROGRAMS=(/usr/bin/redis-server /usr/bin/redis-benchmark /usr/bin/redis-cli)

# The versioned kernel package that linux-image-amd64 stands for.
kernel_package()
{
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

main()
{
    local work kernel deb root prog
    if [ -f "$OUT/initramfs.cpio.gz" ] && [ -f "$OUT/vmlinuz" ] &&
       [ "$OUT/initramfs.cpio.gz" -nt "$PCRAM_ROOT/guest/linux-init.sh" ]; then
        echo "$OUT"
        return
    fi
    "$here/install-deps.sh" >&2
    kernel=$(kernel_package)
    [ -n "$kernel" ] || die "apt knows no linux-image-amd64 (apt-get update?)"
    work=$(mktemp -d "$PCRAM_CACHE/linux-guest.XXXXXX")
    # shellcheck disable=SC2064 # $work as it is now
    trap "rm -rf '$work'" EXIT
    mkdir -p "$work/debs" "$work/root" "$work/kernel"
    log "downloading $kernel ${PACKAGES[*]}"
    (cd "$work/debs" && apt-get download -q "$kernel" "${PACKAGES[@]}" \
        > "$work/download.log" 2>&1) ||
        { cat "$work/download.log" >&2; die "apt-get download failed"; }
    for deb in "$work"/debs/*.deb; do
        case "$(basename "$deb")" in
        linux-image-*) dpkg-deb -x "$deb" "$work/kernel" ;;
        *) dpkg-deb -x "$deb" "$work/root" ;;
        esac
    done
    root=$work/root
    for prog in "${PROGRAMS[@]}"; do
        chroot "$root" "$prog" --version > /dev/null ||
            die "$prog does not run from the guest's tree (a library missing?)"
    done
    # What the initramfs does not need: documentation, the packages'
    # services and configuration.
    rm -rf "$root/usr/share" "$root/etc" "$root/lib/systemd" "$root/usr/lib/systemd"
    install -m 0755 "$PCRAM_ROOT/guest/linux-init.sh" "$root/init"
    mkdir -p "$OUT"
    cp "$work"/kernel/boot/vmlinuz-* "$OUT/vmlinuz"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) \
        > "$OUT/initramfs.cpio.gz.tmp"
    mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
    log "Linux guest: $kernel, $(du -h "$OUT/initramfs.cpio.gz" | cut -f1) initramfs"
    echo "$OUT"
}

main "$@"
