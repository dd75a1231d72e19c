"""Compile migration/postcopy-stubs.c as QEMU would compile it.

    python3 scripts/compile-stubs.py QEMU_BUILD_DIR

QEMU builds the stubs only for hosts without Linux's userfaultfd, which
this project never builds for.  This takes the command QEMU's build used
for another file of the module that every host builds
(postcopy-common.c, from compile_commands.json), puts the stubs in its
place and compiles them (-fsyntax-only), so that a change to a header or
a prototype that would break them breaks the test command instead.
Exits non-zero with the compiler's messages when they do not compile.
"""

import json
import os
import shlex
import subprocess
import sys

MODEL = 'migration/postcopy-common.c'
STUBS = 'migration/postcopy-stubs.c'


def main(argv):
    build = argv[1]
    with open(os.path.join(build, 'compile_commands.json')) as f:
        entries = json.load(f)
    model = next((e for e in entries if e['file'].endswith(MODEL)), None)
    if not model:
        sys.exit('compile-stubs: %s is not in %s/compile_commands.json' %
                 (MODEL, build))
    args = shlex.split(model['command'])
    # The model's source, object and dependency outputs go; -fsyntax-only
    # writes nothing.
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ('-o', '-MF', '-MQ', '-c'):
            skip = a != '-c'
            continue
        if a == '-MD' or a.endswith(MODEL):
            continue
        out.append(a)
    src = os.path.join(os.path.dirname(model['file']), os.path.basename(STUBS))
    out += ['-fsyntax-only', '-Werror', src]
    r = subprocess.run(out, cwd=model['directory'], capture_output=True,
                       text=True)
    sys.stderr.write(r.stderr)
    print('compile-stubs: %s %s' % (STUBS, 'compiles' if r.returncode == 0
                                    else 'does not compile'))
    return r.returncode


if __name__ == '__main__':
    sys.exit(main(sys.argv))
