"""One-off investigations: scripts that produced the evidence in docs/faults.md
and docs/notes/, kept to run again.  Not part of the test command or the
benchmark; they import from pcram, never the other way round.

    cd scripts; python3 -m pcram.investigations.NAME ...
"""
