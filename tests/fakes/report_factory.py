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


def report_from_json(data: dict[str, Any]) -> Report:
    """The model of a report.json object built by a test, checked exactly as `load` checks a file, so a
    test can only hand the renderers a report that gepa-tune could have read."""
    return Report.from_json(data)


def task_from_json(data: dict[str, Any]) -> TaskReport:
    """The model of one report.json task entry built by a test (checked as `load` checks it)."""
    run = {key: value for key, value in real_report().to_json().items() if key != "tasks"}
    return Report.from_json({**run, "tasks": [data]}).tasks[0]
