/*
 * qtest: postcopy migration of the project's test guest (pcguest) across
 * memory backends, access patterns and vCPU counts, and postcopy refused
 * where it cannot work.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Needs PCRAM_GUEST (the path of pcguest.bin, see guest/guest.c); every
 * test skips without it.  Run as root: /dev/userfaultfd and /dev/kvm are
 * root-only on Debian.  The guest checks every page it touches and, when
 * asked with 'v' on its serial line, all of its pages; a test passes only
 * when every vCPU reports no bad page.
 */

#include "qemu/osdep.h"
#include <math.h>
#include <poll.h>
#include <sys/mount.h>
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "libqtest.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qnum.h"
#include "migration/migration-qmp.h"
#include "migration/migration-util.h"

/* The QEMU tree this test is built in (config-host.h) */
#define QEMU_AT_LEAST(major, minor) \
    (QEMU_VERSION_MAJOR > (major) || \
     (QEMU_VERSION_MAJOR == (major) && QEMU_VERSION_MINOR >= (minor)))

#define GUEST_MB        256
/*
 * Seconds, times PCRAM_TIMEOUT_SCALE when it is set (a QEMU built with
 * ThreadSanitizer runs the guest about ten times slower).
 */
#define READY_TIMEOUT_S (120 * timeout_scale())
#define VERIFY_TIMEOUT_S (120 * timeout_scale())

struct Pair;

/* One QEMU running pcguest, with its serial line. */
typedef struct Vm {
    QTestState *qts;
    int serial_fd;
    GString *pending;           /* serial bytes not yet split into lines */
    /* Its trace file (-D), shown if it fails; NULL: none */
    const char *trace;
} Vm;

typedef struct TestCase {
    const char *name;
    const char *pattern;
    int vcpus;
    const char *memory;         /* extra -object/-numa/-machine options */
    bool paused;                /* byte-exact test: migrate a stopped guest */
    /*
     * Failure tests: the destination's QEMU_POSTCOPY_INJECT (fault points,
     * see migration/postcopy-inject.h) and what the test does then.
     */
    const char *inject;
    void (*during_postcopy)(struct Pair *pair);
    /*
     * QEMU_POSTCOPY_TUNE=placer=on on the destination: the placer gets
     * every page it can, not only while a fault waits (the default), for
     * the failure tests aimed at it.
     */
    bool placer_on;
    /* -smp maxcpus, and one vCPU hot-plugged on both sides before boot */
    int maxcpus;
    /*
     * The guest under TCG even where /dev/kvm is.  Under KVM the vCPU
     * threads touch guest RAM themselves, in the kernel, for work that the
     * main loop waits for (KVM_SET_MSRS writes kvmclock's page when the
     * guest starts at the switch): a case that keeps pages from the guest
     * on purpose would keep QMP from answering too.
     */
    bool tcg;
    /* postcopy-preempt on both sides */
    bool preempt;
    /*
     * Huge pages after postcopy: the destination's guest RAM must come
     * back to at least the source's share of transparent huge pages, or,
     * with .inject refusing every collapse, the refusal must be harmless.
     */
    bool huge;
    /*
     * With .huge, QEMU_POSTCOPY_TUNE=collapse-early=off on the
     * destination: the rebuild waits until every page is in.
     */
    bool collapse_at_end;
    /*
     * The destination traces its pauses, resumes and the fault thread's
     * messages: the fault thread must wait for every resume, and send
     * nothing while a recovery runs (assert_fault_thread_held()).
     */
    bool recovery_trace;
} TestCase;

/* The destination's trace options of a case with .recovery_trace */
#define RECOVERY_TRACE " -trace migrate_set_state" \
                       " -trace postcopy_pause_incoming" \
                       " -trace postcopy_fault_thread_pause" \
                       " -trace postcopy_request_send" \
                       " -trace loadvm_postcopy_handle_resume"
/* The source's: the page requests it got, with their RAMBlock's name */
#define SOURCE_RECOVERY_TRACE " -trace migrate_set_state" \
                              " -trace migrate_handle_rp_req_pages"

/* The environment variable @name as a number of at least @min; else 0. */
static int env_int_at_least(const char *name, int min)
{
    const char *text = getenv(name);
    int n;

    if (text && !qemu_strtoi(text, NULL, 10, &n) && n >= min) {
        return n;
    }
    return 0;
}

static int timeout_scale(void)
{
    return env_int_at_least("PCRAM_TIMEOUT_SCALE", 1) ?: 1;
}

/* Per-test temporary directory; removed by the abort handler too. */
static char *tmpdir;

static void remove_tmpdir(void *unused)
{
    g_autofree char *cmd = NULL;

    if (tmpdir) {
        cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        if (system(cmd)) {
            g_printerr("could not remove %s\n", tmpdir);
        }
        g_clear_pointer(&tmpdir, g_free);
    }
}

static void tmpdir_create(void)
{
    tmpdir = g_dir_make_tmp("postcopy-ram-test-XXXXXX", NULL);
    g_assert_nonnull(tmpdir);
    qtest_add_abrt_handler(remove_tmpdir, &tmpdir);
}

static void tmpdir_remove(void)
{
    qtest_remove_abrt_handler(&tmpdir);
    remove_tmpdir(NULL);
}

static const char *accel_args(const TestCase *tc)
{
    return tc->tcg || access("/dev/kvm", R_OK | W_OK) ?
           "-accel tcg,thread=multi" : "-accel kvm";
}

static Vm vm_start(const TestCase *tc, const char *guest, bool incoming)
{
    g_autofree char *args = NULL;
    g_autofree char *smp = NULL;
    Vm vm = { .pending = g_string_new("") };
    /* The source boots after its vCPU is plugged; see below. */
    bool stopped = incoming ? tc->paused : tc->maxcpus;

    /*
     * At postcopy's RUN the destination starts the guest unless QEMU was
     * given -S, whatever the source's state: keep a paused guest paused.
     * KVM writes kvmclock's page in guest RAM on the destination, so a
     * byte-exact guest keeps to the TSC.
     */
    smp = tc->maxcpus ? g_strdup_printf("%d,maxcpus=%d,sockets=%d,cores=1,"
                                        "threads=1", tc->vcpus, tc->maxcpus,
                                        tc->maxcpus)
                      : g_strdup_printf("%d", tc->vcpus);
    /*
     * -nodefaults: the default devices (the q35 CD-ROM among them) keep
     * the firmware half a minute under TCG before it boots the guest.
     */
    if (tc->recovery_trace || (incoming && tc->huge)) {
        vm.trace = g_strdup_printf("%s/%s.trace", tmpdir,
                                   incoming ? "destination" : "source");
    }
    args = g_strdup_printf("%s -nodefaults -machine q35 -m %dM -smp %s %s "
                           "-kernel %s "
                           "-append 'pattern=%s writes=50%s' %s %s%s%s",
                           accel_args(tc), GUEST_MB, smp,
                           tc->memory ? tc->memory : "", guest,
                           tc->pattern, tc->paused ? " clock=tsc" : "",
                           incoming ? "-incoming defer" : "",
                           stopped ? "-S" : "",
                           !vm.trace ? "" : tc->huge ?
                           " -trace 'postcopy_collapse_*' -D " :
                           incoming ? RECOVERY_TRACE " -D " :
                           SOURCE_RECOVERY_TRACE " -D ",
                           vm.trace ? vm.trace : "");
    if (incoming && tc->inject) {
        g_setenv("QEMU_POSTCOPY_INJECT", tc->inject, true);
    }
    if (incoming && tc->placer_on) {
        g_setenv("QEMU_POSTCOPY_TUNE", "placer=on", true);
    }
    if (incoming && tc->collapse_at_end) {
        g_setenv("QEMU_POSTCOPY_TUNE", "collapse-early=off", true);
    }
    vm.qts = qtest_init_with_serial(args, &vm.serial_fd);
    g_unsetenv("QEMU_POSTCOPY_INJECT");
    if (incoming && (tc->placer_on || tc->collapse_at_end)) {
        g_unsetenv("QEMU_POSTCOPY_TUNE");
    }
    if (tc->maxcpus) {
        /*
         * Its cpu_index is at or above -smp's count, the case the
         * destination's blocktime table must have room for.  The guest
         * reads the vCPU count from fw_cfg, which the plug updates.
         */
        qtest_qmp_assert_success(vm.qts, "{ 'execute': 'device_add', "
                                 "'arguments': { 'driver': "
                                 "'qemu64-x86_64-cpu', 'id': 'hotcpu', "
                                 "'socket-id': 1, 'core-id': 0, "
                                 "'thread-id': 0 } }");
        if (!incoming) {
            qtest_qmp_assert_success(vm.qts, "{ 'execute': 'cont' }");
        }
    }
    return vm;
}

static void vm_stop(Vm *vm)
{
    qtest_quit(vm->qts);
    close(vm->serial_fd);
    g_string_free(vm->pending, true);
}

/*
 * The next serial line starting with @prefix, or NULL after @timeout_s.
 * Lines with "PCG BAD" fail the test at once: the guest found a bad page.
 */
static char *vm_wait_line(Vm *vm, const char *prefix, int timeout_s)
{
    gint64 deadline = g_get_monotonic_time() + timeout_s * G_USEC_PER_SEC;

    for (;;) {
        char *nl = strchr(vm->pending->str, '\n');
        struct pollfd pfd = { .fd = vm->serial_fd, .events = POLLIN };
        char buf[4096];
        gint64 left;
        ssize_t n;

        while (nl) {
            g_autofree char *line = g_strndup(vm->pending->str,
                                              nl - vm->pending->str);

            g_string_erase(vm->pending, 0, nl - vm->pending->str + 1);
            if (g_str_has_prefix(line, "PCG BAD")) {
                g_test_message("%s", line);
                g_assert_not_reached();
            }
            if (g_str_has_prefix(line, prefix)) {
                return g_steal_pointer(&line);
            }
            nl = strchr(vm->pending->str, '\n');
        }
        left = deadline - g_get_monotonic_time();
        if (left <= 0) {
            return NULL;
        }
        if (poll(&pfd, 1, left / 1000 + 1) <= 0) {
            continue;
        }
        n = read(vm->serial_fd, buf, sizeof(buf));
        g_assert_cmpint(n, >, 0);
        g_string_append_len(vm->pending, buf, n);
    }
}

static void vm_send(Vm *vm, const char *text)
{
    g_assert_cmpint(write(vm->serial_fd, text, strlen(text)), ==,
                    strlen(text));
}

static void set_postcopy_caps(Vm *src, Vm *dst)
{
    migrate_set_capability(src->qts, "postcopy-ram", true);
    migrate_set_capability(dst->qts, "postcopy-ram", true);
    migrate_set_capability(dst->qts, "postcopy-blocktime", true);
    /* assert_postcopy_happened() reads the destination's states. */
    migrate_set_capability(dst->qts, "events", true);
}

static void set_preempt_caps(QTestState *src, QTestState *dst)
{
    migrate_set_capability(src, "postcopy-preempt", true);
    migrate_set_capability(dst, "postcopy-preempt", true);
}

/* A source and a destination running pcguest, and the case they run. */
typedef struct Pair {
    const TestCase *tc;
    Vm src, dst;
} Pair;

/* The migration status of @qts, as query-migrate gives it. */
static char *status_of(QTestState *qts)
{
    QDict *rsp = qtest_qmp_assert_success_ref(qts,
                                              "{ 'execute': 'query-migrate' }");
    char *status = g_strdup(qdict_get_try_str(rsp, "status"));

    qobject_unref(rsp);
    return status;
}

/*
 * Fail the test if @side (@vm) reports "failed", with QEMU's reason and
 * its trace.
 */
static void assert_not_failed(Vm *vm, const char *side, const char *status)
{
    g_autofree char *trace = NULL;
    QDict *rsp;

    if (strcmp(status, "failed")) {
        return;
    }
    rsp = qtest_qmp_assert_success_ref(vm->qts,
                                       "{ 'execute': 'query-migrate' }");
    g_test_message("the %s failed: %s", side,
                   qdict_get_try_str(rsp, "error-desc") ?: "(no reason)");
    qobject_unref(rsp);
    if (vm->trace && g_file_get_contents(vm->trace, &trace, NULL, NULL)) {
        g_auto(GStrv) lines = g_strsplit(trace, "\n", -1);
        int i;

        g_test_message("the %s's trace:", side);
        for (i = 0; lines[i]; i++) {
            g_test_message("  %s", lines[i]);
        }
    }
    g_assert_cmpstr(status, !=, "failed");
}

/*
 * Wait until both sides report @status.  Fails the test at once when
 * either reports "failed", or @status is not reached in @timeout_s.
 */
static void wait_both(Pair *pair, const char *status, int timeout_s)
{
    gint64 deadline = g_get_monotonic_time() + timeout_s * G_USEC_PER_SEC;

    for (;;) {
        g_autofree char *src = status_of(pair->src.qts);
        g_autofree char *dst = status_of(pair->dst.qts);

        assert_not_failed(&pair->src, "source", src);
        assert_not_failed(&pair->dst, "destination", dst);
        if (!strcmp(src, status) && !strcmp(dst, status)) {
            return;
        }
        /* Nothing comes after "completed": waiting longer is pointless. */
        if (g_get_monotonic_time() > deadline ||
            !strcmp(src, "completed") || !strcmp(dst, "completed")) {
            g_test_message("waited %d s for %s: source %s, destination %s",
                           timeout_s, status, src, dst);
            g_assert_not_reached();
        }
        g_usleep(20 * 1000);
    }
}

/*
 * Recover a paused postcopy over a new connection: a unix socket, or
 * with @tcp a TCP port of the destination's choosing.
 */
static void recover_over(Pair *pair, int round, bool tcp)
{
    g_autofree char *uri = NULL;

    wait_both(pair, "postcopy-paused", 60 * timeout_scale());
    if (tcp) {
        qtest_qmp_assert_success(pair->dst.qts, "{ 'execute': "
                                 "'migrate-recover', 'arguments': "
                                 "{ 'uri': 'tcp:127.0.0.1:0' } }");
        /* The newest listening address comes first. */
        uri = migrate_get_connect_uri(pair->dst.qts);
    } else {
        uri = g_strdup_printf("unix:%s/recover-%d", tmpdir, round);
        qtest_qmp_assert_success(pair->dst.qts, "{ 'execute': "
                                 "'migrate-recover', 'arguments': "
                                 "{ 'uri': %s } }", uri);
    }
    qtest_qmp_assert_success(pair->src.qts, "{ 'execute': 'migrate',"
                             " 'arguments': { 'uri': %s, 'resume': true } }",
                             uri);
}

static void recover(Pair *pair, int round)
{
    recover_over(pair, round, false);
}

/*
 * The destination listens on a port of its choosing, the source connects
 * to it; returns once the source's migration is active.
 */
static void migrate_until_active(Vm *src, Vm *dst)
{
    g_autofree char *uri = NULL;

    migrate_incoming_qmp(dst->qts, "tcp:127.0.0.1:0", NULL, "{}");
    uri = migrate_get_connect_uri(dst->qts);
    migrate_qmp(src->qts, dst->qts, uri, NULL, "{}");
    wait_for_migration_status(src->qts, "active", NULL);
}

/*
 * Precopy throttled to 32 MB/s for a second, so that most of the guest's
 * RAM is left for postcopy, then the switch.  Failure tests slow
 * postcopy down too, so that it is still running when they break it.
 */
static void migrate_with_postcopy(Pair *pair)
{
    Vm *src = &pair->src, *dst = &pair->dst;

    migrate_set_parameter_int(src->qts, "max-bandwidth", 32 * 1000 * 1000);
    if (pair->tc->during_postcopy) {
        migrate_set_parameter_int(src->qts, "max-postcopy-bandwidth",
                                  16 * 1000 * 1000);
    }
    migrate_until_active(src, dst);
    g_usleep(G_USEC_PER_SEC);
    qtest_qmp_assert_success(src->qts,
                             "{ 'execute': 'migrate-start-postcopy' }");
    if (pair->tc->during_postcopy) {
        pair->tc->during_postcopy(pair);
        migrate_set_parameter_int(src->qts, "max-postcopy-bandwidth", 0);
    }
    wait_for_migration_complete(src->qts);
    wait_for_migration_complete(dst->qts);
}

/*
 * The destination went through postcopy-active (its MIGRATION events),
 * and, where a running guest reads and writes all over its memory
 * (random and hot patterns), the source served page requests: postcopy
 * did happen, not a precopy that converged.  A sequential guest may
 * never fault: the background stream can stay ahead of its scan (seen
 * under ASan here), so it is not asked for requests.
 */
static void assert_postcopy_happened(Pair *pair)
{
    QDict *rsp, *ram;
    int64_t requests;

    migration_event_wait(pair->dst.qts, "postcopy-active");
    rsp = qtest_qmp_assert_success_ref(pair->src.qts,
                                       "{ 'execute': 'query-migrate' }");
    ram = qdict_get_qdict(rsp, "ram");
    g_assert_nonnull(ram);
    requests = qdict_get_int(ram, "postcopy-requests");
    g_test_message("postcopy-requests: %" PRId64, requests);
    if (!pair->tc->paused && strcmp(pair->tc->pattern, "seq")) {
        g_assert_cmpint(requests, >, 0);
    }
    qobject_unref(rsp);
}

/*
 * QEMU 10.1+ reports fault latencies on the destination.  The mean
 * (postcopy-latency) must lie within what the histogram allows: bucket N
 * holds waits of [2^N, 2^(N+1)) us, bucket 0 also the shorter ones, the
 * last also the longer ones.  Wrong counts or a wrong bucket fail this.
 */
static void assert_latency_consistent(Pair *pair, int vcpus)
{
#if QEMU_AT_LEAST(10, 1)
    QDict *rsp = qtest_qmp_assert_success_ref(pair->dst.qts,
                                              "{ 'execute': 'query-migrate' }");
    QList *dist = qdict_get_qlist(rsp, "postcopy-latency-dist");
    QList *per_vcpu = qdict_get_qlist(rsp, "postcopy-vcpu-latency");
    double low = 0, high = 0, mean;
    uint64_t faults = 0;
    const QListEntry *e;
    int bucket = 0;

    g_assert_nonnull(dist);
    g_assert_nonnull(per_vcpu);
    g_assert_true(qdict_haskey(rsp, "postcopy-non-vcpu-latency"));
    g_assert_cmpint(qlist_size(dist), ==, 24);
    g_assert_cmpint(qlist_size(per_vcpu), ==, vcpus);
    QLIST_FOREACH_ENTRY(dist, e) {
        uint64_t n = qnum_get_uint(qobject_to(QNum, qlist_entry_obj(e)));

        faults += n;
        low += bucket ? n * 1000.0 * (1ULL << bucket) : 0;
        high += bucket == 23 ? INFINITY : n * 1000.0 * (2ULL << bucket);
        bucket++;
    }
    mean = qnum_get_uint(qobject_to(QNum, qdict_get(rsp,
                                                     "postcopy-latency")));
    g_test_message("postcopy-latency: %.0f ns over %" PRIu64 " faults",
                   mean, faults);
    if (faults) {
        /* The mean is truncated to whole nanoseconds. */
        g_assert_cmpfloat((mean + 1) * faults, >=, low);
        g_assert_cmpfloat(mean * faults, <, high);
    } else {
        g_assert_cmpfloat(mean, ==, 0);
    }
    qobject_unref(rsp);
#endif
}

/* SHA-256 of the first @size bytes of guest-physical memory. */
static char *guest_ram_sha256(Vm *vm, const char *name, uint64_t size)
{
    g_autofree char *path = g_strdup_printf("%s/%s.ram", tmpdir, name);
    g_autofree char *data = NULL;
    gsize len;

    qtest_qmp_assert_success(vm->qts, "{ 'execute': 'pmemsave', 'arguments':"
                             " { 'val': 0, 'size': %" PRIu64 ", "
                             "'filename': %s } }", size, path);
    g_assert_true(g_file_get_contents(path, &data, &len, NULL));
    g_assert_cmpuint(len, ==, size);
    unlink(path);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *)data,
                                       len);
}

/* Ask the guest to check all of its pages; every vCPU must say bad=0. */
static void guest_verify_all(Vm *vm, int vcpus)
{
    int answered;

    vm_send(vm, "v");
    for (answered = 0; answered < vcpus; answered++) {
        g_autofree char *line = vm_wait_line(vm, "PCG V ",
                                             VERIFY_TIMEOUT_S);

        g_assert_nonnull(line);
        g_test_message("%s", line);
        g_assert_nonnull(strstr(line, " bad=0"));
    }
}

/* The lines of the file at @path, which must be readable. */
static GStrv file_lines(const char *path)
{
    g_autofree char *text = NULL;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    return g_strsplit(text, "\n", -1);
}

/* How many lines of the file at @path contain @what. */
static int count_lines_with(const char *path, const char *what)
{
    g_auto(GStrv) lines = file_lines(path);
    int i, n = 0;

    for (i = 0; lines[i]; i++) {
        n += strstr(lines[i], what) != NULL;
    }
    return n;
}

/*
 * Page requests the fault thread sent (postcopy_request_send) while a
 * recovery ran (from postcopy-recover-setup or postcopy-recover to the
 * next state): then only the load thread may send, the pending requests,
 * with mis->last_rb, which nothing locks.
 */
static int fault_thread_sends_in_recovery(const char *path)
{
    g_auto(GStrv) lines = file_lines(path);
    bool recovering = false;
    int i, n = 0;

    for (i = 0; lines[i]; i++) {
        if (strstr(lines[i], "migrate_set_state")) {
            recovering = strstr(lines[i],
                                "new state postcopy-recover") != NULL;
        } else if (recovering && strstr(lines[i], "postcopy_request_send")) {
            n++;
        }
    }
    return n;
}

/*
 * The fault thread waited for every resume (one wait per post of
 * postcopy_pause_sem_fault, which each resume makes) and sent nothing of
 * its own while a recovery ran.  A pause it missed (a recovery had set a
 * new return path before it looked) lets it send requests during the
 * recovery, beside the load thread's.
 */
static void assert_fault_thread_held(const char *trace)
{
    int resumes = count_lines_with(trace, "loadvm_postcopy_handle_resume");
    int waits = count_lines_with(trace, "postcopy_fault_thread_pause");
    int sends = fault_thread_sends_in_recovery(trace);

    g_test_message("%d resumes, %d waits of the fault thread, %d messages "
                   "of it during a recovery", resumes, waits, sends);
    g_assert_cmpint(resumes, >, 0);
    g_assert_cmpint(waits, ==, resumes);
    g_assert_cmpint(sends, ==, 0);
}

/*
 * At a resume the destination forgets which RAMBlock its last page request
 * named (savevm.c), so the first request on the new return path must name
 * its block: one without (QEMU traces "in (null)") would be taken by the
 * source for the block it last heard of before the pause.  Two threads
 * sending requests during a recovery could let one through (issue 40).
 * In the source's trace at @path: the first request of the migration,
 * and the first after each switch to postcopy-recover (a request then is
 * out of turn already) and from there to postcopy-active.  (QEMU 10.2's
 * first switch to postcopy-active comes from the migration thread, after
 * requests of postcopy-device: not a resume.)
 */
static void assert_requests_named_after_resume(const char *path)
{
    g_auto(GStrv) lines = file_lines(path);
    bool name_due = true, recovering = false;
    int i, requests = 0, nameless = 0, unnamed = 0;

    for (i = 0; lines[i]; i++) {
        if (strstr(lines[i], "migrate_set_state new state postcopy-recover")) {
            name_due = recovering = true;
        } else if (strstr(lines[i],
                          "migrate_set_state new state postcopy-active")) {
            name_due = name_due || recovering;
            recovering = false;
        } else if (strstr(lines[i], "migrate_handle_rp_req_pages")) {
            bool named = !strstr(lines[i], " in (null) ");

            requests++;
            nameless += !named;
            if (name_due && !named) {
                unnamed++;
                g_test_message("due a name: %s", lines[i]);
            }
            name_due = false;
        }
    }
    g_test_message("the source got %d page requests, %d without a block "
                   "name (the same block as the one before), %d of those "
                   "where a name was due", requests, nameless, unnamed);
    g_assert_cmpint(requests, >, 0);
    g_assert_cmpint(unnamed, ==, 0);
}

/* --- Huge pages after postcopy ----------------------------------------- */

/*
 * Bytes of the guest RAM (@size bytes) of QEMU @pid in transparent huge
 * pages: the AnonHugePages (ShmemPmdMapped for memfd) of its mappings of
 * that size that are writable and not executable (TCG's code buffer may
 * be as large).  Guest RAM is one mapping before a migration and once
 * the destination's cleanup allowed THP over all of it again; while
 * pages come in the module may split it.
 */
static uint64_t ram_huge_bytes(pid_t pid, uint64_t size)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/smaps", (int)pid);
    g_auto(GStrv) lines = file_lines(path);
    uint64_t total = 0;
    bool take = false;
    int i;

    for (i = 0; lines[i]; i++) {
        unsigned long long lo, hi, kb;
        char perms[8];

        if (sscanf(lines[i], "%llx-%llx %7s", &lo, &hi, perms) == 3) {
            take = hi - lo == size && perms[0] == 'r' && perms[1] == 'w' &&
                   perms[2] != 'x';
        } else if (take &&
                   (sscanf(lines[i], "AnonHugePages: %llu kB", &kb) == 1 ||
                    sscanf(lines[i], "ShmemPmdMapped: %llu kB", &kb) == 1)) {
            total += kb * KiB;
        }
    }
    return total;
}

/*
 * The source's guest RAM in huge pages before the migration, which the
 * destination must reach again; skips the test where the host gives the
 * guest too few to tell (THP off).
 */
static uint64_t huge_pages_of_source(Pair *pair)
{
    uint64_t huge = ram_huge_bytes(qtest_pid(pair->src.qts), GUEST_MB * MiB);

    g_test_message("source: %" PRIu64 " MiB of %d MiB in huge pages",
                   huge / MiB, GUEST_MB);
    return huge;
}

/*
 * The destination's trace once the collapse thread has said it is done
 * (its postcopy_collapse_done line), within 60 s.
 */
static char *wait_collapse_done(Pair *pair)
{
    gint64 deadline = g_get_monotonic_time() +
                      60 * timeout_scale() * G_USEC_PER_SEC;
    char *text = NULL;

    for (;;) {
        g_free(text);
        g_assert_true(g_file_get_contents(pair->dst.trace, &text, NULL,
                                          NULL));
        if (strstr(text, "postcopy_collapse_done")) {
            return text;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(200 * 1000);
    }
}

/* The first line of @trace that holds @what, without its newline. */
static char *trace_line(const char *trace, const char *what)
{
    const char *at = strstr(trace, what);

    g_assert_nonnull(at);
    return g_strndup(at, strcspn(at, "\n"));
}

/*
 * The destination rebuilds the huge pages that the discards and the
 * placement of base pages took away, from LISTEN on where every page is
 * in, and after postcopy the rest: the thread must have run while pages
 * came in (and not with .collapse_at_end), collapsed huge pages, the
 * guest's hot ones first of those left for the end, and the share must
 * be back to the source's once it is done.
 */
static void assert_huge_pages_back(Pair *pair, uint64_t source_huge)
{
    g_autofree char *trace = NULL;
    g_autofree char *start = NULL, *early = NULL, *done = NULL;
    const char *first_cold, *last_hot, *p;
    uint64_t huge;

    if (source_huge < GUEST_MB * MiB / 4) {
        g_test_skip("the source had few transparent huge pages: THP off?");
        return;
    }
    trace = wait_collapse_done(pair);
    huge = ram_huge_bytes(qtest_pid(pair->dst.qts), GUEST_MB * MiB);
    start = trace_line(trace, "postcopy_collapse_start");
    early = trace_line(trace, "postcopy_collapse_incoming_done");
    done = trace_line(trace, "postcopy_collapse_done");
    g_test_message("destination: %" PRIu64 " MiB in huge pages; %s; %s",
                   huge / MiB, early, done);
    g_assert_nonnull(strstr(start, pair->tc->collapse_at_end ?
                                   "while pages come in 0" :
                                   "while pages come in 1"));
    g_assert_null(strstr(done, "collapsed 0 "));
    g_assert_cmpuint(huge, >=, source_huge);
    /*
     * The guest faulted during postcopy: of the huge pages left for the
     * end, its own came first (all of them may be collapsed before).
     */
    first_cold = strstr(trace, " hot=0 ");
    last_hot = NULL;
    for (p = strstr(trace, " hot=1 "); p; p = strstr(p + 1, " hot=1 ")) {
        last_hot = p;
    }
    g_assert_true(!first_cold || !last_hot || last_hot < first_cold);
}

/*
 * Every collapse refused (as by a kernel before 6.1): the thread gives
 * the RAMBlock up after POSTCOPY_COLLAPSE_REFUSALS_MAX refusals (8), in
 * whichever pass they come, and ends, nothing is rebuilt, and the guest
 * runs on, which run_case() then checks page by page.
 */
static void assert_collapse_refused_harmlessly(Pair *pair,
                                               uint64_t source_huge)
{
    g_autofree char *trace = wait_collapse_done(pair);
    g_autofree char *done = trace_line(trace, "postcopy_collapse_done");
    QDict *rsp;

    g_assert_cmpint(count_lines_with(pair->dst.trace,
                                     "postcopy_collapse_refused"), ==, 8);
    g_assert_nonnull(strstr(done, "in all: collapsed 0 "));
    g_assert_nonnull(strstr(done, "(1 RAMBlocks given up)"));
    g_assert_cmpuint(ram_huge_bytes(qtest_pid(pair->dst.qts),
                                    GUEST_MB * MiB), <, source_huge);
    rsp = qtest_qmp_assert_success_ref(pair->dst.qts,
                                       "{ 'execute': 'query-status' }");
    g_assert_cmpstr(qdict_get_str(rsp, "status"), ==, "running");
    qobject_unref(rsp);
}

static void run_case(const void *opaque)
{
    const TestCase *tc = opaque;
    const char *guest = getenv("PCRAM_GUEST");
    g_autofree char *ready = NULL;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    uint64_t source_huge = 0;
    Pair pair = { .tc = tc };

    if (!guest || access(guest, R_OK)) {
        g_test_skip("PCRAM_GUEST does not name the test guest");
        return;
    }
    tmpdir_create();
    pair.dst = vm_start(tc, guest, true);
    pair.src = vm_start(tc, guest, false);
    ready = vm_wait_line(&pair.src, "PCG READY", READY_TIMEOUT_S);
    g_assert_nonnull(ready);
    g_test_message("%s", ready);
    if (tc->maxcpus) {
        g_assert_nonnull(strstr(ready, "cpus=2 "));
    }
    set_postcopy_caps(&pair.src, &pair.dst);
    if (tc->preempt) {
        set_preempt_caps(pair.src.qts, pair.dst.qts);
    }
    if (tc->paused) {
        qtest_qmp_assert_success(pair.src.qts, "{ 'execute': 'stop' }");
        before = guest_ram_sha256(&pair.src, "source", GUEST_MB * MiB);
    }
    if (tc->huge) {
        source_huge = huge_pages_of_source(&pair);
    }

    migrate_with_postcopy(&pair);
    assert_postcopy_happened(&pair);
    assert_latency_consistent(&pair, tc->maxcpus ? tc->maxcpus : tc->vcpus);
    if (tc->huge && !tc->inject) {
        assert_huge_pages_back(&pair, source_huge);
    } else if (tc->huge) {
        assert_collapse_refused_harmlessly(&pair, source_huge);
    }
    if (tc->recovery_trace) {
        assert_fault_thread_held(pair.dst.trace);
        assert_requests_named_after_resume(pair.src.trace);
    }

    if (tc->paused) {
        after = guest_ram_sha256(&pair.dst, "destination", GUEST_MB * MiB);
        g_assert_cmpstr(before, ==, after);
        qtest_qmp_assert_success(pair.dst.qts, "{ 'execute': 'cont' }");
    }
    guest_verify_all(&pair.dst, tc->maxcpus ? tc->maxcpus : tc->vcpus);
    vm_stop(&pair.src);
    vm_stop(&pair.dst);
    g_free((char *)pair.dst.trace);
    g_free((char *)pair.src.trace);
    tmpdir_remove();
}

/* --- Failures ------------------------------------------------------------ */

/*
 * Two placements fail: the placer's, and the load thread's retry of it
 * (or a placement of its own), which fails the load and pauses the
 * migration.  The error must not outlive the recovery.
 */
static void pause_then_recover(Pair *pair)
{
    recover(pair, 1);
}

/* @rounds times: half a second of postcopy, a pause, a recovery. */
static void pause_and_recover_rounds(Pair *pair, int rounds)
{
    int round;

    for (round = 1; round <= rounds; round++) {
        wait_both(pair, "postcopy-active", 60 * timeout_scale());
        g_usleep(G_USEC_PER_SEC / 2);
        migrate_pause(pair->dst.qts);
        recover(pair, round);
    }
}

/*
 * The fault thread's first request fails as if the return path broke, so
 * it waits for a recovery while the load thread goes on handing pages to
 * a placer that does not run (placer-hold); then the destination is
 * paused.  Pages handed over must not be left in the placer's ring across
 * the recovery: the destination would not list them as received, the
 * source would send them again, and they would be placed twice.
 */
static void fault_thread_first_then_pause(Pair *pair)
{
    pause_and_recover_rounds(pair, 3);
}

/*
 * At each pause the load thread reaches the module late (pause-late), when
 * the recovery may have given the destination a new return path already:
 * the fault thread, which the vCPUs keep busy, must wait all the same.
 */
static void pauses_reached_late(Pair *pair)
{
    pause_and_recover_rounds(pair, 5);
}

/* --- Faults from the test itself ---------------------------------------- */

/*
 * Both QEMUs run without a guest CPU (accel qtest): the test writes a
 * pattern into the source's RAM, switches to postcopy at once, and then
 * reads pages on the destination through qtest, each read a userfault
 * that the fault thread, the placer and (with preempt) the preempt
 * thread must serve.  No TCG runs, so this is the case that fits under
 * ThreadSanitizer (a TSan QEMU running a TCG guest outgrows 24 GB here).
 */
#define QREADS_MB       64
#define QREADS_BASE     (16 * MiB)
#define QREADS_PAGES    (QREADS_MB * MiB / 4096)

/* Every 16th page is left zero, the others filled with a byte of its own. */
static uint8_t qreads_byte(uint64_t page)
{
    return page % 16 ? (page * 7 + 1) % 251 + 1 : 0;
}

static void qreads_fill(QTestState *qts)
{
    g_autofree uint8_t *chunk = g_malloc(MiB);
    uint64_t page, off;

    for (off = 0; off < QREADS_MB * MiB; off += MiB) {
        for (page = 0; page < MiB / 4096; page++) {
            memset(chunk + page * 4096, qreads_byte((off / 4096) + page),
                   4096);
        }
        qtest_bufwrite(qts, QREADS_BASE + off, chunk, MiB);
    }
}

typedef struct QReadsCase {
    bool preempt;
    bool recover;               /* pause the destination half-way, recover */
    /*
     * The source leaves its send bound to its second look into postcopy
     * (QEMU_POSTCOPY_TUNE=recheck=only, migration/postcopy-tune.h), which
     * must take it once, and set nothing: precopy, throttled and brief,
     * measured no path.
     */
    bool recheck;
    /*
     * The source bounds its send queue at the switch (queue=send) and the
     * recovery goes over TCP: the new main channel must get the bound too
     * (recovery=keep, migration/postcopy-tune.h).
     */
    bool keep_bound;
    /*
     * The destination bounds its receive queue (queue=receive,rcvbuf=),
     * at the switch and on the recovery's channel (TCP, then), which a
     * pause may be closing meanwhile (the bound holds the return path's
     * lock).
     */
    bool receive_bound;
    /*
     * Reads before the pause; 0: 1000.  Without preempt a requested page
     * waits behind the throttled background stream, and 1000 reads can
     * outlast postcopy.
     */
    int first_reads;
    /*
     * Pause the destination this many times, each right after the
     * source's migrate resume returned, and recover: the resume races
     * the next pause.  The destination's QEMU_POSTCOPY_INJECT is
     * @inject, its placer takes every page (placer=on) and holds them
     * (placer-hold) until a pause drains it, which every pause must.
     */
    int resume_pauses;
    const char *inject;
} QReadsCase;

/* With the time of each event (-msg timestamp=on) */
#define QREADS_STATE_TRACE  "-msg timestamp=on -trace migrate_set_state" \
                            " -trace 'postcopy_pause*'" \
                            " -trace 'migration_completion*'"

/*
 * Where a test pauses postcopy, at least this much RAM must be left to
 * send (assert_far_from_done()).
 */
#define QREADS_PAUSE_MIN_LEFT   (16 * MiB)

/* The bandwidth both phases are throttled to, in a qtest-reads case */
#define QREADS_BANDWIDTH        (8 * 1000 * 1000)

/*
 * PCRAM_RESUME_PAUSES=N (2 or more), for a long loop under a sanitizer (a
 * ThreadSanitizer QEMU takes about a minute to start, so many windows per
 * try): a case with resume pauses makes N of them instead, every one
 * after the first reaching the module late (pause-late), the bandwidth cut
 * in proportion, down to 1 MB/s, so that the migration lasts them all.
 * 0: not set.
 */
static int resume_pauses_override(void)
{
    return env_int_at_least("PCRAM_RESUME_PAUSES", 2);
}

/* Word @word of @page on the destination must hold the page's byte. */
static void qreads_read(QTestState *dst, uint64_t page, unsigned int word)
{
    uint64_t want = 0x0101010101010101ULL * qreads_byte(page);
    uint64_t got = qtest_readq(dst, QREADS_BASE + page * 4096 + word * 8);

    if (got != want) {
        g_test_message("page %" PRIu64 ": read %016" PRIx64 ", wrote %016"
                       PRIx64, page, got, want);
        g_assert_not_reached();
    }
}

/* Read @count random pages on the destination. */
static void qreads_check(QTestState *dst, GRand *rand, int count)
{
    int i;

    for (i = 0; i < count; i++) {
        /* The page first, then the word: the sequence the seed gives. */
        uint64_t page = g_rand_int_range(rand, 0, QREADS_PAGES);

        qreads_read(dst, page, g_rand_int_range(rand, 0, 512));
    }
}

/*
 * QEMU's source fails the migration, instead of pausing it, when the
 * connection breaks while it completes postcopy (migration_completion():
 * all RAM sent, it waits for the destination to say it is done), and the
 * destination is then left paused with nobody to recover from.  A test
 * that pauses postcopy must do so well before that: say so if it did not.
 */
static void assert_far_from_done(QTestState *src)
{
    QDict *rsp = qtest_qmp_assert_success_ref(src,
                                              "{ 'execute': 'query-migrate' }");
    QDict *ram = qdict_get_qdict(rsp, "ram");
    int64_t left = ram ? qdict_get_int(ram, "remaining") : 0;

    qobject_unref(rsp);
    if (left < QREADS_PAUSE_MIN_LEFT) {
        g_test_message("only %" PRId64 " bytes left to send before the "
                       "pause: the reads took too long, and a pause now "
                       "could meet the source's completion, where QEMU "
                       "fails the migration rather than pause it", left);
        g_assert_not_reached();
    }
}

/*
 * Whether @rsp, a reply to migrate-pause on the destination, means the
 * pause is under way.  Besides a success, QEMU's "Failed to pause
 * destination migration" does: qmp_migrate_pause() marks the channel
 * failed before its shutdown(), and that shutdown fails when the load
 * thread, seeing the error, has closed the channel.  Asking again then
 * is unsafe: savevm.c's postcopy_pause_incoming() closes from_src_file
 * and clears it before the state leaves postcopy-active, and another
 * migrate-pause in that window uses a freed or NULL file
 * (docs/faults.md).
 */
static bool dst_pause_taken(QDict *rsp)
{
    QDict *err = qdict_get_qdict(rsp, "error");

    return qdict_haskey(rsp, "return") ||
           (err && !g_strcmp0(qdict_get_try_str(err, "desc"),
                              "Failed to pause destination migration"));
}

/*
 * migrate-pause on @qts as soon as it takes it: a destination still
 * "paused" from the last round, which the source's connection has not
 * reached yet, refuses it.
 */
static void pause_when_accepted(QTestState *qts)
{
    gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

    for (;;) {
        QDict *rsp = qtest_qmp(qts, "{ 'execute': 'migrate-pause' }");
        bool taken = dst_pause_taken(rsp);

        qobject_unref(rsp);
        if (taken) {
            return;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(1000);
    }
}

/*
 * Pause the destination @rounds times, each time as soon as the source's
 * migrate resume returned, when the destination is still in the resume's
 * handshake or just out of it, then recover.  The fault thread resumes
 * while the next pause closes the channel it came back on.
 */
static void pause_after_resume(Pair *pair, int rounds)
{
    int round;

    for (round = 1; round <= rounds; round++) {
        assert_far_from_done(pair->src.qts);
        pause_when_accepted(pair->dst.qts);
        recover(pair, round);
    }
    wait_both(pair, "postcopy-active", 60 * timeout_scale());
}

/*
 * Every pause of the destination (savevm.c traces each one) drained the
 * placer, whatever state a migrate-recover had moved it to meanwhile.
 * The recovery from the first pause of the case comes first.
 */
/* Every pause drained the placer, and held the fault thread. */
static void assert_every_pause_drained(const char *trace, int pauses)
{
    int paused = count_lines_with(trace, "postcopy_pause_incoming") -
                 count_lines_with(trace, "postcopy_pause_incoming_continued");
    int drained = count_lines_with(trace, "postcopy_placer_drained");

    g_test_message("%d pauses, %d drains of the placer", paused, drained);
    g_assert_cmpint(paused, ==, pauses);
    g_assert_cmpint(drained, ==, paused);
    assert_fault_thread_held(trace);
}

static void test_qtest_reads(const void *opaque)
{
    const QReadsCase *qc = opaque;
    const char *args = "-machine q35 -m 128M";
    g_autofree char *trace = NULL, *source_trace = NULL;
    g_autofree char *incoming = NULL, *outgoing = NULL;
    g_autofree char *before = NULL, *after = NULL;
    GRand *rand = g_rand_new_with_seed(42);
    int pauses = qc->resume_pauses;
    int pauses_override = resume_pauses_override();
    int64_t bandwidth = QREADS_BANDWIDTH;
    g_autofree char *inject = g_strdup(qc->inject);
    const TestCase tc = { .name = "qtest-reads" };
    Pair pair = { .tc = &tc };
    Vm *src = &pair.src, *dst = &pair.dst;
    QDict *rsp, *ram;

    if (pauses && pauses_override) {
        pauses = pauses_override;
        g_free(inject);
        inject = g_strdup_printf("placer-hold,pause-late=2:%d", pauses - 1);
        bandwidth = MAX(QREADS_BANDWIDTH * qc->resume_pauses / pauses,
                        1000 * 1000);
        g_test_message("%d resume pauses (PCRAM_RESUME_PAUSES), %s, "
                       "%" PRId64 " B/s", pauses, inject, bandwidth);
    }
    tmpdir_create();
    /*
     * Both sides trace their states (and the pauses), for the message of
     * a side that fails, and what the case checks.
     */
    trace = g_strdup_printf("%s/destination.trace", tmpdir);
    incoming = g_strdup_printf("%s -incoming defer %s%s -D %s", args,
                               QREADS_STATE_TRACE,
                               pauses ?
                               " -trace postcopy_placer_drained"
                               " -trace postcopy_fault_thread_pause"
                               " -trace postcopy_request_send"
                               " -trace loadvm_postcopy_handle_resume" :
                               qc->receive_bound ?
                               " -trace postcopy_queue_bound" : "",
                               trace);
    if (pauses) {
        g_setenv("QEMU_POSTCOPY_TUNE", "placer=on", true);
        g_setenv("QEMU_POSTCOPY_INJECT", inject, true);
    }
    if (qc->receive_bound) {
        g_setenv("QEMU_POSTCOPY_TUNE", "queue=receive,rcvbuf=1048576", true);
    }
    dst->qts = qtest_init(incoming);
    dst->trace = trace;
    g_unsetenv("QEMU_POSTCOPY_TUNE");
    g_unsetenv("QEMU_POSTCOPY_INJECT");
    source_trace = g_strdup_printf("%s/source.trace", tmpdir);
    outgoing = g_strdup_printf("%s %s%s -D %s", args, QREADS_STATE_TRACE,
                               qc->recheck ?
                               " -trace postcopy_queue_recheck" :
                               qc->keep_bound ?
                               " -trace postcopy_queue_*" : "",
                               source_trace);
    if (qc->recheck || qc->keep_bound) {
        g_setenv("QEMU_POSTCOPY_TUNE",
                 qc->recheck ? "recheck=only" : "queue=send", true);
    }
    src->qts = qtest_init(outgoing);
    src->trace = source_trace;
    g_unsetenv("QEMU_POSTCOPY_TUNE");
    qreads_fill(src->qts);
    before = guest_ram_sha256(src, "source", 128 * MiB);

    set_postcopy_caps(src, dst);
    if (qc->preempt) {
        set_preempt_caps(src->qts, dst->qts);
    }
    /* Slow enough that most pages are still missing when the reads come. */
    migrate_set_parameter_int(src->qts, "max-bandwidth", bandwidth);
    migrate_set_parameter_int(src->qts, "max-postcopy-bandwidth", bandwidth);
    migrate_until_active(src, dst);
    qtest_qmp_assert_success(src->qts,
                             "{ 'execute': 'migrate-start-postcopy' }");
    migration_event_wait(dst->qts, "postcopy-active");

    /* Held pages (placer-hold) could keep a read waiting for long. */
    if (!pauses) {
        qreads_check(dst->qts, rand, qc->first_reads ?: 1000);
    }
    if (qc->recover) {
        assert_far_from_done(src->qts);
        migrate_pause(dst->qts);
        recover_over(&pair, 1, qc->keep_bound || qc->receive_bound);
        wait_both(&pair, "postcopy-active", 60 * timeout_scale());
    }
    if (pauses) {
        pause_after_resume(&pair, pauses);
    }
    qreads_check(dst->qts, rand, 1000);

    rsp = qtest_qmp_assert_success_ref(src->qts,
                                       "{ 'execute': 'query-migrate' }");
    ram = qdict_get_qdict(rsp, "ram");
    g_test_message("postcopy-requests: %" PRId64,
                   qdict_get_int(ram, "postcopy-requests"));
    g_assert_cmpint(qdict_get_int(ram, "postcopy-requests"), >, 0);
    qobject_unref(rsp);

    migrate_set_parameter_int(src->qts, "max-postcopy-bandwidth", 0);
    wait_for_migration_complete(src->qts);
    wait_for_migration_complete(dst->qts);
    after = guest_ram_sha256(dst, "destination", 128 * MiB);
    g_assert_cmpstr(before, ==, after);

    g_rand_free(rand);
    qtest_quit(src->qts);
    qtest_quit(dst->qts);
    if (qc->recheck) {
        g_assert_cmpint(count_lines_with(source_trace,
                                         "postcopy_queue_recheck"), ==, 1);
        g_assert_cmpint(count_lines_with(source_trace,
                                         "bound 0, pace at 0 B/s"), ==, 1);
    }
    if (pauses) {
        assert_every_pause_drained(trace, pauses);
    }
    if (qc->receive_bound) {
        /* Set at the switch, then again on the recovery's connection. */
        g_assert_cmpint(count_lines_with(trace, "destination: rcvbuf "
                                         "1048576 bytes"), ==, 2);
    }
    if (qc->keep_bound) {
        /* Set at the switch, then again on the recovery's connection. */
        g_assert_cmpint(count_lines_with(source_trace,
                                         "postcopy_queue_new_channel"), ==, 1);
        g_assert_cmpint(count_lines_with(source_trace,
                                         "source: notsent-lowat"), ==, 2);
    }
    unlink(trace);
    unlink(source_trace);
    tmpdir_remove();
}

static const QReadsCase qreads_plain = { .recheck = true };
static const QReadsCase qreads_preempt = { .preempt = true,
                                           .recheck = true };
static const QReadsCase qreads_preempt_recovery = { .preempt = true,
                                                    .recover = true };
static const QReadsCase qreads_recovery_keeps_bound = { .recover = true,
                                                        .keep_bound = true,
                                                        .first_reads = 20 };
static const QReadsCase qreads_recovery_receive_bound = {
    .recover = true, .receive_bound = true, .first_reads = 20,
};
/*
 * Five of the pauses reach the module late (pause-late), after the
 * recovery has begun; none may skip the drain.
 */
static const QReadsCase qreads_pause_after_resume = {
    .resume_pauses = 30,
    .inject = "placer-hold,pause-late=2:5",
};

/* --- Huge pages -------------------------------------------------------- */

static const char *nr_hugepages = "/proc/sys/vm/nr_hugepages";
static char *hugetlbfs_dir;
static long hugepages_before = -1;

static long read_long(const char *path)
{
    g_autofree char *text = NULL;
    long value;

    if (!g_file_get_contents(path, &text, NULL, NULL) ||
        qemu_strtol(g_strstrip(text), NULL, 10, &value)) {
        return -1;
    }
    return value;
}

/* A plain write: /proc files cannot be replaced by a rename. */
static bool write_long(const char *path, long value)
{
    g_autofree char *text = g_strdup_printf("%ld\n", value);
    int fd = open(path, O_WRONLY);
    bool ok;

    if (fd < 0) {
        return false;
    }
    ok = write(fd, text, strlen(text)) == strlen(text);
    close(fd);
    return ok;
}

static void hugepages_release(void *unused)
{
    if (hugetlbfs_dir) {
        umount(hugetlbfs_dir);
        rmdir(hugetlbfs_dir);
        g_clear_pointer(&hugetlbfs_dir, g_free);
    }
    if (hugepages_before >= 0) {
        write_long(nr_hugepages, hugepages_before);
        hugepages_before = -1;
    }
}

/*
 * Reserve 2 MiB pages for both guests and mount hugetlbfs.  Returns the
 * mount point, or NULL with the reason given to g_test_skip().
 */
static const char *hugepages_reserve(void)
{
    long want = 2 * GUEST_MB / 2 + 8;

    if (geteuid() != 0) {
        g_test_skip("reserving huge pages needs root");
        return NULL;
    }
    hugepages_before = read_long(nr_hugepages);
    qtest_add_abrt_handler(hugepages_release, &hugepages_before);
    if (hugepages_before < 0 ||
        !write_long(nr_hugepages, hugepages_before + want) ||
        read_long(nr_hugepages) < hugepages_before + want) {
        hugepages_release(NULL);
        g_test_skip("could not reserve 2 MiB huge pages");
        return NULL;
    }
    hugetlbfs_dir = g_dir_make_tmp("postcopy-ram-hugetlbfs-XXXXXX", NULL);
    if (mount("none", hugetlbfs_dir, "hugetlbfs", 0, "pagesize=2M")) {
        hugepages_release(NULL);
        g_test_skip("could not mount hugetlbfs");
        return NULL;
    }
    return hugetlbfs_dir;
}

static void test_hugetlbfs(void)
{
    g_autofree char *memory = NULL;
    const char *dir = hugepages_reserve();
    TestCase tc = { .name = "hugetlbfs", .pattern = "random", .vcpus = 2 };

    if (!dir) {
        return;
    }
    memory = g_strdup_printf("-object memory-backend-file,id=m0,size=%dM,"
                             "mem-path=%s,share=on "
                             "-machine memory-backend=m0", GUEST_MB, dir);
    tc.memory = memory;
    run_case(&tc);
    qtest_remove_abrt_handler(&hugepages_before);
    hugepages_release(NULL);
}

/* --- Refusal ------------------------------------------------------------- */

/* QEMU started from the binary that environment variable @var names. */
static QTestState *init_with_qemu_from(const char *var, const char *args)
{
    /* QEMU 10.2's libqtest replaced qtest_init_with_env() with this. */
#if QEMU_AT_LEAST(10, 2)
    return qtest_init_ext(var, args, NULL, true);
#else
    return qtest_init_with_env(var, args, true);
#endif
}

/*
 * QEMU run as an unprivileged user cannot get a userfaultfd when
 * vm.unprivileged_userfaultfd is 0: setting postcopy-ram must fail and say
 * why.
 */
static void test_refused_unprivileged(void)
{
    const char *qemu = getenv("QTEST_QEMU_BINARY");
    g_autofree char *wrapped = NULL;
    QTestState *qts;
    QDict *resp;
    const char *desc;
    mode_t old_umask;

    if (geteuid() != 0) {
        g_test_skip("needs root to start QEMU as another user");
        return;
    }
    if (read_long("/proc/sys/vm/unprivileged_userfaultfd") != 0) {
        g_test_skip("vm.unprivileged_userfaultfd is not 0 here");
        return;
    }
    wrapped = g_strdup_printf("setpriv --reuid=65534 --regid=65534 "
                              "--clear-groups %s", qemu);
    g_setenv("PCRAM_UNPRIVILEGED_QEMU", wrapped, true);
    /* QEMU, as nobody, must be able to connect to libqtest's sockets. */
    old_umask = umask(0);
    /* Only a destination (-incoming) checks the host. */
    qts = init_with_qemu_from("PCRAM_UNPRIVILEGED_QEMU",
                              "-accel tcg -machine q35 -m 64M "
                              "-incoming defer");
    umask(old_umask);

    resp = qtest_qmp(qts, "{ 'execute': 'migrate-set-capabilities',"
                     "  'arguments': { 'capabilities': [ { 'capability':"
                     "  'postcopy-ram', 'state': true } ] } }");
    g_assert_true(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("refusal: %s", desc);
    g_assert_nonnull(strstr(desc, "userfaultfd is not permitted"));
    g_assert_nonnull(strstr(desc, "vm.unprivileged_userfaultfd is 0"));
    qobject_unref(resp);
    qtest_quit(qts);
}

static const TestCase cases[] = {
    { .name = "byte-exact", .pattern = "random", .vcpus = 1,
      .paused = true },
    { .name = "pattern/seq", .pattern = "seq", .vcpus = 2 },
    { .name = "pattern/random", .pattern = "random", .vcpus = 2 },
    { .name = "pattern/hot", .pattern = "hot", .vcpus = 2 },
    { .name = "backend/memfd", .pattern = "random", .vcpus = 2,
      .memory = "-object memory-backend-memfd,id=m0,size=256M,share=on "
                "-machine memory-backend=m0" },
    { .name = "backend/numa-blocks", .pattern = "random", .vcpus = 2,
      .memory = "-object memory-backend-ram,id=m0,size=128M "
                "-object memory-backend-ram,id=m1,size=128M "
                "-numa node,nodeid=0,cpus=0,memdev=m0 "
                "-numa node,nodeid=1,cpus=1,memdev=m1" },
    { .name = "vcpus/4", .pattern = "random", .vcpus = 4 },
    { .name = "vcpus/hotplugged", .pattern = "random", .vcpus = 1,
      .maxcpus = 2 },
    /* The placer fails its last pages; the load thread places them. */
    { .name = "failure/placer-last-pages", .pattern = "random", .vcpus = 1,
      .paused = true, .inject = "placer-hold,placer-fail",
      .placer_on = true },
    /* A placement error must not outlive its recovery. */
    { .name = "failure/placement-then-recovery", .pattern = "random",
      .vcpus = 2, .inject = "install-fail=2000:2",
      .during_postcopy = pause_then_recover, .placer_on = true },
    /* Nothing left in the placer's ring across a recovery. */
    { .name = "failure/ring-across-recovery", .pattern = "random",
      .vcpus = 2, .inject = "request-fail=1,placer-hold",
      .during_postcopy = fault_thread_first_then_pause, .placer_on = true,
      .tcg = true },
    /* Pauses that the load thread reaches late hold the fault thread. */
    { .name = "failure/pause-late", .pattern = "random", .vcpus = 2,
      .inject = "pause-late=1:5", .during_postcopy = pauses_reached_late,
      .recovery_trace = true, .tcg = true },
    /* A userfaultfd that cannot be read pauses the migration. */
    { .name = "failure/uffd-read", .pattern = "random", .vcpus = 2,
      .inject = "uffd-read-fail=1", .during_postcopy = pause_then_recover },
    /*
     * The placer holds its pages to the stream's tail and fails them
     * there, and so does the load thread: the load fails while the source
     * still sends, and the migration pauses and recovers.
     */
    { .name = "failure/place-leftovers", .pattern = "random", .vcpus = 1,
      .paused = true, .inject = "placer-hold,placer-fail,place-leftovers",
      .during_postcopy = pause_then_recover, .placer_on = true },
    /*
     * A placement on the preempt thread fails: the migration pauses, and
     * the page, which the source will not send again on its own, comes
     * after the recovery.
     */
    { .name = "failure/place-preempt", .pattern = "random", .vcpus = 2,
      .inject = "place-preempt=1", .during_postcopy = pause_then_recover,
      .preempt = true, .tcg = true },
    /* Huge pages come back, from LISTEN on where every page is in. */
    { .name = "huge-pages/rebuilt", .pattern = "random", .vcpus = 2,
      .huge = true },
    /* collapse-early=off: all of the rebuild once every page is in. */
    { .name = "huge-pages/rebuilt-at-end", .pattern = "random",
      .vcpus = 2, .huge = true, .collapse_at_end = true },
    /* The kernel refuses every collapse: nothing else happens. */
    { .name = "huge-pages/refused", .pattern = "random", .vcpus = 2,
      .huge = true, .inject = "collapse-refused=1:1000000" },
};

/*
 * A QEMU_POSTCOPY_TUNE that does not parse is ignored with a warning: the
 * process starts and serves QMP.  (The tuning is read at start-up, before
 * QEMU's monitor exists, where a report would abort QEMU.)
 */
static void test_bad_tune(void)
{
    QTestState *qts;
    QDict *rsp;

    g_setenv("QEMU_POSTCOPY_TUNE", "placer=always", true);
    qts = qtest_init("-machine none");
    g_unsetenv("QEMU_POSTCOPY_TUNE");
    rsp = qtest_qmp_assert_success_ref(qts, "{ 'execute': 'query-status' }");
    qobject_unref(rsp);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    unsigned int i;

    g_test_init(&argc, &argv, NULL);
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autofree char *path = g_strdup_printf("/postcopy-ram/%s",
                                                cases[i].name);

        qtest_add_data_func(path, &cases[i], run_case);
    }
    qtest_add_data_func("/postcopy-ram/qtest-reads/plain", &qreads_plain,
                        test_qtest_reads);
    qtest_add_data_func("/postcopy-ram/qtest-reads/preempt", &qreads_preempt,
                        test_qtest_reads);
    qtest_add_data_func("/postcopy-ram/qtest-reads/preempt-recovery",
                        &qreads_preempt_recovery, test_qtest_reads);
    qtest_add_data_func("/postcopy-ram/qtest-reads/recovery-keeps-bound",
                        &qreads_recovery_keeps_bound, test_qtest_reads);
    qtest_add_data_func("/postcopy-ram/qtest-reads/recovery-receive-bound",
                        &qreads_recovery_receive_bound, test_qtest_reads);
    qtest_add_data_func("/postcopy-ram/qtest-reads/pause-after-resume",
                        &qreads_pause_after_resume, test_qtest_reads);
    qtest_add_func("/postcopy-ram/backend/hugetlbfs", test_hugetlbfs);
    qtest_add_func("/postcopy-ram/refused/unprivileged",
                   test_refused_unprivileged);
    qtest_add_func("/postcopy-ram/refused/bad-tune", test_bad_tune);
    return g_test_run();
}
