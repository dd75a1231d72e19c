#!/usr/bin/env bash
# Runs every test of this project (the README's second command), in two
# halves.  The plain half, on QEMU 10.0.2 (the version the module is built
# for): builds QEMU with this module as needed, the unit tests and the
# stubs' compile, checkpatch and the functions comments name, QEMU's own
# postcopy tests, this project's qtests, the fault-injection subset with
# its evidence and channel-race cases, a short soak, the vhost-user cases
# and libvirt's first case.  The
# sanitizer half, on QEMU 10.2.2 (the newest it supports) built under
# ASan and UBSan, where any report aborts the QEMU that made it: QEMU's
# postcopy tests but TLS and zstd, the failure and recovery qtests, four
# vhost-user cases and the recovery-connection case.  docs/testing.md
# ("The test command") says what each part runs and checks, and how long
# it takes.  With --qemu VERSION both halves run on VERSION, the sanitizer
# half with every test and case.  Prints each runner's summary and a
# last line "N passed, N failed"; exits non-zero when anything failed.
#
#   scripts/test.sh                    all of it
#   scripts/test.sh --no-sanitize      the plain half
#   scripts/test.sh --sanitize         the sanitizer half alone (on
#                                      10.0.2 unless --qemu says otherwise)
#   scripts/test.sh --skip-qemu-tests  the build, unit tests, stubs and
#                                      checkpatch
#   scripts/test.sh --qemu VERSION ... any of the above with QEMU VERSION
#                                      (10.0.2, the default, 10.0.13 or
#                                      10.2.2) and that version's own
#                                      postcopy tests
#   scripts/test.sh --tsan             not in "all": QEMU with this module
#                                      under ThreadSanitizer, the qtests
#                                      without a guest CPU (qtest-reads:
#                                      fault, placer, preempt threads,
#                                      a recovery) and the placer's ring;
#                                      fails on a report in the module
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/common.sh
. "$here/common.sh"
help_if_asked "$@"

# The QEMU of the sanitizer half when no --qemu is given: the plain half
# runs on the default version, this one on the newest we support, so that
# one run of the test command covers both (see the top).
SANITIZE_DEFAULT_VERSION=10.2.2
PASSED=0
# Logs and our own build: _build/, or _build-VERSION/ for --qemu VERSION
OUT=
# "-sanitize" for the logs of a --sanitize run
LOG_SUFFIX=
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

# Each heading says how long the run has taken so far (bash's SECONDS).
section()
{
    printf '\n=== %s === (at %d:%02d)\n' "$*" $((SECONDS / 60)) \
        $((SECONDS % 60))
}

run_unit_tests()
{
    local out="$OUT" tests test rc
    section "unit tests (meson test)"
    "$here/build-guest.sh" all > /dev/null || {
        record "unit tests: build" 1
        return
    }
    tests=$(meson test -C "$out" --list 2>/dev/null)
    if [ -z "$tests" ]; then
        record "unit tests: none were built" 1
        return
    fi
    for test in $tests; do
        meson test -C "$out" --print-errorlogs "$test" 2>&1 |
            grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail):' | head -n 1
        rc=${PIPESTATUS[0]}
        record "unit: $test" "$rc"
    done
}

# A check of scripts/ that takes one argument: its last lines, one record.
run_script_check()
{
    local title=$1 what=$2 script=$3 arg=$4 out rc
    section "$title"
    out=$(/usr/bin/python3 "$here/$script" "$arg" 2>&1)
    rc=$?
    echo "$out" | tail -n 20
    record "$what" "$rc"
}

# QEMU compiles postcopy-stubs.c only for hosts without userfaultfd:
# compile it here with the flags of a file of the module every host builds.
run_stubs_compile()
{
    run_script_check "postcopy-stubs.c (hosts without userfaultfd)" \
        "stubs: postcopy-stubs.c compiles" compile-stubs.py "$1"
}

# Comments that name a function must name one that exists.
run_comment_names()
{
    run_script_check "functions named in comments" \
        "comments: the functions they name exist" check-comment-names.py "$1"
}

run_checkpatch()
{
    local tree=$1 f out rc
    section "checkpatch.pl"
    for f in "$PCRAM_ROOT"/migration/*.[ch] "$PCRAM_ROOT"/tests/*/*.[ch] \
             "$PCRAM_ROOT"/guest/*.[ch] "$PCRAM_ROOT"/tools/*.c; do
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

# QEMU's own postcopy tests against build $1, but those whose paths the
# extended regular expression $2 (if any) matches.
run_qemu_postcopy_tests()
{
    local build=$1 skip=${2:-} line
    local log="$OUT/migration-test-postcopy$LOG_SUFFIX.log"
    section "QEMU migration-test --full: postcopy"
    mkdir -p "$(dirname "$log")"
    : > "$log"
    while read -r line; do
        echo "$line"
        case "$line" in
        PASS:*) PASSED=$((PASSED + 1)) ;;
        FAIL:*) FAILED=$((FAILED + 1)); FAILURES+=("qtest ${line#FAIL: }") ;;
        esac
    done < <(for prefix in "${QEMU_POSTCOPY_TESTS[@]}"; do
                 run_migration_tests "$build" "$prefix" 300 "$log" "$skip"
             done)
    echo "(full output: $log)"
}

# The last 25 of its arguments, each as "  | ARG".
print_last()
{
    [ $# -le 25 ] || shift $(($# - 25))
    [ $# -eq 0 ] || printf '  | %s\n' "$@"
}

run_our_qtests()
{
    local build=$1 guest=$2
    local log="$OUT/postcopy-ram-test$LOG_SUFFIX.log"
    local tap="$OUT/postcopy-ram-test$LOG_SUFFIX.tap" line rc
    local failed_before=$FAILED started
    section "qtest: postcopy-ram-test (this project's suite)"
    started=$SECONDS
    # Each TAP line as it comes, after the seconds since the start: how
    # long each test took is in the summary (CI's time is counted).
    # shellcheck disable=SC2086 # QTEST_PATHS: "-p PATH" words
    (cd "$build" && PCRAM_GUEST="$guest" \
     QTEST_QEMU_BINARY=./qemu-system-x86_64 \
     timeout --kill-after=10 1800 ./tests/qtest/postcopy-ram-test \
     --tap -k ${QTEST_PATHS:-}) 2> "$log" |
        while IFS= read -r line; do
            printf '%d %s\n' "$SECONDS" "$line"
        done > "$tap"
    rc=${PIPESTATUS[0]}
    # TAP lines: "ok N path", "not ok N path", "ok N path # SKIP why";
    # "# text" are the test's messages.  A failed test's last messages
    # are shown too (a refused QMP command's reply is among them): the
    # logs may be gone with the run.
    local -a said=()
    local at last_at=$started took
    while read -r at line; do
        took="($((at - last_at)) s)"
        case "$line" in
        "not ok "*)
            print_last "${said[@]}"
            echo "FAIL: ${line#not ok } $took"
            FAILED=$((FAILED + 1))
            FAILURES+=("postcopy-ram-test ${line#not ok }") ;;
        "ok "*"# SKIP"*)
            echo "SKIP: ${line#ok }" ;;
        "ok "*)
            echo "PASS: ${line#ok } $took"
            PASSED=$((PASSED + 1)) ;;
        "Bail out!"*)
            print_last "${said[@]}"
            echo "$line" ;;
        "# "*)
            said+=("${line#\# }")
            continue ;;
        esac
        said=()
        last_at=$at
    done < "$tap"
    # A crash or a timeout may leave no "not ok" line: then the exit
    # status counts.
    if [ "$rc" -ne 0 ] && [ "$FAILED" -eq "$failed_before" ]; then
        echo "FAIL: postcopy-ram-test exited with status $rc"
        FAILED=$((FAILED + 1))
        FAILURES+=("postcopy-ram-test: exit status $rc")
    fi
    echo "(output: $tap, $log)"
}

run_faults()
{
    local log="$OUT/faults-quick.log" line summary= failing=
    section "fault injection: scripts/faults.sh --quick"
    mkdir -p "$(dirname "$log")"
    : > "$log"
    while IFS= read -r line; do
        echo "$line" >> "$log"
        case "$line" in
        PASS:*) echo "${line%% (*}"; PASSED=$((PASSED + 1)); failing= ;;
        FAIL:*) echo "$line"; FAILED=$((FAILED + 1)); failing=1
                FAILURES+=("${line#FAIL: }") ;;
        faults:*) echo "$line"; summary=1; failing= ;;
        '') failing= ;;
        # A failed case's outcome goes on with both QEMUs' last log
        # lines: show them here too, the log may be gone with the run.
        *) [ -z "$failing" ] || echo "  | $line" ;;
        esac
    done < <("$here/faults.sh" --quick 2>&1)
    # A harness that died part-way leaves no summary line.
    if [ -z "$summary" ]; then
        record "faults.sh --quick ended early" 1
    fi
    echo "(full output: $log)"
}

# A case failed on purpose (faults.py --fail-on-purpose, after the source
# was killed in postcopy) must keep its work directory where its FAIL line
# says, with both QEMUs' logs and exit statuses, the timeline of their QMP
# events and the destination's trace (scripts/pcram/evidence.py).
run_faults_evidence()
{
    local log="$OUT/faults-evidence.log" dir f rc=0
    section "fault injection: a case failed on purpose keeps its files"
    mkdir -p "$(dirname "$log")"
    timeout --kill-after=30 300 "$here/faults.sh" --faults kill-src \
        --phases early --preempt off --fail-on-purpose > "$log" 2>&1
    grep '^FAIL:' "$log" | sed 's/^/  | /'
    dir=$(sed -n 's/^FAIL: faults .*; files: \(.*\))$/\1/p' "$log")
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then
        echo "no FAIL line naming a directory that is there"
        rc=1
    else
        # A log may be empty (a QEMU killed before it said anything).
        for f in source.log destination.log; do
            [ -f "$dir/$f" ] || { echo "$f: missing"; rc=1; }
        done
        for f in source.exit destination.exit events.log destination.trace; do
            [ -s "$dir/$f" ] || { echo "$f: missing or empty"; rc=1; }
        done
        for f in source destination; do
            grep -Eq "^[0-9.]+ [0-9:.]+ $f +event MIGRATION " \
                "$dir/events.log" ||
                { echo "events.log: no MIGRATION event of the $f"; rc=1; }
        done
        grep -qs 'postcopy_' "$dir/destination.trace" ||
            { echo "destination.trace: no event of the module"; rc=1; }
        [ $rc -eq 0 ] || ls -l "$dir"
        rm -rf "$dir"
        rmdir "$(dirname "$dir")" 2> /dev/null
    fi
    record "faults: a failed case keeps logs, exit statuses, events, trace" \
        "$rc"
    echo "(output: $log)"
}

# pcram.channel_race in mode $2 on the QEMU of build $1: $3 the section's
# title, $4 its log's name, $5 the log's lines to show (an ERE of their
# starts), $6 what is recorded.
run_channel_race_mode()
{
    local build=$1 mode=$2 title=$3 log="$OUT/$4$LOG_SUFFIX.log" rc
    section "fault injection: $title"
    mkdir -p "$(dirname "$log")"
    (cd "$here" && timeout --kill-after=30 300 python3 -m pcram.channel_race \
        "$build/qemu-system-x86_64" "$mode") > "$log" 2>&1
    rc=$?
    grep -E "^($5)" "$log"
    record "faults: $6" "$rc"
    echo "(output: $log)"
}

# QEMU 10.0 aborts a destination that a connection reaches while it pauses
# (docs/faults.md); a source paused in a recovery handshake, held by gdb at
# its preempt connect, must therefore open no channel.
run_channel_race()
{
    run_channel_race_mode "$1" --source-pause \
        "a source paused at its preempt connect" channel-race \
        'outcome|destination entered|FAILED' \
        "a source paused before its preempt connect opens none"
}

# A paused destination whose recovery port gets a connection that closes
# before its first byte: 10.0 pauses again and recovers with the source's
# own connection; 10.2's channel.c ends the destination, and faults.py
# must tell that exit of QEMU's apart (docs/faults.md).
run_recovery_eof()
{
    run_channel_race_mode "$1" --recovery-eof \
        "a recovery connection closed before its first byte" recovery-eof \
        'outcome|FAILED' "a recovery connection closed before its first byte"
}

# A short form of scripts/soak.sh: a few recoveries, both channel setups,
# and a few hops, each failing on any fd or thread left behind.
run_soak()
{
    local log="$OUT/soak.log" what rc
    section "long life: scripts/soak.sh --recoveries 10, --hops 3"
    mkdir -p "$(dirname "$log")"
    : > "$log"
    for what in "--recoveries 10" "--hops 3"; do
        # shellcheck disable=SC2086 # two words
        timeout --kill-after=30 900 "$here/soak.sh" $what >> "$log" 2>&1
        rc=$?
        grep '^soak:' "$log" | tail -n1
        record "soak.sh $what" "$rc"
    done
    echo "(output: $log)"
}

# A vhost-user back-end's faults through postcopy; "$@": --sanitize or
# nothing.
run_vhost_user()
{
    local log="$OUT/vhost-user$LOG_SUFFIX.log" line summary=
    section "vhost-user: scripts/vhost-user-test.sh${*:+ $*}"
    mkdir -p "$(dirname "$log")"
    : > "$log"
    while IFS= read -r line; do
        echo "$line" >> "$log"
        case "$line" in
        "vhost-user: "*" cases, "*) echo "$line"; summary=1 ;;
        "vhost-user: "*)
            echo "$line"
            case "$line" in
            *": clean;"*) record "${line%%: clean;*}" 0 > /dev/null ;;
            *) record "${line%%: FAILED*}" 1 > /dev/null ;;
            esac ;;
        esac
    done < <(timeout --kill-after=30 1200 "$here/vhost-user-test.sh" "$@" \
             2>&1)
    [ -n "$summary" ] || record "vhost-user-test.sh ended early" 1
    echo "(full output: $log)"
}

run_libvirt()
{
    local log="$OUT/libvirt-test.log" rc
    section "libvirt: scripts/libvirt-test.sh --cases after-precopy"
    mkdir -p "$(dirname "$log")"
    # A case takes under a minute; a hang ends here, and the harness
    # removes its hosts on the way out.
    timeout --kill-after=60 900 "$here/libvirt-test.sh" \
        --cases after-precopy --no-compare \
        --json "$OUT/libvirt-test.json" > "$log" 2>&1
    rc=$?
    grep -E '^libvirt [0-9]|^  (libvirt|the guest)' "$log"
    [ $rc -eq 0 ] || sed -n '/FAILED/,$p' "$log" | sed 's/^/  | /'
    record "libvirt: virsh migrate --live --postcopy --postcopy-after-precopy" \
        "$rc"
    echo "(output: $log)"
}

# Prints the build directory of scripts/build.sh "$@"; fails with it.
build_qemu()
{
    "$here/build.sh" "$@" qemu-system-x86_64 tests/qtest/migration-test \
        tests/qtest/postcopy-ram-test
}

run_plain()
{
    local skip_qemu=$1 build guest
    section "build"
    build=$(build_qemu) || die "the build failed; no tests ran"
    guest=$("$here/build-guest.sh") || die "the test guest did not build"
    run_unit_tests
    run_stubs_compile "$build"
    run_checkpatch "$(dirname "$build")"
    run_comment_names "$(dirname "$build")"
    if [ -z "$skip_qemu" ]; then
        run_qemu_postcopy_tests "$build"
        run_our_qtests "$build" "$guest"
        run_faults
        run_faults_evidence
        run_channel_race "$build"
        run_recovery_eof "$build"
        run_soak
        run_vhost_user
        run_libvirt
    fi
}

# With $1 non-empty, every qtest and vhost-user case (see the top).
run_sanitized()
{
    local sanitize_all=$1 build guest
    section "build (ASan, UBSan)"
    build=$(build_qemu --sanitize) ||
        die "the ASan/UBSan build failed; its tests did not run"
    guest=$("$here/build-guest.sh") || die "the test guest did not build"
    # The last step: nothing after it runs with these options.
    export_sanitizer_options
    LOG_SUFFIX=-sanitize
    section "under ASan and UBSan"
    if [ -n "$sanitize_all" ]; then
        run_qemu_postcopy_tests "$build"
        run_our_qtests "$build" "$guest"
        run_vhost_user --sanitize
    else
        # TLS is the channel under this module, zstd multifd's compression:
        # the paths their tests take through the module, others take here.
        run_qemu_postcopy_tests "$build" '/tls/|/zstd$'
        local paths="-p /x86_64/postcopy-ram/failure"
        paths+=" -p /x86_64/postcopy-ram/qtest-reads"
        QTEST_PATHS=$paths run_our_qtests "$build" "$guest"
        run_vhost_user --sanitize --cases main,pause,preempt,hotplug
    fi
    run_recovery_eof "$build"
}

# The placer's ring (tests/unit/test-postcopy-placer.c) under TSan, built
# against the TSan tree's libraries; its two-thread test is the point.
run_tsan_placer_ring()
{
    local build=$1 tree bin=$OUT/tsan/test-postcopy-placer rc
    tree=$(dirname "$build")
    # shellcheck disable=SC2046 # pkg-config's words
    gcc -fsanitize=thread -g -O1 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
        -fno-strict-aliasing -fno-common -fwrapv -mcx16 -iquote "$build" \
        -iquote "$tree/include" -iquote "$tree" \
        -iquote "$tree/host/include/x86_64" \
        -iquote "$tree/host/include/generic" -isystem "$tree/linux-headers" \
        -I"$PCRAM_ROOT/migration" $(pkg-config --cflags glib-2.0) \
        "$PCRAM_ROOT/tests/unit/test-postcopy-placer.c" \
        "$PCRAM_ROOT/migration/postcopy-placer.c" -o "$bin" \
        -Wl,--start-group "$build/libqemuutil.a" "$build"/libqom.a.p/*.o \
        "$build"/libevent-loop-base.a.p/*.o -Wl,--end-group \
        $(pkg-config --libs glib-2.0 gio-2.0 gobject-2.0 gmodule-2.0 \
          gnutls) -lm -lrt -lpthread
    rc=$?
    if [ $rc -eq 0 ]; then
        "$bin" > "$bin.log" 2>&1
        rc=$?
    fi
    record "tsan: placer ring (test-postcopy-placer)" "$rc"
}

run_tsan()
{
    local build logdir=$OUT/tsan rc
    section "build (TSan)"
    build=$(build_qemu --tsan) || die "the TSan build failed; nothing ran"
    rm -rf "$logdir"
    mkdir -p "$logdir"
    # Reports go to files and are sorted afterwards, so that QEMU's own
    # (there are many) do not end the run.  die_after_fork=0: the qtest,
    # instrumented too, forks QEMU after its own threads started.
    export TSAN_OPTIONS="log_path=$logdir/tsan die_after_fork=0 exitcode=0"
    export PCRAM_TIMEOUT_SCALE=10
    LOG_SUFFIX=-tsan
    section "under ThreadSanitizer"
    QTEST_PATHS="-p /x86_64/postcopy-ram/qtest-reads" \
        run_our_qtests "$build" ""
    run_tsan_placer_ring "$build"
    (cd "$here" && python3 -m pcram.tsan_reports "$logdir"/tsan.*) \
        > "$logdir/reports.txt"
    rc=$?
    grep '^tsan:' "$logdir/reports.txt"
    record "tsan: no unexplained report in the module" "$rc"
    echo "(reports: $logdir/reports.txt, logs: $logdir/tsan.*)"
}

# Selects QEMU version $1 for the steps that follow: its build, our build
# directory and logs (OUT), and its own postcopy tests (11 in 10.0; 10.2
# adds multifd with postcopy, under a path of its own).
switch_qemu_version()
{
    use_qemu_version "$1"
    OUT=$(our_build_dir)
    QEMU_POSTCOPY_TESTS=(/x86_64/migration/postcopy/)
    case "$QEMU_VERSION" in
    10.2.*) QEMU_POSTCOPY_TESTS+=(/x86_64/migration/multifd+postcopy/) ;;
    esac
    section "QEMU $QEMU_VERSION"
}

main()
{
    local mode=all version=$QEMU_DEFAULT_VERSION
    # With no --qemu, the sanitizer half runs on the newer QEMU: see the top.
    local sanitize_version=$SANITIZE_DEFAULT_VERSION sanitize_all=
    take_qemu_option "$@"
    set -- "${REST[@]}"
    if [ -n "$QEMU_VERSION_GIVEN" ]; then
        version=$QEMU_VERSION
        sanitize_version=$version
        sanitize_all=1
    fi
    case "${1:-}" in
    --skip-qemu-tests) mode=skip-qemu ;;
    --no-sanitize) mode=plain ;;
    --sanitize) mode=sanitize ;;
    --tsan) mode=tsan ;;
    "") ;;
    *) die "usage: test.sh [--qemu VERSION] [--no-sanitize | --sanitize |" \
           "--tsan | --skip-qemu-tests]" ;;
    esac
    case $mode in
    all) switch_qemu_version "$version"; run_plain ""
         switch_qemu_version "$sanitize_version"
         run_sanitized "$sanitize_all" ;;
    plain) switch_qemu_version "$version"; run_plain "" ;;
    skip-qemu) switch_qemu_version "$version"; run_plain 1 ;;
    sanitize) switch_qemu_version "$version"; run_sanitized 1 ;;
    tsan) switch_qemu_version "$version"; run_tsan ;;
    esac

    section "summary"
    if [ ${#FAILURES[@]} -gt 0 ]; then
        printf 'failed: %s\n' "${FAILURES[@]}"
    fi
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

main "$@"
