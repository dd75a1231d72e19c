"""Two libvirt "hosts" on this machine, for scripts/libvirt-test.sh.

Each host is a libvirtd in a network namespace of its own (one end of a
veth pair, an address of its own), a mount namespace of its own (private
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and
/var/cache/libvirt, bind-mounted from a directory of the test's) and a UTS
namespace with its own host name; libvirtd.conf gives each a host UUID of
its own, which is what libvirt checks to refuse a migration to the same
host.  QEMU runs as root with no security driver, no cgroups and no
per-domain namespaces: what is under test is the migration, not libvirt's
confinement.

The test talks to each daemon over its UNIX socket, reached through the
host's directory (a management network of its own, so to speak); the
migration itself crosses the veth, so cutting the link cuts the migration
and nothing else.
"""

import os
import shlex
import signal
import subprocess
import time
import uuid

from .netlink import create_veth_namespaces, run

# Directories each host has its own copy of, by where libvirt looks.
PRIVATE_DIRS = {
    'etc': '/etc/libvirt',
    'run': '/run/libvirt',
    'lib': '/var/lib/libvirt',
    'log': '/var/log/libvirt',
    'cache': '/var/cache/libvirt',
}

LIBVIRTD_CONF = '''\
# Written by scripts/libvirt-test.sh for one test host.
host_uuid = "%(uuid)s"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
'''

QEMU_CONF = '''\
# Written by scripts/libvirt-test.sh for one test host.
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_port_min = 49152
migration_port_max = 49215
'''


class HostError(Exception):
    pass


class Host:
    """One libvirtd, its namespaces and its directory."""

    def __init__(self, name, netns, dev, addr, workdir):
        self.name = name
        self.netns = netns
        self.dev = dev
        self.addr = addr
        self.dir = os.path.join(workdir, name)
        self.proc = None
        self.log = None

    def path(self, private, *rest):
        """@private's directory (a PRIVATE_DIRS key) as the test sees it."""
        return os.path.join(self.dir, private, *rest)

    @property
    def uri(self):
        return 'qemu+unix:///system?socket=%s' % self.path('run',
                                                           'libvirt-sock')

    def write_config(self, peers):
        for key in PRIVATE_DIRS:
            os.makedirs(self.path(key), exist_ok=True)
        # Each host knows both names, as hosts on one network would.
        with open(self.path('hosts'), 'w') as f:
            f.write('127.0.0.1 localhost\n')
            for peer in peers:
                f.write('%s %s\n' % (peer.addr, peer.name))
        with open(self.path('etc', 'libvirtd.conf'), 'w') as f:
            f.write(LIBVIRTD_CONF % {'uuid': uuid.uuid4()})
        with open(self.path('etc', 'qemu.conf'), 'w') as f:
            f.write(QEMU_CONF)
        # libvirt reads these if present; empty files mean defaults.
        for name in ('libvirt.conf', 'libvirt-admin.conf'):
            open(self.path('etc', name), 'w').close()

    def start(self, peers, timeout=60):
        self.write_config(peers)
        binds = [(self.path(key), target)
                 for key, target in PRIVATE_DIRS.items()]
        binds.append((self.path('hosts'), '/etc/hosts'))
        script = 'set -e; hostname %s; %s exec libvirtd --pid-file %s' % (
            shlex.quote(self.name),
            ' '.join('mount --bind %s %s;' % (shlex.quote(a), shlex.quote(b))
                     for a, b in binds),
            shlex.quote(self.path('libvirtd.pid')))
        self.log = open(os.path.join(self.dir, 'libvirtd.stderr'), 'w')
        self.proc = subprocess.Popen(
            ['ip', 'netns', 'exec', self.netns, 'unshare', '--mount',
             '--uts', '--propagation', 'private', '/bin/sh', '-c', script],
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise HostError('libvirtd of %s exited with status %d:\n%s'
                                % (self.name, self.proc.returncode,
                                   self.startup_errors()))
            # Not `virsh version`: the hypervisor's version is that of a
            # qemu-system-x86_64 on PATH, which this machine need not have
            # (each domain names its own <emulator>).
            r = self.virsh('hostname', check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise HostError('libvirtd of %s does not answer after %d s:'
                                '\n%s' % (self.name, timeout, r.stderr))
            time.sleep(0.2)

    @staticmethod
    def daemon_version():
        """The version of the libvirtd both hosts run.  (`virsh version
        --daemon` asks the hypervisor's version first and fails without a
        default emulator.)"""
        words = subprocess.run(['libvirtd', '--version'],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL,
                               text=True).stdout.split()
        return words[-1] if words else '?'

    def startup_errors(self):
        """Why libvirtd stopped: its stderr, and the errors of its log
        (where libvirtd.conf sends them; a daemon whose drivers fail to
        start exits with status 0 and says nothing on stderr)."""
        errors = [line for line in self.tail('log', 'libvirtd.log',
                                             n=200).splitlines()
                  if ': error : ' in line]
        return self.tail('libvirtd.stderr') + '\n'.join(errors[-5:])

    def virsh(self, *args, check=True, timeout=120):
        r = subprocess.run(['virsh', '-q', '-c', self.uri] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise HostError('virsh %s on %s: %s' % (
                ' '.join(args), self.name, r.stderr.strip()))
        return r

    def tail(self, *rel, n=20):
        try:
            with open(os.path.join(self.dir, *rel)) as f:
                return ''.join(f.readlines()[-n:])
        except OSError:
            return ''

    def qemu_pids(self):
        """The QEMUs this host's libvirtd started, by their pid files."""
        pids = []
        qdir = self.path('run', 'qemu')
        for name in os.listdir(qdir) if os.path.isdir(qdir) else ():
            if name.endswith('.pid'):
                try:
                    with open(os.path.join(qdir, name)) as f:
                        pids.append(int(f.read().strip()))
                except (OSError, ValueError):
                    pass
        return pids

    def stop(self):
        """Everything this host started goes: domains, QEMUs, libvirtd
        (and with its last process, the mount and UTS namespaces)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            r = self.virsh('list', '--name', check=False, timeout=30)
            for dom in r.stdout.split():
                self.virsh('destroy', dom, check=False, timeout=30)
        for pid in self.qemu_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        self.proc = None


class TwoHosts:
    """Source and destination hosts joined by a veth pair; a context
    manager that removes everything it made, also on failure."""

    NETNS = ('pcram-lvsrc', 'pcram-lvdst')
    DEVS = ('pcram-ls', 'pcram-ld')
    ADDRS = ('192.0.2.9', '192.0.2.10')

    def __init__(self, workdir):
        self.workdir = workdir
        self.src = Host('pcram-src-host', self.NETNS[0], self.DEVS[0],
                        self.ADDRS[0], workdir)
        self.dst = Host('pcram-dst-host', self.NETNS[1], self.DEVS[1],
                        self.ADDRS[1], workdir)
        self.made_dirs = []

    def __enter__(self):
        self.remove_netns()
        # The mount points must exist in the machine's own namespace.
        for target in PRIVATE_DIRS.values():
            if not os.path.isdir(target):
                os.makedirs(target)
                self.made_dirs.append(target)
        create_veth_namespaces(
            (self.src.netns, self.src.dev, self.src.addr),
            (self.dst.netns, self.dst.dev, self.dst.addr))
        try:
            self.src.start((self.src, self.dst))
            self.dst.start((self.src, self.dst))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for host in (self.src, self.dst):
            host.stop()
        self.remove_netns()
        for target in reversed(self.made_dirs):
            try:
                os.rmdir(target)
            except OSError:
                pass
        self.made_dirs = []

    def remove_netns(self):
        for ns in self.NETNS:
            run('ip', 'netns', 'del', ns, check=False)

    def link(self, up):
        run('ip', '-n', self.src.netns, 'link', 'set', self.src.dev,
            'up' if up else 'down')
