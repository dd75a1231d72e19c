"""Sorts ThreadSanitizer's reports into the module's and QEMU's own.

    python3 -m pcram.tsan_reports LOG...

Each LOG is a file TSan wrote with log_path.  A report is the module's when
one of its access stacks (the racing accesses, not where the memory, the
mutexes or the threads were made) has a frame in migration/postcopy-*.c,
the files this project puts into QEMU, whichever side of the race it is.
Prints one line per distinct SUMMARY with its count, the module's first,
each module report in full, and exits 1 when there is any that EXPLAINED
does not list.
"""

import collections
import re
import sys

SEPARATOR = "=================="
MODULE_FRAME = re.compile(r"\bmigration/postcopy-[a-z-]+\.[ch]:\d+")
# Module reports that are QEMU's contract rather than a bug here, each
# explained in docs/faults.md ("ThreadSanitizer"): (frames all found in
# the access stacks, the report's SUMMARY location).
EXPLAINED = (
    # qemu_file_shutdown() from one thread wakes another blocked on the
    # channel (the cleanup thread stopping the preempt thread; savevm.c
    # pausing while the fault thread sends a request): QEMUFile's
    # last_error is a plain int, written and read across threads by
    # QEMU's own design.
    (("qemu_file_shutdown",), "qemu-file.c:204 in qemu_file_set_error_obj"),
    # The same race reported from the other side: savevm.c's
    # postcopy_pause_incoming() shuts the preempt channel down (reading
    # last_error) while the preempt thread's read sets it.
    (("qemu_file_set_error_obj", "postcopy_preempt_thread"),
     "qemu-file.c:94 in qemu_file_shutdown"),
    # At a recovery QEMU's postcopy_try_recover() stores the new return
    # path with a plain write, without rp_mutex; the fault thread reads
    # the pointer under rp_mutex (the lock savevm.c's pause clears it
    # under), and sends no request while the state is postcopy-recover.
    (("fault_thread_round",), "in postcopy_try_recover"),
    # The preempt channel's QEMUFile, handed over as the contract wants
    # (mis->postcopy_qemufile_dst); savevm.c's load loop reads it plainly.
    (("postcopy_preempt_new_channel", "qemu_loadvm_state_main"),
     "in postcopy_preempt_new_channel"),
)
# Where a report stops describing the accesses themselves.
CONTEXT = re.compile(r"^  (Location is|Mutex |Thread T|SUMMARY)", re.M)


def reports(text):
    """The reports of one TSan log, each as its text."""
    for chunk in text.split(SEPARATOR):
        if "WARNING: ThreadSanitizer:" in chunk:
            yield chunk.strip("\n")


def access_stacks(report):
    found = CONTEXT.search(report)
    return report[:found.start()] if found else report


def explained(report):
    stacks = access_stacks(report)
    return any(all(frame in stacks for frame in frames) and
               where in summary_of(report)
               for frames, where in EXPLAINED)


def summary_of(report):
    for line in report.splitlines():
        if line.startswith("SUMMARY:"):
            return line[len("SUMMARY: ThreadSanitizer: "):]
    return report.splitlines()[0]


def main(paths):
    module, qemu = collections.Counter(), collections.Counter()
    known = collections.Counter()
    module_texts = []
    for path in paths:
        with open(path, errors="replace") as log:
            for report in reports(log.read()):
                if not MODULE_FRAME.search(access_stacks(report)):
                    qemu[summary_of(report)] += 1
                elif explained(report):
                    known[summary_of(report)] += 1
                else:
                    module[summary_of(report)] += 1
                    module_texts.append(report)
    for text in module_texts:
        print(text + "\n")
    for label, counts in (("module", module), ("explained", known),
                          ("QEMU", qemu)):
        for summary, count in sorted(counts.items()):
            print(f"tsan: {label}: {count} x {summary}")
    print(f"tsan: {sum(module.values())} reports in the module, "
          f"{sum(known.values())} explained, "
          f"{sum(qemu.values())} in QEMU's own code")
    return 1 if module else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
