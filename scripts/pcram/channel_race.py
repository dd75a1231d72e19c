"""Evidence for QEMU's own ways of ending a paused destination.

    python3 -m pcram.channel_race QEMU [--no-connect]

QEMU 10.0's migration_ioc_process_incoming() (migration.c) takes any new
connection for the main channel while mis->from_src_file is NULL, and
socket.c accepts one whenever not all channels are there.  When the
destination pauses a postcopy migration, postcopy_pause_incoming()
(savevm.c) sets from_src_file to NULL first and marks the state
postcopy-paused only afterwards, after it has closed the return path and
the preempt channel.  A connection that lands in between is not a
recovery (postcopy_try_recover() wants postcopy-paused): QEMU starts a
second, fresh incoming migration on it, which fails, and with
exit-on-error (the default) the destination exits, taking the guest's
only running copy with it.  Neither the window nor the classification is
in the postcopy module.

Such a connection comes from the source's own preempt channel: a source
paused in the middle of a recovery handshake may already have started
its asynchronous connect (postcopy_preempt_establish_channel()), and the
destination pauses when its main channel breaks, at about the same time.

The test holds the destination's load thread in that window with gdb in
non-stop mode (a breakpoint on migrate_set_state() to postcopy-paused;
the main loop goes on running), opens a TCP connection to the
destination's migration port from the source's namespace, closes it, and
then lets the thread go.  With --no-connect it makes no connection: the
control, where the same pause must end in postcopy-paused.  Run it with a
QEMU built with either module (scripts/build.sh, --upstream).

    python3 -m pcram.channel_race QEMU --source-pause

checks the module's side of it: the source is paused (migrate-pause) while
its migration thread, in a recovery handshake, stands at the entry of
postcopy_preempt_establish_channel() (held there by gdb).  A source that
was paused must not open the preempt channel; the case then has to reach
postcopy-paused on both sides, recover and complete, with the guest's
memory clean.

    python3 -m pcram.channel_race QEMU --recovery-eof [--no-exit-on-error]

opens a connection to a paused destination's recovery port (after its
migrate-recover) and closes it before its first byte, as a source killed
right after its connect does, then has the source resume on the same
port.  QEMU 10.0 takes the connection for the main channel, pauses again
when it reads nothing, and recovers with the source's own connection:
the case must complete with the guest's memory clean.  QEMU 10.2 peeks at
a new channel's first 4 bytes first; channel.c fails the migration when
the peek fails and, with exit-on-error (the default), exits: the case
then checks that faults.py tells that exit apart (its
ended_by_qemu_peek()), as the fault matrix must.  With
--no-exit-on-error (migrate-incoming exit-on-error: false) 10.2 stays
paused and recovers, but the failed channel's yank function stays
registered, and QEMU aborts on it in yank_unregister_instance() once the
migration has completed (docs/faults.md).
"""

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

from . import evidence
from .faults import (DST_ADDR, SRC_NS, Case, CaseArgs, CaseFailed,
                     Namespaces)
from .migrate import migrate_pause
from .qmp import QMPError

HIT_TIMEOUT_S = 30


class NonStopGdb:
    """gdb attached to @pid in non-stop mode: a stopped thread does not
    stop the others.  Commands go in on stdin, output is read by a thread."""

    def __init__(self, pid):
        self.proc = subprocess.Popen(
            ['gdb', '-nx', '-q', '-ex', 'set pagination off',
             '-ex', 'set confirm off', '-ex', 'set non-stop on',
             '-ex', 'attach %d' % pid],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip('\n'))

    def send(self, command):
        self.proc.stdin.write(command + '\n')
        self.proc.stdin.flush()

    def expect(self, text, timeout):
        """The first output line containing @text, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if text in line:
                return line
        return None

    def close(self):
        try:
            self.send('detach')
            self.send('quit')
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def stray_connection(port, hold_s=1):
    """Connect to the destination from the source's namespace, then hang
    up after @hold_s seconds without sending a byte, as a source that
    paused or died after starting its connect does."""
    code = ('import socket, time\n'
            's = socket.create_connection(("%s", %d), timeout=5)\n'
            'time.sleep(%g)\n'
            's.close()\n' % (DST_ADDR, port, hold_s))
    return subprocess.run(['ip', 'netns', 'exec', SRC_NS, 'python3', '-c',
                           code], stderr=subprocess.PIPE, text=True)


def hold_in_window(case, gdb):
    """Pause the destination and stop its load thread between
    from_src_file = NULL and the state postcopy-paused (@gdb holds a
    breakpoint on the move to postcopy-paused)."""
    case.dst.qmp.cmd('migrate-pause')
    hit = gdb.expect('hit Breakpoint', HIT_TIMEOUT_S)
    if not hit:
        raise CaseFailed('the destination did not reach the pause')
    print('held: %s' % hit.strip())
    # The thread that hit is the selected one; show the window's state.
    gdb.send('print current_incoming->from_src_file')
    gdb.send('print current_incoming->state')
    for what in ('from_src_file', 'state'):
        line = gdb.expect('$', 10)
        print('  in the window, mis->%s = %s' % (
            what, line.split('=', 1)[-1].strip() if line else '?'))


def show_signal(gdb):
    """A signal that stops a thread meanwhile (gdb holds it before QEMU
    sees it): which one, and where."""
    line = gdb.expect('received signal', 5)
    if not line:
        print('no thread received a signal')
        return
    print('gdb: %s' % line.strip())
    gdb.send('bt 12')
    gdb.send('echo bt-done\\n')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = gdb.expect('', 1)
        if line is None or 'bt-done' in line:
            break
        if line.startswith('#'):
            print('  ' + line.strip())


def attach_with_break(vm, location):
    """gdb on @vm, every thread running, a breakpoint at @location."""
    gdb = NonStopGdb(vm.proc.pid)
    gdb.send('echo gdb-attached\\n')
    if not gdb.expect('gdb-attached', 30):
        raise CaseFailed('gdb did not attach')
    # Non-stop attach stops every thread, reporting them one by one: let
    # the reports settle before all of them are continued.
    time.sleep(1)
    gdb.send('break ' + location)
    gdb.send('continue -a &')
    gdb.send('echo gdb-ready\\n')
    if not gdb.expect('gdb-ready', 30):
        raise CaseFailed('gdb did not continue QEMU')
    return gdb


def report_failure(case, error):
    """Say why @case failed, with both QEMUs' last log lines; 1."""
    print('FAILED: %s' % error)
    for vm in (case.src, case.dst):
        if vm is not None:
            print('%s log:\n%s' % (vm.name, vm.log_tail(8)))
    return 1


def postcopy_under_way(case):
    """Migrate, switch to postcopy and let it run for half a second."""
    case.start_migration()
    case.start_postcopy()
    case.wait_until(lambda s, d: s == d == 'postcopy-active', 60, 'postcopy')
    time.sleep(0.5)


def source_paused_before_connect(qemu):
    with Namespaces():
        case = Case(CaseArgs(qemu), 'pause-src', 'recovery', True, False,
                    tempfile.mkdtemp(prefix='pcram-race-'))
        gdb = None
        try:
            postcopy_under_way(case)
            case.dst.qmp.cmd('migrate-pause')
            case.wait_until(lambda s, d: s == d == 'postcopy-paused', 60,
                            'the first pause')
            gdb = attach_with_break(case.src,
                                    'postcopy_preempt_establish_channel')
            case.recover()
            hit = gdb.expect('hit Breakpoint', HIT_TIMEOUT_S)
            if not hit:
                raise CaseFailed('the source did not reach the connect')
            print('source held: %s' % hit.strip())
            case.src.qmp.cmd('migrate-pause')
            print('source paused while held; states: source %s, '
                  'destination %s' % (case.status(case.src),
                                      case.status(case.dst)))
            gdb.send('delete')
            gdb.close()
            gdb = None
            outcome, bad, _ = case.fault_after_switch()
            print('outcome: %s; pages lost: %d' % (outcome, bad))
            # A recovery the harness did not ask for is a connection the
            # paused source opened, which the destination took for one.
            case.dst.qmp.cmd('query-status')
            recovers = sum(1 for e in case.dst.qmp.events
                           if e['event'] == 'MIGRATION' and
                           e['data']['status'] == 'postcopy-recover')
            print('destination entered postcopy-recover %d times for %d '
                  'migrate-recover commands' % (recovers, case.recoveries))
            return 0 if bad == 0 and recovers == case.recoveries else 1
        except CaseFailed as e:
            return report_failure(case, e)
        finally:
            if gdb:
                gdb.close()
            case.close()


def recovery_connection_closed(qemu, exit_on_error):
    """A paused destination's recovery port gets a connection that closes
    before its first byte (a source killed right after its connect), then
    the source's own resume.  Prints what the destination did with each and
    returns 0 when it stayed paused, recovered, completed and kept the
    guest's memory clean, or when it ended by QEMU 10.2's channel peek
    (ended_by_qemu_peek())."""
    with Namespaces():
        case = Case(CaseArgs(qemu), 'pause-dst', 'recovery', False, False,
                    tempfile.mkdtemp(prefix='pcram-race-'))
        case.exit_on_error = exit_on_error
        try:
            postcopy_under_way(case)
            migrate_pause(case.dst)
            case.wait_until(lambda s, d: s == d == 'postcopy-paused', 60,
                            'the pause')
            uri = case.next_uri()
            case.dst.qmp.cmd('migrate-recover', uri=uri)
            r = stray_connection(case.port, hold_s=0)
            if r.returncode != 0:
                raise CaseFailed('no connection to the recovery port %d: %s'
                                 % (case.port, r.stderr.strip()))
            print('a connection to the recovery port %d, closed before its '
                  'first byte: made' % case.port)
            time.sleep(2)
            if not case.alive(case.dst):
                print('destination: %s' % evidence.how_ended(
                    case.dst.proc.poll()))
                print('destination log:\n' + case.dst.log_tail(6))
                if case.ended_by_qemu_peek():
                    print('outcome: ended by QEMU\'s channel peek (10.2\'s '
                          'channel.c, not the module)')
                    return 0
                print('outcome: the destination ended')
                return 1
            print('destination alive, migration %s' % case.status(case.dst))
            case.recoveries += 1
            case.src.qmp.cmd('migrate', uri=uri, resume=True)
            # The destination's query-migrate may say "failed" from here on
            # (QEMU 10.2 marks its outgoing state failed for the closed
            # connection, and that status wins): wait for the source.
            s = case.wait_until(lambda s, d: s in ('completed', 'failed',
                                                   'postcopy-paused'), 240,
                                'the end of the recovered migration')[0]
            # A destination QEMU aborts at its end has no guest to check.
            time.sleep(1)
            survived = s == 'completed' and case.alive(case.dst)
            bad = case.verify_guest() if survived else 0
            print('then the source\'s resume: source %s, destination '
                  'migration %s; pages lost: %d' % (s, case.status(case.dst),
                                                    bad))
            time.sleep(2)
            rc = case.dst.proc.poll()
            print('destination after the end: %s' % (
                'running' if rc is None else evidence.how_ended(rc)))
            print('destination log:\n' + case.dst.log_tail(6))
            clean = survived and bad == 0 and rc is None
            print('outcome: %s' % ('paused again, recovered, completed; '
                                   'the guest\'s memory clean' if clean
                                   else 'not recovered'))
            return 0 if clean else 1
        except (CaseFailed, QMPError) as e:
            return report_failure(case, e)
        finally:
            case.close()


def main(argv):
    qemu = argv[0]
    if '--source-pause' in argv[1:]:
        return source_paused_before_connect(qemu)
    if '--recovery-eof' in argv[1:]:
        return recovery_connection_closed(
            qemu, False if '--no-exit-on-error' in argv[1:] else None)
    connect = '--no-connect' not in argv[1:]
    with Namespaces():
        case = Case(CaseArgs(qemu), 'pause-dst', 'early', True, False,
                    tempfile.mkdtemp(prefix='pcram-race-'))
        gdb = None
        try:
            postcopy_under_way(case)
            # start_migration() listened on it; it stays open.
            port = case.port
            gdb = attach_with_break(
                case.dst, 'migrate_set_state if '
                'new_state == MIGRATION_STATUS_POSTCOPY_PAUSED')
            hold_in_window(case, gdb)
            if connect:
                r = stray_connection(port)
                print('a connection to port %d from the source\'s '
                      'namespace: %s' % (port, 'made and closed' if
                                         r.returncode == 0 else r.stderr))
                show_signal(gdb)
            print('destination alive while its load thread is held: %s'
                  % case.alive(case.dst))
            if case.alive(case.dst):
                gdb.send('continue -a &')
                time.sleep(3)
            gdb.close()
            gdb = None
            time.sleep(2)
            rc = case.dst.proc.poll()
            print('destination: %s, migration %s' % (
                'running' if rc is None else 'exited, status %d' % rc,
                case.status(case.dst)))
            print('destination log:\n' + case.dst.log_tail(12))
        finally:
            if gdb:
                gdb.close()
            for vm in (case.src, case.dst):
                if vm and vm.proc.poll() is None:
                    os.killpg(vm.proc.pid, signal.SIGKILL)
            case.close()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
