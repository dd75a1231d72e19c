"""How often each QEMU thread is switched out during postcopy.

    python3 -m pcram.investigations.ctx_switches COMMAND [ARG...]

Runs the command (scripts/bench.sh, say) and, while it runs, reads the
voluntary and involuntary context switches of every thread of every QEMU
on the machine every 0.2 s (/proc/PID/task/TID/status).  A postcopy
window is the time the destination's load thread (``mig/dst/listen``)
exists, as in pcram.threadcpu; at the end of each window it prints, per
thread name and side, the switches in the window and per second.  Each
QEMU is labelled with the build directory of its binary (``qemu-ours``,
``qemu-upstream``), so that the windows of an interleaved benchmark can
be told apart.

A voluntary switch is the thread going to sleep (a futex wait, a
blocking read); an involuntary one is the scheduler taking the CPU from a
runnable thread.  On a 2-core machine a thread that wakes often costs the
vCPUs more than its own CPU time shows: each wake-up preempts someone.
The sampling takes a little CPU of its own, the same for either module.
"""

import collections
import os
import subprocess
import sys
import threading
import time

from pcram.threadcpu import LISTEN, per_thread, qemu_processes

PERIOD_S = 0.2


def status_switches(path):
    """(name, (voluntary, involuntary)) from a /proc/.../status file;
    OSError if the thread is gone."""
    with open(path) as f:
        fields = dict(line.split(':', 1) for line in f if ':' in line)
    return fields['Name'].strip(), (
        int(fields['voluntary_ctxt_switches']),
        int(fields['nonvoluntary_ctxt_switches']))


def build_label(pid):
    """The build directory of a QEMU's binary: .../qemu-ours/build/qemu-..."""
    try:
        exe = os.readlink('/proc/%s/exe' % pid)
    except OSError:
        return '?'
    return os.path.basename(os.path.dirname(os.path.dirname(exe)))


def snapshot():
    """{(role, build, pid, tid, name): (voluntary, involuntary)}."""
    snap = {}
    for pid, role in qemu_processes():
        label = build_label(pid)
        try:
            for (tid, name), counts in per_thread(
                    pid, status_switches, 'status').items():
                snap[(role, label, pid, tid, name)] = counts
        except OSError:
            pass
    return snap


def window_report(seconds, first, last):
    """The lines for one postcopy window, busiest thread first."""
    totals = collections.defaultdict(lambda: [0, 0])
    for key, (vol, invol) in last.items():
        base = first.get(key, (0, 0))
        role, label, _, _, name = key
        totals[(role, label, name)][0] += vol - base[0]
        totals[(role, label, name)][1] += invol - base[1]
    lines = ['postcopy window of %.1f s:' % seconds]
    for (role, label, name), (vol, invol) in sorted(
            totals.items(), key=lambda kv: -sum(kv[1])):
        if vol or invol:
            lines.append('  %-3s %-14s %-18s voluntary %7d (%6.0f/s)  '
                         'involuntary %7d (%6.0f/s)' % (
                             role, label, name, vol, vol / seconds,
                             invol, invol / seconds))
    return '\n'.join(lines)


def watch(stop):
    t0 = first = None
    last = {}
    while not stop.is_set():
        snap = snapshot()
        now = time.monotonic()
        if any(k[0] == 'dst' and k[4] == LISTEN for k in snap):
            if t0 is None:
                t0, first, last = now, snap, {}
            last.update(snap)
            t1 = now
        elif t0 is not None:
            print(window_report(max(t1 - t0, PERIOD_S), first, last),
                  flush=True)
            t0 = None
        stop.wait(PERIOD_S)
    if t0 is not None:
        print(window_report(max(t1 - t0, PERIOD_S), first, last), flush=True)


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,), daemon=True)
    watcher.start()
    try:
        rc = subprocess.call(argv)
    finally:
        stop.set()
        watcher.join()
    return rc


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
