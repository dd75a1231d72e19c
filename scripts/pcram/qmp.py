"""QMP for the harness: QEMU's own client (python/qemu/qmp of the unpacked
QEMU tree, through its synchronous interface, qemu.qmp.legacy) behind the
few calls the harness makes.

What this adds to it: connecting while QEMU is still creating its socket
(or has died trying), and the harness's exceptions: QMPError for a
command that QEMU refused, ConnectionError when the connection is gone,
TimeoutError when QEMU does not answer.
"""

import asyncio
import glob
import os
import socket
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class QMPError(Exception):
    """A QMP command answered with an error."""


def _qemu_python_dir():
    """python/ of an unpacked QEMU tree (scripts/build.sh unpacks them);
    qemu.qmp is the same in every version this project builds."""
    cache = os.environ.get('PCRAM_CACHE', os.path.join(REPO, 'build'))
    for path in sorted(glob.glob(os.path.join(cache, 'qemu*', 'python'))):
        if os.path.exists(os.path.join(path, 'qemu', 'qmp', 'legacy.py')):
            return path
    raise ImportError('no unpacked QEMU tree with python/qemu/qmp under %s '
                      '(scripts/build.sh unpacks one)' % cache)


def _qemu_qmp():
    """The qemu.qmp package, imported from the unpacked tree."""
    try:
        import qemu.qmp.legacy
    except ImportError:
        sys.path.insert(0, _qemu_python_dir())
        import qemu.qmp.legacy
    return qemu.qmp


def connect_unix(path, wait=30.0, timeout=None, alive=None):
    """A socket connected to @path, retried until QEMU has created it, or
    until @alive (the QEMU's Popen, if given) has exited."""
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if alive is not None and alive.poll() is not None:
                raise ConnectionError('QEMU exited with status %d' %
                                      alive.returncode)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# A QEMU monitor sends events to a client from the moment its socket is
# connected until that connection's CHR_EVENT_OPENED has run (monitor/qmp.c:
# a new monitor's command list is unset until then, and
# monitor_qapi_event_emit() drops events only while it is the negotiation
# list; OPENED runs in the monitor's I/O thread, the events come from the
# main thread, so one can also land just after the greeting).  A QEMU that
# starts its guest (RESUME) while the harness connects can thus send an
# event first, which qemu.qmp takes for a bad greeting or a bad answer to
# qmp_capabilities.  A connection that failed on its greeting never
# negotiated: the monitor keeps its negotiation list and drops events, and
# the next client sees its greeting first.  One that failed after it may
# have negotiated, and the next can meet the same race: hence a few tries.
# The event is lost to @events.
GREETING_TRIES = 3


def _event_before_greeting(qmp, err):
    """Whether @err (from qemu.qmp's connect) failed on a first message
    that was not the greeting, or an answer to qmp_capabilities that was
    not one: an event that came first."""
    cause = getattr(err, 'exc', None)
    return isinstance(err, qmp.ConnectError) and isinstance(
        cause, (qmp.qmp_client.GreetingError, qmp.qmp_client.NegotiationError))


class QMP:
    """One QEMU's monitor.  Events that arrive are kept in @events."""

    def __init__(self, path, timeout=60.0):
        self.path = path
        self.timeout = timeout
        self._monitor = None
        self._qmp = None            # the qemu.qmp package, once connected
        self._events = []

    def connect(self, wait=30.0, alive=None):
        qmp = self._qmp = _qemu_qmp()
        for attempt in range(1, GREETING_TRIES + 1):
            sock = connect_unix(self.path, wait, None, alive)
            self._monitor = qmp.legacy.QEMUMonitorProtocol(sock)
            self.settimeout(self.timeout)
            try:
                self._monitor.connect()     # greeting, qmp_capabilities
                return
            except qmp.QMPError as e:
                self.close()
                if (attempt < GREETING_TRIES and
                        _event_before_greeting(qmp, e)):
                    continue
                raise ConnectionError('QMP: %s' % e) from e

    def settimeout(self, timeout):
        """How long a command may wait for its answer (None: for ever)."""
        self.timeout = timeout
        if self._monitor:
            self._monitor.settimeout(timeout)

    def cmd(self, command, /, **args):
        """Run @command; its arguments may include one called 'name'."""
        qmp = self._qmp
        if not self._monitor:
            raise ConnectionError('QMP: not connected')
        try:
            return self._monitor.cmd(command, **args)
        except qmp.ExecuteError as e:
            raise QMPError('%s: %s' % (command, e)) from e
        except asyncio.TimeoutError as e:
            raise TimeoutError('QMP: %s unanswered after %s s' % (
                command, self.timeout)) from e
        except (qmp.QMPError, EOFError) as e:
            why = str(e) or type(e).__name__
            raise ConnectionError('QMP connection closed by QEMU (%s: %s)'
                                  % (command, why)) from e

    @property
    def events(self):
        """Every event received so far, oldest first."""
        if self._monitor:
            self._events.extend(self._monitor.get_events(wait=False))
        return self._events

    def close(self):
        monitor, self._monitor = self._monitor, None
        if monitor:
            try:
                monitor.close()
            except Exception:       # a QEMU gone already: nothing to close
                pass
