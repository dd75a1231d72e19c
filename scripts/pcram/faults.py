"""Fault injection: migrate the test guest and break the migration.

    python3 -m pcram.faults --qemu QEMU --guest pcguest.bin [options]

Each case is a fault, a phase and a channel setup.  The source and the
destination QEMU run in two network namespaces joined by a veth pair
(192.0.2.1 and 192.0.2.2), so that the link itself can be cut.  The
guest (256 MiB, 2 vCPUs, random access, half writes) checks every page it
touches; after the migration it checks all of its memory.  Postcopy is
throttled (32 MB/s) so that it is still running when a late fault comes.

Faults:
  pause-src, pause-dst  migrate-pause on that side
  link-down             the veth taken down for 3 s, then up again
  tcp-reset             the source's migration sockets killed (ss -K: RST)
  stop-src              the source QEMU stopped (SIGSTOP) for 10 s
  kill-src, kill-dst    that QEMU killed (SIGKILL)
  place-leftovers       the placer holds its pages to the stream's tail and
                        fails them there, and so does the load thread
  place-preempt         the first placement on the preempt thread fails
                        (with postcopy-preempt only)
  preempt-before-run    the same, where that page is one the destination's
                        device-state load waits for, before the guest runs
                        (the guest gets a virtio-blk disk, whose load reads
                        its rings from guest RAM)
  install-before-run    every placement fails (main channel only), the
                        guest with a virtio-blk disk: the load fails on
                        the stream's first page, mostly before the
                        device-state load asks for one
  place-zero            the guest reads RAM a virtio-mem device holds
                        unplugged (discarded: never sent), and the first
                        zero page placed for it fails
The faults from place-leftovers on are fault points of this module's
destination (QEMU_POSTCOPY_INJECT), armed from its start: they run in the
phase "armed" alone, and upstream's module, which has no fault points,
completes them untouched.

Phases: precopy (before the switch), switch (right after
migrate-start-postcopy, while the destination still loads device state),
early and late postcopy, and recovery (a second fault while the first
one's recovery handshake runs).

After the fault the harness does what an operator would: brings the link
up or continues the source, recovers a paused postcopy (migrate-recover on
the destination, migrate resume=true on the source, up to 4 times), or,
when the fault came before the switch and the migration failed, starts a
new destination and migrates again.  A case survives when it ends as
expected: the guest runs on one side with all of its memory intact, or,
where the fault itself destroyed the only running copy of the guest, that
is what the table says (and the other side holds, never running on a
page it lacks).  "pages lost" counts pages the guest found wrong.

Each case runs in a work directory of its own, removed when it survives;
a case that fails keeps it under results/failed/, with both QEMUs' logs
and exit statuses, the timeline of their QMP events and of what the
harness saw and did, and the destination's trace (evidence.py), and its
FAIL line ends with "files: DIR".
"""

import argparse
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from . import evidence
from .migrate import (MigrationFailed, Scenario, Vm, migrate_pause,
                      poll_until, virtio_mem_address, virtio_mem_args)
from .guest import parse_fields
from .netlink import create_veth_namespaces, run
from .qmp import QMPError

SRC_NS, DST_NS = 'pcram-fsrc', 'pcram-fdst'
SRC_DEV, DST_DEV = 'pcram-fs', 'pcram-fd'
SRC_ADDR, DST_ADDR = '192.0.2.5', '192.0.2.6'

FAULTS = ('pause-src', 'pause-dst', 'link-down', 'tcp-reset', 'stop-src',
          'kill-src', 'kill-dst')
PHASES = ('precopy', 'switch', 'early', 'late', 'recovery')
GUEST_MB = 256
# Placements that fail on purpose: the destination's fault points
# (QEMU_POSTCOPY_INJECT, migration/postcopy-inject.h), armed from its
# start, fire where their placement happens; each case runs once per
# channel setup, in the phase "armed".  The placer takes every page
# (placer=on), so that pages are in its ring when they are wanted.
# Each: (the fault points, the channel setup it needs (None: either),
# what must follow: 'recovers', a pause that recovers and completes;
# 'ends', the destination ending with the reason, where no pause can
# follow; or 'ends-before-run', the same before the guest ran there).
PLACEMENT_FAULTS = {
    # The placer holds its pages until the stream's tail, fails there,
    # and so does the load thread's placement of them.
    'place-leftovers': ('placer-hold,placer-fail,place-leftovers', None,
                        'recovers'),
    # The first page placed on the preempt thread: preempt channel only.
    'place-preempt': ('place-preempt=1', True, 'recovers'),
    # The first page placed on the preempt thread is held until the main
    # stream has ended, then fails: the source sends nothing more, so the
    # page is lost and no recovery can bring it.
    'preempt-at-end': ('preempt-at-end=1', True, 'ends'),
    # The first page placed on the preempt thread is one that the
    # destination's main thread waits for while it loads the device state,
    # before RUN: a virtio disk's load reads its rings from guest RAM, and
    # right after the switch the destination lacks them (precopy, throttled,
    # has not reached them).  The load fails before the guest ran: the
    # destination must end, saying why, and the source keep the guest.
    'preempt-before-run': ('place-preempt=1', True, 'ends-before-run'),
    # Every page placement fails, on the main channel: the first, a page
    # of the stream, fails the load, most often before the device-state
    # load has asked for a page; its request comes after the failure, and
    # no page can answer it.  The destination must end, saying why.
    'install-before-run': ('install-fail=1:1000000000', False,
                           'ends-before-run'),
    # Once postcopy runs, the guest reads a word of RAM that a virtio-mem
    # device holds unplugged: the source never sends it, the destination
    # places a zero page, and the first such placement fails.  The guest
    # must read zero after the recovery.
    'place-zero': ('place-zero=1', None, 'recovers'),
}
# The faults whose guest needs a disk: a virtio-blk on QEMU's null block
# driver (reads give zeroes; the test guest sends none until told to).
DISK_FAULTS = ('preempt-before-run', 'install-before-run')
DISK_ARGS = ['-blockdev',
             'driver=null-co,node-name=disk0,size=%d' % (64 << 20),
             '-device', 'virtio-blk-pci,drive=disk0']
# The faults whose guest has a virtio-mem device, all of it unplugged (a
# later -m merges with the Scenario's), the guest's RAM before it as a
# memory backend of its own (migrate.virtio_mem_args() says why).
VIRTIO_MEM_FAULTS = ('place-zero',)
# Postcopy for them: the guest, faulting at every access, takes its
# commands only every few seconds, and the read must come before the end.
SLOW_POSTCOPY_BANDWIDTH = 8 * 1000 * 1000
VIRTIO_MEM_ARGS = (['-m', '%dM,maxmem=%dM' % (GUEST_MB, GUEST_MB + 128),
                    '-object', 'memory-backend-ram,id=ram0,size=%dM' %
                    GUEST_MB, '-machine', 'memory-backend=ram0'] +
                   virtio_mem_args('ram', 128))
# What the destination says when requested pages are lost that way (the
# end of postcopy, not the preempt thread's own report of its failure).
PREEMPT_LOST_MESSAGE = 'the preempt channel failed after the main stream ended'
# QEMU 10.2's channel.c, when a new connection closes before its first 4
# bytes: it marks the migration failed and, with exit-on-error, exits.
QEMU_PEEK_MESSAGE = 'Failed to peek at channel'
# What the destination says when its device-state load waited for a page
# that can no longer come (the module's message; QEMU's own says less),
# and which thread ended it (its trace: postcopy_end_before_run).
BEFORE_RUN_MESSAGE = 'before the guest ran'
ENDED_BY = re.compile(r'postcopy_end_before_run .*; ended by (.*?), ')
# How long a destination that loses pages may take to end.
END_TIMEOUT_S = 120
PLACEMENT_PHASE = 'armed'
# The test command's subset: one case per way of failing.
QUICK = [
    ('pause-dst', 'early', False, False),
    ('link-down', 'late', True, False),
    ('tcp-reset', 'early', False, True),
    ('stop-src', 'early', True, False),
    ('kill-src', 'early', False, False),
    ('kill-dst', 'precopy', False, False),
    ('pause-src', 'recovery', True, False),
    ('place-leftovers', PLACEMENT_PHASE, False, False),
    ('place-preempt', PLACEMENT_PHASE, True, False),
    ('preempt-at-end', PLACEMENT_PHASE, True, False),
    ('preempt-before-run', PLACEMENT_PHASE, True, False),
    ('install-before-run', PLACEMENT_PHASE, False, False),
    ('place-zero', PLACEMENT_PHASE, True, False),
]

BANDWIDTH = 32 * 1000 * 1000
LINK_DOWN_S = 3
STOP_S = 10
MAX_RECOVERIES = 4


class Namespaces:
    """Two namespaces joined by a veth pair; a context manager."""

    def __enter__(self):
        self.remove()
        create_veth_namespaces((SRC_NS, SRC_DEV, SRC_ADDR),
                               (DST_NS, DST_DEV, DST_ADDR))
        return self

    def __exit__(self, *exc):
        self.remove()

    @staticmethod
    def remove():
        for ns in (SRC_NS, DST_NS):
            run('ip', 'netns', 'del', ns, check=False)

    @staticmethod
    def link(up):
        run('ip', '-n', SRC_NS, 'link', 'set', SRC_DEV,
            'up' if up else 'down')

    @staticmethod
    def reset_connections():
        """Kill the source's TCP sockets to the destination: an RST."""
        run('ip', 'netns', 'exec', SRC_NS, 'ss', '-K', 'dst', DST_ADDR)


class CaseFailed(Exception):
    pass


class CaseArgs:
    """What a Case needs of the command line, for callers without one: the
    QEMU binary, the test guest this repository builds, no TLS."""

    def __init__(self, qemu):
        self.qemu = qemu
        self.guest = os.path.join(os.path.dirname(__file__), '..', '..',
                                  '_build', 'pcguest.bin')
        self.psk_dir = None


class Case:
    """One fault, phase and channel setup, run once."""

    def __init__(self, args, fault, phase, preempt, tls, workdir):
        self.args = args
        self.fault, self.phase = fault, phase
        self.preempt, self.tls = preempt, tls
        self.workdir = workdir
        self.port = 4600
        self.recoveries = 0
        self.notes = []
        self.src = self.dst = None
        # migrate-incoming's exit-on-error: None leaves QEMU's default.
        self.exit_on_error = None
        self.evidence = evidence.Evidence(workdir)

    @property
    def name(self):
        return '%s/%s/%s%s' % (self.fault, self.phase,
                               'preempt' if self.preempt else 'main',
                               '+tls' if self.tls else '')

    def scenario(self, incoming):
        """Both sides' QEMU options; with TLS, the PSK credentials of the
        side's end of the connection.  The destination traces this
        module's events into the work directory, for a failed case."""
        extra = list(evidence.QEMU_ARGS)
        if self.fault in DISK_FAULTS:
            extra += DISK_ARGS
        if self.fault in VIRTIO_MEM_FAULTS:
            extra += VIRTIO_MEM_ARGS
        if self.tls:
            extra += ['-object', 'tls-creds-psk,id=tls0,endpoint=%s,dir=%s'
                      % ('server' if incoming else 'client',
                         self.args.psk_dir)]
        env = {}
        if self.fault in PLACEMENT_FAULTS:
            env = {'QEMU_POSTCOPY_INJECT': PLACEMENT_FAULTS[self.fault][0],
                   'QEMU_POSTCOPY_TUNE': 'placer=on'}
        return Scenario(qemu=self.args.qemu, guest=self.args.guest,
                        ram_mb=GUEST_MB, vcpus=2, src_netns=SRC_NS,
                        dst_netns=DST_NS, extra_args=extra, dst_env=env,
                        trace=evidence.TRACE)

    # --- QEMU processes --------------------------------------------------

    def start_vm(self, name, incoming):
        scn = self.scenario(incoming)
        vm = self.evidence.watch(Vm(scn, name, self.workdir,
                                    incoming=incoming))
        self.evidence.step('started %s (pid %d)' % (name, vm.proc.pid))
        caps = ['postcopy-ram', 'events']
        if self.preempt:
            caps.append('postcopy-preempt')
        vm.qmp.cmd('migrate-set-capabilities', capabilities=[
            {'capability': c, 'state': True} for c in caps])
        if self.tls:
            vm.qmp.cmd('migrate-set-parameters', **{'tls-creds': 'tls0'})
        return vm

    def next_uri(self):
        self.port += 1
        return 'tcp:%s:%d' % (DST_ADDR, self.port)

    def listen(self, vm):
        uri = self.next_uri()
        args = {'uri': uri}
        if self.exit_on_error is not None:
            args['exit-on-error'] = self.exit_on_error
        vm.qmp.cmd('migrate-incoming', **args)
        self.evidence.step('migrate-incoming %s' % uri, vm.name)
        return uri

    def alive(self, vm):
        return vm is not None and vm.proc.poll() is None

    def status(self, vm):
        """@vm's migration status, 'dead' when it is gone or does not
        answer; the evidence keeps each change."""
        if vm is None:
            return 'dead'
        if not self.alive(vm):
            info = {'status': 'dead', 'error-desc': 'QEMU ' +
                    evidence.how_ended(vm.proc.poll())}
        else:
            try:
                info = vm.qmp.cmd('query-migrate')
            except (QMPError, OSError, ConnectionError) as e:
                info = {'status': 'dead', 'error-desc': str(e)}
        self.evidence.status(vm.name, info)
        return info.get('status', 'none')

    def remaining_fraction(self):
        ram = self.src.qmp.cmd('query-migrate').get('ram', {})
        total = ram.get('total') or 1
        return ram.get('remaining', total) / total

    # --- waiting ---------------------------------------------------------

    def wait_until(self, predicate, timeout, what, poll=0.05):
        def both_if_reached():
            both = self.status(self.src), self.status(self.dst)
            return both if predicate(*both) else None

        reached = poll_until(both_if_reached, timeout, poll)
        if reached:
            return reached
        raise CaseFailed('%s not reached in %d s (source %s, destination '
                         '%s)' % (what, timeout, self.status(self.src),
                                  self.status(self.dst)))

    # --- the phases ------------------------------------------------------

    def start_migration(self):
        self.dst = self.start_vm('destination', True)
        self.src = self.start_vm('source', False)
        if not self.src.console.wait_for(lambda t: t.startswith('READY'),
                                         120):
            raise CaseFailed('the guest did not boot')
        self.src.qmp.cmd('migrate-set-parameters', **{
            'max-bandwidth': BANDWIDTH,
            'max-postcopy-bandwidth': SLOW_POSTCOPY_BANDWIDTH
            if self.fault in VIRTIO_MEM_FAULTS else BANDWIDTH})
        uri = self.listen(self.dst)
        self.evidence.step('migrate %s' % uri, 'source')
        self.src.qmp.cmd('migrate', uri=uri)
        self.wait_until(lambda s, d: s == 'active', 30, 'precopy')

    def start_postcopy(self):
        self.evidence.step('migrate-start-postcopy', 'source')
        self.src.qmp.cmd('migrate-start-postcopy')

    def apply_fault(self):
        f = self.fault
        self.evidence.step('fault %s' % f)
        if f in ('pause-src', 'pause-dst'):
            vm = self.src if f == 'pause-src' else self.dst
            try:
                vm.qmp.cmd('migrate-pause')
            except QMPError as e:
                # Before the switch there is nothing to pause.
                self.notes.append('migrate-pause refused: %s' % e)
        elif f == 'link-down':
            Namespaces.link(False)
            time.sleep(LINK_DOWN_S)
            Namespaces.link(True)
            self.evidence.step('link up again')
        elif f == 'tcp-reset':
            Namespaces.reset_connections()
        elif f == 'stop-src':
            os.killpg(self.src.proc.pid, signal.SIGSTOP)
            time.sleep(STOP_S)
            os.killpg(self.src.proc.pid, signal.SIGCONT)
            self.evidence.step('source continued (SIGCONT)')
        elif f == 'kill-src':
            os.killpg(self.src.proc.pid, signal.SIGKILL)
            self.src.proc.wait()
        elif f == 'kill-dst':
            os.killpg(self.dst.proc.pid, signal.SIGKILL)
            self.dst.proc.wait()

    def recover(self):
        """Both sides are paused: reconnect them."""
        self.recoveries += 1
        if self.recoveries > MAX_RECOVERIES:
            raise CaseFailed('still paused after %d recoveries' %
                             MAX_RECOVERIES)
        uri = self.next_uri()
        self.evidence.step('recovery %d: migrate-recover %s, then migrate '
                           'resume=true' % (self.recoveries, uri))
        self.dst.qmp.cmd('migrate-recover', uri=uri)
        self.src.qmp.cmd('migrate', uri=uri, resume=True)

    def drive_to_end(self, timeout=240):
        """Recover as often as needed until both sides complete."""
        deadline = time.monotonic() + timeout
        paused_since = None
        while time.monotonic() < deadline:
            s, d = self.status(self.src), self.status(self.dst)
            if s == 'completed' and d == 'completed':
                return
            if 'failed' in (s, d) or 'dead' in (s, d):
                raise CaseFailed('source %s, destination %s' % (s, d))
            if s == 'postcopy-paused' and d == 'postcopy-paused':
                self.recover()
                paused_since = None
            elif 'postcopy-paused' in (s, d):
                # One side noticed first; the other follows.
                paused_since = paused_since or time.monotonic()
                if time.monotonic() - paused_since > 60:
                    raise CaseFailed('only one side paused for 60 s '
                                     '(source %s, destination %s)' % (s, d))
            time.sleep(0.1)
        raise CaseFailed('not complete in %d s' % timeout)

    def verify_guest(self, vm=None):
        """Have the guest on @vm (the destination) check all of its
        memory; the bad pages it found, on the way and now."""
        vm = vm or self.dst
        start = len(vm.console.snapshot())
        vm.console.send('v')
        bad = 0
        index = start
        for _ in range(2):
            found = vm.console.wait_for(
                lambda t: t.startswith('V '), 120, index)
            if not found:
                raise CaseFailed('the guest did not answer the memory check')
            index, _, text = found
            fields = dict(kv.split('=') for kv in text.split()[1:])
            bad += int(fields['bad'])
            index += 1
        return bad + self.bad_reports(vm)

    @staticmethod
    def bad_reports(vm):
        """Bad pages the guest met on its own, as it ran."""
        return sum(1 for _, text in vm.console.snapshot()
                   if text.startswith('BAD'))

    # --- one case --------------------------------------------------------

    def placement_fails(self):
        """A fault point armed from the start fails a placement: the
        migration must pause, recover and complete with nothing lost;
        or, where no pause can follow, the destination must end."""
        self.start_postcopy()
        if PLACEMENT_FAULTS[self.fault][2] == 'ends':
            return self.destination_ends()
        if PLACEMENT_FAULTS[self.fault][2] == 'ends-before-run':
            return self.destination_ends_before_run()
        read = None
        if self.fault in VIRTIO_MEM_FAULTS:
            read = self.read_unplugged_memory()
        self.drive_to_end()
        if not self.recoveries:
            raise CaseFailed('completed without a pause: the fault point '
                             'never fired')
        if read is not None:
            self.check_unplugged_read(read)
        return self.finish('completed')

    def read_unplugged_memory(self):
        """Once postcopy runs, have the guest read the first word of the
        virtio-mem device's region, all of it unplugged (the UART holds the
        command until the guest runs there); the console index from which
        its answer comes."""
        self.wait_until(lambda s, d: d == 'postcopy-active', 60, 'postcopy')
        addr = virtio_mem_address(self.dst)
        start = len(self.dst.console.snapshot())
        self.evidence.step('the guest reads unplugged RAM at 0x%x' % addr,
                           'destination')
        self.dst.console.send('r%x\n' % addr)
        return start

    def check_unplugged_read(self, start):
        found = self.dst.console.wait_for(lambda t: t.startswith('R '), 30,
                                          start)
        if not found:
            raise CaseFailed('the guest never read its unplugged RAM')
        fields = parse_fields(found[2])
        if int(fields['value'], 16):
            raise CaseFailed('unplugged RAM read %s, not zero' %
                             fields['value'])
        self.notes.append('the guest read zero from unplugged RAM')

    def destination_ends(self):
        """Requested pages are lost after the main stream ended: the
        destination must end, saying why, and not hang (or complete)."""
        ended = self.wait_for_destination_exit(PREEMPT_LOST_MESSAGE)
        return ('requested pages lost after the main stream ended: the '
                'destination %s, saying so; source %s' % (
                    ended, self.status(self.src)), 0, True)

    def wait_for_destination_exit(self, message, before_run=False):
        """The destination's exit (status 1, @message in its log), within
        END_TIMEOUT_S; how it ended."""
        deadline = time.monotonic() + END_TIMEOUT_S
        while self.alive(self.dst) and time.monotonic() < deadline:
            d = self.status(self.dst)
            if d == 'completed':
                raise CaseFailed('the destination completed: the fault '
                                 'point never fired')
            if before_run and d == 'postcopy-paused':
                raise CaseFailed('the destination paused: the fault point '
                                 'fired after the guest ran (its page was '
                                 'not one the device-state load waited for)')
            time.sleep(0.2)
        if self.alive(self.dst):
            raise CaseFailed('the destination neither ended nor completed '
                             'in %d s (%s)' % (END_TIMEOUT_S,
                                               self.status(self.dst)))
        ended = evidence.how_ended(self.dst.proc.poll())
        if self.dst.proc.poll() != 1:
            raise CaseFailed('the destination ended with %s, not exit '
                             'status 1' % ended)
        if message not in self.dst.log_text():
            raise CaseFailed('the destination %s without saying why (no '
                             '"%s" in its log)' % (ended, message))
        return ended

    def destination_ends_before_run(self):
        """A page the device-state load waits for is lost with the
        preempt channel, before the guest ran: the destination must end,
        saying why, the guest never having run there; the source keeps
        the guest: QEMU 10.2's runs it again, whole; 10.0's holds it
        stopped in postcopy-paused (it has switched)."""
        ended = self.wait_for_destination_exit(BEFORE_RUN_MESSAGE,
                                               before_run=True)
        ran = [t for _, t in self.dst.console.snapshot()]
        if ran:
            raise CaseFailed('the guest ran on the destination, which '
                             'lacked pages (its console: %r)' % ran[:3])
        # 10.2's source leaves postcopy-device once it hears of the failure.
        s = self.wait_until(lambda s, d: s != 'postcopy-device', 30,
                            'the source leaving postcopy-device')[0]
        if s == 'dead':
            raise CaseFailed('the source, which holds the guest, is gone')
        what = ('a page the device-state load waited for was lost before '
                'the guest ran: the destination %s, saying so%s; the guest '
                'never ran there; ' % (ended, self.ended_by()))
        # QEMU 10.2's source, still in postcopy-device, gives the switch up.
        if self.source_still_runs_guest():
            bad = self.verify_guest(self.src)
            return what + 'the source runs the guest again', bad, bad == 0
        return what + 'source %s, its guest stopped' % s, 0, True

    def ended_by(self):
        """', ended by THREAD' as the destination's trace says, or ''."""
        try:
            with open(os.path.join(self.workdir, 'destination.trace'),
                      errors='replace') as f:
                found = ENDED_BY.search(f.read())
        except OSError:
            return ''
        return ', ended by %s' % found.group(1) if found else ''

    def run(self):
        self.start_migration()
        if self.fault in PLACEMENT_FAULTS:
            return self.placement_fails()
        if self.phase == 'precopy':
            time.sleep(0.5)
            return self.fault_before_switch()
        self.start_postcopy()
        if self.phase == 'switch':
            if self.fault.startswith('pause-'):
                # migrate-pause needs the source in postcopy-active, which
                # it enters a moment after the command, before the
                # destination runs the guest.
                self.wait_until(lambda s, d: s == 'postcopy-active', 10,
                                'the switch', poll=0.002)
            self.apply_fault()
            return self.fault_after_switch(at_switch=True)
        self.wait_until(lambda s, d: d == 'postcopy-active' and
                        s == 'postcopy-active', 60, 'postcopy')
        if self.phase == 'early':
            time.sleep(0.5)
        elif self.phase == 'late':
            while self.remaining_fraction() > 0.25:
                time.sleep(0.05)
        elif self.phase == 'recovery':
            time.sleep(0.5)
            self.evidence.step('migrate-pause (the first pause)',
                               'destination')
            said = migrate_pause(self.dst)
            self.wait_until(lambda s, d: s == d == 'postcopy-paused', 60,
                            'the first pause')
            if said:
                self.notes.append('migrate-pause said "%s", and the '
                                  'destination paused (QEMU\'s race)' %
                                  said)
            self.recover()
            # The handshake has begun once migrate resume is back, and can
            # be over within milliseconds: fault at once.  migrate-pause
            # needs that side past its recover-setup state, though.
            if self.fault.startswith('pause-'):
                side = 0 if self.fault == 'pause-src' else 1
                self.wait_until(
                    lambda *sd: sd[side] != 'postcopy-recover-setup' and
                    (side == 0 or sd[side] != 'postcopy-paused'), 5,
                    'the handshake', poll=0.001)
            self.notes.append('fault during the recovery handshake '
                              '(source %s)' % self.status(self.src))
        self.apply_fault()
        return self.fault_after_switch()

    def fault_before_switch(self):
        self.apply_fault()
        # Let both sides notice (or not) what happened.
        time.sleep(2)
        if self.fault == 'kill-src':
            # The guest's only copy is gone with its QEMU.
            d = self.wait_until(lambda s, d: d in ('failed', 'dead'), 60,
                                'the destination giving up')[1]
            return ('lost by design: the guest died with its source; '
                    'destination %s, never ran' % d, 0, True)
        s = self.status(self.src)
        if s != 'active' or not self.alive(self.dst):
            self.new_destination(s)
        self.start_postcopy()
        self.drive_to_end()
        return self.finish('completed')

    def source_still_runs_guest(self):
        """The switch never happened: the source failed the migration and
        runs the guest again."""
        if self.status(self.src) != 'failed':
            return False
        return self.src.qmp.cmd('query-status').get('running', False)

    def new_destination(self, why):
        """The source keeps the guest: migrate it to a new destination."""
        self.notes.append('source kept running (%s); a new destination '
                          'took over' % why)
        self.evidence.before_stop([self.dst])
        if self.alive(self.dst):
            self.evidence.step('SIGKILL: a new destination takes over',
                               self.dst.name)
            os.killpg(self.dst.proc.pid, signal.SIGKILL)
            self.dst.stop()
        self.dst = self.start_vm('destination2', True)
        uri = self.listen(self.dst)
        self.wait_until(lambda s, d: s in ('failed', 'cancelled'), 60,
                        'the first migration ending')
        self.evidence.step('migrate %s' % uri, 'source')
        self.src.qmp.cmd('migrate', uri=uri)
        self.wait_until(lambda s, d: s == 'active', 30, 'precopy again')

    def stuck_in_device(self):
        """The destination died while the source sent device state.  QEMU
        10.0.2's postcopy_start() then fails from state "device" but its
        error path only moves "postcopy-active" to "failed": the source
        stays in "device", its migration thread gone, its guest stopped,
        and refuses cont.  Not the module's code; the comparison with
        upstream's module is in docs/faults.md."""
        time.sleep(5)
        if self.status(self.src) != 'device':
            raise CaseFailed('source left "device" for %s' %
                             self.status(self.src))
        try:
            self.src.qmp.cmd('cont')
            refused = 'cont accepted'
        except QMPError as e:
            refused = 'cont refused: %s' % str(e).split(': ', 1)[-1]
        return ('lost by QEMU 10.0.2: source stuck in "device", guest '
                'stopped, %s (postcopy_start() error path)' % refused,
                0, True)

    def ended_before_run(self):
        """The cut came while the destination loaded device state, before
        it ran the guest: QEMU 10.0's listen thread fails and exits."""
        deadline = time.monotonic() + 10
        while self.alive(self.dst) and time.monotonic() < deadline:
            time.sleep(0.1)
        return ('destination %s: the cut came before it ran the guest '
                '(QEMU 10.0 by design); source %s' % (
                    'exited' if not self.alive(self.dst) else 'failed',
                    self.status(self.src)), 0, True)

    def fault_after_switch(self, at_switch=False):
        if self.fault == 'kill-dst':
            s = self.wait_until(lambda s, d: s in ('postcopy-paused',
                                                   'failed', 'device',
                                                   'completed'), 60,
                                'the source noticing')[0]
            if s == 'completed':
                return ('lost by design: the migration had completed, and '
                        'the destination ran the guest', 0, True)
            if s == 'device':
                return self.stuck_in_device()
            if self.source_still_runs_guest():
                bad = self.verify_guest(self.src)
                return ('the switch failed: the source runs the guest '
                        'again', bad, bad == 0)
            return ('lost by design: the guest ran only on the destination; '
                    'source %s, its guest stopped' % s, 0, True)
        if self.fault == 'kill-src':
            d = self.wait_until(lambda s, d: d in ('postcopy-paused',
                                                   'dead', 'failed',
                                                   'completed'), 60,
                                'the destination noticing')[1]
            if d == 'completed':
                return self.finish('the migration had completed; the '
                                   'destination runs the guest')
            time.sleep(2)
            bad = self.bad_reports(self.dst) if self.alive(self.dst) else 0
            if d == 'postcopy-paused':
                return ('source gone: destination paused, no vCPU ran on a '
                        'missing page', bad, bad == 0)
            if self.ended_by_qemu_peek():
                return ('source gone: destination ended by QEMU 10.2\'s '
                        'channel.c ("%s": the source died between its '
                        'connect and its first bytes; either module)' %
                        QEMU_PEEK_MESSAGE, 0, True)
            return ('source gone: destination %s' % d, bad,
                    at_switch and bad == 0)
        if at_switch:
            time.sleep(1)
            # e.g. the preempt channel could not connect: no switch at all.
            if self.source_still_runs_guest():
                self.new_destination('the switch failed')
                self.start_postcopy()
            elif self.status(self.dst) in ('dead', 'failed'):
                return self.ended_before_run()
        try:
            self.drive_to_end()
        except CaseFailed:
            if at_switch and self.status(self.dst) in ('dead', 'failed'):
                return self.ended_before_run()
            raise
        return self.finish('completed')

    def ended_by_qemu_peek(self):
        """The destination exited (status 1) right after QEMU's own
        channel.c failed to peek at a recovery connection that the dying
        source opened and never wrote to: QEMU's exit, not the module's
        (docs/faults.md).  With the source gone, the guest is lost
        either way."""
        if self.alive(self.dst) or self.dst.proc.poll() != 1:
            return False
        errors = [line for line in self.dst.log_tail(40).splitlines()
                  if 'qemu-system' in line]
        return bool(errors) and errors[-1].endswith(QEMU_PEEK_MESSAGE)

    def finish(self, outcome):
        bad = self.verify_guest()
        text = outcome
        if self.recoveries:
            text += ' after %d recover%s' % (
                self.recoveries, 'y' if self.recoveries == 1 else 'ies')
        if self.notes:
            text += '; ' + '; '.join(self.notes)
        return text, bad, bad == 0

    def close(self):
        for vm in (self.src, self.dst):
            if vm is None:
                continue
            if self.alive(vm):
                os.killpg(vm.proc.pid, signal.SIGCONT)
                # A destination whose vCPUs wait for pages that will never
                # come cannot stop them to quit (QEMU 10.0): do not wait.
                if self.status(vm) == 'postcopy-paused':
                    self.evidence.step('SIGKILL: paused, it cannot quit',
                                       vm.name)
                    os.killpg(vm.proc.pid, signal.SIGKILL)
                else:
                    self.evidence.step('quit', vm.name)
            vm.stop()
        self.src = self.dst = None


def write_psk(directory):
    """A pre-shared key for TLS-PSK on both sides (no certificates)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'keys.psk'), 'w') as f:
        f.write('qemu:%s\n' % os.urandom(32).hex())


def run_case(args, fault, phase, preempt, tls):
    """One case, in a work directory of its own: removed when the case
    survives, kept with what it takes to diagnose it when it does not
    (evidence.py); the result's 'files' names it then."""
    case = Case(args, fault, phase, preempt, tls,
                tempfile.mkdtemp(prefix='pcram-fault-'))
    t0 = time.monotonic()
    outcome, lost, survived = 'FAILED: the harness stopped', 0, False
    try:
        outcome, lost, survived = case.run()
        if args.fail_on_purpose:
            raise CaseFailed('on purpose (--fail-on-purpose); the case: %s'
                             % outcome)
    except (CaseFailed, MigrationFailed, QMPError, OSError,
            ConnectionError) as e:
        outcome, survived = 'FAILED: %s' % e, False
        # No blank line in it: scripts/test.sh shows a FAIL line's
        # following lines up to one.
        for vm in (case.src, case.dst):
            if vm is not None:
                outcome += '\n  %s log (%s):\n%s' % (
                    vm.name, evidence.how_ended(vm.proc.poll()),
                    vm.log_tail(8).rstrip('\n') or '(empty)')
    finally:
        case.evidence.step('the case ends: %s' % outcome.split('\n')[0])
        case.evidence.before_stop()
        case.close()
        kept = case.evidence.done(survived, 'faults-' + case.name, outcome)
    return {'case': case.name, 'fault': fault, 'phase': phase,
            'channel': ('preempt' if preempt else 'main') +
                       ('+tls' if tls else ''),
            'outcome': outcome, 'pages_lost': lost, 'survived': survived,
            'seconds': round(time.monotonic() - t0, 1), 'files': kept}


def cases(args):
    if args.quick:
        return QUICK
    chosen = [c for c in itertools.product(args.faults, args.phases,
                                           args.preempt, [False])
              if c[0] not in PLACEMENT_FAULTS]
    placement = [(f, PLACEMENT_PHASE, preempt, False)
                 for f in args.faults if f in PLACEMENT_FAULTS
                 for preempt in args.preempt
                 if PLACEMENT_FAULTS[f][1] in (None, preempt)]
    # At least one case over TLS, in the full matrix.
    tls = [('pause-dst', 'early', True, True), ('tcp-reset', 'late', False,
                                                 True)]
    return chosen + placement + [c for c in tls if c[0] in args.faults and
                                 c[1] in args.phases]


def report(r, i, n):
    """A case's PASS or FAIL line; a failed case's names its kept files,
    and its QEMUs' last log lines follow it."""
    first, *rest = r['outcome'].split('\n')
    line = '%s: faults %s [%d/%d] (%s; %d pages lost; %.0f s%s)' % (
        'PASS' if r['survived'] else 'FAIL', r['case'], i, n, first,
        r['pages_lost'], r['seconds'],
        '; ' + evidence.mention(r['files']) if r['files'] else '')
    return '\n'.join([line] + rest)


def table(results):
    lines = ['| fault | phase | channel | outcome | pages lost | s |',
             '| --- | --- | --- | --- | --- | --- |']
    for r in results:
        lines.append('| %s | %s | %s | %s%s | %d | %.0f |' % (
            r['fault'], r['phase'], r['channel'],
            '' if r['survived'] else '**not survived** ',
            r['outcome'].split('\n')[0], r['pages_lost'], r['seconds']))
    return '\n'.join(lines)


def outcome_counts(results):
    """--repeat's summary: how often each case ended each way."""
    counts = {}
    for r in results:
        key = (r['case'], r['survived'], r['outcome'].split('\n')[0])
        counts[key] = counts.get(key, 0) + 1
    lines = ['| case | outcome | runs |', '| --- | --- | --- |']
    for (case, survived, outcome), n in sorted(counts.items()):
        lines.append('| %s | %s%s | %d |' % (
            case, '' if survived else '**not survived** ', outcome, n))
    return '\n'.join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog='faults', description=__doc__.split(
        '\n')[0])
    p.add_argument('--qemu', required=True)
    p.add_argument('--guest', required=True)
    p.add_argument('--quick', action='store_true',
                   help='the test command\'s subset: %d cases' % len(QUICK))
    p.add_argument('--faults', default=','.join(FAULTS +
                                                tuple(PLACEMENT_FAULTS)))
    p.add_argument('--phases', default=','.join(PHASES))
    p.add_argument('--preempt', default='off,on')
    p.add_argument('--module', default='ours',
                   help='label of the module built into --qemu')
    p.add_argument('--out', default=None, help='write table and JSON here')
    p.add_argument('--repeat', type=int, default=1, metavar='N',
                   help='run the chosen cases N times over, stop at the '
                   'first failure, and count the outcomes (a loop that '
                   'looks for a rare race)')
    p.add_argument('--fail-on-purpose', action='store_true',
                   help='debug: report each case as failed once it has run, '
                   'so that it keeps its files (scripts/test.sh checks '
                   'that they are there)')
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error('--repeat wants 1 or more')
    args.faults = args.faults.split(',')
    args.phases = args.phases.split(',')
    for f in args.faults:
        if f not in FAULTS and f not in PLACEMENT_FAULTS:
            p.error('unknown fault %s (known: %s)' % (
                f, ', '.join(FAULTS + tuple(PLACEMENT_FAULTS))))
    for ph in args.phases:
        if ph not in PHASES:
            p.error('unknown phase %s (known: %s)' % (ph, ', '.join(PHASES)))
    args.preempt = [{'off': False, 'on': True}[v]
                    for v in args.preempt.split(',')]
    return args


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit('faults: run as root (network namespaces, userfaultfd)')
    args.psk_dir = tempfile.mkdtemp(prefix='pcram-psk-')
    write_psk(args.psk_dir)
    results = []
    todo = cases(args) * args.repeat
    try:
        with Namespaces():
            for i, (fault, phase, preempt, tls) in enumerate(todo, 1):
                r = run_case(args, fault, phase, preempt, tls)
                results.append(r)
                print(report(r, i, len(todo)), flush=True)
                if args.repeat > 1 and not (r['survived'] and
                                            r['pages_lost'] == 0):
                    break
    finally:
        subprocess.run(['rm', '-rf', args.psk_dir])
    survived = sum(r['survived'] for r in results)
    lost = sum(r['pages_lost'] for r in results)
    summary = 'faults: %d cases, %d survived, %d pages lost' % (
        len(results), survived, lost)
    accel = 'KVM' if os.access('/dev/kvm', os.R_OK | os.W_OK) else 'TCG'
    header = ('`%s` on %s, %s, QEMU %s with %s module, %s.' % (
        os.environ.get('PCRAM_FAULTS_COMMAND', 'faults'),
        time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        accel, os.environ.get('PCRAM_QEMU_VERSION', '10.0.2'),
        'this' if args.module == 'ours' else "upstream's",
        summary))
    print()
    print(header)
    print()
    print(table(results) if args.repeat == 1 else outcome_counts(results))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, 'faults.md'), 'w') as f:
            f.write(header + '\n\n' + table(results) + '\n')
        with open(os.path.join(args.out, 'faults.json'), 'w') as f:
            json.dump(results, f, indent=1)
    print(summary)
    return 0 if survived == len(results) and lost == 0 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
