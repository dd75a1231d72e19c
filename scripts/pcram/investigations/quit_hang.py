"""Evidence for a QEMU 10.0 hang that is not the postcopy module's.

    python3 -m pcram.investigations.quit_hang QEMU OUT.txt

Migrates the test guest between two namespaces, kills the source early in
postcopy, waits until the destination reports postcopy-paused, asks it to
quit over QMP, and after 10 s without an answer writes every thread's
stack (gdb) to OUT.txt, then kills it.  The vCPUs are parked by the kernel
in a userfault on a page that can no longer come; quit stops the VM
first, and pause_all_vcpus() waits for vCPUs that cannot stop.  Run it
with a QEMU built with either module (scripts/build.sh, --upstream).
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

from ..faults import Case, CaseArgs, Namespaces


def main(argv):
    qemu, out = argv
    with Namespaces():
        case = Case(CaseArgs(qemu), 'kill-src', 'early', False, False,
                    tempfile.mkdtemp(prefix='pcram-hang-'))
        case.start_migration()
        case.start_postcopy()
        case.wait_until(lambda s, d: d == 'postcopy-active', 60, 'postcopy')
        time.sleep(0.5)
        case.apply_fault()
        case.wait_until(lambda s, d: d == 'postcopy-paused', 60, 'pause')
        print('destination paused; query-status answers: %s' %
              case.dst.qmp.cmd('query-status'))
        case.dst.qmp.settimeout(10)
        t0 = time.monotonic()
        try:
            case.dst.qmp.cmd('quit')
            print('quit answered after %.1f s' % (time.monotonic() - t0))
        except OSError as e:
            print('quit unanswered after %.1f s (%s)' % (
                time.monotonic() - t0, e))
        time.sleep(2)
        pid = case.dst.proc.pid
        print('destination still running 2 s later: %s' %
              (case.dst.proc.poll() is None))
        stacks = subprocess.run(['gdb', '-p', str(pid), '-batch', '-ex',
                                 'thread apply all bt 12'],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True).stdout
        with open(out, 'w') as f:
            f.write(stacks)
        os.killpg(pid, signal.SIGKILL)
        case.dst.proc.wait()
        print('stacks in %s' % out)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
