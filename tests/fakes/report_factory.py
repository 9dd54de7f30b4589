"""Typed reports for tests: a real report.json (tests/data/reports) with the parts a test cares about
replaced, so a test states only what matters to it and still hands the code a complete, valid report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gepa_action.report.model import Report, TaskReport, load

REPORTS = Path(__file__).parent.parent / "data" / "reports"


def real_report(name: str = "route_v1") -> Report:
    return load(REPORTS / f"{name}.report.json")


def task_report(**changes: Any) -> TaskReport:
    """The first task of `route_v1` with `changes` (field name -> new value) applied."""
    return dataclasses.replace(real_report().tasks[0], **changes)


def report_of(*tasks: TaskReport, **changes: Any) -> Report:
    return dataclasses.replace(real_report(), tasks=list(tasks), **changes)
