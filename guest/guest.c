/*
 * pcguest: a freestanding x86-64 guest that keeps its memory busy, checks
 * every page it touches, and reports what it experiences over COM1.
 *
 * Copyright (c) 2026 The qemu-postcopy-ram authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Kernel command line (multiboot), all optional:
 *   pattern=seq|random|hot|wset
 *                            access pattern (default random); wset: a
 *                            working set, every access in the hot set
 *   writes=N                 percent of accesses that write (default 50)
 *   hot=N                    hot set, percent of pages (default 10); it
 *                            takes 90% of the accesses (hot), all (wset)
 *   interval=N               report interval in ms (default 100)
 *   clock=tsc                time with the TSC even under KVM: the host
 *                            writes kvmclock's page, so a byte-exact
 *                            comparison of guest RAM needs it off
 *   batch=N                  accesses timed together (a power of two up
 *                            to 256, default 32)
 *   cpl=0                    run the workload in kernel mode, not in user
 *                            mode (CPL 3, the default)
 *
 * The clock is read once per batch of accesses, not per access: where
 * reading it is costly (a TSC read that traps under nested KVM took more
 * than the access itself) timing each access measured the clock.  A batch's
 * time runs from the end of the previous batch to its own end, so that any
 * stall of the vCPU shows in its batch, not only one inside a touch.  The
 * clock's cost is measured at boot and reported (clock_ns).
 *
 * The workload runs in user mode.  The /dev/kvm of this project's machines
 * is PVM (kvm_pvm: no SVM or VMX underneath), which runs a guest's user
 * mode natively but its kernel mode instruction by instruction through
 * KVM's emulator: there an access took over 100 us per vCPU in kernel mode
 * and takes under 0.5 us in user mode (docs/bench/bench.md).  Under TCG
 * the mode makes no measurable difference.
 *
 * Every test page (all RAM above 64 MiB) carries a stamp derived from its
 * number and a per-page generation, at its start, middle and end.  A read
 * checks the three; a write checks, then bumps the generation and stamps
 * again.  A page that is zeroed, stale (an older generation), torn (its
 * three words disagree) or otherwise wrong is reported with its address.
 *
 * Output lines, one record each (docs/devel/migration/postcopy.rst):
 *   PCG READY cpus=C pages=P tsc_khz=K clock=kvmclock|tsc clock_ns=N
 *             batch=A cpl=0|3 pattern=X writes=W hot=H interval=I
 *   PCG I n=N t=MS ops=O0,O1,.. max=NS h=B:COUNT,..
 *             (max and the histogram h are of batch times)
 *   PCG BAD cpu=C page=P addr=0xA kind=K expect=0xE got=0xH,0xM,0xT
 *   PCG V cpu=C pages=P bad=B          (answer to the command 'v')
 *   PCG DISK reads=R writes=W bad=B errors=E inflight=0|1
 *                                      (a guest with a disk, before END)
 *   PCG END                            (answer to the command 'q')
 *   PCG DISK-START                     (answer to 'd', with a disk)
 *   PCG R addr=0xA value=0xV           (answer to 'r')
 *   PCG B addr=0xA good=0|1            (answer to 'b', with a disk)
 * The command 'd' starts the disk's reads and writes (disk.c).  The
 * command 'r', then a guest-physical address in hex and a newline, reads
 * the 8-byte word there on CPU 0 (any RAM the identity map covers, such
 * as a virtio-mem device's, which the test pages never touch).  The
 * command 'b' and an address the same way has the disk's next read put its
 * block at that address's page (once 'd' started the disk): the device,
 * not the guest, is then the first to touch the page; the answer comes
 * when the read is done, good=1 if it brought the right block.
 * Latency bucket B covers [(4 + B % 4) << (B / 4), (5 + B % 4) << (B / 4))
 * nanoseconds.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_CPUS        16
#define PAGE_SIZE       4096ULL
#define TEST_BASE       (64ULL << 20)
#define GEN_TABLE       (16ULL << 20)
#define GEN_TABLE_MAX   (TEST_BASE - GEN_TABLE)
#define MAX_REGIONS     8
#define NR_BUCKETS      256
#define STAMP_MAGIC     0x5043470000000000ULL   /* "PCG" */
#define GEN_MASK        0xffffffULL
#define MAX_BAD_REPORTS 20
#define LAPIC           0xFEE00000UL
#define COM1            0x3F8
#define ARRAY_SIZE(a)   (sizeof(a) / sizeof((a)[0]))

/* Selectors of boot.S's GDT, and what user mode needs */
#define KERNEL_CS       0x08
#define USER_DS         0x1b
#define USER_CS         0x23
#define MSR_EFER        0xC0000080
#define MSR_STAR        0xC0000081
#define MSR_LSTAR       0xC0000082
#define MSR_FMASK       0xC0000084
#define EFER_SCE        (1ULL << 0)
#define RFLAGS_FIXED    (1ULL << 1)
#define RFLAGS_IF       (1ULL << 9)
#define RFLAGS_IOPL3    (3ULL << 12)

#include "guest.h"
#include "io.h"

/* --- TSC ------------------------------------------------------------------ */

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return (uint64_t)hi << 32 | lo;
}

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" : : : "memory");
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b,
                         uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
                     : "a"(leaf), "c"(0));
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;

    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v),
                     "d"((uint32_t)(v >> 32)));
}

/*
 * The guest's clock, in nanoseconds.  Under KVM, kvmclock: a vCPU that the
 * host blocks (a postcopy fault, say) may find its TSC not advanced by the
 * time it was blocked, while kvmclock follows the host's time.  Elsewhere
 * (TCG), the TSC scaled by its calibrated rate.
 */
struct pvclock {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t mul;
    int8_t shift;
    uint8_t flags, pad[2];
} __attribute__((aligned(64)));

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_SYSTEM_TIME     0x12

static struct pvclock pvclocks[MAX_CPUS];
static bool use_kvmclock;
static uint64_t tsc_khz;

static bool kvmclock_available(void)
{
    uint32_t a, b, c, d;

    cpuid(0x40000000, &a, &b, &c, &d);
    /* "KVMKVMKVM\0\0\0" */
    if (b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d || a < 0x40000001) {
        return false;
    }
    cpuid(0x40000001, &a, &b, &c, &d);
    return a & (1 << 3);                    /* KVM_FEATURE_CLOCKSOURCE2 */
}

static bool kvm_msrs;                   /* the KVM clock MSRs exist */

/*
 * Point this vCPU's kvmclock at our page, or switch off the one firmware
 * (SeaBIOS) may have left on: the host writes that page, which a
 * byte-exact comparison of guest RAM cannot allow.
 */
static void clock_enable(unsigned int cpu)
{
    if (use_kvmclock) {
        wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)&pvclocks[cpu] | 1);
    } else if (kvm_msrs) {
        wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0);
        wrmsr(MSR_KVM_SYSTEM_TIME, 0);
    }
}

static uint64_t clock_ns(unsigned int cpu)
{
    /* volatile: the host rewrites it under our feet */
    const volatile struct pvclock *pv = &pvclocks[cpu];
    uint32_t version;
    uint64_t ns;

    if (!use_kvmclock) {
        uint64_t tsc = rdtsc();

        /* Split, so that the product cannot overflow 64 bits. */
        return tsc / tsc_khz * 1000000 + tsc % tsc_khz * 1000000 / tsc_khz;
    }
    do {
        uint64_t delta;

        version = pv->version;
        __asm__ volatile("" : : : "memory");
        delta = rdtsc() - pv->tsc_timestamp;
        delta = pv->shift < 0 ? delta >> -pv->shift : delta << pv->shift;
        ns = pv->system_time +
             (uint64_t)(((unsigned __int128)delta * pv->mul) >> 32);
        __asm__ volatile("" : : : "memory");
    } while ((version & 1) || version != pv->version);
    return ns;
}

/* --- Serial output -------------------------------------------------------- */

static int serial_lock;                 /* taken with atomic exchange */

static void serial_putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20)) {
        cpu_relax();
    }
    outb(COM1, c);
}

static int serial_getc(void)
{
    return (inb(COM1 + 5) & 1) ? inb(COM1) : -1;
}

/* A line is built in a buffer and written under the lock. */
typedef struct Line {
    char buf[1024];
    size_t len;
} Line;

static void put_str(Line *l, const char *s)
{
    while (*s && l->len < sizeof(l->buf) - 2) {
        l->buf[l->len++] = *s++;
    }
}

static void put_uint(Line *l, uint64_t v, unsigned int base)
{
    char tmp[24];
    int i = 0;

    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (i && l->len < sizeof(l->buf) - 2) {
        l->buf[l->len++] = tmp[--i];
    }
}

/* " name=value" (decimal), as every report line is made of. */
static void put_field(Line *l, const char *name, uint64_t v)
{
    put_str(l, name);
    put_uint(l, v, 10);
}

static void put_hex(Line *l, uint64_t v)
{
    put_str(l, "0x");
    put_uint(l, v, 16);
}

static void line_send(Line *l)
{
    size_t i;

    l->buf[l->len++] = '\n';
    while (__atomic_exchange_n(&serial_lock, 1, __ATOMIC_ACQUIRE)) {
        cpu_relax();
    }
    for (i = 0; i < l->len; i++) {
        serial_putc(l->buf[i]);
    }
    __atomic_store_n(&serial_lock, 0, __ATOMIC_RELEASE);
    l->len = 0;
}

static void say(const char *s)
{
    Line l = { .len = 0 };

    put_str(&l, s);
    line_send(&l);
}

/* --- Firmware: fw_cfg, multiboot, PIT ------------------------------------- */

static uint16_t fw_cfg_read16(uint16_t key)
{
    outw(0x510, key);
    return inb(0x511) | (uint16_t)inb(0x511) << 8;
}

struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
    uint32_t mods_count, mods_addr, syms[4], mmap_length, mmap_addr;
};

struct mb_mmap {
    uint32_t size;
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

/* TSC cycles per millisecond, from a 50 ms PIT channel 2 one-shot. */
static uint64_t calibrate_tsc_khz(void)
{
    const uint16_t count = 59659;           /* 50 ms at 1.193182 MHz */
    uint64_t t0, t1;

    outb(0x61, (inb(0x61) & ~0x02) | 0x01); /* gate on, speaker off */
    outb(0x43, 0xB0);                       /* channel 2, lo/hi, mode 0 */
    outb(0x42, count & 0xff);
    outb(0x42, count >> 8);
    t0 = rdtsc();
    while (!(inb(0x61) & 0x20)) {
        cpu_relax();
    }
    t1 = rdtsc();
    return (t1 - t0) / 50;
}

/* --- Configuration -------------------------------------------------------- */

enum { PATTERN_SEQ, PATTERN_RANDOM, PATTERN_HOT, PATTERN_WSET };
static const char *const pattern_names[] = { "seq", "random", "hot", "wset" };

#define ACCESS_ROUND    256     /* accesses between two looks at commands */

static struct {
    int pattern;
    unsigned int writes, hot, interval_ms;
    unsigned int batch;                 /* divides ACCESS_ROUND */
    bool tsc_only;
    bool kernel_mode;                   /* run the workload at CPL 0 */
} cfg = { PATTERN_RANDOM, 50, 10, 100, 32, false, false };

static bool str_starts(const char *s, const char *prefix)
{
    while (*prefix) {
        if (*s++ != *prefix++) {
            return false;
        }
    }
    return true;
}

static unsigned int parse_uint(const char *s)
{
    unsigned int v = 0;

    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
    }
    return v;
}

static void parse_cmdline(const char *s)
{
    while (s && *s) {
        unsigned int i;

        if (str_starts(s, "pattern=")) {
            for (i = 0; i < ARRAY_SIZE(pattern_names); i++) {
                if (str_starts(s + 8, pattern_names[i])) {
                    cfg.pattern = i;
                }
            }
        } else if (str_starts(s, "writes=")) {
            cfg.writes = parse_uint(s + 7);
        } else if (str_starts(s, "hot=")) {
            cfg.hot = parse_uint(s + 4);
        } else if (str_starts(s, "interval=")) {
            cfg.interval_ms = parse_uint(s + 9);
        } else if (str_starts(s, "clock=tsc")) {
            cfg.tsc_only = true;
        } else if (str_starts(s, "cpl=0")) {
            cfg.kernel_mode = true;
        } else if (str_starts(s, "batch=")) {
            cfg.batch = parse_uint(s + 6);
        }
        while (*s && *s != ' ') {
            s++;
        }
        while (*s == ' ') {
            s++;
        }
    }
    if (cfg.writes > 100) {
        cfg.writes = 100;
    }
    if (cfg.hot < 1 || cfg.hot > 100) {
        cfg.hot = 10;
    }
    if (!cfg.interval_ms) {
        cfg.interval_ms = 100;
    }
    if (!cfg.batch || cfg.batch > ACCESS_ROUND ||
        cfg.batch & (cfg.batch - 1)) {
        cfg.batch = 32;
    }
}

/* --- Test pages ----------------------------------------------------------- */

static struct {
    uint64_t base, pages, first;        /* first: number of its first page */
} regions[MAX_REGIONS];
static unsigned int nr_regions;
static uint64_t total_pages;
uint64_t disk_area;                     /* 0: no room for a disk */
static uint32_t *gen;                   /* generation of each page */

static void find_test_memory(const struct mb_info *mbi)
{
    uint64_t p = mbi->mmap_addr, end = p + mbi->mmap_length;

    while (p < end && nr_regions < MAX_REGIONS) {
        const struct mb_mmap *m = (const struct mb_mmap *)p;
        uint64_t lo = m->base, hi = m->base + m->length;

        p += m->size + 4;
        if (m->type != 1 || hi <= TEST_BASE) {
            continue;
        }
        if (lo < TEST_BASE) {
            lo = TEST_BASE;
        }
        lo = (lo + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
        hi &= ~(PAGE_SIZE - 1);
        if (hi <= lo) {
            continue;
        }
        regions[nr_regions].base = lo;
        regions[nr_regions].pages = (hi - lo) / PAGE_SIZE;
        regions[nr_regions].first = total_pages;
        total_pages += regions[nr_regions].pages;
        nr_regions++;
    }
    /* The disk's area: the end of the last region, if it is big enough. */
    if (nr_regions && disk_probe() &&
        regions[nr_regions - 1].pages > 2 * DISK_AREA_SIZE / PAGE_SIZE) {
        regions[nr_regions - 1].pages -= DISK_AREA_SIZE / PAGE_SIZE;
        total_pages -= DISK_AREA_SIZE / PAGE_SIZE;
        disk_area = regions[nr_regions - 1].base +
                    regions[nr_regions - 1].pages * PAGE_SIZE;
    }
    /* The generation table must fit below the test pages. */
    if (total_pages * sizeof(uint32_t) > GEN_TABLE_MAX) {
        total_pages = GEN_TABLE_MAX / sizeof(uint32_t);
    }
    gen = (uint32_t *)GEN_TABLE;
}

static uint64_t *page_addr(uint64_t page)
{
    unsigned int r = 0;

    while (r + 1 < nr_regions && page >= regions[r + 1].first) {
        r++;
    }
    return (uint64_t *)(regions[r].base +
                        (page - regions[r].first) * PAGE_SIZE);
}

static uint64_t stamp(uint64_t page, uint32_t g)
{
    return STAMP_MAGIC ^ (page << 24) ^ g;
}

/* Word offsets of the three stamps in a page. */
#define HEAD 0
#define MID  (PAGE_SIZE / 16)
#define TAIL (PAGE_SIZE / 8 - 1)

/* --- Per-CPU state -------------------------------------------------------- */

typedef struct Cpu {
    unsigned int index;
    uint64_t first_local, nr_local;     /* its pages: local i is i*n+index */
    uint64_t rng;
    uint64_t cursor;
    uint64_t ops;
    uint64_t interval_max;              /* xchg'ed to 0 by the reporter */
    uint64_t bad;
    unsigned int bad_reported;
    uint32_t verify_seen;
    uint32_t hist[NR_BUCKETS];
} __attribute__((aligned(64))) Cpu;

static Cpu cpus[MAX_CPUS];
static unsigned int nr_cpus;
/* Shared between the vCPUs; read and written with __atomic builtins. */
static unsigned int cpus_ready;
static uint32_t verify_requests;
static bool stop_requested;
static unsigned int cpus_stopped;

static uint64_t rng_next(Cpu *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 0x2545F4914F6CDD1DULL;
}

static unsigned int bucket_of(uint64_t ns)
{
    unsigned int msb;

    if (ns < 4) {
        return 0;
    }
    msb = 63 - __builtin_clzll(ns);
    return msb * 4 + ((ns >> (msb - 2)) & 3) - 8;
}

static void report_bad(Cpu *c, uint64_t page, const uint64_t *p,
                       uint64_t expect, const char *kind)
{
    Line l = { .len = 0 };

    c->bad++;
    if (c->bad_reported++ >= MAX_BAD_REPORTS) {
        return;
    }
    put_str(&l, "PCG BAD cpu=");
    put_uint(&l, c->index, 10);
    put_str(&l, " page=");
    put_uint(&l, page, 10);
    put_str(&l, " addr=");
    put_hex(&l, (uint64_t)p);
    put_str(&l, " kind=");
    put_str(&l, kind);
    put_str(&l, " expect=");
    put_hex(&l, expect);
    put_str(&l, " got=");
    put_hex(&l, p[HEAD]);
    put_str(&l, ",");
    put_hex(&l, p[MID]);
    put_str(&l, ",");
    put_hex(&l, p[TAIL]);
    line_send(&l);
}

/* What went wrong with a page whose stamps are not all @expect. */
static const char *classify(uint64_t page, const uint64_t *p, uint32_t g)
{
    uint64_t h = p[HEAD];

    if (!p[HEAD] && !p[MID] && !p[TAIL]) {
        return "zeroed";
    }
    if (h != p[MID] || h != p[TAIL]) {
        return "torn";
    }
    if (((h ^ STAMP_MAGIC) >> 24) == page && (h & GEN_MASK) != g) {
        return "stale";
    }
    return "corrupt";
}

static void write_stamps(uint64_t *p, uint64_t v)
{
    p[HEAD] = v;
    p[MID] = v;
    p[TAIL] = v;
}

static uint32_t next_gen(uint32_t g)
{
    g = (g + 1) & GEN_MASK;
    return g ? g : 1;
}

/* Check one page; rewrite it when asked to or when it was wrong. */
static void touch(Cpu *c, uint64_t page, bool write)
{
    uint64_t *p = page_addr(page);
    uint32_t g = gen[page];
    uint64_t expect = stamp(page, g);

    if (p[HEAD] != expect || p[MID] != expect || p[TAIL] != expect) {
        report_bad(c, page, p, expect, classify(page, p, g));
        write = true;                       /* repair, keep going */
    }
    if (write) {
        g = next_gen(g);
        gen[page] = g;
        write_stamps(p, stamp(page, g));
    }
}

static uint64_t pick_local(Cpu *c)
{
    uint64_t hot_pages;

    switch (cfg.pattern) {
    case PATTERN_SEQ:
        c->cursor = c->cursor + 1 < c->nr_local ? c->cursor + 1 : 0;
        return c->cursor;
    case PATTERN_HOT:
    case PATTERN_WSET:
        hot_pages = c->nr_local * cfg.hot / 100;
        if (hot_pages &&
            (cfg.pattern == PATTERN_WSET || rng_next(c) % 10 != 0)) {
            return rng_next(c) % hot_pages;
        }
        /* fall through */
    default:
        return rng_next(c) % c->nr_local;
    }
}

static uint64_t global_page(Cpu *c, uint64_t local)
{
    return local * nr_cpus + c->index;
}

static void init_pages(Cpu *c)
{
    uint64_t i;

    for (i = 0; i < c->nr_local; i++) {
        uint64_t page = global_page(c, i);

        gen[page] = 1;
        write_stamps(page_addr(page), stamp(page, 1));
    }
}

static void verify_all(Cpu *c)
{
    uint64_t i, bad_before = c->bad;
    Line l = { .len = 0 };

    for (i = 0; i < c->nr_local; i++) {
        touch(c, global_page(c, i), false);
    }
    put_str(&l, "PCG V cpu=");
    put_uint(&l, c->index, 10);
    put_str(&l, " pages=");
    put_uint(&l, c->nr_local, 10);
    put_str(&l, " bad=");
    put_uint(&l, c->bad - bad_before, 10);
    line_send(&l);
}

/* --- Reporting (CPU 0) ---------------------------------------------------- */

static uint32_t hist_last[MAX_CPUS][NR_BUCKETS];
static uint64_t ops_last[MAX_CPUS];

static void report_interval(uint64_t n, uint64_t t_ms)
{
    Line l = { .len = 0 };
    uint64_t max = 0;
    unsigned int i, b;

    put_str(&l, "PCG I n=");
    put_uint(&l, n, 10);
    put_str(&l, " t=");
    put_uint(&l, t_ms, 10);
    put_str(&l, " ops=");
    for (i = 0; i < nr_cpus; i++) {
        uint64_t ops = __atomic_load_n(&cpus[i].ops, __ATOMIC_RELAXED);
        uint64_t m = __atomic_exchange_n(&cpus[i].interval_max, 0,
                                         __ATOMIC_RELAXED);

        put_uint(&l, ops - ops_last[i], 10);
        put_str(&l, i + 1 < nr_cpus ? "," : "");
        ops_last[i] = ops;
        max = m > max ? m : max;
    }
    put_str(&l, " max=");
    put_uint(&l, max, 10);
    put_str(&l, " h=");
    for (b = 0; b < NR_BUCKETS; b++) {
        uint64_t sum = 0;

        for (i = 0; i < nr_cpus; i++) {
            uint32_t h = __atomic_load_n(&cpus[i].hist[b], __ATOMIC_RELAXED);

            sum += h - hist_last[i][b];
            hist_last[i][b] = h;
        }
        if (sum) {
            put_uint(&l, b, 10);
            put_str(&l, ":");
            put_uint(&l, sum, 10);
            put_str(&l, ",");
        }
    }
    line_send(&l);
}

/* The answer to 'b', once the disk's aimed read is done. */
static void say_aimed_read(void)
{
    Line l = { .len = 0 };

    if (!disk_stats.aimed_done) {
        return;
    }
    disk_stats.aimed_done = false;
    put_str(&l, "PCG B addr=");
    put_hex(&l, disk_stats.aimed_addr);
    put_field(&l, " good=", disk_stats.aimed_good);
    line_send(&l);
}

/*
 * The disk's figures, once its last request is done or has taken 10 s
 * (then inflight=1: a back-end that never answered).
 */
static void say_disk(void)
{
    uint64_t deadline = clock_ns(0) + 10000000000ULL;
    Line l = { .len = 0 };

    disk_stop();
    while (disk_busy() && clock_ns(0) < deadline) {
        cpu_relax();
    }
    /* An aimed read that the drain completed is answered too. */
    say_aimed_read();
    put_field(&l, "PCG DISK reads=", disk_stats.reads);
    put_field(&l, " writes=", disk_stats.writes);
    put_field(&l, " bad=", disk_stats.bad_reads);
    put_field(&l, " errors=", disk_stats.errors);
    put_field(&l, " inflight=", disk_busy());
    if (disk_stats.bad_reads) {
        put_str(&l, " first_bad_offset=");
        put_hex(&l, disk_stats.first_bad_offset);
        put_str(&l, " got=");
        put_hex(&l, disk_stats.first_bad_value);
    }
    line_send(&l);
}

/* The command 'r' or 'b': its address so far, while its digits come in. */
static struct {
    char open;                          /* the command's letter, or 0 */
    uint64_t addr;
} addr_cmd;

static void read_word(uint64_t addr)
{
    Line l = { .len = 0 };
    /* volatile: a read of memory the program never wrote, which must happen */
    uint64_t value = *(volatile uint64_t *)addr;

    put_str(&l, "PCG R addr=");
    put_hex(&l, addr);
    put_str(&l, " value=");
    put_hex(&l, value);
    line_send(&l);
}

/*
 * True when @ch belonged to an 'r' or 'b' command: a hex digit, or the
 * newline that ends it.  Anything else ends it too, and is a command of
 * its own.
 */
static bool addr_cmd_take(int ch)
{
    int digit = ch >= '0' && ch <= '9' ? ch - '0' :
                ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 :
                ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;

    if (!addr_cmd.open) {
        return false;
    }
    if (digit >= 0) {
        addr_cmd.addr = addr_cmd.addr << 4 | (uint64_t)digit;
        return true;
    }
    if (addr_cmd.open == 'r') {
        read_word(addr_cmd.addr & ~7ULL);
    } else if (disk_stats.present) {
        disk_aim_read(addr_cmd.addr);
    }
    addr_cmd.open = 0;
    return ch == '\n' || ch == '\r';
}

/*
 * The next character of a command already begun.  QEMU's UART without
 * its FIFO hands over one character at a time, the next one once the
 * main loop comes round: waiting a moment for it keeps a command's
 * characters from being spread over as many report intervals.
 */
static int serial_getc_soon(void)
{
    uint64_t deadline = clock_ns(0) + 100 * 1000 * 1000ULL;
    int ch;

    while ((ch = serial_getc()) < 0 && clock_ns(0) < deadline) {
        cpu_relax();
    }
    return ch;
}

static void poll_commands(void)
{
    int ch;

    while ((ch = addr_cmd.open ? serial_getc_soon() : serial_getc()) >= 0) {
        if (addr_cmd_take(ch)) {
            continue;
        }
        if (ch == 'r' || ch == 'b') {
            addr_cmd.open = ch;
            addr_cmd.addr = 0;
        } else if (ch == 'v') {
            __atomic_add_fetch(&verify_requests, 1, __ATOMIC_RELEASE);
        } else if (ch == 'd' && disk_stats.present) {
            disk_start();
            say("PCG DISK-START");
        } else if (ch == 'q') {
            __atomic_store_n(&stop_requested, true, __ATOMIC_RELEASE);
        }
    }
}

/* --- The workload --------------------------------------------------------- */

static void run(Cpu *c)
{
    uint64_t interval = cfg.interval_ms * 1000000ULL;
    uint64_t start = clock_ns(c->index), next_report = start + interval;
    uint64_t last = start, n = 0;

    for (;;) {
        unsigned int k;

        /*
         * A batch's time is the time since the previous batch ended: a
         * stall anywhere in the loop (a fault on code, stack or the
         * generation table, a paused vCPU) counts, not just the touches.
         */
        for (k = 1; k <= ACCESS_ROUND; k++) {
            uint64_t page = global_page(c, pick_local(c));
            bool write = rng_next(c) % 100 < cfg.writes;
            uint64_t now, dt;

            touch(c, page, write);
            if (k % cfg.batch) {
                continue;
            }
            now = clock_ns(c->index);
            dt = now - last;
            last = now;
            c->hist[bucket_of(dt)]++;
            if (dt > c->interval_max) {
                c->interval_max = dt;
            }
        }
        __atomic_store_n(&c->ops, c->ops + ACCESS_ROUND, __ATOMIC_RELAXED);
        if (c->index == 0 && disk_poll()) {
            say_aimed_read();
        }

        if (c->verify_seen != __atomic_load_n(&verify_requests,
                                              __ATOMIC_ACQUIRE)) {
            c->verify_seen = __atomic_load_n(&verify_requests,
                                             __ATOMIC_ACQUIRE);
            verify_all(c);
            last = clock_ns(c->index);
        }
        if (__atomic_load_n(&stop_requested, __ATOMIC_ACQUIRE)) {
            break;
        }
        if (c->index == 0 && clock_ns(0) >= next_report) {
            uint64_t now = clock_ns(0);

            report_interval(++n, (now - start) / 1000000);
            next_report = now + interval;
            disk_keep_dirty();
            poll_commands();
            /* The report's own time is overhead, not a stall. */
            last = clock_ns(0);
        }
    }
    __atomic_add_fetch(&cpus_stopped, 1, __ATOMIC_RELEASE);
    if (c->index == 0) {
        while (__atomic_load_n(&cpus_stopped, __ATOMIC_ACQUIRE) < nr_cpus) {
            cpu_relax();
        }
        if (disk_stats.present) {
            say_disk();
        }
        say("PCG END");
    }
}

/* What one clock_ns() costs on this vCPU, in nanoseconds of that clock. */
static uint64_t measure_clock_cost(unsigned int cpu)
{
    const unsigned int reads = 4096;
    uint64_t start = clock_ns(cpu), sink = 0;
    unsigned int i;

    for (i = 0; i < reads; i++) {
        sink += clock_ns(cpu);
    }
    /* Keep the reads: their sum goes into an asm the compiler cannot see. */
    __asm__ volatile("" : : "r"(sink));
    return (clock_ns(cpu) - start) / reads;
}

static void say_ready(void)
{
    Line l = { .len = 0 };

    put_field(&l, "PCG READY cpus=", nr_cpus);
    put_field(&l, " pages=", total_pages);
    put_field(&l, " tsc_khz=", tsc_khz);
    put_str(&l, " clock=");
    put_str(&l, use_kvmclock ? "kvmclock" : "tsc");
    put_field(&l, " clock_ns=", measure_clock_cost(0));
    put_field(&l, " batch=", cfg.batch);
    put_str(&l, cfg.kernel_mode ? " cpl=0" : " cpl=3");
    put_str(&l, " pattern=");
    put_str(&l, pattern_names[cfg.pattern]);
    put_field(&l, " writes=", cfg.writes);
    put_field(&l, " hot=", cfg.hot);
    put_field(&l, " interval=", cfg.interval_ms);
    line_send(&l);
}

/*
 * Continue in user mode, on the same stack, with I/O ports allowed (IOPL 3:
 * the serial line) and interrupts still off.  SYSCALL brings the CPU back
 * to kernel mode, at halt (boot.S).
 */
static void enter_user_mode(void)
{
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
    wrmsr(MSR_STAR, (uint64_t)KERNEL_CS << 32);
    wrmsr(MSR_LSTAR, (uint64_t)halt);
    wrmsr(MSR_FMASK, RFLAGS_IF);
    __asm__ volatile("movq %%rsp, %%rax\n\t"
                     "pushq %[ss]\n\t"
                     "pushq %%rax\n\t"
                     "pushq %[rflags]\n\t"
                     "pushq %[cs]\n\t"
                     "leaq 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "iretq\n"
                     "1:"
                     : : [ss] "i"(USER_DS), [cs] "i"(USER_CS),
                         [rflags] "i"(RFLAGS_IOPL3 | RFLAGS_FIXED)
                     : "rax", "memory");
}

static void __attribute__((noreturn)) halt_from_user_mode(void)
{
    __asm__ volatile("syscall" : : : "rcx", "r11", "memory");
    __builtin_unreachable();
}

static void cpu_main(unsigned int index)
{
    Cpu *c = &cpus[index];

    c->index = index;
    clock_enable(index);
    if (!cfg.kernel_mode) {
        enter_user_mode();
    }
    c->nr_local = (total_pages + nr_cpus - 1 - index) / nr_cpus;
    c->rng = 0x9E3779B97F4A7C15ULL * (index + 1);
    init_pages(c);
    __atomic_add_fetch(&cpus_ready, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&cpus_ready, __ATOMIC_ACQUIRE) < nr_cpus) {
        cpu_relax();
    }
    if (index == 0) {
        say_ready();
    }
    run(c);
    if (!cfg.kernel_mode) {
        halt_from_user_mode();
    }
}

/* --- Start-up ------------------------------------------------------------- */

static void lapic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)(LAPIC + reg) = v;    /* volatile: MMIO */
}

static void delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz / 1000;

    while (rdtsc() < end) {
        cpu_relax();
    }
}

static void start_aps(void)
{
    uint8_t *dst = (uint8_t *)0x8000;
    size_t i, len = trampoline_end - trampoline_start;

    for (i = 0; i < len; i++) {
        dst[i] = trampoline_start[i];
    }
    /* The copy must be in memory before the APs fetch it. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    lapic_write(0xF0, 0x1FF);               /* software-enable the APIC */
    lapic_write(0x310, 0);
    lapic_write(0x300, 0x000C4500);         /* INIT, all but self */
    delay_us(10000);
    for (i = 0; i < 2; i++) {
        lapic_write(0x300, 0x000C4608);     /* SIPI, vector 0x8000 >> 12 */
        delay_us(200);
    }
}

void bsp_main(void)
{
    const struct mb_info *mbi = (const struct mb_info *)(uint64_t)mbi_addr;

    say("PCG BOOT");
    if (mbi->flags & (1 << 2)) {
        parse_cmdline((const char *)(uint64_t)mbi->cmdline);
    }
    nr_cpus = fw_cfg_read16(0x05);
    if (nr_cpus < 1 || nr_cpus > MAX_CPUS) {
        nr_cpus = 1;
    }
    tsc_khz = calibrate_tsc_khz();
    kvm_msrs = kvmclock_available();
    use_kvmclock = !cfg.tsc_only && kvm_msrs;
    find_test_memory(mbi);
    if (disk_area) {
        disk_init();
    }
    if (!total_pages) {
        say("PCG FAIL no test memory above 64 MiB");
        return;
    }
    if (nr_cpus > 1) {
        start_aps();
    }
    cpu_main(0);
}

void ap_main(unsigned int index)
{
    if (index < nr_cpus) {
        cpu_main(index);
    }
}
