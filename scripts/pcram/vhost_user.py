"""A vhost-user back-end through postcopy: the shared-userfaultfd path.

    python3 -m pcram.vhost_user --qemu QEMU --qsd QEMU-STORAGE-DAEMON \\
        --guest pcguest.bin [--module ours|upstream] [--preempt] [--pause]

Each side's QEMU gets a vhost-user-blk-pci disk served by a
qemu-storage-daemon of its own (QEMU's libvhost-user, which answers
postcopy's advise, listen and end with a userfaultfd of its own); both
daemons serve one image file.  The guest's RAM is a shared memfd, as
vhost-user needs.  The test guest (guest/disk.c) keeps the disk's buffers
dirty until postcopy starts, then reads and writes the disk, one 4 KiB
request at a time, each into a buffer it leaves to the device: the
daemon on the destination is the first to touch those pages, and the
destination's fault thread must read the daemon's userfaultfd, ask the
source for the page, place it and wake the daemon.

Checks: the migration completes; the guest's memory is exact; every
block the guest read held what the image had and every block it wrote is
in the image; the guest's last request completed; and the destination's
trace shows requests from the shared userfaultfd (more than zero: a run
where the daemon never faulted proves nothing); and, with our module,
wakes of the daemon and no call of vhost-user's waker (it reads a region
table that the main thread rebuilds under it when the RAM layout
changes).  --pause pauses the destination right after such a request and
recovers (the daemon's fault is then, most likely, outstanding across the
pause); --preempt turns on postcopy-preempt; --hotplug plugs a pc-dimm
into the destination after the daemon's first fault (vhost then sends the
daemon a new region table while pages are placed and woken); --place-zero
has the guest aim a disk read at RAM a virtio-mem device holds unplugged
(discarded: the source never sends it), so that the daemon's write is the
first touch of a page the destination must fill with zeroes, and the first
such zero page fails to be placed (fault point place-zero): the migration
pauses, the harness recovers it, and the daemon's fault must be served
after the recovery, its read landing whole.  Prints one line
"vhost-user: ..." and exits non-zero on any failure.  A failed run keeps
its work directory under results/failed/ (--workdir: there), with both
QEMUs' and daemons' logs, the QEMUs' exit statuses, the timeline of their
QMP events and the destination's trace (evidence.py); its line ends with
"files: DIR".
"""

import argparse
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

from . import evidence
from .migrate import (MigrationFailed, Scenario, run_scenario,
                      virtio_mem_address, virtio_mem_args)
from .qmp import QMPError

MiB = 1024 * 1024
IMAGE_BYTES = 64 * MiB
BLOCK = 4096
# guest/guest.h
READ_MAGIC = 0x5043475200000000
WRITE_MAGIC = 0x5043475700000000

# The trace event of a request from another process's userfaultfd, per
# module: ours (postcopy-shared.c) and upstream's postcopy-ram.c.
SHARED_REQUEST_EVENT = {'ours': 'postcopy_shared_request',
                        'upstream': 'postcopy_request_shared_page'}
# --wake-fail: every wake of the back-end after a placement is done, then
# reported failed (migration/postcopy-inject.h); what the destination
# traces and says then.
WAKE_FAIL_INJECT = 'shared-wake-fail=1:1000000000'
WAKE_FAILED_EVENT = 'postcopy_shared_wake_failed'
WAKE_FAILED_WARNING = 'postcopy: could not wake'
# --retry: the back-end's first request fails as if the return path broke;
# after the recovery the fault thread asks again, and traces that.
RETRY_INJECT = 'shared-request-fail=1'
RETRY_EVENT = 'postcopy_shared_retry'
RESUME_EVENT = 'loadvm_postcopy_handle_resume'
# --place-zero: the first zero page placed for discarded RAM fails, and
# the destination pauses by itself, saying so.
PLACE_ZERO_INJECT = 'place-zero=1'
PLACE_ZERO_MESSAGE = 'placing a zero page for discarded RAM failed'
# Its virtio-mem device, all of it unplugged, on a shared memfd as
# vhost-user needs; the guest's RAM (Scenario's memfd backend) comes
# before it on the command line (migrate.virtio_mem_args() says why).
VIRTIO_MEM_MB = 128
# Its RAMBlock, as the module's trace names it (the device's path, then
# its memory backend's id): a pattern.
VIRTIO_MEM_BLOCK = r'\S*/vmem0'
# Its read must be done this long before the migration completes: served
# after the recovery, not woken by postcopy's end (the fault comes about
# 1 s into a postcopy of about 12 s).
AIMED_READ_MARGIN_S = 1.0


def inject_env(args):
    """The destination's fault points for the case (ours only)."""
    points = [point for point, on in ((RETRY_INJECT, args.retry),
                                      (WAKE_FAIL_INJECT, args.wake_fail),
                                      (PLACE_ZERO_INJECT, args.place_zero))
              if on]
    return {'QEMU_POSTCOPY_INJECT': ','.join(points)} if points else {}
# vhost-user's waker being called (QEMU's event), and the module waking a
# back-end's thread itself.
WAKER_EVENT = 'vhost_user_postcopy_waker'
OUR_WAKE_EVENT = 'postcopy_shared_wake_placed'
# --hotplug: a pc-dimm plugged into the destination in postcopy; vhost's
# commit of the new layout (changed=1) sends the back-end a new table.
HOTPLUG_MB = 128
COMMIT_EVENT = 'vhost_commit'


def block_words(offset, magic):
    """One 4 KiB block as the disk holds it: magic | byte offset per word."""
    return struct.pack('<512Q', *[magic | (offset + i * 8)
                                  for i in range(BLOCK // 8)])


def make_image(path):
    """The image: its first half as the guest expects to read it, the
    second half zero (the guest writes there)."""
    with open(path, 'wb') as f:
        for offset in range(0, IMAGE_BYTES // 2, BLOCK):
            f.write(block_words(offset, READ_MAGIC))
        f.truncate(IMAGE_BYTES)


def check_written(path, writes):
    """The first blocks of the second half that the guest wrote (it
    writes them in order, round the half): a list of what is wrong."""
    half = IMAGE_BYTES // 2
    blocks = min(writes, half // BLOCK)
    wrong = []
    with open(path, 'rb') as f:
        for b in range(blocks):
            offset = half + b * BLOCK
            f.seek(offset)
            if f.read(BLOCK) != block_words(offset, WRITE_MAGIC):
                wrong.append(offset)
    return wrong


class StorageDaemon:
    """qemu-storage-daemon exporting the image over a vhost-user socket."""

    def __init__(self, qsd, image, sock, log_path):
        self.sock = sock
        self.log = open(log_path, 'w')
        # locking=off: the other side's daemon has the image open too.
        self.proc = subprocess.Popen(
            [qsd, '--blockdev', 'driver=file,node-name=disk,filename=%s,'
             'locking=off' % image,
             '--export', 'type=vhost-user-blk,id=exp,node-name=disk,'
             'addr.type=unix,addr.path=%s,writable=on' % sock],
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                ended = evidence.how_ended(self.proc.poll())
                raise MigrationFailed('qemu-storage-daemon did not start '
                                      '(%s): %s' % (ended, self.log_text()))
            time.sleep(0.05)

    def log_text(self):
        with open(self.log.name, errors='replace') as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def last_line(path):
    try:
        with open(path, errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return 'no log'
    return lines[-1] if lines else 'nothing logged'


def has_line(path, text):
    """Whether the file at @path holds @text."""
    try:
        with open(path, errors='replace') as f:
            return text in f.read()
    except OSError:
        return False


def asked_again_after_resume(path, block=None):
    """Whether the destination's trace at @path shows a failed request of
    the back-end (postcopy_shared_retry), then a resume, then a request of
    the back-end (in a RAMBlock matching the pattern @block, if given): the
    retry itself, not only its intent."""
    wanted = [RETRY_EVENT, RESUME_EVENT, SHARED_REQUEST_EVENT['ours']]
    with open(path, errors='replace') as f:
        for line in f:
            if wanted[0] in line and (
                    len(wanted) > 1 or block is None or
                    re.search(r'\s%s\s' % block, line)):
                wanted.pop(0)
                if not wanted:
                    return True
    return False


def aim_read_at_unplugged(dst):
    """Have the guest on @dst aim the disk's next read at the first page
    of its virtio-mem device's region (all of it unplugged); the address."""
    addr = virtio_mem_address(dst)
    dst.console.send('b%x\n' % addr)
    return addr


def place_zero_problems(result, trace, workdir, aimed):
    """--place-zero: what is wrong with the run (a list)."""
    if not aimed:
        return ['the guest was never told to aim a read at unplugged RAM']
    problems = []
    read = result['guest'].get('aimed_read')
    if not read:
        problems.append('the read aimed at unplugged RAM (0x%x) never '
                        'completed' % aimed[0])
    elif int(read.get('addr', '0'), 16) != aimed[0]:
        problems.append('the guest aimed its read at %s, not 0x%x' %
                        (read.get('addr'), aimed[0]))
    elif read.get('good') != '1':
        problems.append('the read aimed at unplugged RAM failed or brought '
                        'a wrong block (%s)' % read)
    elif read['t'] > result['t_done'] - AIMED_READ_MARGIN_S:
        # A fault that nobody asked for again is woken only when postcopy's
        # end unregisters the back-end's userfaultfd: until then the
        # daemon, one thread for the queue, serves no request at all.
        problems.append('the read aimed at unplugged RAM completed at the '
                        'migration\'s end (%+.2f s from it): the back-end '
                        'waited for the end of postcopy' %
                        (read['t'] - result['t_done']))
    if not has_line(os.path.join(workdir, 'destination.log'),
                    PLACE_ZERO_MESSAGE):
        problems.append('the destination did not say "%s": the fault '
                        'point never fired' % PLACE_ZERO_MESSAGE)
    if not asked_again_after_resume(trace, VIRTIO_MEM_BLOCK):
        problems.append('the back-end\'s fault on unplugged RAM was not '
                        'asked again after the recovery (no %s, then a '
                        'resume, then a request of the back-end in the '
                        'virtio-mem device\'s RAMBlock)' % RETRY_EVENT)
    return problems


def count_events(path, event):
    try:
        with open(path, errors='replace') as f:
            return sum(1 for line in f if re.search(r'\b%s\b' % event, line))
    except OSError:
        return 0


def changed_commits_after(path, event):
    """vhost commits of a changed layout, sent to the running back-end,
    after the first @event."""
    seen, commits = False, 0
    with open(path, errors='replace') as f:
        for line in f:
            if not seen:
                seen = re.search(r'\b%s\b' % event, line) is not None
            elif (re.search(r'\b%s\b' % COMMIT_EVENT, line) and
                  'Started: 1 Changed: 1' in line):
                commits += 1
    return commits


def start_disk_io(src, dst):
    """Right before the switch, have the guest stop dirtying the disk's
    buffers and start its requests (guest/disk.c): the buffers it uses
    from then on are dirty at the switch, so missing on the destination."""
    del dst
    start = len(src.console.snapshot())
    src.console.send('d')
    if not src.console.wait_for(lambda t: t == 'DISK-START', 30, start):
        raise MigrationFailed('the guest did not start its disk requests '
                              '(no PCG DISK-START within 30 s)')


class Watchdog:
    """Kills the run's QEMUs once @limit_s have passed: a destination whose
    main thread hangs (holding the BQL) answers no QMP, and the run would
    wait on it for good."""

    def __init__(self, workdir, limit_s):
        self.workdir = workdir
        self.fired = False
        self.timer = threading.Timer(limit_s, self._fire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()

    def _fire(self):
        self.fired = True
        for pid in os.listdir('/proc'):
            if not pid.isdigit():
                continue
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    args = f.read().split(b'\0')
            except OSError:
                continue
            if any(self.workdir.encode() in a for a in args) and \
                    os.path.basename(args[0]).startswith(b'qemu-system'):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


class Witness:
    """What the run's evidence (evidence.py) can see of a migration that
    migrate.run_scenario() drives: the source's states at each of its
    looks, and both QEMUs' QMP events, once the hooks it calls have shown
    them the QEMUs."""

    def __init__(self, ev):
        self.ev = ev
        self.vms = []

    def hook(self, src, dst):
        if not self.vms:
            self.vms = [self.ev.watch(src), self.ev.watch(dst)]
        self.ev.take_events(self.vms)

    def progress(self, elapsed, info):
        del elapsed
        self.ev.status('source', info)
        if self.vms:
            self.ev.take_events(self.vms)


def run(args, workdir, ev):
    image = os.path.join(workdir, 'disk.img')
    trace = os.path.join(workdir, 'destination.trace')
    event = SHARED_REQUEST_EVENT[args.module]
    witness = Witness(ev)
    hotplugged = []
    aimed = []              # --place-zero: the address
    make_image(image)
    daemons = {}
    try:
        for side in ('source', 'destination'):
            daemons[side] = StorageDaemon(
                args.qsd, image, os.path.join(workdir, side + '.vhost'),
                os.path.join(workdir, side + '-qsd.log'))
        # x-events: the MIGRATION events, for the evidence of a failure.
        side_args = {side: ['-chardev', 'socket,id=vu0,path=%s' % d.sock,
                            '-device', 'vhost-user-blk-pci,chardev=vu0,'
                            'num-queues=1',
                            '-global', 'migration.x-events=on'] +
                     evidence.QEMU_ARGS
                     for side, d in daemons.items()}
        if args.hotplug:
            # Room for one DIMM; a later -m merges with Scenario's.
            for side in side_args:
                side_args[side] += ['-m', '%dM,slots=1,maxmem=%dM' % (
                    args.ram_mb, args.ram_mb + HOTPLUG_MB)]
        if args.place_zero:
            for side in side_args:
                side_args[side] += (
                    ['-m', '%dM,maxmem=%dM' % (args.ram_mb,
                                               args.ram_mb + VIRTIO_MEM_MB)] +
                    virtio_mem_args('memfd', VIRTIO_MEM_MB))

        def before_postcopy(src, dst):
            witness.hook(src, dst)
            start_disk_io(src, dst)
            ev.step('migrate-start-postcopy', 'source')

        def pause_when(src, dst):
            witness.hook(src, dst)
            if count_events(trace, event) > 0:
                ev.step('migrate-pause after the back-end\'s first fault',
                        'destination')
                return True
            return False

        def hotplug(src, dst):
            witness.hook(src, dst)
            if not hotplugged and count_events(trace, event) > 0:
                ev.step('pc-dimm plugged in postcopy', 'destination')
                dst.qmp.cmd('object-add', **{
                    'qom-type': 'memory-backend-memfd', 'id': 'hp0',
                    'size': HOTPLUG_MB * MiB, 'share': True})
                dst.qmp.cmd('device_add', driver='pc-dimm', id='dimm0',
                            memdev='hp0')
                hotplugged.append(time.monotonic())

        def aim_at_unplugged(src, dst):
            witness.hook(src, dst)
            if not aimed:
                ev.step('the guest aims a disk read at unplugged RAM',
                        'destination')
                aimed.append(aim_read_at_unplugged(dst))

        def kill_backend(src, dst):
            witness.hook(src, dst)
            if daemons['destination'].proc.poll() is None and \
                    count_events(trace, event) > 0:
                ev.step('the back-end killed (SIGKILL)', 'destination')
                daemons['destination'].proc.kill()

        # A working set, so that CPU 0 keeps issuing requests in
        # postcopy; precopy slow enough that its first pass is not done at
        # the switch, so the buffers the guest dirtied until then are
        # missing on the destination.
        scn = Scenario(qemu=args.qemu, guest=args.guest, pattern='wset',
                       ram_mb=args.ram_mb, vcpus=2, backend='memfd',
                       max_bandwidth=args.precopy_bps,
                       preempt=args.preempt, precopy_s=args.precopy_s,
                       side_args=side_args, before_postcopy=before_postcopy,
                       pause_when=(pause_when if args.pause or args.retry
                                   else None),
                       during_postcopy=(kill_backend if args.kill_backend
                                        else hotplug if args.hotplug
                                        else aim_at_unplugged
                                        if args.place_zero else None),
                       recover_own_pause=args.place_zero,
                       trace=evidence.TRACE + [WAKER_EVENT, COMMIT_EVENT],
                       dst_env=inject_env(args),
                       trace_file=trace,
                       workdir=workdir, timeout_s=600,
                       # Slow enough that the daemon's requests find
                       # pages still missing.
                       max_postcopy_bandwidth=args.postcopy_bps)
        t0 = time.monotonic()
        with Watchdog(workdir, args.limit_s) as watchdog:
            try:
                result = run_scenario(scn, progress=witness.progress)
            except (MigrationFailed, OSError) as e:
                if watchdog.fired:
                    raise MigrationFailed(
                        'no end after %d s: killed both QEMUs (the '
                        'destination\'s last trace event: %s)' % (
                            args.limit_s, last_line(trace)))
                raise MigrationFailed(str(e)) from e
        took = time.monotonic() - t0
    finally:
        for side, d in daemons.items():
            ran = d.proc.poll() is None
            d.stop()
            ev.step('%s: %s' % ('ran until the harness stopped it' if ran
                                else 'ended before the harness stopped it',
                                evidence.how_ended(d.proc.returncode)),
                    side + '-qsd')
    disk = result['guest'].get('disk') or {}
    shared = count_events(trace, event)
    problems = []
    if result['guest']['verdict'] != 'clean':
        problems.append('guest memory %s' % result['guest']['verdict'])
    if args.kill_backend:
        # The daemon died with a request of the guest's in flight: that
        # request is lost with it; what must hold is the migration and
        # the guest's memory, and a destination that says what happened.
        if daemons['destination'].proc.returncode is None:
            problems.append('the destination\'s daemon was never killed')
        disk = dict(disk, inflight='0 (lost with the daemon: %s)' %
                    disk.get('inflight', '?'))
    if not disk:
        problems.append('the guest reported no disk')
    else:
        for key in ('bad', 'errors', 'inflight'):
            if str(disk.get(key, 0)).split()[0] != '0':
                problems.append('disk %s=%s' % (key, disk[key]))
        if not int(disk.get('reads', 0)) or not int(disk.get('writes', 0)):
            problems.append('the guest did no disk I/O (%s)' % disk)
        wrong = check_written(image, int(disk.get('writes', 0)))
        if wrong:
            problems.append('%d written blocks wrong in the image, the '
                            'first at offset 0x%x' % (len(wrong), wrong[0]))
    if shared == 0:
        problems.append('no request came from the daemon\'s userfaultfd '
                        '(%s)' % event)
    waker_calls = count_events(trace, WAKER_EVENT)
    wakes = count_events(trace, OUR_WAKE_EVENT)
    if args.module == 'ours':
        if waker_calls:
            problems.append('vhost-user\'s waker was called %d times: it '
                            'reads a region table that the main thread '
                            'rebuilds under it' % waker_calls)
        waited = count_events(trace, event + r'.*present=0')
        # A back-end killed after its first fault is never woken.
        if waited and not wakes and not args.kill_backend:
            problems.append('%d requests of the back-end waited for their '
                            'page, and no placement woke it (%s)' %
                            (waited, OUR_WAKE_EVENT))
    if args.retry and not asked_again_after_resume(trace):
        problems.append('the back-end\'s failed request was not asked '
                        'again after the recovery (no %s, then a resume, '
                        'then a request of the back-end)' % RETRY_EVENT)
    if args.wake_fail:
        failed_wakes = count_events(trace, WAKE_FAILED_EVENT)
        if not failed_wakes:
            problems.append('no wake of the back-end failed (%s): the '
                            'fault point never fired' % WAKE_FAILED_EVENT)
        if not has_line(os.path.join(workdir, 'destination.log'),
                        WAKE_FAILED_WARNING):
            problems.append('the destination did not say that a wake '
                            'failed ("%s")' % WAKE_FAILED_WARNING)
    if args.hotplug:
        if not hotplugged:
            problems.append('the pc-dimm was never plugged (the back-end '
                            'did not fault in postcopy)')
        elif not changed_commits_after(trace, event):
            problems.append('vhost never committed a changed layout after '
                            'the back-end\'s first fault (%s)' %
                            COMMIT_EVENT)
    if args.place_zero:
        problems += place_zero_problems(result, trace, workdir, aimed)
    if (args.pause or args.retry or args.place_zero) and \
            not result.get('paused_s'):
        problems.append('the migration was not paused')
    summary = ('vhost-user: %s module, %s%s: %s; %d requests from the '
               'back-end\'s userfaultfd, %d wakes of it, %d calls of '
               'vhost-user\'s waker, disk reads '
               '%s, writes %s, postcopy %.1f s, %.0f s in all' % (
                   args.module, 'preempt' if args.preempt else 'main channel',
                   ', paused and recovered' if args.pause else
                   ', its first request failed, paused, recovered and '
                   'asked again' if args.retry else
                   ', the back-end killed in postcopy' if args.kill_backend
                   else ', a pc-dimm plugged in postcopy' if args.hotplug
                   else ', every wake of the back-end reported failed'
                   if args.wake_fail else
                   ', its zero page for unplugged RAM failed, paused, '
                   'recovered and asked again' if args.place_zero else '',
                   'FAILED: ' + '; '.join(problems) if problems else 'clean',
                   shared, wakes, waker_calls, disk.get('reads', '?'),
                   disk.get('writes', '?'),
                   result['postcopy_s'], took))
    return summary, not problems


def parse_args(argv):
    p = argparse.ArgumentParser(prog='vhost_user')
    p.add_argument('--qemu', required=True)
    p.add_argument('--qsd', required=True)
    p.add_argument('--guest', required=True)
    p.add_argument('--module', default='ours', choices=sorted(
        SHARED_REQUEST_EVENT))
    p.add_argument('--preempt', action='store_true')
    p.add_argument('--pause', action='store_true')
    p.add_argument('--kill-backend', action='store_true',
                   help='kill the destination\'s daemon after its first '
                   'fault in postcopy')
    p.add_argument('--retry', action='store_true',
                   help='the back-end\'s first request fails as if the '
                   'return path broke (fault point shared-request-fail, '
                   'ours only), then a pause and recovery: it must be '
                   'asked again')
    p.add_argument('--wake-fail', action='store_true',
                   help='every wake of the back-end after a placement is '
                   'reported failed (fault point shared-wake-fail, ours '
                   'only): the migration must go on')
    p.add_argument('--hotplug', action='store_true',
                   help='plug a pc-dimm into the destination after the '
                   'back-end\'s first fault in postcopy: vhost sends the '
                   'back-end a new region table while pages are placed')
    p.add_argument('--place-zero', action='store_true',
                   help='the guest aims a disk read at unplugged virtio-mem '
                   'RAM; the zero page placed for the back-end\'s fault '
                   'fails (fault point place-zero, ours only): pause, '
                   'recovery, and the fault served after it')
    p.add_argument('--ram-mb', type=int, default=256)
    p.add_argument('--precopy-s', type=float, default=1.0)
    p.add_argument('--precopy-bps', type=int, default=16 * 1000 * 1000)
    p.add_argument('--postcopy-bps', type=int, default=20 * 1000 * 1000)
    p.add_argument('--workdir', help='keep the run\'s files here')
    p.add_argument('--limit-s', type=int, default=240,
                   help='kill both QEMUs after this long and fail')
    return p.parse_args(argv)


def case_label(args):
    """The case's name, as scripts/vhost-user-test.sh calls it."""
    return '-'.join(name for name, on in (('pause', args.pause),
                                          ('preempt', args.preempt),
                                          ('kill-backend',
                                           args.kill_backend),
                                          ('retry', args.retry),
                                          ('wake-fail', args.wake_fail),
                                          ('hotplug', args.hotplug),
                                          ('place-zero', args.place_zero))
                    if on) or 'main'


def failed_line(args, why):
    return 'vhost-user: %s module, %s: FAILED: %s' % (
        args.module, 'preempt' if args.preempt else 'main channel', why)


def main(argv):
    args = parse_args(argv)
    # A SIGTERM (timeout(1)) unwinds, so that the QEMUs and daemons, in
    # sessions of their own, are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir or tempfile.mkdtemp(prefix='pcram-vu-')
    os.makedirs(workdir, exist_ok=True)
    ev = evidence.Evidence(workdir)
    ok, kept = False, workdir
    summary = outcome = failed_line(args, 'stopped by an error of the '
                                    'harness')
    try:
        summary, ok = run(args, workdir, ev)
        outcome = summary
    except (MigrationFailed, QMPError, OSError, ConnectionError) as e:
        summary = failed_line(args, str(e).splitlines()[0])
        outcome = '%s\n%s' % (summary, e)
    finally:
        # A clean run's files (a 64 MiB disk image among them) go, but
        # those of --workdir; a failed run's stay, for its logs.
        if not (ok and args.workdir):
            kept = ev.done(ok, 'vhost-user-' + case_label(args), outcome,
                           move=not args.workdir)
    print(summary if ok else '%s (%s)' % (summary, evidence.mention(kept)))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
