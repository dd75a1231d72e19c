#!/usr/bin/env bash
# Runs the whole of QEMU's migration-test --full (73 tests here; about half
# an hour on 2 cores) against the build with this module, or with
# upstream's (--upstream), one test per process under a 300 s timeout.
# Writes the per-test results to _build/migration-test-full-FLAVOUR.txt and
# ends with "N passed, N failed".  Do not run heavy work beside it.
#
#   scripts/migration-test-full.sh [--upstream]
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"

main()
{
    local flavour=ours build_args=() build results log
    if [ "${1:-}" = --upstream ]; then
        flavour=upstream
        build_args=(--upstream)
    fi
    build=$("$here/build.sh" "${build_args[@]}") || die "build failed"
    mkdir -p "$PCRAM_ROOT/_build"
    results="$PCRAM_ROOT/_build/migration-test-full-$flavour.txt"
    log="$PCRAM_ROOT/_build/migration-test-full-$flavour.log"
    : > "$log"
    log "running migration-test --full against $flavour's module"
    run_migration_tests "$build" /x86_64/migration/ 300 "$log" |
        tee "$results"
    local passed failed
    passed=$(grep -c '^PASS:' "$results")
    failed=$(grep -c '^FAIL:' "$results")
    echo "results: $results, output: $log"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

main "$@"
