"""libvirt drives the module: virsh migrate --postcopy between two hosts.

    python3 -m pcram.libvirt_test --qemu QEMU --guest pcguest.bin \
        [--compare-qemu QEMU] [--cases a,b,c] [--json FILE]

Two libvirtd "hosts" on this machine (see libvirt_hosts.py) migrate the
test guest (1 GiB, 2 vCPUs, random access with half writes) as an operator
would, with virsh only.  Cases:

  after-precopy  virsh migrate --live --postcopy --postcopy-after-precopy
  switch         virsh migrate --live --postcopy, then virsh migrate-postcopy
                 while the first pass of precopy still runs
  link-cut       the veth taken down in postcopy; virsh domjobabort
                 --postcopy on the source (nothing else tells QEMU or
                 libvirt that a silent link is gone); both sides paused as
                 libvirt reports them; the link up; virsh migrate
                 --postcopy-resume; completion

Every case ends with the guest on the destination checking all of its
memory.  With --compare-qemu, each case runs again with that QEMU (the
other module) and what libvirt saw is listed side by side.  Exits 0
when every case passed, 1 otherwise, 2 on bad usage.
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .guest import GuestConsole, GuestReport
from .libvirt_hosts import HostError, TwoHosts
from .migrate import MigrationFailed, poll_until, wait_verify

DOMAIN = 'pcguest'
RAM_MB = 1024
VCPUS = 2
GUEST_ARGS = 'pattern=random writes=50 hot=10 interval=100'
# The serial console's socket, at the same path on both hosts: each host's
# /var/lib/libvirt is its own.
SERIAL = '/var/lib/libvirt/qemu/pcguest.serial'
# link-cut throttles postcopy (MiB/s) so that the cut lands in it.
LINK_CUT_POSTCOPY_MIBS = 64
LINK_DOWN_S = 5
CASES = ('after-precopy', 'switch', 'link-cut')
# What QEMU itself wrote to the domain's log (not libvirt's lines).
QEMU_LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\dT[^ ]+ qemu-system-[^:]+: (.*)$')

DOMAIN_XML = '''\
<domain type='%(type)s'>
  <name>%(name)s</name>
  <memory unit='MiB'>%(ram_mb)d</memory>
  <vcpu>%(vcpus)d</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%(guest)s</kernel>
    <cmdline>%(args)s</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>%(qemu)s</emulator>
    <controller type='usb' model='none'/>
    <serial type='unix'>
      <source mode='bind' path='%(serial)s'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
'''


class CaseFailed(Exception):
    pass


def accel_type():
    """libvirt's domain type: kvm where /dev/kvm is usable, else qemu
    (TCG)."""
    return 'kvm' if os.access('/dev/kvm', os.R_OK | os.W_OK) else 'qemu'


class EventLog:
    """`virsh event --all --loop --timestamp` on one host, parsed."""

    def __init__(self, host, path):
        self.host = host
        self.path = path
        self.out = open(path, 'w')
        self.proc = subprocess.Popen(
            ['virsh', '-c', host.uri, 'event', '--all', '--loop',
             '--timestamp'], stdout=self.out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.out.close()

    def entries(self):
        """[(wall-clock time, summary, {detail: value})]: one per event;
        job-completed's statistics come as the details."""
        out = []
        with open(self.path) as f:
            for line in f:
                if line.startswith('\t') and out:
                    key, _, value = line.strip().partition(': ')
                    out[-1][2][key] = value
                    continue
                stamp, sep, rest = line.strip().partition(': event ')
                if not sep:
                    continue
                try:
                    when = datetime.datetime.strptime(
                        stamp, '%Y-%m-%d %H:%M:%S.%f%z').timestamp()
                except ValueError:
                    continue
                kind, _, detail = rest.partition(" for domain '%s':" %
                                                 DOMAIN)
                summary = ' '.join([kind.strip("'")] + detail.split())
                out.append((when, summary, {}))
        return out


def parse_jobinfo(text):
    """`virsh domjobinfo` output as {field: value}."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if sep:
            info[key.strip()] = ' '.join(value.split())
    return info


class Case:
    """One migration of the test guest, driven with virsh."""

    def __init__(self, hosts, args, name, qemu, module, workdir, tag):
        self.hosts = hosts
        self.tag = tag                # names this run's files
        self.src, self.dst = hosts.src, hosts.dst
        self.args = args
        self.name = name
        self.qemu = qemu
        self.module = module
        self.workdir = workdir
        self.steps = []               # (seconds from migrate, what happened)
        self.t0 = None                # wall clock at `virsh migrate`
        self.src_console = self.dst_console = None
        self.events = {}
        self.result = {'case': name, 'module': module, 'qemu': qemu,
                       'accel': 'KVM' if accel_type() == 'kvm' else 'TCG'}

    # --- helpers ---------------------------------------------------------

    def note(self, text):
        t = time.time() - self.t0 if self.t0 else 0.0
        self.steps.append((t, text))
        print('    [%6.2f s] %s' % (t, text), flush=True)

    def domstate(self, host):
        r = host.virsh('domstate', '--reason', DOMAIN, check=False)
        return r.stdout.strip() if r.returncode == 0 else 'no domain'

    def jobinfo(self, host, completed=False):
        extra = ['--completed', '--keep-completed'] if completed else []
        r = host.virsh('domjobinfo', DOMAIN, *extra, check=False)
        return parse_jobinfo(r.stdout) if r.returncode == 0 else {}

    def qemu_says(self, host):
        """The last line of the QEMU's own log on @host: libvirt holds the
        destination's monitor for the whole incoming job, so a query
        through it would wait for the job's end."""
        said = [m.group(1) for m in map(
            QEMU_LOG_LINE.match, host.tail('log', 'qemu', DOMAIN + '.log',
                                           n=40).splitlines()) if m]
        return said[-1] if said else 'nothing yet'

    def qemu_states(self):
        return 'QEMU logs: source "%s", destination "%s"' % (
            self.qemu_says(self.src), self.qemu_says(self.dst))

    def both_states(self):
        return 'source %s; destination %s' % (self.domstate(self.src),
                                              self.domstate(self.dst))

    def wait_until(self, predicate, timeout, what):
        if poll_until(predicate, timeout):
            return
        raise CaseFailed('%s: not within %d s (%s)' % (
            what, timeout, self.both_states()))

    def migrate_cmd(self, *flags):
        return ['virsh', '-c', self.src.uri, 'migrate', '--live',
                '--postcopy'] + list(flags) + [
                    DOMAIN, self.dst.uri, 'tcp://%s' % self.dst.addr]

    def start_migrate(self, *flags):
        cmd = self.migrate_cmd(*flags)
        shown = ' '.join(cmd[3:-3] + ['pcguest', 'DST', cmd[-1]])
        self.note('virsh %s' % shown)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)

    def finish_migrate(self, proc, timeout=600):
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            raise CaseFailed('virsh migrate still running after %d s' %
                             timeout)
        self.note('virsh migrate exited %d%s' % (
            proc.returncode, (': ' + out.strip()) if out.strip() else ''))
        return proc.returncode, out.strip()

    def migrate_to_end(self, proc, what='virsh migrate'):
        rc, out = self.finish_migrate(proc)
        if rc != 0:
            raise CaseFailed('%s failed: %s' % (what, out))

    # --- the guest -------------------------------------------------------

    def clean_hosts(self):
        for host in (self.src, self.dst):
            host.virsh('destroy', DOMAIN, check=False)
            host.virsh('undefine', DOMAIN, check=False)
            # The console's socket, and the domain's log, which libvirt
            # appends to: what QEMU said is then this case's alone.
            for path in (self.serial_of(host),
                         host.path('log', 'qemu', DOMAIN + '.log')):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def start_guest(self):
        xml = os.path.join(self.workdir, '%s.xml' % self.tag)
        with open(xml, 'w') as f:
            f.write(DOMAIN_XML % {
                'type': accel_type(), 'name': DOMAIN, 'ram_mb': RAM_MB,
                'vcpus': VCPUS, 'guest': self.args.guest,
                'args': GUEST_ARGS, 'qemu': self.qemu, 'serial': SERIAL})
        # Persistent on the source, so that its completed job's
        # statistics outlive the migration there.
        self.src.virsh('define', xml)
        self.src.virsh('start', DOMAIN, timeout=300)
        self.src_console = GuestConsole(self.serial_of(self.src), 'source')
        self.src_console.connect()
        ready = self.src_console.wait_for(
            lambda t: t.startswith('READY'), 60)
        if not ready:
            raise CaseFailed('the guest did not report READY in 60 s\n%s'
                             % self.src.tail('log', 'qemu', DOMAIN + '.log'))
        # A few intervals on the source first: the guest's baseline.
        time.sleep(0.5)

    @staticmethod
    def serial_of(host):
        return host.path('lib', 'qemu', os.path.basename(SERIAL))

    def watch_destination_console(self):
        """Connects to the destination's console as soon as libvirt has
        started the destination QEMU (in a thread: the migration runs)."""
        def connect():
            path = self.serial_of(self.dst)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if os.path.exists(path):
                    console = GuestConsole(path, 'destination')
                    try:
                        console.connect(wait=10)
                    except OSError:
                        time.sleep(0.1)
                        continue
                    self.dst_console = console
                    return
                time.sleep(0.05)
        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        return thread

    def verify_guest(self):
        """The guest on the destination checks all of its memory."""
        console = self.dst_console
        if console is None:
            raise CaseFailed('no console on the destination')
        time.sleep(0.5)
        start = len(console.snapshot())
        console.send('v')
        try:
            answers = wait_verify(console, VCPUS, start, 120)
        except MigrationFailed as e:
            raise CaseFailed(str(e))
        report = GuestReport(self.src_console.snapshot() +
                             console.snapshot())
        checked = sum(int(a['pages']) for a in answers.values())
        bad = sum(int(a['bad']) for a in answers.values()) + len(report.bad)
        return report, checked, bad

    # --- the cases -------------------------------------------------------

    def run(self):
        self.clean_hosts()
        self.start_guest()
        self.events = {
            side: EventLog(host, os.path.join(self.workdir, '%s-%s.events' % (
                self.tag, side)))
            for side, host in (('source', self.src),
                               ('destination', self.dst))}
        # Let `virsh event` register before anything happens.
        time.sleep(0.5)
        self.t0 = time.time()
        t_mono = time.monotonic()
        watcher = self.watch_destination_console()
        try:
            getattr(self, 'case_' + self.name.replace('-', '_'))()
            watcher.join(5)
            self.wait_until(lambda: self.domstate(self.dst).startswith(
                'running'), 60, 'the guest running on the destination')
            self.note('destination: %s' % self.domstate(self.dst))
            # libvirt keeps a migration's statistics on the source only.
            self.result['jobinfo_source'] = self.jobinfo(self.src, True)
            report, checked, bad = self.verify_guest()
        finally:
            for log in self.events.values():
                log.stop()
            for console in (self.src_console, self.dst_console):
                if console:
                    console.close()
        events = {side: log.entries() for side, log in self.events.items()}
        self.result['events'] = {
            side: [(round(t - self.t0, 3), s, d) for t, s, d in entries]
            for side, entries in events.items()}
        self.result['steps'] = [(round(t, 3), s) for t, s in self.steps]
        self.result['guest'] = self.guest_figures(report, t_mono,
                                                  events['source'])
        self.result['guest'].update(pages_checked=checked, bad_pages=bad,
                                    verdict='clean' if bad == 0 else
                                    'CORRUPT')
        self.result['passed'] = bad == 0
        return self.result

    def guest_figures(self, report, t_mono, src_events):
        """The guest's own view of postcopy: from the source's `Suspended
        Post-copy` event (of @src_events, EventLog.entries()) to the job's
        end."""
        offset = self.t0 - t_mono             # wall clock - monotonic
        start = next((t for t, s, _ in src_events
                      if 'Post-copy' in s and 'Suspended' in s), None)
        end = next((t for t, s, _ in src_events
                    if s.startswith('job-completed')), None)
        if start is None or end is None:
            return {'postcopy_window_s': None}
        window = report.window(start - offset, end - offset)
        lat, _ = report.latency(window)
        return {
            'postcopy_window_s': round(end - start, 3),
            'worst_stall_ms': lat['max'] / 1000.0,
            'batch_p99_us': lat['p99'],
            'ops_per_s_postcopy': round(report.ops_per_s(window)),
            'ops_per_s_precopy': round(report.ops_per_s(
                report.window(start - offset - 10, start - offset))),
        }

    def case_after_precopy(self):
        self.migrate_to_end(self.start_migrate('--postcopy-after-precopy'))

    def case_switch(self):
        proc = self.start_migrate()
        # Precopy running: the job has moved 64 MiB of the guest's 1 GiB,
        # so its first pass is far from over.
        self.wait_until(lambda: self.processed_mib() > 64, 60,
                        'precopy under way')
        info = self.jobinfo(self.src)
        self.note('precopy running: %s processed, %s remaining' % (
            info.get('Memory processed', '?'),
            info.get('Memory remaining', '?')))
        self.src.virsh('migrate-postcopy', DOMAIN)
        self.note('virsh migrate-postcopy')
        self.migrate_to_end(proc)

    def processed_mib(self):
        value = self.jobinfo(self.src).get('Memory processed', '0 MiB')
        number, _, unit = value.partition(' ')
        scale = {'B': 1.0 / 2 ** 20, 'KiB': 1.0 / 1024, 'MiB': 1.0,
                 'GiB': 1024.0}.get(unit, 0.0)
        try:
            return float(number) * scale
        except ValueError:
            return 0.0

    def in_postcopy(self):
        return 'post-copy' in self.domstate(self.src) and \
            'post-copy' in self.domstate(self.dst)

    def case_link_cut(self):
        bandwidth = ['--postcopy-bandwidth', str(LINK_CUT_POSTCOPY_MIBS)]
        proc = self.start_migrate('--postcopy-after-precopy', *bandwidth)
        self.wait_until(self.in_postcopy, 120, 'postcopy')
        self.note('in postcopy: %s' % self.both_states())
        time.sleep(1.0)
        self.hosts.link(False)
        t_down = time.time()
        self.note('link down')
        time.sleep(1.0)
        self.note('link down 1 s: %s' % self.both_states())
        self.src.virsh('domjobabort', '--postcopy', DOMAIN)
        self.note('virsh domjobabort --postcopy (source)')
        self.wait_until(lambda: 'post-copy failed' in self.domstate(self.src),
                        60, 'the source paused by the abort')
        self.note(self.both_states())
        self.note(self.qemu_states())
        self.result['jobinfo_paused_source'] = self.jobinfo(self.src)
        time.sleep(max(LINK_DOWN_S - (time.time() - t_down), 0))
        self.hosts.link(True)
        self.note('link up')
        # libvirt's Finish on the destination waits for the destination
        # QEMU, which learns of the pause only now, from the source's
        # shut-down socket.
        rc, out = self.finish_migrate(proc, timeout=120)
        if rc == 0:
            raise CaseFailed('virsh migrate succeeded across a cut link')
        self.wait_until(lambda: 'post-copy failed' in self.domstate(self.dst),
                        120, 'the destination paused')
        self.note(self.both_states())
        self.note(self.qemu_states())
        self.migrate_to_end(self.start_migrate('--postcopy-resume',
                                               *bandwidth),
                            'virsh migrate --postcopy-resume')


# --- the report -------------------------------------------------------------

JOB_FIELDS = ('Time elapsed', 'Total downtime', 'Data processed',
              'Postcopy requests', 'Memory bandwidth')


def print_case(r):
    g = r['guest']
    print('  libvirt, source `domjobinfo --completed`: %s' % '; '.join(
        '%s %s' % (k.lower(), r['jobinfo_source'].get(k, 'n/a'))
        for k in JOB_FIELDS))
    print('  the guest: %s, %d pages checked, %d bad; postcopy %s s, worst '
          'stall %s ms, work rate %s ops/s in postcopy (%s before)' % (
              g['verdict'], g['pages_checked'], g['bad_pages'],
              g.get('postcopy_window_s', 'n/a'),
              fmt(g.get('worst_stall_ms')), g.get('ops_per_s_postcopy',
                                                  'n/a'),
              g.get('ops_per_s_precopy', 'n/a')))
    for side in ('source', 'destination'):
        print('  events on the %s:' % side)
        for t, summary, _ in r['events'][side]:
            print('    %7.2f s  %s' % (t, summary))


def fmt(v):
    return '%.1f' % v if isinstance(v, float) else str(v)


def print_side_by_side(a, b):
    """What libvirt saw of the same case with each module."""
    width = 50

    def row(label, left, right):
        print('  %-22s %-*s %s' % (label, width, left[:width], right[:width]))

    def timeline(label, left, right):
        for i in range(max(len(left), len(right))):
            row(label if i == 0 else '',
                *('%6.2f s %s' % tuple(side[i][:2]) if i < len(side) else ''
                  for side in (left, right)))

    print()
    print('Case %s, side by side (what libvirt and the guest saw)' %
          a['case'])
    row('', a['module'], b['module'])
    for k in JOB_FIELDS:
        row(k, a['jobinfo_source'].get(k, '-'),
            b['jobinfo_source'].get(k, '-'))
    for key, label in (('postcopy_window_s', 'postcopy (s)'),
                       ('worst_stall_ms', 'guest worst stall (ms)'),
                       ('ops_per_s_postcopy', 'guest ops/s, postcopy'),
                       ('verdict', 'guest memory check')):
        row(label, fmt(a['guest'].get(key)), fmt(b['guest'].get(key)))
    timeline('what the test did', a['steps'], b['steps'])
    for side in ('source', 'destination'):
        timeline('events, ' + side, a['events'][side], b['events'][side])
    same = ['yes' if [e[1] for e in a['events'][side]] ==
            [e[1] for e in b['events'][side]] else 'NO'
            for side in ('source', 'destination')]
    print('  the same events in the same order: source %s, destination %s'
          % tuple(same))


def parse_args(argv):
    p = argparse.ArgumentParser(prog='libvirt-test', description=__doc__,
                                formatter_class=argparse.
                                RawDescriptionHelpFormatter)
    p.add_argument('--qemu', required=True,
                   help='the QEMU under test (the domain\'s <emulator>)')
    p.add_argument('--module', default='ours', help='its module\'s label')
    p.add_argument('--compare-qemu',
                   help='the other module\'s QEMU: case after-precopy '
                   'again, side by side')
    p.add_argument('--compare-module', default='upstream')
    p.add_argument('--guest', required=True, help='pcguest.bin')
    p.add_argument('--cases', default=','.join(CASES))
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(',') if c]
    for c in args.cases:
        if c not in CASES:
            p.error('unknown case %s (known: %s)' % (c, ', '.join(CASES)))
    for path in (args.qemu, args.compare_qemu, args.guest):
        if path and not os.path.exists(path):
            p.error('%s does not exist' % path)
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    # A timeout's SIGTERM unwinds too: the hosts are removed on the way.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    plan = [(c, args.qemu, args.module) for c in args.cases]
    if args.compare_qemu:
        plan += [(c, args.compare_qemu, args.compare_module)
                 for c in args.cases]
    results = []
    # Set when the hosts fail before or between cases: keep their logs.
    host_failed = False
    workdir = tempfile.mkdtemp(prefix='pcram-libvirt-')
    try:
        with TwoHosts(workdir) as hosts:
            print('libvirt %s, two hosts: %s (%s) and %s (%s), %s' % (
                hosts.src.daemon_version(),
                hosts.src.name, hosts.src.addr, hosts.dst.name,
                hosts.dst.addr, 'KVM' if accel_type() == 'kvm' else 'TCG'))
            for i, (name, qemu, module) in enumerate(plan):
                print('\n[%d/%d] %s (module: %s)' % (i + 1, len(plan), name,
                                                     module), flush=True)
                case = Case(hosts, args, name, qemu, module, workdir,
                            '%d-%s' % (i + 1, name))
                try:
                    r = case.run()
                except (CaseFailed, HostError) as e:
                    r = dict(case.result, passed=False, error=str(e))
                    print('  FAILED: %s' % e)
                    for host in (hosts.src, hosts.dst):
                        print('  %s QEMU log:\n%s' % (host.name, host.tail(
                            'log', 'qemu', DOMAIN + '.log', n=8)))
                else:
                    print_case(r)
                    print('  %s' % ('PASS' if r['passed'] else 'FAILED'))
                results.append(r)
    except HostError as e:
        host_failed = True
        print('libvirt-test: %s' % e, file=sys.stderr)
        return 1
    finally:
        if not host_failed and all(r.get('passed') for r in results):
            subprocess.run(['rm', '-rf', workdir])
        else:
            print('libvirt-test: logs kept in %s' % workdir)
    for name in args.cases if args.compare_qemu else ():
        pair = [r for r in results if r['case'] == name and r.get('events')]
        if len(pair) == 2:
            print_side_by_side(pair[0], pair[1])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2, sort_keys=True)
    passed = sum(1 for r in results if r.get('passed'))
    print('\nlibvirt-test: %d cases, %d passed' % (len(results), passed))
    return 0 if passed == len(results) else 1


if __name__ == '__main__':
    sys.exit(main())
