"""Links for the benchmark: loopback, or two network namespaces joined by a
veth pair with its rate shaped by tc and its round trip set by a delay
relay; and the link's own limits, measured through the same path.

The kernels of these machines have no netem (nor fq or etf): rate comes
from tc's tbf on each veth end, and delay from tools/delay-relay, which
runs in the destination's namespace, holds each byte for half the round
trip in each direction, and forwards to the destination QEMU.

The namespaces (pcram-src, pcram-dst) and their addresses (192.0.2.1/30,
192.0.2.2/30, a documentation range) exist only while a Link is open; no
traffic leaves them.  Creating them needs root.
"""

import json
import os
import subprocess
import sys
import time

SRC_NS, DST_NS = 'pcram-src', 'pcram-dst'
SRC_DEV, DST_DEV = 'pcram-s', 'pcram-d'
SRC_ADDR, DST_ADDR = '192.0.2.1', '192.0.2.2'

# The destination QEMU (or the probe) listens on DST_PORT in its
# namespace; the relay on RELAY_PORT, and the source connects there.
DST_PORT, RELAY_PORT = 4444, 4445

# name -> (rate for tc, tbf burst, one-way delay in ms); round trip =
# 2 x delay
SHAPES = {
    'loopback': None,
    '10gbit': ('10gbit', '8mb', 0.1),
    '1gbit': ('1gbit', '1mb', 0.5),
}


def run(*args, check=True):
    return subprocess.run(args, check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


class LinkError(Exception):
    pass


def create_veth_namespaces(src, dst):
    """Two new network namespaces joined by a veth pair, both ends up:
    @src and @dst are (namespace, device, address) with the addresses in
    one /30."""
    run('ip', 'netns', 'add', src[0])
    run('ip', 'netns', 'add', dst[0])
    run('ip', 'link', 'add', src[1], 'netns', src[0], 'type', 'veth',
        'peer', 'name', dst[1], 'netns', dst[0])
    for ns, dev, addr in (src, dst):
        run('ip', '-n', ns, 'addr', 'add', addr + '/30', 'dev', dev)
        run('ip', '-n', ns, 'link', 'set', dev, 'up')
        run('ip', '-n', ns, 'link', 'set', 'lo', 'up')


class Link:
    """A link by name (see SHAPES); a context manager."""

    def __init__(self, name, relay=None, tcp_cc=None):
        if name not in SHAPES:
            raise LinkError('unknown link %s (known: %s)' % (
                name, ', '.join(SHAPES)))
        self.name = name
        # The namespaces' TCP congestion control (None: the host's, which
        # new namespaces inherit).  Loopback runs in the host's namespace
        # and always has the host's.
        self.tcp_cc = tcp_cc
        self.shape = SHAPES[name]
        self.relay_path = relay
        self.relay = None
        # What the relay holds each byte for, each way: the target's half
        # round trip, less what the path itself adds (see _calibrate()).
        self.hold_us = int(self.shape[2] * 1000) if self.shape else 0

    @property
    def namespaced(self):
        return self.shape is not None

    @property
    def src_netns(self):
        return SRC_NS if self.namespaced else None

    @property
    def dst_netns(self):
        return DST_NS if self.namespaced else None

    @property
    def dst_addr(self):
        return DST_ADDR if self.namespaced else '127.0.0.1'

    @property
    def dst_port(self):
        """Where the destination listens (None: any free port)."""
        return DST_PORT if self.namespaced else None

    @property
    def connect_port(self):
        """Where the source connects: the relay's port."""
        return RELAY_PORT if self.namespaced else None

    def endpoints(self):
        """Where each QEMU runs and how the source reaches the
        destination: the Scenario fields this link sets."""
        return dict(src_netns=self.src_netns, dst_netns=self.dst_netns,
                    dst_addr=self.dst_addr, dst_port=self.dst_port,
                    connect_port=self.connect_port)

    def describe(self):
        if not self.namespaced:
            return 'loopback'
        rate, _, delay_ms = self.shape
        return ('veth between namespaces, tbf rate %s, round trip %g ms '
                '(delay-relay holding %d us each way)%s' % (
                    rate, 2 * delay_ms, self.hold_us,
                    ', TCP %s' % self.tcp_cc if self.tcp_cc else ''))

    def __enter__(self):
        if self.namespaced:
            if os.geteuid() != 0:
                raise LinkError('link %s needs root: it creates network '
                                'namespaces and shapes them with tc' %
                                self.name)
            if not self.relay_path or not os.access(self.relay_path,
                                                    os.X_OK):
                raise LinkError('link %s needs tools/delay-relay built' %
                                self.name)
            self._remove()
            try:
                self._create()
                self._start_relay()
                self._calibrate()
            except (subprocess.CalledProcessError, OSError) as e:
                self.__exit__()
                raise LinkError('cannot set up link %s: %s %s' % (
                    self.name, e, getattr(e, 'stderr', '') or ''))
        return self

    def __exit__(self, *exc):
        if self.relay:
            self._stop_relay()
        if self.namespaced:
            self._remove()

    def _start_relay(self):
        self.relay = subprocess.Popen(
            ['ip', 'netns', 'exec', DST_NS, self.relay_path, DST_ADDR,
             str(RELAY_PORT), DST_ADDR, str(DST_PORT), str(self.hold_us)],
            stdout=subprocess.PIPE, text=True)
        if self.relay.stdout.readline().strip() != 'ready':
            raise OSError('delay-relay did not start')

    def cpu_seconds(self):
        """The CPU time the relay has used so far (user and system, s), or
        None on a link without one.  On these 2-core machines it is CPU
        that both QEMUs lose, and that a real link would not take."""
        # Here, not at the top: this file also runs alone, as the
        # measuring ends in the namespaces, outside the package.
        from .threadcpu import stat_cpu_ticks
        if not self.relay:
            return None
        # 'ip netns exec' execs the relay: the same process.
        _, ticks = stat_cpu_ticks('/proc/%d/stat' % self.relay.pid)
        return ticks / os.sysconf('SC_CLK_TCK')

    def _stop_relay(self):
        self.relay.kill()
        self.relay.wait()
        self.relay = None

    def _calibrate(self, rounds=3):
        """Aim the round trip at the target.  The veth pair, the relay's
        extra hop and its wake-ups add to what the relay holds; measure
        the round trip and hold each byte that much less (the benchmark
        still reports the round trip it measures)."""
        target_s = 2 * self.shape[2] / 1000.0
        for _ in range(rounds):
            rtt_s = self.measure(seconds=0)['rtt_s']
            excess_us = (rtt_s - target_s) * 1e6
            if abs(excess_us) <= 0.05 * target_s * 1e6:
                return
            hold_us = max(0, int(self.hold_us - excess_us / 2))
            if hold_us == self.hold_us:
                return
            self.hold_us = hold_us
            self._stop_relay()
            self._start_relay()

    def _create(self):
        rate, burst, delay_ms = self.shape
        create_veth_namespaces((SRC_NS, SRC_DEV, SRC_ADDR),
                               (DST_NS, DST_DEV, DST_ADDR))
        for ns, dev in ((SRC_NS, SRC_DEV), (DST_NS, DST_DEV)):
            if self.tcp_cc:
                run('ip', 'netns', 'exec', ns, 'sysctl', '-qw',
                    'net.ipv4.tcp_congestion_control=' + self.tcp_cc)
            # The rate on each egress; the relay adds the delay.
            run('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', dev,
                'root', 'tbf', 'rate', rate, 'burst', burst,
                'latency', '50ms')

    @staticmethod
    def _remove():
        for ns in (SRC_NS, DST_NS):
            run('ip', 'netns', 'del', ns, check=False)

    def _in_ns(self, ns):
        return ['ip', 'netns', 'exec', ns] if ns else []

    def measure(self, seconds=2.0):
        """The link's limits, now: TCP throughput (bytes/s) source to
        destination over @seconds (0: not measured), and the median round
        trip (s) of 1-byte messages."""
        port = self.dst_port or 47000 + os.getpid() % 1000
        me = [sys.executable, os.path.abspath(__file__)]
        server = subprocess.Popen(
            self._in_ns(self.dst_netns) + me + ['serve', self.dst_addr,
                                                str(port)],
            stdout=subprocess.PIPE, text=True)
        try:
            server.stdout.readline()            # "listening"
            out = subprocess.run(
                self._in_ns(self.src_netns) + me + [
                    'probe', self.dst_addr,
                    str(self.connect_port or port), str(seconds)],
                check=True, stdout=subprocess.PIPE, text=True,
                timeout=60).stdout
        finally:
            server.wait(timeout=30)
        return json.loads(out)


# --- The measuring ends, run in the namespaces as separate processes. ------

def _serve(addr, port):
    import socket
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(2)
    print('listening', flush=True)
    for phase in ('rtt', 'bulk'):
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            if phase == 'rtt':
                conn.sendall(data)
        conn.close()


def _probe(addr, port, seconds):
    import socket
    import statistics
    # Round trip: 200 ping-pongs of one byte.
    s = socket.create_connection((addr, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(200):
        t0 = time.perf_counter()
        s.sendall(b'x')
        s.recv(1)
        rtts.append(time.perf_counter() - t0)
    s.close()
    # Throughput: send for @seconds.
    s = socket.create_connection((addr, port))
    chunk = b'\0' * (1 << 20)
    sent = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    elapsed = time.perf_counter() - t0
    s.close()
    print(json.dumps({'throughput_Bps': sent / elapsed if sent else 0.0,
                      'rtt_s': statistics.median(rtts)}))


if __name__ == '__main__':
    if sys.argv[1] == 'serve':
        _serve(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == 'probe':
        _probe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
