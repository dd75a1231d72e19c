#!/usr/bin/env python3
"""Mends QEMU's libvhost-user for postcopy, in a tree built only for the
tests' vhost-user back-end (scripts/build.sh --backend).

    scripts/fix-libvhost-user.py TREE

libvhost-user always offers VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, so
QEMU's vhost-user front-end sends it guest memory with ADD_MEM_REG, and
in postcopy it then fails in two ways (QEMU 10.0.2 through 10.2.2):

1. QEMU ends the region list with an ADD_MEM_REG that carries no fd and
   a u64 of 0 (go ahead, register with userfaultfd), but vu_add_mem_reg()
   checks for exactly one fd before it looks for that message: the
   back-end panics ("VHOST_USER_ADD_MEM_REG received 0 fds") and postcopy
   never starts generating its faults.
2. Its reply is to carry the back-end's own address of the region, so
   that QEMU can map the back-end's fault addresses back to RAMBlocks;
   _vu_add_mem_reg() writes that address into a copy of the region, and
   the reply goes back with QEMU's address: QEMU cannot resolve a single
   fault of the back-end ("Failed to find region for fault").

This moves the check for that last message before the fd check, and puts
the back-end's address into the reply.  It edits nothing that QEMU's own
binaries use in these tests (qemu-system-x86_64 is built from another
tree) and fails, naming what it did not find, on a source it does not
know.  Idempotent: a tree it mended carries a marker file.
"""

import os
import re
import sys

SOURCE = 'subprojects/libvhost-user/libvhost-user.c'
MARKER = '.pcram-libvhost-user-mended'


def mend(text):
    start = text.index('vu_add_mem_reg(VuDev *dev, VhostUserMsg *vmsg) {')
    end = text.index('\n}\n', start)
    body = text[start:end]
    # 1. The last message of the list: the block that starts generating
    #    faults, with the comment above it.
    ack = re.search(r'\n(    /\*(?:(?!\*/).)*?\*/\n)?'
                    r'    if \(dev->postcopy_listening &&\n'
                    r'\s+vmsg->size == sizeof\(vmsg->payload\.u64\) &&\n'
                    r'\s+vmsg->payload\.u64 == 0\) \{\n'
                    r'(?:(?!\n    \}\n).)*\n    \}\n', body, re.S)
    fd_check = body.index('    if (vmsg->fd_num != 1) {')
    if not ack or ack.start() < fd_check:
        raise ValueError('the postcopy go-ahead check, after the fd check')
    block = ack.group(0).lstrip('\n') + '\n'
    body = body[:ack.start()] + body[ack.end():]
    body = body[:fd_check] + block + body[fd_check:]
    # 2. The reply: the back-end's address of the region.
    call = '    _vu_add_mem_reg(dev, msg_region, vmsg->fds[0]);\n'
    if call not in body:
        raise ValueError('the call of _vu_add_mem_reg()')
    body = body.replace(call, call +
                        '    /* pcram: the reply carries our address */\n'
                        '    vmsg->payload.memreg.region.userspace_addr =\n'
                        '        msg_region->userspace_addr;\n', 1)
    return text[:start] + body + text[end:]


def main(argv):
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    tree = argv[0]
    if os.path.exists(os.path.join(tree, MARKER)):
        return 0
    path = os.path.join(tree, SOURCE)
    with open(path) as f:
        text = f.read()
    try:
        text = mend(text)
    except ValueError as e:
        print('fix-libvhost-user: %s: not found as expected: %s' % (path, e),
              file=sys.stderr)
        return 1
    with open(path, 'w') as f:
        f.write(text)
    open(os.path.join(tree, MARKER), 'w').close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
