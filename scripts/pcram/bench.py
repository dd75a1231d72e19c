"""Side-by-side benchmark: this project's postcopy module against upstream's.

    python3 -m pcram.bench --ours QEMU --upstream QEMU --guest pcguest.bin \
        [--full] [--reps N] [--out DIR]

Every scenario runs with both modules, interleaved (the order alternates
from one repetition to the next), on the same guest and link, with the
link's limits measured in the same run.  Writes DIR/bench.json,
DIR/bench.md and DIR/*.png, and prints the Markdown table.
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time

from .guest import CPL_MODES, PATTERNS, bucket_high_ns, stalled_ms
from .migrate import (LINUX_PATTERN, MigrationFailed, Scenario,
                      check_guest_shape, run_scenario)
from .netlink import Link, LinkError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MiB = 1024 * 1024
GiB = 1024 * MiB

# Random access over all of RAM stalls every vCPU most of postcopy with
# either module; a guest working in a tenth of its RAM (wset) goes on
# working, and shows what the module's threads cost it.
DEFAULT = {'patterns': ['random', 'wset'], 'sizes_gib': [1, 4],
           'vcpus': [2], 'links': ['loopback', '10gbit'],
           'preempt': [False, True]}
FULL = {'patterns': ['seq', 'random', 'hot'], 'sizes_gib': [1, 2, 4, 8],
        'vcpus': [1, 4], 'links': ['loopback', '10gbit', '1gbit'],
        'preempt': [False, True]}

# (key, label, unit, lower is better)
FIGURES = [
    ('postcopy_s', 'postcopy time', 's', True),
    ('downtime_ms', 'downtime', 'ms', True),
    ('bytes_sent_mib', 'bytes sent', 'MiB', True),
    ('postcopy_mib', 'bytes sent after the switch', 'MiB', True),
    ('pages_requested', 'pages requested', '', True),
    ('blocktime_ms', 'blocktime (all vCPUs)', 'ms', True),
    ('vcpu_blocktime_ms', 'blocktime per vCPU (mean)', 'ms', True),
    ('fault_service_ms', 'fault service (vCPU blocktime / faults)', 'ms',
     True),
    ('lat_p50_us', 'guest batch time p50', 'us', True),
    ('lat_p99_us', 'guest batch time p99', 'us', True),
    ('lat_max_ms', 'guest worst stall', 'ms', True),
    ('guest_stalled_ms', 'guest time in stalled batches (>= 1 ms)', 'ms',
     True),
    ('ops_per_s', 'guest work rate in postcopy', 'ops/s', False),
    ('ops_per_s_precopy', 'guest work rate before postcopy', 'ops/s',
     False),
    ('work_fraction', 'guest work rate in postcopy / before', '', False),
    # What the owner loses in all: postcopy time x (1 - work fraction),
    # the seconds of the guest's own work before postcopy that it did not
    # get done; a faster postcopy at the same rate loses less.
    ('work_lost_s', 'guest work lost in postcopy (at its rate before)',
     's', True),
    # CPU of each QEMU thread from the switch until the destination had
    # every page (THREAD_GROUPS), and the destination's module threads'
    # CPU per GiB received after the switch.
    ('cpu_dst_vcpus_s', 'CPU: destination vCPUs', 's', False),
    ('cpu_dst_load_s', 'CPU: destination load thread (mig/dst/listen)',
     's', True),
    ('cpu_dst_placer_s', 'CPU: destination placer (mig/dst/place)', 's',
     True),
    ('cpu_dst_fault_s', 'CPU: destination fault thread', 's', True),
    ('cpu_dst_preempt_s', 'CPU: destination preempt thread', 's', True),
    ('cpu_dst_collapse_s', 'CPU: destination huge-page rebuild '
     '(mig/dst/thp)', 's', True),
    ('cpu_dst_other_s', 'CPU: destination, other threads', 's', True),
    ('cpu_src_migration_s', 'CPU: source migration thread', 's', True),
    ('cpu_src_return_s', 'CPU: source return path', 's', True),
    ('cpu_src_other_s', 'CPU: source, other threads (vCPUs stopped)', 's',
     True),
    ('cpu_dst_module_per_gib', 'CPU per GiB received after the switch: '
     'load, placer, fault and preempt threads', 's/GiB', True),
    # The whole cost (--after S): from the switch until the guest's rate
    # (over 5 s) is back within 5% of its rate before the migration (over
    # 10 s), at most S seconds after completion, the work it lost at that
    # rate before (migrate.whole_cost); and the share of its RAM in huge
    # pages.
    ('work_lost_back_s', 'guest work lost until back to full speed', 's',
     True),
    ('work_lost_postcopy_s', 'guest work lost in postcopy (at its rate '
     'before the migration)', 's', True),
    ('back_s', 'back to full speed after the switch (capped)', 's', True),
    ('back_after_done_s', 'back to full speed after completion (capped)',
     's', True),
    ('rate_end_ratio', 'guest rate over the last 20 s of the follow / '
     'before', '', False),
    ('huge_src_pct', 'RAM in huge pages: source, before', '%', False),
    ('huge_dst_0s_pct', 'RAM in huge pages: destination, at completion',
     '%', False),
    ('huge_dst_10s_pct', 'RAM in huge pages: destination, +10 s', '%',
     False),
    ('huge_dst_60s_pct', 'RAM in huge pages: destination, +60 s', '%',
     False),
    ('cpu_after_collapse_s', 'CPU after completion: huge-page rebuild '
     '(mig/dst/thp)', 's', True),
    ('cpu_after_vcpus_s', 'CPU after completion: destination vCPUs', 's',
     False),
    # --recover-at only: from migrate-pause to postcopy running again
    ('paused_s', 'paused for the recovery', 's', True),
    # Shaped links only: CPU that a real wire would not take from the QEMUs
    ('link_cpu_s', "the emulated link's CPU (delay-relay)", 's', True),
]

# Rows shown only where some run has the figure.
OPTIONAL_FIGURES = ('paused_s', 'link_cpu_s', 'cpu_dst_placer_s',
                    'cpu_dst_preempt_s', 'cpu_dst_collapse_s',
                    'work_lost_back_s',
                    'work_lost_postcopy_s', 'back_s', 'back_after_done_s',
                    'rate_end_ratio', 'huge_src_pct', 'huge_dst_0s_pct',
                    'huge_dst_10s_pct', 'huge_dst_60s_pct',
                    'cpu_after_collapse_s', 'cpu_after_vcpus_s')

# (role, thread name or its prefix, group): QEMU's thread names with
# -name debug-threads=on; the vCPUs are "CPU N/TCG" or "CPU N/KVM".
THREAD_GROUPS = (
    ('dst', 'mig/dst/listen', 'load'),
    ('dst', 'mig/dst/place', 'placer'),
    ('dst', 'mig/dst/fault', 'fault'),
    ('dst', 'mig/dst/preempt', 'preempt'),
    ('dst', 'mig/dst/thp', 'collapse'),
    ('dst', 'CPU ', 'vcpus'),
    ('src', 'mig/src/main', 'migration'),
    ('src', 'mig/src/return', 'return'),
)
MODULE_THREADS = ('load', 'placer', 'fault', 'preempt')

# A guest clock that ran this far ahead of the host's between two of its
# reports jumped (guest.GuestReport.clock_jump_s): its run's figures timed
# by the guest are left out of the medians.  Far above a report's delay on
# the serial line, far below the jumps seen (TCG, once in 120 runs: days).
CLOCK_JUMP_LIMIT_S = 5.0
GUEST_TIMED_FIGURES = ('lat_p50_us', 'lat_p99_us', 'lat_max_ms',
                       'guest_stalled_ms', 'ops_per_s', 'ops_per_s_precopy',
                       'work_fraction', 'work_lost_s', 'work_lost_back_s',
                       'work_lost_postcopy_s', 'back_s',
                       'back_after_done_s', 'rate_end_ratio')


def thread_cpu_figures(thread_cpu, postcopy_bytes):
    """The cpu_* figures of one run from its 'thread_cpu_s'."""
    if not thread_cpu:
        return {}
    groups = {}
    for role, threads in thread_cpu.items():
        for name, seconds in threads.items():
            group = next((g for r, prefix, g in THREAD_GROUPS
                          if r == role and name.startswith(prefix)),
                         'other')
            key = 'cpu_%s_%s_s' % (role, group)
            groups[key] = groups.get(key, 0.0) + seconds
    for role, _, group in THREAD_GROUPS + (('dst', '', 'other'),
                                           ('src', '', 'other')):
        if group not in ('placer', 'preempt', 'collapse'):
            groups.setdefault('cpu_%s_%s_s' % (role, group), 0.0)
    if postcopy_bytes:
        module = sum(groups.get('cpu_dst_%s_s' % g, 0.0)
                     for g in MODULE_THREADS)
        groups['cpu_dst_module_per_gib'] = module / (postcopy_bytes / GiB)
    return groups


def whole_cost_figures(result):
    """The figures of migrate.whole_cost() and the huge pages of one run,
    where it has them; its timeline, as rate / rate before."""
    figures = {}
    ram = result.get('ram_bytes')
    for where, value in (result.get('huge_bytes') or {}).items():
        key = {'source': 'huge_src_pct'}.get(
            where, 'huge_dst_%s_pct' % where.split('+')[-1])
        if ram and value is not None:
            figures[key] = 100.0 * value / ram
    cost = result.get('whole_cost')
    if cost and cost['baseline_ops_per_s']:
        base = cost['baseline_ops_per_s']
        figures.update(
            work_lost_back_s=cost['lost_until_back_s'],
            work_lost_postcopy_s=cost['lost_postcopy_s'],
            back_s=cost['back_s'],
            back_after_done_s=max(cost['back_s'] - cost['done_s'], 0.0),
            timeline=[(t, rate / base if rate is not None else None)
                      for t, rate in cost['timeline']],
            done_s=cost['done_s'], back=cost['back'])
        if cost.get('end_ops_per_s') is not None:
            figures['rate_end_ratio'] = cost['end_ops_per_s'] / base
    after = result.get('thread_cpu_after_s')
    if after:
        dst = after.get('dst', {})
        figures['cpu_after_collapse_s'] = sum(
            v for k, v in dst.items() if k.startswith('mig/dst/thp'))
        figures['cpu_after_vcpus_s'] = sum(
            v for k, v in dst.items() if k.startswith('CPU '))
    return figures


def flatten(result):
    """The figures of one run, from run_scenario()'s result."""
    g = result['guest']
    lat = g['latency_postcopy_us']
    vcpu_bt = result['vcpu_blocktime_ms'] or []
    requested = result['pages_requested'] or 0
    precopy_rate = g['ops_per_s_precopy']
    fraction = (g['ops_per_s_postcopy'] / precopy_rate
                if precopy_rate and g['ops_per_s_postcopy'] is not None
                else None)
    figures = {
        'postcopy_s': result['postcopy_s'],
        'downtime_ms': result['downtime_ms'],
        'bytes_sent_mib': result['bytes_sent'] / MiB,
        'postcopy_mib': result['postcopy_bytes'] / MiB,
        'pages_requested': requested,
        'blocktime_ms': result['blocktime_ms'],
        'vcpu_blocktime_ms': (statistics.mean(vcpu_bt) if vcpu_bt
                              else None),
        'fault_service_ms': (sum(vcpu_bt) / requested
                             if vcpu_bt and requested else None),
        'lat_p50_us': lat['p50'],
        'lat_p99_us': lat['p99'],
        'lat_max_ms': lat['max'] / 1000.0,
        'guest_stalled_ms': stalled_ms(g['hist_postcopy']),
        'ops_per_s': g['ops_per_s_postcopy'],
        'ops_per_s_precopy': precopy_rate,
        'work_fraction': fraction,
        'work_lost_s': (result['postcopy_s'] * (1 - fraction)
                        if fraction is not None else None),
        'clock_cost_ns': g.get('clock_cost_ns'),
        'batch': g.get('batch', 1),
        'cpl': g.get('cpl', 0),
        'verdict': g['verdict'],
        'hist': g['hist_postcopy'],
        'source_queue': result.get('source_queue'),
        'paused_s': result.get('paused_s'),
    }
    figures.update(thread_cpu_figures(result.get('thread_cpu_s'),
                                      result['postcopy_bytes']))
    figures.update(whole_cost_figures(result))
    jump = g.get('clock_jump_s') or 0
    if jump > CLOCK_JUMP_LIMIT_S:
        figures['guest_clock_jump_s'] = jump
        figures.update(dict.fromkeys(GUEST_TIMED_FIGURES))
    return figures


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'median': statistics.median(values), 'min': min(values),
            'max': max(values), 'n': len(values)}


def scenarios(matrix):
    for pattern, size, vcpus, link, preempt, backend in itertools.product(
            matrix['patterns'], matrix['sizes_gib'], matrix['vcpus'],
            matrix['links'], matrix['preempt'],
            matrix.get('backends', ['anon'])):
        s = {'pattern': pattern, 'size_gib': size, 'vcpus': vcpus,
             'link': link, 'preempt': preempt}
        if backend != 'anon':
            s['backend'] = backend
        yield s


def scenario_key(s):
    return '%s/%dG/%dvcpu/%s%s%s' % (
        s['pattern'], s['size_gib'], s['vcpus'], s['link'],
        '/preempt' if s['preempt'] else '',
        '/' + s['backend'] if s.get('backend', 'anon') != 'anon' else '')


def run_matrix(args, matrix, log):
    qemus = {'ours': args.ours, 'upstream': args.upstream}
    records = []
    by_link = {}
    for s in scenarios(matrix):
        by_link.setdefault(s['link'], []).append(s)
    for link_name, group in by_link.items():
        with Link(link_name, relay=args.relay, tcp_cc=args.tcp_cc) as link:
            limit = link.measure()
            limit['description'] = link.describe()
            log('link %s (%s): %.0f MB/s, round trip %.3f ms' % (
                link_name, limit['description'],
                limit['throughput_Bps'] / 1e6, limit['rtt_s'] * 1e3))
            for rep in range(args.reps):
                order = ['ours', 'upstream'] if rep % 2 == 0 else \
                    ['upstream', 'ours']
                for s in group:
                    for module in order:
                        records.append(run_one(args, qemus[module], module,
                                               s, link, limit, rep, log))
    return records


def run_one(args, qemu, module, s, link, limit, rep, log):
    guest = args.linux_guest if s['pattern'] == LINUX_PATTERN else args.guest
    scn = Scenario(qemu=qemu, guest=guest, ram_mb=s['size_gib'] * 1024,
                   vcpus=s['vcpus'], pattern=s['pattern'],
                   preempt=s['preempt'], precopy_s=args.precopy_s,
                   accel=args.accel, recover_at_s=args.recover_at,
                   backend=s.get('backend', 'anon'), after_s=args.after,
                   **link.endpoints())
    t0 = time.monotonic()
    link_cpu0 = link.cpu_seconds()
    rec = {'module': module, 'scenario': s, 'rep': rep, 'limit': limit}
    try:
        result = run_scenario(scn)
        rec['figures'] = flatten(result)
        if link_cpu0 is not None:
            rec['figures']['link_cpu_s'] = link.cpu_seconds() - link_cpu0
        rec['accel'] = result['scenario']['accel']
    except MigrationFailed as e:
        rec['error'] = str(e).splitlines()[0]
    log('%-8s %-36s rep %d: %s (%.0f s)' % (
        module, scenario_key(s), rep,
        'postcopy %.2f s, %s' % (rec['figures']['postcopy_s'],
                                 rec['figures']['verdict'])
        if 'figures' in rec else 'FAILED: ' + rec['error'],
        time.monotonic() - t0))
    return rec


def aggregate(records):
    """Per scenario and module: median/min/max of every figure, and the
    limit's figures."""
    out = {}
    for rec in records:
        key = scenario_key(rec['scenario'])
        entry = out.setdefault(key, {'scenario': rec['scenario'],
                                     'limit': rec['limit'], 'modules': {},
                                     'accel': set(), 'clock_cost_ns': [],
                                     'batch': set(), 'cpl': set()})
        if 'figures' in rec:
            entry['accel'].add(rec.get('accel', '?'))
            entry['batch'].add(rec['figures'].get('batch', 1))
            entry['cpl'].add(rec['figures'].get('cpl', 0))
            if rec['figures'].get('clock_cost_ns') is not None:
                entry['clock_cost_ns'].append(
                    rec['figures']['clock_cost_ns'])
        m = entry['modules'].setdefault(rec['module'], {'runs': [],
                                                         'errors': []})
        if 'figures' in rec:
            m['runs'].append(rec['figures'])
        else:
            m['errors'].append(rec['error'])
    for entry in out.values():
        entry['accel'] = '/'.join(sorted(entry['accel'])) or '?'
        entry['batch'] = '/'.join(str(b) for b in sorted(entry['batch']))
        entry['mode'] = '/'.join(CPL_MODES.get(c, 'CPL %d' % c)
                                 for c in sorted(entry['cpl']))
        entry['clock_cost_ns'] = summarize(entry['clock_cost_ns'])
        size = entry['scenario']['size_gib'] * GiB
        limit = entry['limit']
        entry['least_postcopy_s'] = size / limit['throughput_Bps']
        entry['rtt_ms'] = limit['rtt_s'] * 1e3
        for m in entry['modules'].values():
            m['summary'] = {k: summarize([r.get(k) for r in m['runs']])
                            for k, *_ in FIGURES}
            m['verdicts'] = [r['verdict'] for r in m['runs']]
    return out


def fmt_summary(s, digits=2):
    if not s:
        return 'n/a'
    if s['n'] > 1:
        return '%.*f (%.*f-%.*f)' % (digits, s['median'], digits, s['min'],
                                     digits, s['max'])
    return '%.*f' % (digits, s['median'])


def postcopy_vs_limit(entry, ours):
    """Our postcopy time as a multiple of two lower bounds: all of RAM
    at the link's rate (the issue's limit), and what was still unsent
    at the switch at that rate (the tighter one: precopy already moved
    the rest)."""
    t = ours['postcopy_s']['median']
    text = '%.1fx least time' % (t / entry['least_postcopy_s'])
    after = ours.get('postcopy_mib')
    if after and after['median']:
        least_after = after['median'] * MiB / \
            entry['limit']['throughput_Bps']
        text += ', %.1fx for the bytes after the switch' % (t / least_after)
    return text


def tcp_sysctl(name):
    """net.ipv4.tcp_NAME of this host's namespace, or '' if unreadable."""
    try:
        with open('/proc/sys/net/ipv4/tcp_' + name) as f:
            return f.read().strip()
    except OSError:
        return ''


def tcp_congestion_control():
    """The host's TCP congestion control, which the benchmark's namespaces
    inherit: it decides how much of a window waits at a link's queue."""
    return tcp_sysctl('congestion_control') or '?'


# The short table at the top of a report (and the README's): what a
# VM's owner feels, and what the module's threads cost for it.
SUMMARY_FIGURES = [
    ('postcopy_s', 'postcopy time', 's', 2),
    ('fault_service_ms', 'fault service', 'ms', 1),
    ('lat_max_ms', 'worst stall', 'ms', 0),
    ('work_fraction', 'guest work in postcopy / before', '', 2),
    ('work_lost_s', 'guest work lost', 's', 2),
    ('work_lost_back_s', 'work lost until back to full speed', 's', 2),
    ('huge_dst_10s_pct', 'RAM in huge pages +10 s', '%', 0),
    ('cpu_dst_module_per_gib', 'module CPU per GiB', 's', 2),
]


def summary_table(agg):
    """One row per scenario, each cell ours / upstream's median; a figure
    that no run has (the whole cost without --after) has no column."""
    shown = [f for f in SUMMARY_FIGURES
             if f[0] not in OPTIONAL_FIGURES or any(
                 m.get('summary', {}).get(f[0])
                 for e in agg.values() for m in e['modules'].values())]
    lines = ['| scenario | %s |' % ' | '.join(
                 '%s%s' % (label, ' (%s)' % unit if unit else '')
                 for _, label, unit, _ in shown),
             '|%s' % (' --- |' * (len(shown) + 1))]
    for key, entry in agg.items():
        cells = []
        for fig, _, _, digits in shown:
            pair = [entry['modules'].get(m, {}).get('summary', {}).get(fig)
                    for m in ('ours', 'upstream')]
            cells.append(' / '.join('%.*f' % (digits, s['median'])
                                    if s else 'n/a' for s in pair))
        lines.append('| %s | %s |' % (key, ' | '.join(cells)))
    return lines + ['']


def markdown(agg, meta):
    lines = ['Benchmark of %s: QEMU %s, %s, %s, TCP %s, %s accel, '
             '%d repetitions; command: `%s`%s' % (
                 meta['date'], meta['qemu'], meta['machine'],
                 meta['kernel'], meta.get('tcp_cc', '?'),
                 meta['accel'].upper(), meta['reps'], meta['command'],
                 '; environment: `%s`' % meta['tune']
                 if meta['tune'] else ''), '',
             *(['Each migration was paused on the destination %g s into '
                'postcopy (migrate-pause) and recovered at once over the '
                'same link.' % meta['recover_at_s'], '']
               if meta.get('recover_at_s') is not None else []),
             'Each cell: median (min-max) over the repetitions.  '
             'Ratio: ours / upstream of the medians (below 1 is better '
             'for all but the work rate).  Limit: the link measured in '
             'the same run.', '',
             'In short, ours / upstream (medians):', '',
             *summary_table(agg)]
    for key, entry in agg.items():
        ours = entry['modules'].get('ours', {}).get('summary', {})
        up = entry['modules'].get('upstream', {}).get('summary', {})
        lines.append('### %s' % key)
        lines.append('')
        lines.append('link: %s; measured %.0f MB/s, round trip %.3f ms; '
                     'least postcopy time (RAM / bandwidth) %.2f s' % (
                         entry['limit'].get('description', ''),
                         entry['limit']['throughput_Bps'] / 1e6,
                         entry['rtt_ms'], entry['least_postcopy_s']))
        lines.append('')
        lines.append('guest: %s, %s; its clock costs %s ns per read '
                     '(measured at boot); it times batches of %s accesses' % (
                         entry['accel'].upper(), entry['mode'],
                         fmt_summary(entry['clock_cost_ns'], 0),
                         entry['batch']))
        lines.append('')
        lines.append('| figure | ours | upstream | ours/upstream | '
                     'ours vs limit |')
        lines.append('| --- | --- | --- | --- | --- |')
        for k, label, unit, _ in FIGURES:
            o, u = ours.get(k), up.get(k)
            if k in OPTIONAL_FIGURES and not o and not u:
                continue
            ratio = ('%.2f' % (o['median'] / u['median'])
                     if o and u and u['median'] else 'n/a')
            vs = ''
            if k == 'postcopy_s' and o:
                vs = postcopy_vs_limit(entry, ours)
            elif k == 'fault_service_ms' and o:
                vs = '%.1fx round trip' % (o['median'] / entry['rtt_ms'])
            lines.append('| %s%s | %s | %s | %s | %s |' % (
                label, ' (%s)' % unit if unit else '', fmt_summary(o),
                fmt_summary(u), ratio, vs))
        queue_line = source_queue_statement(
            entry['modules'].get('ours', {}).get('runs', []))
        if queue_line:
            lines += ['', queue_line]
        for name, m in entry['modules'].items():
            jumps = [r['guest_clock_jump_s'] for r in m['runs']
                     if r.get('guest_clock_jump_s')]
            if jumps:
                lines.append('')
                lines.append('%s: the guest\'s clock jumped in %d of its '
                             'runs (by %s s): the figures the guest timed '
                             'in those are left out.' % (
                                 name, len(jumps), ', '.join(
                                     '%.0f' % j for j in jumps)))
            bad = [v for v in m['verdicts'] if v == 'CORRUPT']
            if bad or m['errors']:
                lines.append('')
                lines.append('%s: %d runs not clean, %d failed: %s' % (
                    name, len(bad), len(m['errors']),
                    '; '.join(m['errors'][:2])))
        lines.append('')
    lines += scale_statement(agg)
    return '\n'.join(lines) + '\n'


def source_queue_statement(runs):
    """What our source did to its main channel over @runs (postcopy-
    queue.c's trace): how often it bounded the send queue and paced the
    channel, how often only at its second look into postcopy, and at what
    rate."""
    actions = [r['source_queue'] for r in runs if r.get('source_queue')]
    if not actions or all(a['lowat'] is None for a in actions):
        return ''
    bounded = [a for a in actions if a['lowat']]
    paced = [a['pace_Bps'] for a in actions if a['pace_Bps']]
    late_bound = sum(1 for a in actions if a.get('late_bound'))
    late_paced = sum(1 for a in actions if a.get('late_paced'))
    text = ('ours, main channel: send queue bounded in %d of %d runs '
            '(%d at the second look into postcopy), paced in %d (%d at the '
            'second look)' % (len(bounded), len(actions), late_bound,
                              len(paced), late_paced))
    if paced:
        text += ' at %s MB/s' % ', '.join('%.0f' % (p / 1e6) for p in paced)
    recovered = [a['new_channel'] for a in actions if a.get('new_channel')]
    if recovered:
        text += ('; after the recovery, the new main channel got the bound '
                 'in %d and the pacing in %d of %d runs' % (
                     sum(1 for n in recovered if n['lowat']),
                     sum(1 for n in recovered if n['pace_Bps']),
                     len(recovered)))
    return text + '.'


def growth_word(ratio, size_ratio):
    if ratio < 0.8 * size_ratio:
        return 'better than linear'
    if ratio > 1.25 * size_ratio:
        return 'worse than linear'
    return 'linear'


def scale_statement(agg):
    """How postcopy time and blocktime grow with guest size, per module."""
    groups = {}
    for entry in agg.values():
        s = dict(entry['scenario'])
        size = s.pop('size_gib')
        groups.setdefault(json.dumps(s, sort_keys=True), {})[size] = entry
    lines = ['### Scale', '']
    for key, by_size in groups.items():
        sizes = sorted(by_size)
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        for module in ('ours', 'upstream'):
            parts = []
            for fig in ('postcopy_s', 'bytes_sent_mib', 'blocktime_ms',
                        'pages_requested'):
                a = by_size[lo]['modules'].get(module, {}).get(
                    'summary', {}).get(fig)
                b = by_size[hi]['modules'].get(module, {}).get(
                    'summary', {}).get(fig)
                if a and b and a['median']:
                    r = b['median'] / a['median']
                    parts.append('%s x%.1f (%s)' % (fig, r, growth_word(
                        r, hi / lo)))
            lines.append('- %s, %s: %d to %d GiB: %s' % (
                module, json.loads(key)['link'], lo, hi, ', '.join(parts)))
    return lines + ['']


def _finish_axis(ax, title, xlabel, ylabel):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def plots(agg, out_dir):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    # Latency CDF, ours vs upstream, one panel per scenario.
    keys = list(agg)
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 3 * len(keys)),
                             squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for module, style in (('ours', '-'), ('upstream', '--')):
            hist = {}
            for run in agg[key]['modules'].get(module, {}).get('runs', []):
                for b, c in run['hist'].items():
                    hist[int(b)] = hist.get(int(b), 0) + c
            total = sum(hist.values())
            if not total:
                continue
            xs, ys, seen = [], [], 0
            for b in sorted(hist):
                seen += hist[b]
                xs.append(bucket_high_ns(b) / 1000.0)
                ys.append(seen / total)
            ax.step(xs, ys, style, where='post', label=module)
        ax.axvline(agg[key]['rtt_ms'] * 1000, color='grey', linewidth=0.8,
                   label='link round trip')
        ax.set_xscale('log')
        _finish_axis(ax, key, 'guest batch time during postcopy (us)',
                     'fraction of batches')
    fig.tight_layout()
    path = os.path.join(out_dir, 'latency-cdf.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    made.append(path)

    # Postcopy time against guest size, per link, with the link's limit.
    groups = {}
    for entry in agg.values():
        s = dict(entry['scenario'])
        s.pop('size_gib')
        groups.setdefault(scenario_key(dict(s, size_gib=0)), []).append(
            entry)
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 3 * len(groups)),
                             squeeze=False)
    for ax, (gkey, entries) in zip(axes[:, 0], groups.items()):
        entries.sort(key=lambda e: e['scenario']['size_gib'])
        sizes = [e['scenario']['size_gib'] for e in entries]
        for module, marker in (('ours', 'o-'), ('upstream', 's--')):
            ys = [(e['modules'].get(module, {}).get('summary', {}).get(
                'postcopy_s') or {}).get('median') for e in entries]
            ax.plot(sizes, ys, marker, label=module)
        ax.plot(sizes, [e['least_postcopy_s'] for e in entries], 'k:',
                label='link limit (RAM / bandwidth)')
        _finish_axis(ax, gkey.replace('/0G', ''), 'guest RAM (GiB)',
                     'postcopy time (s)')
    fig.tight_layout()
    path = os.path.join(out_dir, 'postcopy-time-vs-size.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    made.append(path)
    path = plot_timelines(plt, agg, out_dir)
    return made + ([path] if path else [])


def plot_timelines(plt, agg, out_dir):
    """The whole cost, one panel per scenario: each run's rate over its
    rate before the migration, from the switch until --after seconds
    after completion, with the completion of each run marked."""
    keys = [k for k in agg if any(
        r.get('timeline') for m in agg[k]['modules'].values()
        for r in m['runs'])]
    if not keys:
        return None
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 3.2 * len(keys)),
                             squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for module, color in (('ours', 'tab:blue'),
                              ('upstream', 'tab:orange')):
            runs = agg[key]['modules'].get(module, {}).get('runs', [])
            for n, run in enumerate(r for r in runs if r.get('timeline')):
                points = [(t, y) for t, y in run['timeline']
                          if y is not None]
                ax.plot([t for t, _ in points], [y for _, y in points],
                        color=color, linewidth=0.8, alpha=0.7,
                        label=module if n == 0 else None)
                ax.axvline(run['done_s'], color=color, linewidth=0.5,
                           linestyle=':')
        ax.axhline(0.95, color='grey', linewidth=0.8,
                   label='95% of the rate before')
        ax.set_ylim(bottom=0)
        _finish_axis(ax, key + ' (dotted: each run completes)',
                     's from migrate-start-postcopy',
                     'guest rate / rate before')
    fig.tight_layout()
    path = os.path.join(out_dir, 'whole-cost-timeline.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def parse_args(argv):
    p = argparse.ArgumentParser(prog='bench')
    p.add_argument('--ours')
    p.add_argument('--upstream')
    p.add_argument('--guest')
    p.add_argument('--linux-guest', help='scripts/build-linux-guest.sh\'s '
                   'directory, for the %s pattern' % LINUX_PATTERN)
    p.add_argument('--render', metavar='BENCH_JSON',
                   help='write the report of an earlier run again, from '
                   'its bench.json (with this version of the report)')
    p.add_argument('--full', action='store_true',
                   help='the full matrix (patterns, 1-8 GiB, 1 and 4 '
                   'vCPUs, three links, with and without preempt)')
    p.add_argument('--reps', type=int, default=2)
    p.add_argument('--precopy-s', type=float, default=2.0)
    p.add_argument('--accel', choices=('auto', 'kvm', 'tcg'), default='auto')
    p.add_argument('--sizes', help='comma-separated GiB, overrides')
    p.add_argument('--links', help='comma-separated links, overrides')
    p.add_argument('--patterns', help='comma-separated seq, random, hot, '
                   'wset; '
                   'overrides')
    p.add_argument('--vcpus', help='comma-separated vCPU counts, overrides')
    p.add_argument('--preempt', help='comma-separated off, on; overrides')
    p.add_argument('--relay', help='tools/delay-relay, built')
    p.add_argument('--after', type=float, metavar='S', default=60.0,
                   help='seconds the guest runs on after each migration '
                   'completed, its rate and huge pages followed: the '
                   'whole cost (default 60; 0: none)')
    p.add_argument('--backends', help='comma-separated anon, memfd: the '
                   'guest RAM\'s memory backend (default anon)')
    p.add_argument('--recover-at', type=float, metavar='S',
                   help='pause each migration on the destination S '
                   'seconds into postcopy and recover it at once over the '
                   'same link')
    p.add_argument('--tcp-cc', help='TCP congestion control in the '
                   'emulated links\' namespaces (default: the host\'s; '
                   'loopback always has the host\'s)')
    p.add_argument('--out', default=os.path.join(REPO, 'results', 'bench'))
    args = p.parse_args(argv)
    if not args.render and not (args.ours and args.upstream and args.guest):
        p.error('--ours, --upstream and --guest are needed to run')
    return args


def render(path):
    """bench.md again from @path, an earlier run's bench.json."""
    with open(path) as f:
        run = json.load(f)
    md = markdown(run['summary'], run['meta'])
    with open(os.path.join(os.path.dirname(path), 'bench.md'), 'w') as f:
        f.write(md)
    print(md)
    return 0


def command_line(argv):
    """The command as the user typed it: scripts/bench.sh passes its own
    arguments in PCRAM_BENCH_COMMAND, without the paths it adds."""
    given = os.environ.get('PCRAM_BENCH_COMMAND')
    if given:
        return given
    return 'python3 -m pcram.bench ' + ' '.join(
        sys.argv[1:] if argv is None else argv)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.render:
        return render(args.render)
    matrix = dict(FULL if args.full else DEFAULT)
    if args.sizes:
        matrix['sizes_gib'] = [int(x) for x in args.sizes.split(',')]
    if args.links:
        matrix['links'] = args.links.split(',')
    if args.patterns:
        matrix['patterns'] = args.patterns.split(',')
        if not set(matrix['patterns']) <= set(PATTERNS + (LINUX_PATTERN,)):
            print('bench: --patterns takes %s' % ', '.join(
                PATTERNS + (LINUX_PATTERN,)), file=sys.stderr)
            return 2
        if LINUX_PATTERN in matrix['patterns'] and not args.linux_guest:
            print('bench: the %s pattern needs --linux-guest' %
                  LINUX_PATTERN, file=sys.stderr)
            return 2
    if args.vcpus:
        matrix['vcpus'] = [int(x) for x in args.vcpus.split(',')]
    if args.backends:
        matrix['backends'] = args.backends.split(',')
        if not set(matrix['backends']) <= {'anon', 'memfd'}:
            print('bench: --backends takes anon, memfd', file=sys.stderr)
            return 2
    if args.preempt:
        values = args.preempt.split(',')
        if not set(values) <= {'off', 'on'}:
            print('bench: --preempt takes off, on', file=sys.stderr)
            return 2
        matrix['preempt'] = [x == 'on' for x in values]
    for gib in matrix['sizes_gib']:
        for vcpus in matrix['vcpus']:
            bad_shape = check_guest_shape(gib * 1024, vcpus)
            if bad_shape:
                print('bench: %s' % bad_shape, file=sys.stderr)
                return 2
    if args.tcp_cc:
        available = tcp_sysctl('available_congestion_control').split()
        if args.tcp_cc not in available:
            print('bench: --tcp-cc %s: this kernel has %s' % (
                args.tcp_cc, ', '.join(available) or 'no list'),
                file=sys.stderr)
            return 2
    os.makedirs(args.out, exist_ok=True)

    def log(msg):
        print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)

    started = time.time()
    try:
        records = run_matrix(args, matrix, log)
    except LinkError as e:
        print('bench: %s' % e, file=sys.stderr)
        return 2
    agg = aggregate(records)
    accel = sorted({r.get('accel', '?') for r in records})
    meta = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
            'machine': '%d cores, %.0f GiB, %s' % (
                os.cpu_count(), os.sysconf('SC_PAGE_SIZE') *
                os.sysconf('SC_PHYS_PAGES') / GiB, platform.machine()),
            'kernel': platform.release(), 'accel': '/'.join(accel),
            'tcp_cc': tcp_congestion_control(),
            'qemu': os.environ.get('PCRAM_QEMU_VERSION', '?'),
            'tune': ('QEMU_POSTCOPY_TUNE=' + os.environ['QEMU_POSTCOPY_TUNE']
                     if os.environ.get('QEMU_POSTCOPY_TUNE') else ''),
            'reps': args.reps, 'command': command_line(argv),
            'recover_at_s': args.recover_at,
            'seconds': round(time.time() - started)}
    with open(os.path.join(args.out, 'bench.json'), 'w') as f:
        json.dump({'meta': meta, 'matrix': matrix, 'records': records,
                   'summary': agg}, f, indent=1, sort_keys=True,
                  default=str)
    md = markdown(agg, meta)
    with open(os.path.join(args.out, 'bench.md'), 'w') as f:
        f.write(md)
    print(md)
    for path in plots(agg, args.out):
        print('plot: %s' % path)
    print('took %d s' % meta['seconds'])
    failed = [r for r in records if 'error' in r or
              r['figures']['verdict'] == 'CORRUPT']
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
