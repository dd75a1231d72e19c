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

# Runs the tests of QEMU's migration-test whose paths start with $2, one
# process each under a timeout of $3 seconds (a hang is then one failure
# with a name), against the build directory $1.  Appends their output to
# $4.  Prints "PASS: path" or "FAIL: path (...)" per test; returns the
# number of failures (capped at 255).
run_migration_tests()
{
    local build=$1 prefix=$2 limit=$3 log=$4 tests test rc failed=0
    tests=$(cd "$build" && QTEST_QEMU_BINARY=./qemu-system-x86_64 \
            ./tests/qtest/migration-test --full -l 2>/dev/null |
            grep "^$prefix")
    if [ -z "$tests" ]; then
        echo "FAIL: no migration-test matches $prefix"
        return 1
    fi
    for test in $tests; do
        (cd "$build" && QTEST_QEMU_BINARY=./qemu-system-x86_64 \
         timeout --kill-after=10 "$limit" ./tests/qtest/migration-test \
         --full -p "$test") >> "$log" 2>&1
        rc=$?
        if [ $rc -eq 0 ]; then
            echo "PASS: $test"
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
