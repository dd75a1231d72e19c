# Shared helpers for this project's shell scripts.  Sourced, not run.

# shellcheck disable=SC2034
PCRAM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything downloaded or built lives here (git-ignored).
PCRAM_CACHE=${PCRAM_CACHE:-$PCRAM_ROOT/build}

# The QEMU versions this module builds into, from Debian's source
# packages.  The README's two commands use the default; the scripts that
# take --qemu VERSION pass it on to the others in PCRAM_QEMU_VERSION.
QEMU_VERSIONS=(10.0.2 10.0.13 10.2.2)
QEMU_DEFAULT_VERSION=10.0.2

# Sets QEMU_VERSION, QEMU_SUITE (Debian's), QEMU_DEB_VERSION,
# QEMU_TARBALL and QEMU_SHA256 for version $1.
select_qemu_version()
{
    case "$1" in
    10.0.2)
        QEMU_SUITE=bookworm-backports
        QEMU_DEB_VERSION='1:10.0.2+ds-2+deb13u1~bpo12+1'
        QEMU_SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1 ;;
    10.0.13)
        QEMU_SUITE=trixie
        QEMU_DEB_VERSION='1:10.0.13+ds-0+deb13u1'
        QEMU_SHA256=6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae ;;
    10.2.2)
        QEMU_SUITE=sid
        QEMU_DEB_VERSION='1:10.2.2+ds-1'
        QEMU_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb ;;
    *)
        die "QEMU '$1' is not one this module builds into" \
            "(${QEMU_VERSIONS[*]})" ;;
    esac
    QEMU_VERSION=$1
    QEMU_TARBALL=qemu_$1+ds.orig.tar.xz
}

# The unpacked tree of flavour $1 (ours, upstream) of the selected version.
# The default version keeps the names it always had.
qemu_tree()
{
    if [ "$QEMU_VERSION" = "$QEMU_DEFAULT_VERSION" ]; then
        echo "$PCRAM_CACHE/qemu-$1"
    else
        echo "$PCRAM_CACHE/qemu-$QEMU_VERSION-$1"
    fi
}

# What --qemu VERSION does in every script that takes it: select the
# version here and for the scripts this one runs.
use_qemu_version()
{
    [ -n "${1:-}" ] || die "--qemu wants a version (${QEMU_VERSIONS[*]})"
    select_qemu_version "$1"
    export PCRAM_QEMU_VERSION=$1
}

# --qemu VERSION anywhere among a script's options: selects VERSION and
# sets REST to the other options, in order; QEMU_VERSION_GIVEN to 1 if it
# was there.
# shellcheck disable=SC2034 # used by the scripts that source this
take_qemu_option()
{
    REST=()
    QEMU_VERSION_GIVEN=
    while [ $# -gt 0 ]; do
        case "$1" in
        --qemu) use_qemu_version "${2:-}"; QEMU_VERSION_GIVEN=1; shift 2 ;;
        *) REST+=("$1"); shift ;;
        esac
    done
}

# The options every harness script takes anywhere among its own:
# --upstream (upstream's module) and --qemu VERSION.  Sets FLAVOUR (the
# build.sh option, or none), MODULE (ours, upstream) and REST (the other
# options, in order).
# shellcheck disable=SC2034 # used by the scripts that source this
parse_module_options()
{
    local arg others=()
    FLAVOUR=()
    MODULE=ours
    for arg in "$@"; do
        if [ "$arg" = --upstream ]; then
            FLAVOUR=(--upstream)
            MODULE=upstream
        else
            others+=("$arg")
        fi
    done
    take_qemu_option "${others[@]}"
}

# --sanitize among the options, for the scripts that offer it (after
# parse_module_options): our module's ASan/UBSan build, with the test
# command's sanitizer options.  REST: the other options.
take_sanitize_option()
{
    local arg others=()
    for arg in "$@"; do
        if [ "$arg" = --sanitize ]; then
            [ "$MODULE" = ours ] ||
                die "--sanitize builds this module only, not upstream's"
            FLAVOUR=(--sanitize)
            export_sanitizer_options
        else
            others+=("$arg")
        fi
    done
    REST=("${others[@]+"${others[@]}"}")
}

# What most harness scripts build first: QEMU with the module that
# parse_module_options chose (FLAVOUR) and the test guest.  Sets QEMU_BIN
# and GUEST_BIN.
# shellcheck disable=SC2034 # used by the scripts that source this
build_qemu_and_guest()
{
    local build
    build=$("$PCRAM_ROOT/scripts/build.sh" "${FLAVOUR[@]}" qemu-system-x86_64)
    QEMU_BIN=$build/qemu-system-x86_64
    GUEST_BIN=$("$PCRAM_ROOT/scripts/build-guest.sh")
}

# Run the harness's Python module pcram.$1 with the other arguments, in
# place of this shell (a signal to the script reaches Python).
exec_pcram()
{
    local module=$1
    shift
    PYTHONPATH="$PCRAM_ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" \
        exec /usr/bin/python3 -m "pcram.$module" "$@"
}

# The same as a child, for a script that runs several.
run_pcram()
{
    local module=$1
    shift
    PYTHONPATH="$PCRAM_ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" \
        /usr/bin/python3 -m "pcram.$module" "$@"
}

# This repository's own build directory (guest, unit tests, test logs):
# _build/, or _build-VERSION/ for a version other than the default, whose
# unit tests link that version's tree.
our_build_dir()
{
    if [ "$QEMU_VERSION" = "$QEMU_DEFAULT_VERSION" ]; then
        echo "$PCRAM_ROOT/_build"
    else
        echo "$PCRAM_ROOT/_build-$QEMU_VERSION"
    fi
}

# The archive this machine already uses, so no mirror is hard-coded.
debian_mirror()
{
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources |
          awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list |
              awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt sources"
    echo "$uri"
}

log()
{
    printf '[%s] %s\n' "$(basename "$0")" "$*" >&2
}

die()
{
    printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

select_qemu_version "${PCRAM_QEMU_VERSION:-$QEMU_DEFAULT_VERSION}"

# Runs the tests of QEMU's migration-test whose paths start with $2, one
# process each under a timeout of $3 seconds (a hang is then one failure
# with a name), against the build directory $1, but those that the
# extended regular expression $5 (if any) matches.  Appends their output
# to $4.  Prints "PASS: path (N s)" or "FAIL: path (...)" per test;
# returns the number of failures (capped at 255).
run_migration_tests()
{
    local build=$1 prefix=$2 limit=$3 log=$4 skip=${5:-} tests test rc
    local start failed=0
    tests=$(cd "$build" && QTEST_QEMU_BINARY=./qemu-system-x86_64 \
            ./tests/qtest/migration-test --full -l 2>/dev/null |
            grep "^$prefix" | grep -Ev "${skip:-^$}")
    if [ -z "$tests" ]; then
        echo "FAIL: no migration-test matches $prefix"
        return 1
    fi
    for test in $tests; do
        start=$SECONDS
        (cd "$build" && QTEST_QEMU_BINARY=./qemu-system-x86_64 \
         timeout --kill-after=10 "$limit" ./tests/qtest/migration-test \
         --full -p "$test") >> "$log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then
            echo "PASS: $test ($((SECONDS - start)) s)"
        elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            echo "FAIL: $test (timeout after $limit s)"
            failed=$((failed + 1))
        else
            echo "FAIL: $test (exit $rc)"
            failed=$((failed + 1))
        fi
    done
    [ $failed -gt 255 ] && failed=255
    return $failed
}

# -h or --help anywhere among a script's options: print its header comment
# (what it does and how to call it) and exit, before anything is built.
help_if_asked()
{
    local a
    for a in "$@"; do
        case "$a" in
        -h|--help)
            awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next }
                 { exit }' "$0"
            exit 0 ;;
        esac
    done
}

# Sanitizer reports end the process that made them, with a stack.  Leak
# checking is off: QEMU's own exit leaks by design and would fail every
# test, whatever this module does.
export_sanitizer_options()
{
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:print_summary=1
    export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
}
