"""The "runs not used" section of the combined pull request and job summary (see report/skipped.py)."""

from __future__ import annotations

from collections.abc import Sequence

from ..report.skipped import SkippedRun
from .text import plain, table

SHOWN = 30  # rows; a matrix of hundreds of broken jobs says how many more there were
CELL_LIMIT = 200  # characters per cell: 30 rows stay under ~20,000 of the PR body's 65,536


def skipped_runs_section(skipped: Sequence[SkippedRun]) -> str:
    """A table of task, run folder and reason; empty when every run was used."""
    if not skipped:
        return ""
    rows = [(s.task if s.task is not None else "(unknown)", s.run, s.reason) for s in skipped[:SHOWN]]
    more = len(skipped) - SHOWN
    head = (f"### Runs not used ({len(skipped)})\n\nThese runs could not be combined into this pull request; "
            "their tasks keep the prompts they have. Re-run the jobs named here.")
    body = table(["Task", "Run", "Reason"], [tuple(plain(c, CELL_LIMIT) for c in row) for row in rows])
    tail = f"\n\n…and {more} more (see the log)." if more > 0 else ""
    return f"{head}\n\n{body}{tail}"
