"""Where a remote fault's time goes, from both QEMUs' traces.

    python3 -m pcram.investigations.fault_timeline QEMU GUEST
        [--size GIB] [--link LINK] [--preempt] [--reps N]
        [--relay DELAY-RELAY]

Migrates the test guest over one of the benchmark's links (default 1 GiB
over 10gbit, no preempt) with QEMU built with this module, both QEMUs
tracing with timestamps.  Both run on this host, so their clocks are the
same.  For each page a vCPU faulted on and the destination asked for, it
takes the times of four events:

  fault      the destination's fault thread read the fault and sends
             the request at once (postcopy_fault)
  rp         the source's return-path thread has the request
             (migrate_handle_rp_req_pages)
  dequeued   the source's migration thread takes it from its queue to
             send it on the main channel (get_queued_page), or finds it
             sent already (get_queued_page_not_dirty); with the preempt
             channel the return-path thread sends it itself and there is
             no such event
  placed     the destination has placed it and marked it received
             (postcopy_request_done)

and prints, over all faults of the runs, the median and 90th percentile
of each step: the return path (fault to rp), the source's queue (rp to
dequeued), and delivery (dequeued to placed: the source's socket, the
link, the destination's socket and the load thread), the last also for
the pages the background had sent already when their request was taken.
Tracing costs the destination CPU: compare the fault service it reports
with the benchmark's, not with the link.  Upstream's module traces every
placed page, not the requested ones: only this module is measured.
"""

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile

from ..bench import flatten
from .blocktime_trace import parse
from ..migrate import Scenario, run_scenario
from ..netlink import Link

DESTINATION_EVENTS = ('postcopy_fault', 'postcopy_request_done')
SOURCE_EVENTS = ('migrate_handle_rp_req_pages', 'get_queued_page',
                 'get_queued_page_not_dirty')


def destination_pages(events):
    """The first fault on each page, as (time, block, offset); and block
    base addresses, so that a host address names a page; and when each
    host page was placed and marked received (host -> [times])."""
    faults, bases, placed = [], {}, {}
    seen = set()
    for t, event, rest in events:
        if event == 'postcopy_fault':
            m = re.match(r'(\S+) offset=0x([0-9a-f]+) haddr=0x([0-9a-f]+)',
                         rest)
            block, offset = m.group(1), int(m.group(2), 16)
            haddr = int(m.group(3), 16)
            bases.setdefault(block, (haddr - offset) & ~0xfff)
            if (block, offset) not in seen:
                seen.add((block, offset))
                faults.append((t, block, offset))
        elif event == 'postcopy_request_done':
            host = int(re.search(r'host=0x([0-9a-f]+)', rest).group(1), 16)
            placed.setdefault(host, []).append(t)
    return faults, bases, placed


def source_pages(events):
    """(block, offset) -> times the return path had a request for it, and
    -> (time, sent already) its dequeues by the migration thread."""
    requested, dequeued = {}, {}
    block = None
    for t, event, rest in events:
        if event == 'migrate_handle_rp_req_pages':
            m = re.match(r'in (\S+) at 0x([0-9a-f]+)', rest)
            # A request in the block of the one before names none.
            if m.group(1) != '(null)':
                block = m.group(1)
            requested.setdefault((block, int(m.group(2), 16)), []).append(t)
        elif event in ('get_queued_page', 'get_queued_page_not_dirty'):
            m = re.match(r'(\S+)/0x([0-9a-f]+)', rest)
            dequeued.setdefault((m.group(1), int(m.group(2), 16)),
                                []).append((t, event != 'get_queued_page'))
    return requested, dequeued


def first_after(times, t):
    return next((x for x in times if x >= t), None)


def ms_between(t0, t1):
    """Milliseconds from @t0 to @t1; None if either is unknown or they
    are the wrong way round (an event of an earlier request)."""
    if t0 is None or t1 is None or t1 < t0:
        return None
    return (t1 - t0) * 1e3


def timelines(dst_events, src_events):
    """Per fault: dict of the steps' durations in ms (None: not seen)."""
    faults, bases, placed = destination_pages(dst_events)
    requested, dequeued = source_pages(src_events)
    out = []
    for t, block, offset in faults:
        key = (block, offset)
        t_rp = first_after(requested.get(key, []), t)
        deq = None
        if t_rp is not None:
            deq = next((d for d in dequeued.get(key, []) if d[0] >= t_rp),
                       None)
        t_done = first_after(placed.get(bases[block] + offset, []), t)
        start = deq[0] if deq else t_rp
        out.append({
            'total': ms_between(t, t_done),
            'rp': ms_between(t, t_rp),
            'queue': ms_between(t_rp, deq and deq[0]),
            'deliver': ms_between(start, t_done),
            'sent_already': bool(deq and deq[1]),
        })
    return out


def summary(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return 'none'
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return '%.2f ms median, %.2f p90, %.2f mean (%d)' % (
        statistics.median(values), p90, statistics.mean(values),
        len(values))


def report(steps):
    fresh = [s for s in steps if not s['sent_already']]
    lines = [
        'faults traced: %d (%d asked for a page the source had sent '
        'already)' % (len(steps), len(steps) - len(fresh)),
        '  fault to placed:         %s' % summary(s['total'] for s in steps),
        '  return path:             %s' % summary(s['rp'] for s in steps),
        "  source's queue:          %s" % summary(s['queue'] for s in steps),
        '  delivery, sent for it:   %s' % summary(s['deliver']
                                                  for s in fresh),
        '  delivery, sent already:  %s' % summary(
            s['deliver'] for s in steps if s['sent_already']),
    ]
    return '\n'.join(lines)


def trace_args(events):
    args = ['-msg', 'timestamp=on']
    for e in events:
        args += ['-trace', 'enable=' + e]
    return args


def run_once(args, link, keep):
    workdir = tempfile.mkdtemp(prefix='pcram-ft-', dir=keep)
    dst_trace = os.path.join(workdir, 'destination.trace')
    # Both QEMUs enable every event, each fires on its own side only; the
    # destination's trace goes to its file, the source's to its log.
    scn = Scenario(qemu=args.qemu, guest=args.guest,
                   ram_mb=args.size * 1024, preempt=args.preempt,
                   **link.endpoints(),
                   trace=DESTINATION_EVENTS[0], trace_file=dst_trace,
                   extra_args=trace_args(DESTINATION_EVENTS[1:] +
                                         SOURCE_EVENTS),
                   workdir=workdir)
    result = run_scenario(scn)
    with open(dst_trace, errors='replace') as f:
        dst_events = list(parse(f))
    with open(os.path.join(workdir, 'source.log'), errors='replace') as f:
        src_events = list(parse(f))
    return result, timelines(dst_events, src_events)


def main(argv):
    p = argparse.ArgumentParser(prog='fault_timeline',
                                description=__doc__.split('\n')[0])
    p.add_argument('qemu')
    p.add_argument('guest')
    p.add_argument('--size', type=int, default=1, help='GiB')
    p.add_argument('--link', default='10gbit')
    p.add_argument('--preempt', action='store_true')
    p.add_argument('--reps', type=int, default=1)
    p.add_argument('--relay', help='tools/delay-relay, built')
    args = p.parse_args(argv)
    keep = tempfile.mkdtemp(prefix='pcram-ft-')
    steps = []
    try:
        with Link(args.link, relay=args.relay) as link:
            print('%d GiB over %s (%s), %s' % (
                args.size, args.link, link.describe(),
                'preempt' if args.preempt else 'no preempt'))
            for rep in range(args.reps):
                result, run_steps = run_once(args, link, keep)
                steps += run_steps
                fig = flatten(result)
                print('run %d (%s): postcopy %.2f s, %d faults, fault '
                      'service %.2f ms (vCPU blocktime over faults)' % (
                          rep, result['scenario']['accel'],
                          fig['postcopy_s'], fig['pages_requested'],
                          fig['fault_service_ms'] or 0))
        print(report(steps))
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
