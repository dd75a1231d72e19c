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
#include <poll.h>
#include <sys/mount.h>
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "libqtest.h"
#include "qobject/qdict.h"
#include "migration/migration-qmp.h"
#include "migration/migration-util.h"

#define GUEST_MB        256
#define READY_TIMEOUT_S 120
#define VERIFY_TIMEOUT_S 120

/* One QEMU running pcguest, with its serial line. */
typedef struct Vm {
    QTestState *qts;
    int serial_fd;
    GString *pending;           /* serial bytes not yet split into lines */
} Vm;

typedef struct TestCase {
    const char *name;
    const char *pattern;
    int vcpus;
    const char *memory;         /* extra -object/-numa/-machine options */
    bool paused;                /* byte-exact test: migrate a stopped guest */
} TestCase;

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

static const char *accel_args(void)
{
    return access("/dev/kvm", R_OK | W_OK) ? "-accel tcg,thread=multi"
                                          : "-accel kvm";
}

static Vm vm_start(const TestCase *tc, const char *guest, bool incoming)
{
    g_autofree char *args = NULL;
    Vm vm = { .pending = g_string_new("") };

    /*
     * At postcopy's RUN the destination starts the guest unless QEMU was
     * given -S, whatever the source's state: keep a paused guest paused.
     * KVM writes kvmclock's page in guest RAM on the destination, so a
     * byte-exact guest keeps to the TSC.
     */
    args = g_strdup_printf("%s -machine q35 -m %dM -smp %d %s -kernel %s "
                           "-append 'pattern=%s writes=50%s' %s %s",
                           accel_args(), GUEST_MB, tc->vcpus,
                           tc->memory ? tc->memory : "", guest,
                           tc->pattern, tc->paused ? " clock=tsc" : "",
                           incoming ? "-incoming defer" : "",
                           incoming && tc->paused ? "-S" : "");
    vm.qts = qtest_init_with_serial(args, &vm.serial_fd);
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
}

/*
 * Precopy throttled to 32 MB/s for a second, so that most of the guest's
 * RAM is left for postcopy, then the switch.
 */
static void migrate_with_postcopy(Vm *src, Vm *dst)
{
    g_autofree char *uri = NULL;

    migrate_set_parameter_int(src->qts, "max-bandwidth", 32 * 1000 * 1000);
    migrate_incoming_qmp(dst->qts, "tcp:127.0.0.1:0", NULL, "{}");
    uri = migrate_get_connect_uri(dst->qts);
    migrate_qmp(src->qts, dst->qts, uri, NULL, "{}");
    wait_for_migration_status(src->qts, "active", NULL);
    g_usleep(G_USEC_PER_SEC);
    qtest_qmp_assert_success(src->qts,
                             "{ 'execute': 'migrate-start-postcopy' }");
    wait_for_migration_complete(src->qts);
    wait_for_migration_complete(dst->qts);
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

static void run_case(const void *opaque)
{
    const TestCase *tc = opaque;
    const char *guest = getenv("PCRAM_GUEST");
    g_autofree char *ready = NULL;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    Vm src, dst;

    if (!guest || access(guest, R_OK)) {
        g_test_skip("PCRAM_GUEST does not name the test guest");
        return;
    }
    tmpdir_create();
    dst = vm_start(tc, guest, true);
    src = vm_start(tc, guest, false);
    ready = vm_wait_line(&src, "PCG READY", READY_TIMEOUT_S);
    g_assert_nonnull(ready);
    g_test_message("%s", ready);
    set_postcopy_caps(&src, &dst);
    if (tc->paused) {
        qtest_qmp_assert_success(src.qts, "{ 'execute': 'stop' }");
        before = guest_ram_sha256(&src, "source", GUEST_MB * MiB);
    }

    migrate_with_postcopy(&src, &dst);

    if (tc->paused) {
        after = guest_ram_sha256(&dst, "destination", GUEST_MB * MiB);
        g_assert_cmpstr(before, ==, after);
        qtest_qmp_assert_success(dst.qts, "{ 'execute': 'cont' }");
    }
    guest_verify_all(&dst, tc->vcpus);
    vm_stop(&src);
    vm_stop(&dst);
    tmpdir_remove();
}

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
    qts = qtest_init_with_env("PCRAM_UNPRIVILEGED_QEMU",
                              "-accel tcg -machine q35 -m 64M "
                              "-incoming defer", true);
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
};

int main(int argc, char **argv)
{
    unsigned int i;

    g_test_init(&argc, &argv, NULL);
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autofree char *path = g_strdup_printf("/postcopy-ram/%s",
                                                cases[i].name);

        qtest_add_data_func(path, &cases[i], run_case);
    }
    qtest_add_func("/postcopy-ram/backend/hugetlbfs", test_hugetlbfs);
    qtest_add_func("/postcopy-ram/refused/unprivileged",
                   test_refused_unprivileged);
    return g_test_run();
}
