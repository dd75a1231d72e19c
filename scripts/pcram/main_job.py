"""The main job: postcopy-migrate a running test guest and report.

    python3 -m pcram.main_job --qemu QEMU --guest pcguest.bin [options]

Exits 0 with a clean verdict, 1 when the migration failed or the guest
found a bad page, 2 on bad usage.
"""

import argparse
import json
import os
import sys
import time

from .guest import CPL_MODES, PATTERNS
from .migrate import (MigrationFailed, Scenario, check_guest_shape,
                      run_scenario)

MiB = 1024 * 1024


def parse_args(argv):
    p = argparse.ArgumentParser(prog='main-job',
                                description='Postcopy-migrate a running '
                                'guest and report what happened.')
    p.add_argument('--qemu', required=True, help='qemu-system-x86_64')
    p.add_argument('--guest', required=True, help='pcguest.bin')
    p.add_argument('--module', default='ours',
                   help='label of the module built into --qemu')
    p.add_argument('--ram-mb', type=int, default=1024)
    p.add_argument('--vcpus', type=int, default=2)
    p.add_argument('--pattern', choices=PATTERNS,
                   default='random')
    p.add_argument('--writes', type=int, default=50,
                   help='percent of accesses that write')
    p.add_argument('--hot', type=int, default=10,
                   help='hot set, percent of pages (patterns hot, wset)')
    p.add_argument('--precopy-s', type=float, default=2.0,
                   help='seconds of precopy before migrate-start-postcopy')
    p.add_argument('--preempt', action='store_true',
                   help='enable postcopy-preempt')
    p.add_argument('--backend', choices=('anon', 'memfd', 'hugetlb'),
                   default='anon')
    p.add_argument('--accel', choices=('auto', 'kvm', 'tcg'), default='auto')
    p.add_argument('--json', help='also write the result here')
    return p.parse_args(argv)


class Progress:
    """The migration's progress on stderr: on a terminal one live line,
    rewritten in place; in a pipe or a file a plain line per second and
    at each change of state, so that a log holds lines, not one line of
    carriage returns."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.live = stream.isatty()
        self.last_status = None
        self.last_line_s = None

    @staticmethod
    def line(elapsed, info):
        # "remaining" is what the source still has to send of its dirty
        # bitmap: it refills at each precopy pass and at the switch, so
        # it is shown as an amount, not as a share of RAM sent.
        ram = info.get('ram', {})
        return ('[%6.1f s] %-16s sent %7.1f MiB, left %7.1f MiB  '
                '%7.1f MB/s  fault requests %d' % (
                    elapsed, info.get('status', '?'),
                    ram.get('transferred', 0) / MiB,
                    ram.get('remaining', 0) / MiB,
                    ram.get('mbps', 0) / 8, ram.get('postcopy-requests', 0)))

    def __call__(self, elapsed, info):
        status = info.get('status', '?')
        if self.live:
            self.stream.write('\r' + self.line(elapsed, info) + '\033[K')
        elif (status != self.last_status or self.last_line_s is None or
              elapsed - self.last_line_s >= 1.0):
            self.stream.write(self.line(elapsed, info) + '\n')
            self.last_line_s = elapsed
        self.last_status = status
        self.stream.flush()

    def end(self):
        """Leave the live line, if any, so that what follows starts a line
        of its own."""
        if self.live:
            self.stream.write('\n')
            self.stream.flush()


def fmt(v, unit='', digits=1):
    if v is None:
        return 'n/a'
    if isinstance(v, float):
        return '%.*f%s' % (digits, v, unit)
    return '%s%s' % (v, unit)


def print_report(r, module):
    s = r['scenario']
    g = r['guest']
    lp = g['latency_postcopy_us']
    print()
    print('Postcopy migration of a running guest (%s)' % module)
    print('  guest: %d MiB, %d vCPUs, %s access, %d%% writes, %s memory, %s'
          % (s['ram_mb'], s['vcpus'], s['pattern'], s['writes'],
             s['backend'], s['accel'].upper()))
    print('  precopy time          %s' % fmt(r['precopy_s'], ' s', 2))
    print('  downtime              %s' % fmt(r['downtime_ms'], ' ms'))
    print('  postcopy time         %s' % fmt(r['postcopy_s'], ' s', 2))
    print('  bytes sent            %s (precopy %s, postcopy %s)' % (
        fmt(r['bytes_sent'] / MiB, ' MiB'), fmt(r['precopy_bytes'] / MiB,
                                               ' MiB'),
        fmt(r['postcopy_bytes'] / MiB, ' MiB')))
    print('  pages on demand       %d (asked for by faults)' %
          r['pages_requested'])
    print('  pages in background   %d' % r['pages_background'])
    print('  blocktime             %s (all vCPUs at once); per vCPU: %s' % (
        fmt(r['blocktime_ms'], ' ms'),
        ', '.join('%d ms' % v for v in r['vcpu_blocktime_ms'] or []) or
        'n/a'))
    if r.get('latency_dist') is not None:
        # query-migrate's own figures (QEMU 10.1+): bucket N counts faults
        # served in [2^N, 2^(N+1)) us.
        print('  fault latency         mean %s; per vCPU: %s; other threads '
              '%s' % (fmt(r['latency_ns'] / 1e6, ' ms', 2),
                      ', '.join('%.2f ms' % (v / 1e6)
                                for v in r['vcpu_latency_ns'] or []),
                      fmt(r['non_vcpu_latency_ns'] / 1e6, ' ms', 2)))
        print('  fault latency dist    %s' % ', '.join(
            ('%d below 2 us' % n) if i == 0 else
            ('%d in [%d, %d) us' % (n, 1 << i, 2 << i))
            for i, n in enumerate(r['latency_dist']) if n))
    print('  guest worst stall     %s' % fmt(lp['max'] / 1000.0, ' ms', 2))
    print('  worst stalls at       %s (s from migrate-start-postcopy)' %
          ', '.join('%.1f ms at %+.2f s' % (ms, t)
                    for t, ms in g['worst_stalls']))
    print('  guest batch time (postcopy, %d accesses each)  p50 %s  p99 %s  '
          'p99.9 %s  over %d batches' % (
              lp['batch'], fmt(lp['p50'], ' us'), fmt(lp['p99'], ' us'),
              fmt(lp['p999'], ' us'), lp['batches']))
    print('  guest work rate       %s ops/s in postcopy, %s ops/s before' % (
        fmt(g['ops_per_s_postcopy'], '', 0),
        fmt(g['ops_per_s_precopy'], '', 0)))
    print('  guest clock           %s, %s per read (measured at boot); '
          'workload in %s' % (g['clock'], fmt(g['clock_cost_ns'], ' ns'),
                              CPL_MODES.get(g.get('cpl', 0), '?')))
    print('  guest memory check    %s: %d pages checked, %d bad' % (
        g['verdict'], g['pages_checked'], g['bad_pages']))
    for bad in g['bad_reports']:
        print('    bad page: %s' % ' '.join('%s=%s' % kv for kv in
                                              bad.items()))


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    bad_shape = check_guest_shape(args.ram_mb, args.vcpus)
    if bad_shape:
        print('main-job: %s' % bad_shape, file=sys.stderr)
        return 2
    for path in (args.qemu, args.guest):
        if not os.path.exists(path):
            print('main-job: %s does not exist' % path, file=sys.stderr)
            return 2
    scn = Scenario(qemu=args.qemu, guest=args.guest, ram_mb=args.ram_mb,
                   vcpus=args.vcpus, pattern=args.pattern,
                   writes=args.writes, hot=args.hot,
                   precopy_s=args.precopy_s, preempt=args.preempt,
                   backend=args.backend, accel=args.accel)
    started = time.strftime('%Y-%m-%d %H:%M:%S')
    progress = Progress()
    try:
        result = run_scenario(scn, progress=progress)
    except MigrationFailed as e:
        progress.end()
        sys.stderr.write('main-job: FAILED: %s\n' % e)
        return 1
    progress.end()
    result['module'] = args.module
    result['started'] = started
    print_report(result, args.module)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2, sort_keys=True)
        print('  result: %s' % args.json)
    if result['guest']['verdict'] != 'clean':
        print('main-job: FAILED: the guest found bad pages', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
