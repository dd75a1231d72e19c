"""A small synchronous QMP client over a UNIX socket."""

import json
import socket
import time


class QMPError(Exception):
    """A QMP command answered with an error."""


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


class QMP:
    def __init__(self, path, timeout=60.0):
        self.path = path
        self.sock = None
        self.buf = b''
        self.events = []
        self.timeout = timeout

    def connect(self, wait=30.0, alive=None):
        self.sock = connect_unix(self.path, wait, self.timeout, alive)
        self._read_message()                    # greeting
        self.cmd('qmp_capabilities')

    def _read_message(self):
        while b'\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('QMP connection closed by QEMU')
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def cmd(self, command, /, **args):
        """Run @command; its arguments may include one called 'name'."""
        msg = {'execute': command}
        if args:
            msg['arguments'] = args
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        while True:
            resp = self._read_message()
            if 'event' in resp:
                self.events.append(resp)
                continue
            if 'error' in resp:
                raise QMPError('%s: %s' % (command,
                                           resp['error'].get('desc')))
            return resp.get('return')

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
