"""Check that the functions the module's comments name exist.

    python3 scripts/check-comment-names.py QEMU_SOURCE_TREE

A comment that names a function, as `name()`, sends the reader there: a
barrier that "pairs with" another in a function that was renamed or
removed leaves a reader looking for something that is not there.  This
reads the comments of migration/postcopy-*.[ch] and checks every name
that is the module's own (postcopy_*, or any name in a "pairs with"
sentence) against the names that the code (not its comments) of the
module and of QEMU's migration/, include/ and util/ defines, declares or
calls, function-like macros included: code that compiles names only what
exists.  (QEMU's postcopy_* functions, such as savevm.c's
postcopy_pause_incoming(), are named too.)
Prints each name that is defined nowhere, with where it is named, and
exits 1 if there is one.
"""

import glob
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMENT = re.compile(r'/\*.*?\*/|//[^\n]*', re.S)
# Comments and literals, skipped together so that a "//" or "/*" in a
# string starts no comment.
CODE_NOISE = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"'
                        r"|'(?:\\.|[^'\\\n])*'", re.S)
NAMED = re.compile(r'\b([A-Za-z_]\w*)\(\)')
# To the end of the sentence: a full stop that ends it, not the one in
# "savevm.c's".
PAIRS = re.compile(r'pairs\s+with.*?(?:\.(?=\s|$)|;|$)', re.I | re.S)
CALLED = re.compile(r'\b([A-Za-z_]\w*)\s*\(')


def definitions(paths):
    """Every name the code (not its comments) defines, declares or calls:
    code that compiles calls nothing that does not exist."""
    names = set()
    for path in paths:
        try:
            with open(path, errors='replace') as f:
                text = f.read()
        except OSError:
            continue
        code = CODE_NOISE.sub(lambda m: ' ' if m.group(0)[0] in '/' else
                              '""', text)
        names.update(CALLED.findall(code))
    return names


def named_in_comments(path):
    """(name, line) for each name a comment of @path sends the reader to."""
    with open(path) as f:
        text = f.read()
    for c in COMMENT.finditer(text):
        line = text.count('\n', 0, c.start()) + 1
        body = c.group(0)
        wanted = set(n for n in NAMED.findall(body)
                     if n.startswith('postcopy_'))
        for p in PAIRS.finditer(body):
            wanted.update(NAMED.findall(p.group(0)))
        for name in sorted(wanted):
            yield name, line


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    qemu = argv[1]
    module = sorted(glob.glob(os.path.join(REPO, 'migration',
                                           'postcopy-*.[ch]')))
    others = []
    for sub in ('migration', 'include', 'util'):
        for root, _dirs, files in os.walk(os.path.join(qemu, sub)):
            others += [os.path.join(root, f) for f in files
                       if f.endswith(('.c', '.h')) and
                       not f.startswith('postcopy-')]
    known = definitions(module) | definitions(others)
    missing = []
    for path in module:
        for name, line in named_in_comments(path):
            if name not in known:
                missing.append('%s:%d: %s() is named but defined nowhere' %
                               (os.path.relpath(path, REPO), line, name))
    for m in missing:
        print(m)
    print('check-comment-names: %d module files, %d names missing' %
          (len(module), len(missing)))
    return 1 if missing else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
