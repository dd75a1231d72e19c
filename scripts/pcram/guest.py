"""The test guest (guest/guest.c): its serial reports, parsed.

Lines start with "PCG "; each one is timestamped on arrival with the host's
monotonic clock.  The guest times batches of accesses (READY's batch=,
32 by default), not each access; times are in nanoseconds of the guest's
clock (kvmclock under KVM, else the TSC), whose cost per read READY gives
as clock_ns.  Bucket B covers
[(4 + B % 4) << (B // 4), (5 + B % 4) << (B // 4)) ns.
"""

import socket
import threading
import time

from .qmp import connect_unix


def bucket_low_ns(b):
    return (4 + b % 4) << (b // 4)


def bucket_high_ns(b):
    return (5 + b % 4) << (b // 4)


# A batch this long (or longer) stood stalled; the time the guest normally
# takes for one is tens of microseconds.
STALL_NS = 1000000


# The access patterns the test guest knows (guest/guest.c, pattern=).
PATTERNS = ('seq', 'random', 'hot', 'wset')
# The privilege level the guest's workload ran at, as a report names it.
CPL_MODES = {0: 'kernel mode', 3: 'user mode'}


def stalled_ms(hist):
    """The time the vCPUs spent in stalled batches, all of them together,
    from a histogram of batch times (each batch at its bucket's middle):
    the guest's own account of blocktime, which no module keeps, though it
    also counts a vCPU that waited for a CPU."""
    ns = sum(count * (bucket_low_ns(int(b)) + bucket_high_ns(int(b))) / 2
             for b, count in hist.items() if bucket_low_ns(int(b)) >= STALL_NS)
    return ns / 1e6


class Interval:
    """One 'PCG I' report: the guest's work in one interval."""

    def __init__(self, host_time, fields):
        self.host_time = host_time
        self.n = int(fields['n'])
        self.t_ms = int(fields['t'])
        self.ops = [int(x) for x in fields['ops'].split(',') if x]
        self.max_ns = int(fields['max'])
        self.hist = {}
        for item in fields.get('h', '').split(','):
            if item:
                b, count = item.split(':')
                self.hist[int(b)] = int(count)


def parse_fields(text):
    return dict(kv.split('=', 1) for kv in text.split() if '=' in kv)


class GuestConsole:
    """Reads a guest's serial chardev (a UNIX socket) in a thread."""

    def __init__(self, path, name):
        self.path = path
        self.name = name
        self.lines = []                     # (host_time, text)
        self.cond = threading.Condition()
        self.sock = None
        self.thread = None

    def connect(self, wait=30.0):
        self.sock = connect_unix(self.path, wait)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        buf = b''
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            now = time.monotonic()
            *complete, buf = buf.split(b'\n')
            with self.cond:
                for raw in complete:
                    text = raw.decode(errors='replace').strip()
                    if text.startswith('PCG '):
                        self.lines.append((now, text[4:]))
                self.cond.notify_all()

    def send(self, text):
        self.sock.sendall(text.encode())

    def wait_for(self, predicate, timeout, start=0):
        """First line from index @start on for which predicate(text) holds;
        returns (index, host_time, text) or None after @timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.lines):
                    t, text = self.lines[i]
                    if predicate(text):
                        return i, t, text
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def snapshot(self):
        with self.cond:
            return list(self.lines)

    def close(self):
        if self.sock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


class GuestReport:
    """Everything the guest said, from both consoles, in one timeline."""

    def __init__(self, lines):
        self.ready = None
        self.intervals = []
        self.bad = []
        self.verify = []
        # The disk's figures (a guest with a disk: PCG DISK, before END)
        self.disk = None
        # The disk's read aimed at an address (PCG B, the command 'b'), and
        # the host's time of its answer ('t', time.monotonic())
        self.aimed_read = None
        self.ended = False
        for t, text in sorted(lines):
            kind, _, rest = text.partition(' ')
            if kind == 'READY':
                self.ready = parse_fields(rest)
            elif kind == 'I':
                self.intervals.append(Interval(t, parse_fields(rest)))
            elif kind == 'BAD':
                self.bad.append(parse_fields(rest))
            elif kind == 'V':
                self.verify.append(parse_fields(rest))
            elif kind == 'DISK':
                self.disk = parse_fields(rest)
            elif kind == 'B':
                self.aimed_read = dict(parse_fields(rest), t=t)
            elif kind == 'END':
                self.ended = True
        # Each report by its sequence number: the one before it gives the
        # guest time it covers.
        self._by_n = {i.n: i for i in self.intervals}

    @property
    def clock(self):
        return self.ready.get('clock', '?') if self.ready else '?'

    @property
    def clock_cost_ns(self):
        """What one read of the guest's clock costs, measured at boot."""
        return int(self.ready['clock_ns']) if self.ready and \
            'clock_ns' in self.ready else None

    @property
    def cpl(self):
        """The privilege level the workload ran at: 3 (user mode), or 0
        (kernel mode: a guest's choice, and every guest before it said)."""
        return int(self.ready.get('cpl', 0)) if self.ready else 0

    @property
    def batch(self):
        """Accesses per timed batch (1 for a guest that timed each)."""
        return int(self.ready.get('batch', 1)) if self.ready else 1

    def window(self, t0, t1):
        """Intervals whose reports arrived in [t0, t1 + one interval): each
        report covers the interval before it."""
        if not self.intervals:
            return []
        step = int(self.ready.get('interval', 100)) / 1000.0
        return [i for i in self.intervals
                if t0 < i.host_time <= t1 + step]

    def latency(self, intervals):
        """Percentiles (us) of the batch times of @intervals, and the
        longest batch (a stall shows in its batch)."""
        hist = {}
        for i in intervals:
            for b, c in i.hist.items():
                hist[b] = hist.get(b, 0) + c
        total = sum(hist.values())
        out = {'batches': total, 'batch': self.batch}
        for name, q in (('p50', 0.5), ('p90', 0.9), ('p99', 0.99),
                        ('p999', 0.999)):
            out[name] = self._quantile(hist, total, q) / 1000.0
        out['max'] = max((i.max_ns for i in intervals), default=0) / 1000.0
        return out, hist

    @staticmethod
    def _quantile(hist, total, q):
        if not total:
            return 0
        seen = 0
        for b in sorted(hist):
            seen += hist[b]
            if seen >= q * total:
                # the bucket's midpoint
                return (bucket_low_ns(b) + bucket_high_ns(b)) / 2
        return 0

    def clock_jump_s(self, intervals):
        """How far, at most, the guest's clock ran ahead of the host's
        between two consecutive reports of @intervals (0 if never).  A
        report arrives within moments of the guest writing it, so the
        guest's time between two can exceed the host's only by such a
        moment, unless its clock jumped: then every figure timed by the
        guest over that stretch (its rate, its batch times) is wrong."""
        jump = 0.0
        for i in intervals:
            before = self._by_n.get(i.n - 1)
            if before:
                jump = max(jump, (i.t_ms - before.t_ms) / 1000.0 -
                           (i.host_time - before.host_time))
        return jump

    def _elapsed_s(self, interval):
        """The guest time @interval covers: since the report before it,
        or the nominal interval for the first."""
        before = self._by_n.get(interval.n - 1)
        if before and interval.t_ms > before.t_ms:
            return (interval.t_ms - before.t_ms) / 1000.0
        return int(self.ready.get('interval', 100)) / 1000.0

    def between(self, t0, t1):
        """The reports that arrived after @t0, up to @t1."""
        return [i for i in self.intervals if t0 < i.host_time <= t1]

    def rate_bins(self, t0, t1, step):
        """The guest's rate (accesses per second of its time) in bins of
        @step seconds of host time from @t0 to @t1: [(bin start, rate or
        None when no report arrived in it)].  A report counts in the bin
        it arrived in, with all the time it covers."""
        bins = []
        t = t0
        while t < t1:
            reports = self.between(t, t + step)
            elapsed = sum(self._elapsed_s(i) for i in reports)
            bins.append((t, sum(sum(i.ops) for i in reports) / elapsed
                         if elapsed else None))
            t += step
        return bins

    def work_lost_s(self, t0, t1, baseline):
        """Seconds of the guest's work at rate @baseline that it did not
        get done in the reports that arrived from @t0 to @t1: the time
        they cover less the time their accesses would have taken at
        @baseline."""
        return sum(self._elapsed_s(i) - sum(i.ops) / baseline
                   for i in self.between(t0, t1))

    def ops_per_s(self, intervals):
        """Accesses per second of guest time over @intervals.  Each report
        covers the guest time since the one before it (t=), which is
        longer than the nominal interval when vCPU 0, which reports, was
        stalled: dividing by the nominal interval overstated the rate of
        the runs with the longest stalls."""
        if not intervals:
            return 0.0
        return (sum(sum(i.ops) for i in intervals) /
                sum(self._elapsed_s(i) for i in intervals))


# How many 1-second bins of the guest's rate after a migration are averaged
# before they are held against its rate before: one bin of a real program's
# rate (redis's) swings by half, so a single bin within 5% is luck.
BACK_WINDOW_BINS = 5


def back_to_full_speed(bins, baseline, done_s, cap_s, within=0.05,
                       window=BACK_WINDOW_BINS):
    """When the guest is back to full speed: the start of the first run of
    @window bins of @bins ([(seconds from the switch, rate)]) that starts
    at most a bin before the migration completed (@done_s) and whose mean
    rate is within @within of @baseline; @cap_s when none is, up to it.
    Bins without a report count as rate 0: the guest did nothing the
    harness saw.  Returns (seconds, back)."""
    for i, (t, _) in enumerate(bins):
        if t >= cap_s:
            break
        run = bins[i:i + window]
        if t < 0 or t + 1e-9 < done_s - 1.0 or len(run) < window:
            continue
        mean = sum(rate or 0.0 for _, rate in run) / window
        if mean >= (1 - within) * baseline:
            return t, True
    return cap_s, False
