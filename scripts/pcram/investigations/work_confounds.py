"""What goes with a working guest's rate in postcopy, over benchmark runs.

    python3 -m pcram.investigations.work_confounds BENCH.json [...]
        [--min-runs N]

Pools the runs of one or more bench.json files (scripts/bench.sh's
output) by module and scenario, and prints for each pool with at least
--min-runs runs (10 unless given):
 - the correlation of the destination's module CPU per GiB received with
   the postcopy time: how much of the postcopy time the destination's
   cost per page decides;
 - the correlation of the postcopy time with the guest's work in postcopy
   over its rate before: whether a longer postcopy shows a higher rate
   (the working set arrives early, the rest of postcopy runs nearly at
   full speed), which makes the rate alone favour the slower migration;
 - the medians of the work fraction and of the work lost (postcopy time
   times one minus the fraction, in seconds of the guest's own work).

Pool only files of the same code and setup; the point is many runs of
one scenario, not a comparison across changes.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict


def work_lost(fig):
    if fig.get('work_lost_s') is not None:
        return fig['work_lost_s']
    return fig['postcopy_s'] * (1 - fig['work_fraction'])


def pools(paths):
    out = defaultdict(list)
    for path in paths:
        with open(path) as f:
            records = json.load(f)['records']
        for rec in records:
            fig = rec.get('figures')
            if not fig or fig.get('work_fraction') is None:
                continue
            s = rec['scenario']
            key = (rec['module'], s['size_gib'], s['link'],
                   'preempt' if s['preempt'] else 'main channel')
            out[key].append(fig)
    return out


def correlation(xs, ys):
    try:
        return '%+.2f' % statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return 'n/a'


def main(argv):
    p = argparse.ArgumentParser(prog='work_confounds')
    p.add_argument('bench_json', nargs='+')
    p.add_argument('--min-runs', type=int, default=10)
    args = p.parse_args(argv)
    print('| module | scenario | runs | corr(CPU/GiB, postcopy time) | '
          'corr(postcopy time, work) | work in postcopy / before | '
          'work lost (s) |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for key, figs in sorted(pools(args.bench_json).items(),
                            key=lambda kv: kv[0][1:] + kv[0][:1]):
        if len(figs) < args.min_runs:
            continue
        module, size, link, channel = key
        pc = [f['postcopy_s'] for f in figs]
        per_gib = [f.get('cpu_dst_module_per_gib') or 0 for f in figs]
        work = [f['work_fraction'] for f in figs]
        print('| %s | %d GiB, %s, %s | %d | %s | %s | %.2f | %.2f |' % (
            module, size, link, channel, len(figs),
            correlation(per_gib, pc), correlation(pc, work),
            statistics.median(work),
            statistics.median(work_lost(f) for f in figs)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
