"""How this module's vCPU waits end, from the destination's trace.

    python3 -m pcram.investigations.blocktime_trace QEMU GUEST
        [--size GIB] [--link LINK] [--relay DELAY-RELAY]

Migrates the test guest once over one of the benchmark's links (default
4 GiB over 10gbit) with QEMU built with this module, tracing the
destination's postcopy_fault, postcopy_blocktime_end and
postcopy_request_done events with timestamps.  Per vCPU thread, a wait
starts at a fault on a page and ends either with that page
(postcopy_blocktime_end) or at the thread's next fault on another page,
the two ways the module's account closes a wait.  Prints how many waits
ended each way and the time each way adds up to, next to the module's own
vCPU blocktime; and, for the second kind, when the page waited for was
marked received, measured from that next fault.  The ioctl that places a
page wakes its vCPU before the placing thread marks the page received, so
a woken vCPU can fault again first: then its page comes just after.

Upstream QEMU 10.0's account keeps one address and one start time per
vCPU and overwrites both at the vCPU's next fault, so the second kind of
wait never reaches its total (docs/notes/2026-12-02-fault-path.md).
"""

import argparse
import os
import re
import shutil
import sys
import tempfile

from ..migrate import Scenario, run_scenario
from ..netlink import Link

LINE = re.compile(r'^\d+@(\d+\.\d+):(\S+) (.*)$')
PAGE_MASK = ~0xfff


def parse(lines):
    """(time, event, arguments) of every trace line."""
    for line in lines:
        m = LINE.match(line.strip())
        if m:
            yield float(m.group(1)), m.group(2), m.group(3)


def arrivals(events):
    """Page -> the times its request was done (the page in place and
    marked received, after the ioctl that woke its waiters)."""
    done = {}
    for t, event, rest in events:
        if event == 'postcopy_request_done':
            page = int(re.search(r'host=0x([0-9a-f]+)', rest).group(1), 16)
            done.setdefault(page, []).append(t)
    return done


def waits(events):
    """(ended by the page, ms), (ended by another fault, ms), still open,
    and for each wait of the second kind how long after that next fault
    its own page was marked received (ms; None if it never was)."""
    events = list(events)
    done = arrivals(events)
    waiting = {}        # thread -> (page, since)
    by_page = {}        # page -> threads waiting on it
    by_page_n = by_fault_n = 0
    by_page_ms = by_fault_ms = 0.0
    late = []
    for t, event, rest in events:
        if event == 'postcopy_fault':
            tid = re.search(r'tid=(\d+)', rest).group(1)
            page = int(re.search(r'haddr=0x([0-9a-f]+)', rest).group(1),
                       16) & PAGE_MASK
            old = waiting.get(tid)
            if old and old[0] == page:
                continue
            if old:
                by_fault_n += 1
                by_fault_ms += (t - old[1]) * 1e3
                by_page.get(old[0], set()).discard(tid)
                after = [d for d in done.get(old[0], []) if d >= old[1]]
                late.append((after[0] - t) * 1e3 if after else None)
            waiting[tid] = (page, t)
            by_page.setdefault(page, set()).add(tid)
        elif event == 'postcopy_blocktime_end':
            page = int(re.search(r'page=0x([0-9a-f]+)', rest).group(1), 16)
            for tid in by_page.pop(page, set()):
                by_page_n += 1
                by_page_ms += (t - waiting.pop(tid)[1]) * 1e3
    return ((by_page_n, by_page_ms), (by_fault_n, by_fault_ms),
            len(waiting), late)


def describe_late(late):
    """When the pages of the waits that another fault ended arrived."""
    never = sum(1 for x in late if x is None)
    known = sorted(x for x in late if x is not None)
    if not known:
        return '%d of those pages never arrived' % never
    return ('their pages were marked received %.3f ms (median; %.3f to '
            '%.3f) after that next fault, %d of them within 1 ms; %d never' % (
                known[len(known) // 2], known[0], known[-1],
                sum(1 for x in known if abs(x) < 1.0), never))


def main(argv):
    p = argparse.ArgumentParser(prog='blocktime_trace',
                                description=__doc__.split('\n')[0])
    p.add_argument('qemu')
    p.add_argument('guest')
    p.add_argument('--size', type=int, default=4, help='GiB')
    p.add_argument('--link', default='10gbit')
    p.add_argument('--relay', help='tools/delay-relay, built')
    args = p.parse_args(argv)
    keep = tempfile.mkdtemp(prefix='pcram-bt-')
    trace = os.path.join(keep, 'destination.trace')
    try:
        with Link(args.link, relay=args.relay) as link:
            scn = Scenario(qemu=args.qemu, guest=args.guest,
                           ram_mb=args.size * 1024, **link.endpoints(),
                           trace='postcopy_fault', trace_file=trace,
                           # Both QEMUs; only the destination has it.
                           extra_args=['-msg', 'timestamp=on', '-trace',
                                       'enable=postcopy_blocktime_end',
                                       '-trace',
                                       'enable=postcopy_request_done'])
            result = run_scenario(scn)
        with open(trace) as f:
            (page_n, page_ms), (fault_n, fault_ms), still, late = waits(
                parse(f))
        print('%d GiB over %s: %d vCPU waits ended with their page '
              '(%.0f ms), %d with a fault on another page (%.0f ms), %d '
              'open at the end; the module counted %s ms of vCPU '
              'blocktime; postcopy %.2f s' % (
                  args.size, args.link, page_n, page_ms, fault_n, fault_ms,
                  still, result['vcpu_blocktime_ms'], result['postcopy_s']))
        print(describe_late(late))
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
