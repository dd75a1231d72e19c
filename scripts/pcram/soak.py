"""Soak: one guest through many postcopy recoveries, or many hops, counting
what each QEMU holds on the way.

    python3 -m pcram.soak --qemu QEMU --guest pcguest.bin --recoveries N
    python3 -m pcram.soak --qemu QEMU --guest pcguest.bin --hops N

--recoveries N: one postcopy migration kept long (max-postcopy-bandwidth
low), paused and recovered N times, the side that pauses alternating;
half of them in a migration over the main channel only, then the other
half in a second migration, onwards to a third QEMU, with
postcopy-preempt.  After every recovery, once both sides run postcopy
again: each QEMU's open fds, threads, and its own resident memory (RSS
outside guest RAM).

--hops N: the guest migrated by postcopy from QEMU to QEMU N times, each
destination the source of the next hop, every third hop paused and
recovered on the way.  After each hop: the same counts for the QEMU that
received (then) and for the one that sent (before it quits).

The guest (random access, half writes) checks every page it touches as
it runs, and all of its memory after each migration.  Passes when every
migration completes, no page is bad, and fds and threads stay flat: for
recoveries, each QEMU's counts after its last recovery equal those after
its first; for hops, every receiving QEMU ends with the same counts, and
so does every sending one.  Own RSS may grow by at most RSS_BOUND_MIB
(glib's and the allocator's caches settle over the first recoveries; a
leak of a page-sized buffer per recovery would exceed it at 100).

Writes every count to --out DIR (soak.json) and ends with a line
"soak: 100 recoveries, clean, fd growth 0, thread growth 0, rss growth
3 MiB" (or "hops"); exits 1 when it did not pass.  A soak that did not
pass keeps its work directory under results/failed/ (every QEMU's log
and exit status, the timeline of their QMP events, each destination's
trace: evidence.py), and its last line ends with "files: DIR".
"""

import argparse
import json
import os
import sys
import tempfile
import time

from . import evidence
from .migrate import (MigrationFailed, Scenario, Vm, guest_ram_range,
                      listening_port, pause_and_recover, smaps_by_range,
                      wait_both, wait_verify)
from .qmp import QMPError

RSS_BOUND_MIB = 32
PRECOPY_S = 1.0
SETTLE_S = 0.3


def counts(vm, ram_mb):
    """Open fds, threads, and resident MiB outside guest RAM, of @vm's
    QEMU.  Guest RAM is found by its host address (guest_ram_range()):
    while pages come in it can be several mappings."""
    pid = vm.proc.pid
    fds = len(os.listdir('/proc/%d/fd' % pid))
    threads = len(os.listdir('/proc/%d/task' % pid))
    span = guest_ram_range(vm, ram_mb)
    if not span:
        raise MigrationFailed('guest RAM of %s not found in "info ramblock"'
                              % vm.name)
    sums = smaps_by_range(pid, span[0], span[1], ('Rss:',))
    if not sums:
        raise MigrationFailed('/proc/%d/smaps of %s cannot be read'
                              % (pid, vm.name))
    own = sums[1]['Rss:']
    return {'fds': fds, 'threads': threads, 'rss_own_mib':
            round(own / 1024.0 / 1024.0, 1)}


class Soak:
    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix='pcram-soak-')
        self.evidence = evidence.Evidence(self.workdir)
        self.vms = []
        self.serial = 0
        self.records = []
        self.bad = 0

    def scenario(self):
        """Each QEMU that receives traces this module's events into the
        work directory, for a soak that fails."""
        return Scenario(qemu=self.args.qemu, guest=self.args.guest,
                        ram_mb=self.args.ram_mb, vcpus=2, pattern='random',
                        extra_args=evidence.QEMU_ARGS, trace=evidence.TRACE)

    def new_vm(self, incoming):
        self.serial += 1
        vm = Vm(self.scenario(), 'qemu%d' % self.serial, self.workdir,
                incoming=incoming)
        self.vms.append(vm)
        self.evidence.watch(vm)
        self.evidence.step('started %s (pid %d)' % (vm.name, vm.proc.pid))
        return vm

    def retire(self, vm):
        """Quit a QEMU that sent the guest on; its QMP events stay."""
        self.evidence.before_stop([vm])
        self.evidence.step('quit', vm.name)
        vm.stop()

    def close(self, passed, verdict):
        """Stop every QEMU left; remove the work directory if the soak
        @passed, else keep it (evidence.py) and return where."""
        self.evidence.before_stop()
        for vm in self.vms:
            if vm.proc.poll() is None:
                self.evidence.step('SIGKILL: the soak ends', vm.name)
            vm.kill()
        label = 'soak-%s' % ('recoveries-%d' % self.args.recoveries
                             if self.args.recoveries else
                             'hops-%d' % self.args.hops)
        return self.evidence.done(passed, label, verdict)

    # --- one migration --------------------------------------------------

    @staticmethod
    def set_caps(vm, preempt):
        # Explicit both ways: a QEMU that received with preempt on keeps
        # the capability for the hop it sends.
        caps = {'postcopy-ram': True, 'events': True,
                'postcopy-preempt': preempt}
        vm.qmp.cmd('migrate-set-capabilities', capabilities=[
            {'capability': c, 'state': on} for c, on in caps.items()])

    def start(self, src, dst, preempt, postcopy_bps):
        """Precopy for a moment, then postcopy at @postcopy_bps (0: as
        fast as it goes); returns once both sides run postcopy."""
        self.set_caps(src, preempt)
        self.set_caps(dst, preempt)
        src.qmp.cmd('migrate-set-parameters', **{
            'max-bandwidth': 64 * 1000 * 1000,
            'max-postcopy-bandwidth': postcopy_bps})
        dst.qmp.cmd('migrate-incoming', uri='tcp:127.0.0.1:0')
        self.evidence.step('migrate to %s%s' % (
            dst.name, ', postcopy-preempt' if preempt else ''), src.name)
        src.qmp.cmd('migrate', uri='tcp:127.0.0.1:%d' % listening_port(dst))
        time.sleep(PRECOPY_S)
        self.evidence.step('migrate-start-postcopy', src.name)
        src.qmp.cmd('migrate-start-postcopy')
        wait_both(src, dst, 'postcopy-active', 60)

    def recover(self, src, dst, pause_side):
        self.evidence.step('migrate-pause, then a recovery', pause_side.name)
        pause_and_recover(self.scenario(), src, dst, pause_side)

    def finish(self, src, dst):
        """Let postcopy run free to its end; have the guest check all of
        its memory on @dst."""
        self.evidence.step('postcopy to its end, unthrottled', src.name)
        src.qmp.cmd('migrate-set-parameters',
                    **{'max-postcopy-bandwidth': 0})
        wait_both(src, dst, 'completed', 600)
        start = len(dst.console.snapshot())
        dst.console.send('v')
        answers = wait_verify(dst.console, 2, start,
                              60 + self.args.ram_mb / 32)
        self.bad += sum(int(a['bad']) for a in answers.values())
        self.bad += sum(1 for _, t in dst.console.snapshot()
                        if t.startswith('BAD'))

    # --- the two soaks ---------------------------------------------------

    def record(self, what, index, leg, **vms):
        rec = {'what': what, 'index': index, 'leg': leg}
        for role, vm in vms.items():
            rec[role] = counts(vm, self.args.ram_mb)
        self.records.append(rec)
        if self.args.verbose:
            print(json.dumps(rec), flush=True)

    def recoveries(self, n):
        src = self.new_vm(False)
        if not src.console.wait_for(lambda t: t.startswith('READY'), 120):
            raise MigrationFailed('the guest did not start')
        for leg, (preempt, rounds) in enumerate(((False, n - n // 2),
                                                 (True, n // 2))):
            dst = self.new_vm(True)
            self.start(src, dst, preempt, self.args.postcopy_bps)
            for i in range(rounds):
                self.recover(src, dst, src if i % 2 else dst)
                time.sleep(SETTLE_S)
                self.record('recovery', len(self.records) + 1, leg,
                            source=src, destination=dst)
            self.finish(src, dst)
            self.retire(src)
            src = dst

    def hops(self, n):
        src = self.new_vm(False)
        if not src.console.wait_for(lambda t: t.startswith('READY'), 120):
            raise MigrationFailed('the guest did not start')
        for hop in range(1, n + 1):
            dst = self.new_vm(True)
            self.start(src, dst, hop % 2 == 0, 0 if hop % 3 != 1 else
                       self.args.postcopy_bps)
            if hop % 3 == 1:
                self.recover(src, dst, dst)
            self.finish(src, dst)
            time.sleep(SETTLE_S)
            self.record('hop', hop, None, source=src, destination=dst)
            self.retire(src)
            src = dst

    # --- the verdict -----------------------------------------------------

    def growth(self):
        """The largest growth of fds, threads and own RSS: from the first
        recovery to the last per QEMU (recoveries), or across hops per
        role (hops)."""
        fd = th = rss = 0
        series = {}
        for rec in self.records:
            for role in ('source', 'destination'):
                # The first hop's source never received a migration: the
                # others did, and hold what that leaves (one fd more).
                if rec['what'] == 'hop' and role == 'source' and \
                        rec['index'] == 1:
                    continue
                series.setdefault((role, rec['leg']), []).append(rec[role])
        for values in series.values():
            first, last = values[0], values[-1]
            fd = max(fd, last['fds'] - first['fds'])
            th = max(th, last['threads'] - first['threads'])
            rss = max(rss, last['rss_own_mib'] - first['rss_own_mib'])
        return fd, th, rss


def parse_args(argv):
    p = argparse.ArgumentParser(prog='soak', description=__doc__.split(
        '\n')[0])
    p.add_argument('--qemu', required=True)
    p.add_argument('--guest', required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--recoveries', type=int)
    g.add_argument('--hops', type=int)
    p.add_argument('--ram-mb', type=int, default=512)
    p.add_argument('--postcopy-bps', type=int, default=2 * 1000 * 1000,
                   help='max-postcopy-bandwidth while a migration is kept '
                   'long')
    p.add_argument('--module', default='ours')
    p.add_argument('--out', help='write soak.json here')
    p.add_argument('--verbose', action='store_true',
                   help='print each record as it is taken')
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    soak = Soak(args)
    what = 'recoveries' if args.recoveries else 'hops'
    n = args.recoveries or args.hops
    error = None
    passed = False
    verdict = 'soak: stopped by an error of the harness'
    try:
        try:
            if args.recoveries:
                soak.recoveries(args.recoveries)
            else:
                soak.hops(args.hops)
        except (MigrationFailed, QMPError, OSError, ConnectionError) as e:
            error = str(e)
        fd, th, rss = soak.growth() if soak.records else (0, 0, 0)
        clean = not error and not soak.bad
        passed = clean and fd <= 0 and th <= 0 and rss <= RSS_BOUND_MIB
        state = ('clean' if clean else 'failed' if error else
                 '%d bad pages' % soak.bad)
        verdict = ('soak: %d %s, %s, fd growth %d, thread growth %d, rss '
                   'growth %.0f MiB' % (n, what, state, fd, th, rss))
    finally:
        kept = soak.close(passed, verdict + ('\n' + error if error else ''))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, 'soak.json'), 'w') as f:
            json.dump({'what': what, 'n': n, 'module': args.module,
                       'accel': soak.scenario().accel_name(),
                       'error': error, 'bad_pages': soak.bad,
                       'records': soak.records, 'files': kept}, f, indent=1)
    if error:
        print('soak: failed after %d records: %s' % (len(soak.records),
                                                     error))
    print(verdict + ('' if passed else ' (not passed; %s)' %
                     evidence.mention(kept)))
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
