#!/usr/bin/env bash
# Runs every test of this project (the README's second command):
#   1. builds QEMU with this module (scripts/build.sh), as needed;
#   2. the unit tests of the module's pure logic (meson test);
#   3. QEMU's checkpatch.pl over this project's C files;
#   4. QEMU's own postcopy migration tests (migration-test --full,
#      /x86_64/migration/postcopy: 11 tests).
# Prints each runner's summary and a last line "N passed, N failed";
# exits non-zero when anything failed.
#
#   scripts/test.sh [--skip-qemu-tests]
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

PASSED=0
FAILED=0
FAILURES=()

record()
{
    local name=$1 rc=$2
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        echo "PASS: $name"
    else
        FAILED=$((FAILED + 1))
        FAILURES+=("$name")
        echo "FAIL: $name (exit $rc)"
    fi
}

section()
{
    printf '\n=== %s ===\n' "$*"
}

run_unit_tests()
{
    local tree=$1 out="$PCRAM_ROOT/_build"
    section "unit tests (meson test)"
    if [ ! -f "$out/build.ninja" ]; then
        meson setup "$out" "$PCRAM_ROOT" -Dqemu_source="$tree" \
            -Dqemu_build="$tree/build" > "$out.setup.log" 2>&1 || {
            cat "$out.setup.log"
            record "unit tests: meson setup" 1
            return
        }
    fi
    ninja -C "$out" > "$out.ninja.log" 2>&1 || {
        cat "$out.ninja.log"
        record "unit tests: build" 1
        return
    }
    local test rc
    for test in $(meson test -C "$out" --list 2>/dev/null); do
        meson test -C "$out" --print-errorlogs "$test" 2>&1 |
            grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail):' | head -n 1
        rc=${PIPESTATUS[0]}
        record "unit: $test" "$rc"
    done
}

run_checkpatch()
{
    local tree=$1 f out rc
    section "checkpatch.pl"
    for f in "$PCRAM_ROOT"/migration/*.[ch] "$PCRAM_ROOT"/tests/*/*.[ch]; do
        [ -f "$f" ] || continue
        out=$(cd "$PCRAM_ROOT" && perl "$tree/scripts/checkpatch.pl" \
              --no-tree --terse -f "${f#"$PCRAM_ROOT"/}" 2>&1)
        rc=$?
        # Warnings are printed; only errors fail the file.
        if grep -q ': ERROR:' <<< "$out"; then
            rc=1
        else
            rc=0
        fi
        grep -E ': (ERROR|WARNING):' <<< "$out"
        record "checkpatch: ${f#"$PCRAM_ROOT"/}" "$rc"
    done
}

# QEMU's migration-test, one test per process: a hang is then one failure
# with a name, not a whole run lost.
run_qemu_postcopy_tests()
{
    local build=$1 test rc log
    section "QEMU migration-test --full: postcopy"
    local tests
    tests=$(cd "$build" && QTEST_QEMU_BINARY=./qemu-system-x86_64 \
            ./tests/qtest/migration-test --full -l 2>/dev/null |
            grep '^/x86_64/migration/postcopy/')
    [ -n "$tests" ] || { record "migration-test: list" 1; return; }
    log="$PCRAM_ROOT/_build/migration-test-postcopy.log"
    mkdir -p "$(dirname "$log")"
    : > "$log"
    for test in $tests; do
        (cd "$build" && QTEST_QEMU_BINARY=./qemu-system-x86_64 \
         timeout --kill-after=10 300 ./tests/qtest/migration-test --full \
         -p "$test") >> "$log" 2>&1
        rc=$?
        [ $rc -eq 124 ] && echo "timeout after 300 s: $test"
        record "qtest: $test" "$rc"
    done
    echo "(full output: $log)"
}

main()
{
    local skip_qemu=
    [ "${1:-}" = --skip-qemu-tests ] && skip_qemu=1
    local build tree
    section "build"
    build=$("$here/build.sh") || die "the build failed; no tests ran"
    tree=$(dirname "$build")

    run_unit_tests "$tree"
    run_checkpatch "$tree"
    if [ -z "$skip_qemu" ]; then
        run_qemu_postcopy_tests "$build"
    fi

    section "summary"
    if [ ${#FAILURES[@]} -gt 0 ]; then
        printf 'failed: %s\n' "${FAILURES[@]}"
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

main "$@"
