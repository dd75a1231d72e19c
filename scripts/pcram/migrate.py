"""One postcopy migration of a running test guest, measured.

run_scenario() starts a source and a destination QEMU on this machine (or
in two network namespaces), boots the test guest on the source, migrates
it with precopy for a while and then postcopy, asks the guest on the
destination to verify all of its memory, and returns what happened as a
dict: the fields _result() fills, 'source_queue', what our module did
to the source's main channel (source_queue_actions()), and
'thread_cpu_s', the CPU each QEMU thread took during postcopy.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from . import threadcpu
from .guest import GuestConsole, GuestReport, back_to_full_speed
from .qmp import QMP, QMPError


class MigrationFailed(Exception):
    """The migration or the guest did not do what was expected."""


# The pattern that boots the Linux guest (Debian's kernel, redis-server
# driven by redis-benchmark inside it: guest/linux-init.sh) instead of
# pcguest.  It cannot check its memory: its runs' verdict is 'unchecked'.
LINUX_PATTERN = 'redis'

# What pcguest can run with: its test pages lie above 64 MiB, and it
# starts at most 16 vCPUs (guest/guest.c).
GUEST_MIN_RAM_MB = 128
GUEST_MAX_VCPUS = 16


def check_guest_shape(ram_mb, vcpus):
    """None, or why the test guest cannot run with this RAM and vCPUs."""
    if ram_mb < GUEST_MIN_RAM_MB:
        return ('%d MiB of RAM is too little for the test guest: its test '
                'pages lie above 64 MiB; give it at least %d MiB' % (
                    ram_mb, GUEST_MIN_RAM_MB))
    if not 1 <= vcpus <= GUEST_MAX_VCPUS:
        return ('%d vCPUs: the test guest runs 1 to %d' % (
            vcpus, GUEST_MAX_VCPUS))
    return None


class Scenario:
    """What to migrate and how.  Defaults: the main job's."""

    def __init__(self, **kw):
        self.qemu = kw.pop('qemu')
        self.guest = kw.pop('guest')
        self.ram_mb = kw.pop('ram_mb', 1024)
        self.vcpus = kw.pop('vcpus', 2)
        self.pattern = kw.pop('pattern', 'random')
        self.writes = kw.pop('writes', 50)
        self.hot = kw.pop('hot', 10)
        self.interval_ms = kw.pop('interval_ms', 100)
        self.precopy_s = kw.pop('precopy_s', 2.0)
        self.preempt = kw.pop('preempt', False)
        self.blocktime = kw.pop('blocktime', True)
        self.accel = kw.pop('accel', 'auto')
        self.backend = kw.pop('backend', 'anon')
        self.max_bandwidth = kw.pop('max_bandwidth', None)   # bytes/s
        self.max_postcopy_bandwidth = kw.pop('max_postcopy_bandwidth', None)
        self.src_netns = kw.pop('src_netns', None)
        self.dst_netns = kw.pop('dst_netns', None)
        self.dst_addr = kw.pop('dst_addr', '127.0.0.1')
        # Fixed ports (a namespaced link with a relay), else a free one.
        self.dst_port = kw.pop('dst_port', None)
        self.connect_port = kw.pop('connect_port', None)
        # Destination trace events: one pattern or a list of them.
        self.trace = kw.pop('trace', None)
        # Where they go; by default the run's directory, removed after it.
        self.trace_file = kw.pop('trace_file', None)
        self.extra_args = kw.pop('extra_args', [])
        # Arguments for one side only: {'source': [...], 'destination': [...]}
        self.side_args = kw.pop('side_args', {})
        # Called as before_postcopy(src, dst) right before
        # migrate-start-postcopy.
        self.before_postcopy = kw.pop('before_postcopy', None)
        # Called as during_postcopy(src, dst) at each look at the
        # migration while postcopy runs.
        self.during_postcopy = kw.pop('during_postcopy', None)
        # Called as pause_when(src, dst) while postcopy runs, until it says
        # True: then the destination pauses and the harness recovers, as
        # with recover_at_s.
        self.pause_when = kw.pop('pause_when', None)
        # Environment variables set for the destination's QEMU only
        # (QEMU_POSTCOPY_INJECT, QEMU_POSTCOPY_TUNE).
        self.dst_env = kw.pop('dst_env', {})
        # A directory for the run's files (QMP and serial sockets, logs,
        # traces), kept after it; None: a temporary one, removed after it.
        self.workdir = kw.pop('workdir', None)
        # Seconds into postcopy at which the destination pauses the
        # migration (migrate-pause, as a broken connection would) and the
        # harness recovers it at once over the same link; None: never.
        self.recover_at_s = kw.pop('recover_at_s', None)
        # Whether a pause the destination's module starts by itself (a
        # placement failing at a fault point) is recovered like the
        # harness's own, once; else it fails the run.  It is seen on the
        # source, which the destination's shut main channel pauses too;
        # paused_s then counts from the moment the harness saw it.
        self.recover_own_pause = kw.pop('recover_own_pause', False)
        self.timeout_s = kw.pop('timeout_s', 900)
        # Seconds the guest goes on running on the destination after the
        # migration completed, its rate and huge pages followed, before the
        # memory check; 0: none (the rate before is then the precopy's).
        self.after_s = kw.pop('after_s', 0)
        if kw:
            raise TypeError('unknown scenario fields: %s' % ', '.join(kw))

    def accel_name(self):
        if self.accel != 'auto':
            return self.accel
        return 'kvm' if os.access('/dev/kvm', os.R_OK | os.W_OK) else 'tcg'


def virtio_mem_args(backend, size_mb):
    """A virtio-mem device of @size_mb MiB, all of it unplugged, on a
    memory backend of type @backend ('ram', 'memfd'; id vmem0).  Give the
    guest's RAM a memory backend created before it: QEMU 10.0.2's
    dirty-bitmap sync under TCG (cpu_physical_memory_sync_dirty_bitmap())
    resets the TLB's dirty tracking at the block's offset inside its
    RAMBlock taken as a global one, which is right only for the block at
    offset 0, and asserts when that range crosses a block: with the
    device's backend first, the source aborts in precopy."""
    return ['-object', 'memory-backend-%s,id=vmem0,size=%dM%s' % (
                backend, size_mb, ',share=on' if backend == 'memfd' else ''),
            '-device', 'virtio-mem-pci,id=vmem,memdev=vmem0,requested-size=0']


def virtio_mem_address(vm):
    """Where @vm's virtio-mem device's region starts (guest-physical)."""
    return [d['data']['memaddr'] for d in vm.qmp.cmd('query-memory-devices')
            if d['type'] == 'virtio-mem'][0]


def listening_port(vm):
    """The port a destination told to listen on port 0 got."""
    for addr in vm.qmp.cmd('query-migrate').get('socket-address', []):
        if addr.get('type') == 'inet':
            return int(addr['port'])
    raise MigrationFailed('the destination reports no listening port')


class Vm:
    """One QEMU process with its QMP and serial sockets."""

    def __init__(self, scn, name, workdir, incoming=False):
        self.name = name
        self.qmp_path = os.path.join(workdir, name + '.qmp')
        self.serial_path = os.path.join(workdir, name + '.serial')
        self.log_path = os.path.join(workdir, name + '.log')
        accel = scn.accel_name()
        # debug-threads names QEMU's threads, for perf and top.
        args = [scn.qemu, '-name', name + ',debug-threads=on',
                '-nodefaults', '-display', 'none',
                '-machine', 'q35', '-m', '%dM' % scn.ram_mb,
                '-smp', str(scn.vcpus),
                '-accel', 'tcg,thread=multi' if accel == 'tcg' else accel,
                *self.guest_args(scn),
                '-qmp', 'unix:%s,server=on,wait=off' % self.qmp_path,
                '-chardev', 'socket,id=ser0,path=%s,server=on,wait=off'
                % self.serial_path,
                '-serial', 'chardev:ser0', '-monitor', 'none']
        args += self.backend_args(scn) + list(scn.extra_args)
        args += list(scn.side_args.get(name, []))
        if incoming:
            args += ['-incoming', 'defer']
            if scn.trace:
                patterns = ([scn.trace] if isinstance(scn.trace, str)
                            else list(scn.trace))
                # Each -trace sets the file anew, to none if it names none.
                path = scn.trace_file or os.path.join(workdir,
                                                      name + '.trace')
                for pattern in patterns:
                    args += ['-trace', 'enable=%s,file=%s' % (pattern, path)]
        netns = scn.dst_netns if incoming else scn.src_netns
        if netns:
            args = ['ip', 'netns', 'exec', netns] + args
        self.log = open(self.log_path, 'w')
        env = dict(os.environ, **scn.dst_env) if incoming else None
        self.proc = subprocess.Popen(args, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        self.qmp = QMP(self.qmp_path)
        self.console = GuestConsole(self.serial_path, name)
        try:
            self.qmp.connect(alive=self.proc)
            self.console.connect()
        except (OSError, ConnectionError) as e:
            # QEMU's own reason first; and no QEMU left behind.
            reason = self.log_tail()
            self.kill()
            raise MigrationFailed('%s QEMU did not start:\n%s(%s)' % (
                name, reason, e))

    @staticmethod
    def guest_args(scn):
        """The guest to boot: pcguest with its pattern, or, for the
        'redis' pattern, the Linux guest (scripts/build-linux-guest.sh's
        directory, which scn.guest then names)."""
        if scn.pattern == LINUX_PATTERN:
            return ['-kernel', os.path.join(scn.guest, 'vmlinuz'),
                    '-initrd', os.path.join(scn.guest, 'initramfs.cpio.gz'),
                    '-append', 'console=ttyS0 quiet panic=-1']
        return ['-kernel', scn.guest,
                '-append', 'pattern=%s writes=%d hot=%d interval=%d' % (
                    scn.pattern, scn.writes, scn.hot, scn.interval_ms)]

    @staticmethod
    def backend_args(scn):
        size = '%dM' % scn.ram_mb
        if scn.backend == 'anon':
            return []
        if scn.backend == 'memfd':
            obj = 'memory-backend-memfd,id=mem0,size=%s,share=on' % size
        elif scn.backend == 'hugetlb':
            obj = ('memory-backend-memfd,id=mem0,size=%s,share=on,'
                   'hugetlb=on,hugetlbsize=2M' % size)
        else:
            raise MigrationFailed('unknown memory backend %s' % scn.backend)
        return ['-object', obj, '-machine', 'memory-backend=mem0']

    def log_text(self):
        """What QEMU wrote so far (stdout and stderr); its own writes, so
        nothing of ours to flush first, and readable after kill()."""
        try:
            with open(self.log_path, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def log_tail(self, n=20):
        return ''.join(self.log_text().splitlines(True)[-n:])

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.qmp.close()
        self.console.close()
        self.log.close()

    def stop(self):
        try:
            self.qmp.cmd('quit')
        except Exception:
            pass
        self.qmp.close()
        self.console.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def status_of(info):
    return info.get('status', 'none')


def run_scenario(scn, progress=None):
    """Migrate once; returns the result dict.  Raises MigrationFailed."""
    workdir = scn.workdir or tempfile.mkdtemp(prefix='pcram-')
    src = dst = None
    try:
        dst = Vm(scn, 'destination', workdir, incoming=True)
        src = Vm(scn, 'source', workdir)
        # "ip netns exec" execs QEMU in its own process: the pids are
        # QEMU's.
        sampler = threadcpu.Sampler({str(src.proc.pid): 'src',
                                     str(dst.proc.pid): 'dst'})
        sampler.start()
        try:
            result = _migrate(scn, src, dst, progress)
        finally:
            sampler.stop()
        result['thread_cpu_s'] = _thread_cpu(sampler, result['t_postcopy'],
                                             result['t_done'])
        if scn.after_s:
            result['thread_cpu_after_s'] = _thread_cpu(
                sampler, result['t_done'], result['t_done'] + scn.after_s)
        return result
    finally:
        for vm in (src, dst):
            if vm:
                vm.stop()
        if not scn.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _thread_cpu(sampler, t0, t1):
    """{'src'|'dst': {thread name: CPU seconds}} from @t0 to @t1
    (time.monotonic()): over postcopy, from the switch until the
    destination had every page, and after it."""
    usage = threadcpu.window_usage(sampler.samples, t0, t1)
    out = {'src': {}, 'dst': {}}
    for (role, name), seconds in usage.items():
        out[role][name] = round(seconds, 3)
    return out


def _set_caps(vm, caps):
    vm.qmp.cmd('migrate-set-capabilities', capabilities=[
        {'capability': c, 'state': True} for c in caps])


def _migrate(scn, src, dst, progress):
    linux = scn.pattern == LINUX_PATTERN
    # The Linux guest boots a kernel and fills redis first.
    boot_s = 60 + scn.ram_mb / (16 if linux else 64)
    if not src.console.wait_for(lambda t: t.startswith('READY'), boot_s):
        raise MigrationFailed('the guest did not report READY within %d s'
                              '\n%s' % (boot_s, src.log_tail()))
    caps = ['postcopy-ram'] + (['postcopy-preempt'] if scn.preempt else [])
    _set_caps(src, caps)
    _trace_source_queues(src)
    _set_caps(dst, caps + (['postcopy-blocktime'] if scn.blocktime else []))
    if scn.max_bandwidth:
        src.qmp.cmd('migrate-set-parameters',
                    **{'max-bandwidth': int(scn.max_bandwidth)})
    if scn.max_postcopy_bandwidth:
        src.qmp.cmd('migrate-set-parameters', **{
            'max-postcopy-bandwidth': int(scn.max_postcopy_bandwidth)})
    # Port 0: QEMU picks a free port itself (no race with other users).
    dst.qmp.cmd('migrate-incoming', uri='tcp:%s:%d' % (scn.dst_addr,
                                                       scn.dst_port or 0))
    port = scn.dst_port or listening_port(dst)
    uri = 'tcp:%s:%d' % (scn.dst_addr, scn.connect_port or port)
    # Let the guest run a few intervals on the source first: a baseline;
    # its rate before the migration, when the whole cost is measured.
    time.sleep(BASELINE_S if scn.after_s else 3 * scn.interval_ms / 1000.0)
    huge = {'source': ram_huge_bytes(src, scn.ram_mb)}

    t_start = time.monotonic()
    src.qmp.cmd('migrate', uri=uri)
    t_postcopy = None
    paused_s = None
    deadline = t_start + scn.timeout_s
    info = {}
    while True:
        now = time.monotonic()
        info = src.qmp.cmd('query-migrate')
        status = status_of(info)
        if progress:
            progress(now - t_start, info)
        if status in ('completed', 'failed', 'cancelled'):
            break
        if status.startswith('postcopy-paused'):
            if not scn.recover_own_pause or paused_s is not None:
                raise MigrationFailed('postcopy paused on the source: %s' %
                                      info.get('error-desc',
                                               'no reason given'))
            paused_s = recover_paused(scn, src, dst, time.monotonic())
            continue
        if t_postcopy is None and now - t_start >= scn.precopy_s:
            if status == 'active':
                if scn.before_postcopy:
                    scn.before_postcopy(src, dst)
                src.qmp.cmd('migrate-start-postcopy')
                t_postcopy = time.monotonic()
        elif status == 'postcopy-active' and scn.during_postcopy:
            scn.during_postcopy(src, dst)
        if (paused_s is None and status == 'postcopy-active' and
                _pause_due(scn, src, dst, now - t_postcopy)):
            paused_s = pause_and_recover(scn, src, dst)
        if now > deadline:
            raise MigrationFailed('migration not complete after %d s '
                                  '(status %s)' % (scn.timeout_s, status))
        # Fine enough for the times measured (about 1 s and up).
        time.sleep(0.05)
    if status != 'completed':
        raise MigrationFailed('migration %s: %s\nsource log:\n%s\n'
                              'destination log:\n%s' % (
                                  status, info.get('error-desc', ''),
                                  src.log_tail(), dst.log_tail()))
    # The migration ends when the destination has every page, which can
    # be after the source has sent the last one into the socket.
    dst_info, t_done = _wait_destination(dst, 60)
    huge.update(_follow_after(scn, dst, t_done))

    # The guest runs on the destination now; have it check all of RAM.
    verified = None if linux else _verify_and_stop(scn, dst)

    report = GuestReport(src.console.snapshot() + dst.console.snapshot())
    result = _result(scn, info, dst_info, report, verified,
                     t_start, t_postcopy, t_done)
    result['ram_bytes'] = scn.ram_mb * 1024 * 1024
    result['huge_bytes'] = huge
    if scn.after_s:
        result['whole_cost'] = whole_cost(report, t_start, t_postcopy,
                                          t_done, scn.after_s)
    result['source_queue'] = source_queue_actions(src.log_text())
    result['paused_s'] = paused_s
    # The window of the threads' CPU (time.monotonic()).
    result['t_postcopy'] = t_postcopy or t_done
    result['t_done'] = t_done
    return result


# The guest's rate before the migration, when its whole cost is measured:
# seconds of it on the source.
BASELINE_S = 10.0
# The guest's rate at the end of the follow: over its last END_S seconds
# (whether it got back to its rate before at all, and how far).
END_S = 20.0
# When the huge pages of the destination's guest RAM are read, in seconds
# after the migration completed (within the scenario's after_s).
HUGE_AT_S = (0, 10, 60)


# A line of HMP's "info ramblock": name, page size, offset, used, total,
# host address (HVA).
_RAMBLOCK_LINE = re.compile(r'^\s*(\S+)\s+\d+ \S+\s+0x[0-9a-f]+\s+'
                            r'(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)')


def guest_ram_range(vm, ram_mb):
    """The host addresses [lo, hi) of the guest RAM of @vm's QEMU: its
    RAMBlock of @ram_mb MiB (HMP "info ramblock"); None where none shows.
    Guest RAM can be several mappings (a module may split it while pages
    come in), so it is found by address, not by a mapping's size."""
    try:
        text = vm.qmp.cmd('human-monitor-command',
                          **{'command-line': 'info ramblock'})
    except Exception:   # noqa: BLE001 - a QEMU gone or busy: no range
        return None
    for line in text.splitlines():
        m = _RAMBLOCK_LINE.match(line)
        if m and int(m.group(2), 16) == ram_mb * 1024 * 1024:
            lo = int(m.group(3), 16)
            return lo, lo + int(m.group(2), 16)
    return None


def smaps_by_range(pid, lo, hi, keys):
    """Sums of the smaps fields @keys (kB, as bytes) of QEMU @pid's
    mappings inside [@lo, @hi) and outside it: ({key: bytes}, {key:
    bytes}); None when smaps cannot be read."""
    inside = dict.fromkeys(keys, 0)
    outside = dict.fromkeys(keys, 0)
    where = outside
    try:
        with open('/proc/%d/smaps' % pid) as f:
            for line in f:
                fields = line.split()
                if '-' in fields[0] and not fields[0].endswith(':'):
                    a, b = (int(x, 16) for x in fields[0].split('-'))
                    where = inside if lo <= a and b <= hi else outside
                elif fields[0] in keys:
                    where[fields[0]] += int(fields[1]) * 1024
    except OSError:
        return None
    return inside, outside


def ram_huge_bytes(vm, ram_mb):
    """Bytes of the guest RAM of @vm's QEMU in transparent huge pages: the
    AnonHugePages (or ShmemPmdMapped, for memfd) of its mappings inside
    guest RAM's range; None when it cannot tell."""
    span = guest_ram_range(vm, ram_mb)
    if not span:
        return None
    sums = smaps_by_range(vm.proc.pid, span[0], span[1],
                          ('AnonHugePages:', 'ShmemPmdMapped:'))
    return sum(sums[0].values()) if sums else None


def _follow_after(scn, dst, t_done):
    """The destination's guest RAM in huge pages at each of HUGE_AT_S
    seconds after @t_done that lie within the scenario's after_s, while the
    guest runs on: {'destination+Ns': bytes}."""
    huge = {}
    for at in HUGE_AT_S:
        if at > scn.after_s:
            break
        time.sleep(max(0.0, t_done + at - time.monotonic()))
        huge['destination+%ds' % at] = ram_huge_bytes(dst, scn.ram_mb)
    time.sleep(max(0.0, t_done + scn.after_s - time.monotonic()))
    return huge


def whole_cost(report, t_start, t_postcopy, t_done, after_s):
    """The migration's whole cost to the guest: its rate before the
    migration (on the source, BASELINE_S before migrate), its rate from
    the switch to @after_s after completion in 1-second bins, when it was
    back to full speed (guest.back_to_full_speed, at most @after_s after
    completion), the work it lost (at its rate before) in postcopy and
    until it was back, and its rate over the last END_S seconds."""
    t_switch = t_postcopy or t_done
    baseline = report.ops_per_s(report.between(t_start - BASELINE_S,
                                               t_start))
    bins = [(round(t - t_switch, 3), rate) for t, rate in
            report.rate_bins(t_switch - 2.0, t_done + after_s, 1.0)]
    done_s = t_done - t_switch
    back_s, back = back_to_full_speed(bins, baseline, done_s,
                                      done_s + after_s)
    end = report.between(t_done + after_s - END_S, t_done + after_s)
    return dict(baseline_ops_per_s=baseline, timeline=bins,
                end_ops_per_s=(report.ops_per_s(end)
                               if after_s >= END_S else None),
                done_s=round(done_s, 3), back_s=round(back_s, 3), back=back,
                lost_postcopy_s=report.work_lost_s(t_switch, t_done,
                                                   baseline),
                lost_until_back_s=report.work_lost_s(t_switch,
                                                     t_switch + back_s,
                                                     baseline))


def _verify_and_stop(scn, dst):
    """pcguest's check of all of its memory, each vCPU's answer; then it
    stops."""
    time.sleep(0.5)
    verify_start = len(dst.console.snapshot())
    dst.console.send('v')
    verified = wait_verify(dst.console, scn.vcpus, verify_start,
                           60 + scn.ram_mb / 32)
    dst.console.send('q')
    dst.console.wait_for(lambda t: t == 'END', 30, verify_start)
    return verified


def _pause_due(scn, src, dst, postcopy_s):
    """Whether the scenario's pause is due, @postcopy_s into postcopy."""
    if scn.pause_when:
        return scn.pause_when(src, dst)
    return scn.recover_at_s is not None and postcopy_s >= scn.recover_at_s


# QEMU's migrate-pause on a destination shuts its main channel down with
# no lock against the load thread, whose own pause, which that shutdown
# sets off, may shut and close the channel first: the command then fails
# though the destination pauses (docs/faults.md).
DST_PAUSE_RACE = 'Failed to pause destination migration'


def migrate_pause(vm):
    """migrate-pause on @vm.  QEMU's failure from its own race above is
    returned, for the caller's wait for postcopy-paused to judge; any
    other failure is raised."""
    try:
        vm.qmp.cmd('migrate-pause')
    except QMPError as e:
        if DST_PAUSE_RACE in str(e):
            return str(e)
        raise
    return None


def pause_and_recover(scn, src, dst, pause=None):
    """Pause the migration on @pause (the destination by default) and
    recover it over a new connection on the same link, as an operator
    would after a network failure; returns the seconds from the pause to
    both sides running postcopy again."""
    t_pause = time.monotonic()
    migrate_pause(pause or dst)
    return recover_paused(scn, src, dst, t_pause)


def recover_paused(scn, src, dst, t_pause):
    """Once both sides are paused, recover over a new connection on the
    same link; the seconds from @t_pause to both running postcopy again."""
    wait_both(src, dst, 'postcopy-paused', 30)
    dst.qmp.cmd('migrate-recover', uri='tcp:%s:%d' % (scn.dst_addr,
                                                     scn.dst_port or 0))
    # The newest listening address comes first.
    port = scn.dst_port or listening_port(dst)
    src.qmp.cmd('migrate', uri='tcp:%s:%d' % (
        scn.dst_addr, scn.connect_port or port), resume=True)
    wait_both(src, dst, 'postcopy-active', 60)
    return time.monotonic() - t_pause


def wait_both(src, dst, status, timeout):
    """Until both sides report @status; MigrationFailed when either fails
    or @timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        infos = [vm.qmp.cmd('query-migrate') for vm in (src, dst)]
        states = [status_of(i) for i in infos]
        if states == [status, status]:
            return
        if 'failed' in states or time.monotonic() > deadline:
            raise MigrationFailed('source %s, destination %s '
                                  '(waiting for %s): %s' % (
                                      states[0], states[1], status,
                                      '; '.join(i.get('error-desc', '')
                                                for i in infos)))
        time.sleep(0.02)


def _trace_source_queues(src):
    """Have the source log what this module does to its main channel when
    postcopy starts (postcopy-tcp-queue-qemu.c); upstream's module has no such
    events, and QEMU refuses the pattern: nothing to log then."""
    try:
        src.qmp.cmd('trace-event-set-state', name='postcopy_queue_*',
                    enable=True)
    except QMPError:
        pass


def source_queue_actions(log):
    """From the source's log, what it did to its main channel: the send
    bound in bytes and the pacing rate in bytes/s (0: none, None: not
    traced), set at the switch or at its second look into postcopy; what
    TCP_INFO said of the path at the switch; and the second look's reading
    ('recheck', None if it took none), with what it added ('late_bound',
    'late_paced'); and what a recovery's new main channel got
    ('new_channel': lowat and pace_Bps; None: no recovery, or not traced)."""
    actions = {'lowat': None, 'pace_Bps': None, 'path': None,
               'recheck': None, 'late_bound': False, 'late_paced': False,
               'new_channel': None}
    # The new channel's line, and the bound it traces at once, out of the
    # way of what the switch and the second look set.
    m = re.search(r"postcopy_queue_new_channel a recovery's new main "
                  r"channel: send bound (\d+) bytes, paced at (\d+) B/s"
                  r"[^\n]*\n(?:[^\n]*postcopy_queue_bound source: "
                  r"notsent-lowat[^\n]*\n)?", log)
    if m:
        actions['new_channel'] = dict(lowat=int(m.group(1)),
                                      pace_Bps=int(m.group(2)))
        log = log[:m.start()] + log[m.end():]
    m = re.search(r'postcopy_queue_path delivery rate (\d+) B/s, round trip '
                  r'(\d+) us \(least (\d+)\), busy (\d+) us, '
                  r'receiver-limited (\d+) us', log)
    if m:
        actions['path'] = dict(zip(('delivery_Bps', 'rtt_us', 'min_rtt_us',
                                    'busy_us', 'rwnd_limited_us'),
                                   (int(g) for g in m.groups())))
    m = re.search(r'postcopy_queue_recheck busy (\d+) us, receiver-limited '
                  r'(\d+) us, (\d+) B/s \(precopy (\d+)\) in the first '
                  r'(\d+) ms of postcopy: bound (\d), pace at (\d+) B/s',
                  log)
    at_switch, late = (log[:m.start()], log[m.start():]) if m else (log, '')
    if m:
        actions['recheck'] = dict(zip(('busy_us', 'rwnd_limited_us',
                                       'rate_Bps', 'precopy_rate_Bps',
                                       'interval_ms', 'bound', 'pace_Bps'),
                                      (int(g) for g in m.groups())))
    lowat, pace = _queue_settings(at_switch)
    late_lowat, late_pace = _queue_settings(late)
    actions['late_bound'] = bool(late_lowat)
    actions['late_paced'] = bool(late_pace)
    actions['lowat'] = late_lowat or lowat
    actions['pace_Bps'] = late_pace or pace
    return actions


def _queue_settings(log):
    """The send bound and pacing rate that the source's trace in @log
    reports (0: said none, None: said nothing)."""
    lowat = pace = None
    m = re.search(r'postcopy_queue_bound source: (\S+)[^\n]* (\d+) bytes',
                  log)
    if m:
        lowat = int(m.group(2)) if m.group(1) == 'notsent-lowat' else 0
    m = re.search(r'postcopy_queue_pace main channel paced at (\d+)', log)
    if m:
        pace = int(m.group(1))
    return lowat, pace


def poll_until(check, timeout, poll=0.1):
    """Call @check every @poll seconds until it returns something true, for
    up to @timeout seconds: that value, or None when time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def _wait_destination(dst, timeout):
    """The destination's final query-migrate, and when it said completed."""
    deadline = time.monotonic() + timeout
    while True:
        info = dst.qmp.cmd('query-migrate')
        if status_of(info) == 'completed':
            return info, time.monotonic()
        if status_of(info) == 'failed' or time.monotonic() > deadline:
            raise MigrationFailed('destination status %s: %s\n%s' % (
                status_of(info), info.get('error-desc', ''),
                dst.log_tail()))
        time.sleep(0.02)


def wait_verify(console, vcpus, start, timeout):
    """Each vCPU's answer ('V' line, from index @start of @console on) to
    the memory check asked for there: {cpu: {pages, bad, ...}}."""
    answers = {}
    deadline = time.monotonic() + timeout
    index = start
    while len(answers) < vcpus:
        left = deadline - time.monotonic()
        found = console.wait_for(lambda t: t.startswith('V '),
                                 max(left, 0), index)
        if not found:
            raise MigrationFailed('only %d of %d vCPUs answered the memory '
                                  'check within %d s' % (len(answers), vcpus,
                                                         timeout))
        index, _, text = found
        fields = dict(kv.split('=') for kv in text.split()[1:])
        answers[int(fields['cpu'])] = fields
        index += 1
    return answers


def _result(scn, info, dst_info, report, verified, t_start, t_postcopy,
            t_done):
    ram = info.get('ram', {})
    page = ram.get('page-size', 4096) or 4096
    postcopy_window = report.window(t_postcopy or t_done, t_done)
    precopy_window = report.window(t_start - 1.0, t_postcopy or t_done)
    lat_post, hist_post = report.latency(postcopy_window)
    lat_pre, _ = report.latency(precopy_window)
    bad_pages = sum(int(v['bad']) for v in (verified or {}).values())
    checked = sum(int(v['pages']) for v in (verified or {}).values())
    postcopy_pages = ram.get('postcopy-bytes', 0) // page
    requests = ram.get('postcopy-requests', 0)
    return {
        'scenario': {
            'ram_mb': scn.ram_mb, 'vcpus': scn.vcpus,
            'pattern': scn.pattern, 'writes': scn.writes, 'hot': scn.hot,
            'precopy_s': scn.precopy_s, 'preempt': scn.preempt,
            'accel': scn.accel_name(), 'backend': scn.backend,
        },
        'precopy_s': (t_postcopy - t_start) if t_postcopy else None,
        'postcopy_s': (t_done - t_postcopy) if t_postcopy else 0.0,
        'total_s': t_done - t_start,
        'downtime_ms': info.get('downtime'),
        'bytes_sent': ram.get('transferred', 0),
        'precopy_bytes': ram.get('precopy-bytes', 0),
        'postcopy_bytes': ram.get('postcopy-bytes', 0),
        'pages_requested': requests,
        'pages_background': max(postcopy_pages - requests, 0),
        'blocktime_ms': dst_info.get('postcopy-blocktime'),
        'vcpu_blocktime_ms': dst_info.get('postcopy-vcpu-blocktime'),
        # QEMU 10.1+ only: fault latencies (ns) and their histogram
        'latency_ns': dst_info.get('postcopy-latency'),
        'vcpu_latency_ns': dst_info.get('postcopy-vcpu-latency'),
        'non_vcpu_latency_ns': dst_info.get('postcopy-non-vcpu-latency'),
        'latency_dist': dst_info.get('postcopy-latency-dist'),
        'guest': {
            'latency_postcopy_us': lat_post,
            'latency_precopy_us': lat_pre,
            'hist_postcopy': hist_post,
            'ops_per_s_postcopy': report.ops_per_s(postcopy_window),
            'ops_per_s_precopy': report.ops_per_s(precopy_window),
            'worst_stalls': _worst_stalls(report, t_postcopy or t_done,
                                          t_done),
            'clock': report.clock,
            'clock_cost_ns': report.clock_cost_ns,
            'clock_jump_s': report.clock_jump_s(precopy_window +
                                                postcopy_window),
            'batch': report.batch,
            'cpl': report.cpl,
            'pages_checked': checked,
            'bad_pages': bad_pages + len(report.bad),
            'bad_reports': report.bad[:20],
            'disk': report.disk,
            'aimed_read': report.aimed_read,
            'verdict': ('CORRUPT' if bad_pages or report.bad else
                        'unchecked' if verified is None else 'clean'),
        },
    }


def _worst_stalls(report, t_switch, t_done, count=5):
    """The guest's @count longest single accesses up to the end of the
    migration, one per interval report, as (seconds from
    migrate-start-postcopy, ms): whether the worst stalls come at the
    switch or later, in postcopy."""
    worst = sorted(report.window(0, t_done),
                   key=lambda i: -i.max_ns)[:count]
    return [(round(i.host_time - t_switch, 3), i.max_ns / 1e6)
            for i in worst]
