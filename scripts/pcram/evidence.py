"""A failed case's files: kept, with what it takes to say why it failed.

The fault cases, the soak and the vhost-user cases each run in a work
directory of their own, where migrate.Vm puts every QEMU's log (its
stdout and stderr, NAME.log), its QMP and serial sockets and, on a
destination, its trace (NAME.trace: TRACE below, each line with its
thread id and time, -msg timestamp=on).  A case that passes removes the
directory.  One that fails keeps it, under results/failed/ in the
repository, and adds for every QEMU the case started:

  NAME.exit     how it ended: its exit status or the signal that killed
                it, and whether it ended on its own (or by the case's
                fault) or still ran when the harness stopped it (quit,
                or SIGKILL)
  NAME.console  the guest's serial records (PCG lines), with their times

and for the case:

  events.log    one timeline of both sides: each QEMU's QMP events (with
                QEMU's own timestamps, as far as the harness's QMP client
                received them), the migration states the harness saw
                (query-migrate, with its error-desc), and the harness's
                own steps (the fault, each recovery)
  case.txt      the case, its outcome, and each QEMU's command line

The line that reports the failure ends with "files: DIR" (mention()).
Every time is wall-clock, seconds since the epoch first, so that the
timeline, the trace and the logs line up.
"""

import datetime
import json
import os
import shlex
import shutil
import signal
import stat
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FAILED_DIR = os.path.join(REPO, 'results', 'failed')

# Trace events for a destination: this module's (and upstream's
# postcopy-ram.c's, and QEMU's postcopy pauses), the postcopy commands the
# destination loads, and every change of its migration state.
TRACE = ['postcopy_*', 'loadvm_postcopy_handle_*', 'migrate_set_state']
# For every QEMU: a thread id and time on each trace line, a time on each
# of QEMU's own error messages.
QEMU_ARGS = ['-msg', 'timestamp=on']


def mention(path):
    """How a line that reports a failure names its kept files."""
    return 'files: %s' % path


def wall(t=None):
    """@t (time.time(), now by default) as the timeline writes it."""
    t = time.time() if t is None else t
    return '%.6f %s' % (t, datetime.datetime.fromtimestamp(
        t, datetime.timezone.utc).strftime('%H:%M:%S.%f'))


def how_ended(returncode):
    """A Popen returncode in words."""
    if returncode is None:
        return 'still running'
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = 'unknown'
        return 'killed by signal %d (%s)' % (-returncode, name)
    return 'exit status %d' % returncode


class Evidence:
    """What one case's QEMUs and the harness did, kept if the case fails.

    The harness calls watch() for each QEMU it starts, status() with each
    query-migrate answer it gets, step() at each thing it does to the
    migration, before_stop() before it stops a QEMU (its QMP events, and
    whether it still ran, are lost with it), then done()."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.vms = []
        self.timeline = []          # (time.time(), side, text)
        self.seen = {}              # side: its last (status, error)
        self.running = {}           # vm name: ran when the harness stopped it
        # The guest's console times are time.monotonic().
        self.mono_to_wall = time.time() - time.monotonic()

    def watch(self, vm):
        if vm not in self.vms:
            self.vms.append(vm)
        return vm

    def step(self, text, side='harness'):
        self.timeline.append((time.time(), side, text))

    def status(self, side, info):
        """A query-migrate answer @info from @side: kept when it differs
        from the last one."""
        now = (info.get('status', 'none'), info.get('error-desc'))
        if self.seen.get(side) != now:
            self.seen[side] = now
            self.step('status %s%s' % (now[0], ' (%s)' % now[1]
                                       if now[1] else ''), side)

    def take_events(self, vms=None):
        """Pull the QMP events that @vms (all watched by default) sent so
        far into their QMP objects, which keep them after close()."""
        for vm in vms or self.vms:
            self.watch(vm)
            try:
                vm.qmp.events
            except Exception:       # a monitor that broke with its QEMU
                pass

    def before_stop(self, vms=None):
        """Right before the harness stops @vms (all watched by default):
        their events, and whether each still ran (or had ended on its
        own, or by the case's fault)."""
        self.take_events(vms)
        for vm in vms or self.vms:
            self.running.setdefault(vm.name, vm.proc.poll() is None)

    # --- the end of the case ----------------------------------------------

    def done(self, passed, label, outcome, move=True):
        """Remove the work directory when the case @passed; else write the
        files above into it and keep it, moved to FAILED_DIR/LABEL-TIME
        unless @move is false.  Returns the kept directory, or None."""
        if passed:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return None
        self.take_events()
        for vm in self.vms:
            self._write_vm(vm)
        self._write('events.log', self._events_text())
        self._write('case.txt', self._case_text(label, outcome))
        return self._keep(label) if move else self.workdir

    def _write(self, name, text):
        with open(os.path.join(self.workdir, name), 'w') as f:
            f.write(text)

    def _write_vm(self, vm):
        text = how_ended(vm.proc.poll())
        if vm.name not in self.running:
            # The harness did not see it stop (migrate.run_scenario's).
            text += ' (the harness quits, or kills, a QEMU still running)'
        elif self.running[vm.name]:
            text = 'ran until the harness stopped it: ' + text
        else:
            text = 'ended before the harness stopped it: ' + text
        self._write(vm.name + '.exit', text + '\n')
        self._write(vm.name + '.console', ''.join(
            '%s %s\n' % (wall(t + self.mono_to_wall), line)
            for t, line in vm.console.snapshot()))

    def _events_text(self):
        lines = list(self.timeline)
        for vm in self.vms:
            try:
                events = vm.qmp.events
            except Exception:
                events = []
            for e in events:
                ts = e.get('timestamp', {})
                t = ts.get('seconds', 0) + ts.get('microseconds', 0) / 1e6
                lines.append((t, vm.name, 'event %s %s' % (
                    e.get('event'), json.dumps(e.get('data', {}),
                                               sort_keys=True))))
        lines.sort(key=lambda x: x[0])
        width = max([len(side) for _, side, _ in lines] + [8])
        return ''.join('%s %-*s %s\n' % (wall(t), width, side, text)
                       for t, side, text in lines)

    def _case_text(self, label, outcome):
        text = 'case: %s\nended: %s\n\noutcome:\n%s\n\ncommand lines:\n' % (
            label, time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
            outcome)
        for vm in self.vms:
            text += '%s: %s\n' % (vm.name, ' '.join(
                shlex.quote(str(a)) for a in vm.proc.args))
        return text

    def _keep(self, label):
        """Move the work directory to FAILED_DIR, without its sockets
        (their QEMUs are gone; and a copy across file systems could not
        take them)."""
        for root, _, files in os.walk(self.workdir):
            for name in files:
                path = os.path.join(root, name)
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
        os.makedirs(FAILED_DIR, exist_ok=True)
        base = os.path.join(FAILED_DIR, '%s-%s' % (
            label.replace('/', '-').replace('+', '-'),
            time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())))
        dest, n = base, 1
        while os.path.exists(dest):
            n += 1
            dest = '%s.%d' % (base, n)
        shutil.move(self.workdir, dest)
        self.workdir = dest
        return dest
