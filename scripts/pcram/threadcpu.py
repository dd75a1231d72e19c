"""Where the CPU goes during postcopy, thread by thread.

    PYTHONPATH=scripts python3 -m pcram.threadcpu scripts/main-job.sh ...

Runs the command and, while it runs, samples the CPU time (user + system)
of every thread of every QEMU process every 0.25 s from
/proc/PID/task/TID/stat.  The postcopy window is taken as the time the
destination's load thread (``mig/dst/listen``, named with
``-name ...,debug-threads=on`` as the harness does) was seen; the report
gives each thread's CPU seconds in that window, and the share of a core.
The destination is the QEMU started with ``-incoming``.
"""

import os
import subprocess
import sys
import threading
import time

LISTEN = 'mig/dst/listen'
PERIOD_S = 0.25


def qemu_processes():
    """(pid, 'src' or 'dst') of each running QEMU system emulator."""
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            exe = os.readlink('/proc/%s/exe' % name)
            with open('/proc/%s/cmdline' % name, 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if os.path.basename(exe).startswith('qemu-system-'):
            yield name, 'dst' if b'-incoming' in args else 'src'


def stat_cpu_ticks(path):
    """(name, user + system CPU ticks) from a /proc/PID[/task/TID]/stat
    file; OSError if the process or thread is gone."""
    with open(path) as f:
        stat = f.read()
    name = stat[stat.index('(') + 1:stat.rindex(')')]
    fields = stat[stat.rindex(')') + 2:].split()
    return name, int(fields[11]) + int(fields[12])


def per_thread(pid, read, file):
    """{(thread id, thread name): value} of one process, where
    read(/proc/PID/task/TID/FILE) gives (name, value); a thread gone
    meanwhile (OSError) is left out."""
    out = {}
    task = '/proc/%s/task' % pid
    for tid in os.listdir(task):
        try:
            name, value = read('%s/%s/%s' % (task, tid, file))
        except OSError:
            continue
        out[(tid, name)] = value
    return out


def _thread_times(pid):
    """{(thread id, thread name): CPU ticks} of one process."""
    return per_thread(pid, stat_cpu_ticks, 'stat')


class Sampler:
    """Samples in a background thread until stop(): every QEMU on the
    machine, or only the processes of ``roles`` ({pid: role})."""

    def __init__(self, roles=None):
        # (time, {(role, pid, tid, thread name): CPU ticks})
        self.samples = []
        self._roles = roles
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            now = time.monotonic()
            snap = {}
            processes = (self._roles.items() if self._roles is not None
                         else qemu_processes())
            for pid, role in processes:
                try:
                    for (tid, name), ticks in _thread_times(pid).items():
                        snap[(role, pid, tid, name)] = ticks
                except OSError:
                    pass
            self.samples.append((now, snap))
            self._stop.wait(PERIOD_S)


def postcopy_usage(samples):
    """(window seconds, [(role, thread name, CPU seconds)]) over the
    samples in which the destination's load thread existed; None if it
    never did.  A thread first seen inside the window started there (its
    baseline is 0); one that ended inside it counts up to its last
    sample."""
    inside = [(t, s) for t, s in samples
              if any(k[0] == 'dst' and k[3] == LISTEN for k in s)]
    if len(inside) < 2:
        return None
    t0, first = inside[0]
    last = {}
    for _, snap in inside:
        last.update(snap)
    hz = os.sysconf('SC_CLK_TCK')
    usage = {}
    for key, ticks in last.items():
        role, _, _, name = key
        usage[(role, name)] = usage.get((role, name), 0) + \
            (ticks - first.get(key, 0)) / hz
    rows = sorted(((r, n, s) for (r, n), s in usage.items() if s > 0),
                  key=lambda row: -row[2])
    return inside[-1][0] - t0, rows


def window_usage(samples, t0, t1):
    """{(role, thread name): CPU seconds} between times t0 and t1 (the
    samples' clock, time.monotonic()).  A thread first seen after t0
    started inside the window (its baseline is 0); one gone before t1
    counts up to its last sample, so that threads which end with the
    migration count (all but at most one sample period of theirs).  The
    baseline is the last sample before t0."""
    first = None
    last = {}
    for t, snap in samples:
        if t < t0:
            first = snap
            continue
        if t > t1:
            break
        if first is None:
            first = snap
        last.update(snap)
    hz = os.sysconf('SC_CLK_TCK')
    usage = {}
    for key, ticks in last.items():
        role, _, _, name = key
        spent = (ticks - (first or {}).get(key, 0)) / hz
        usage[(role, name)] = usage.get((role, name), 0) + spent
    return {k: v for k, v in usage.items() if v > 0}


def report(window):
    if window is None:
        return 'threadcpu: no destination load thread (%s) was seen; ' \
               'was it a postcopy migration with debug-threads=on?' % LISTEN
    seconds, rows = window
    lines = ['CPU during postcopy (%.2f s while %s existed; %d cores):' % (
        seconds, LISTEN, os.cpu_count())]
    for role, name, cpu in rows:
        lines.append('  %-3s %-20s %6.2f CPU-s  %5.1f%% of a core' % (
            role, name, cpu, 100.0 * cpu / seconds))
    total = sum(cpu for *_, cpu in rows)
    lines.append('  all QEMU threads %.2f CPU-s, %.0f%% of all cores' % (
        total, 100.0 * total / seconds / os.cpu_count()))
    return '\n'.join(lines)


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    sampler = Sampler()
    sampler.start()
    try:
        rc = subprocess.call(argv)
    finally:
        sampler.stop()
    print(report(postcopy_usage(sampler.samples)))
    return rc


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
