"""The "Runs not used" section: names and reasons come from uploaded artifacts, so they are escaped
once, cannot add a column, mention anyone or inject HTML, and a matrix of broken jobs stays bounded."""

from __future__ import annotations

from gepa_action.render.pr_body import render_job_summary, render_pr_body
from gepa_action.render.skipped import SHOWN, skipped_runs_section
from gepa_action.report.model import Report
from gepa_action.report.skipped import SkippedRun

HOSTILE = "@org/team closes #1 | <script>alert(1)</script> `x`\nsecond line"


def test_hostile_names_and_reasons_stay_one_escaped_row() -> None:
    text = skipped_runs_section([SkippedRun(HOSTILE, f"runs/{HOSTILE}", HOSTILE), SkippedRun(None, "r", "why")])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 2 and all(row.count(" | ") == 2 for row in rows)
    assert "<script>" not in text and "@org/team" not in text and "\nsecond line" not in text
    assert rows[1].startswith("| (unknown) | r | why |")


def test_many_skipped_runs_are_bounded() -> None:
    text = skipped_runs_section([SkippedRun(f"t{i}", f"r{i}", "x" * 5000) for i in range(500)])
    assert "Runs not used (500)" in text and f"and {500 - SHOWN} more" in text
    assert len(text) < 20_000 and "x" * 201 not in text


def test_no_skipped_run_no_section() -> None:
    report = Report("r1", "finished", None, None, {}, [])
    body = render_pr_body(report, applied=[], threshold="t").text
    assert "Runs not used" not in body and "Runs not used" not in render_job_summary(
        report, applied=[], threshold="t", operation="none", pr_url=None)
    skipped = [SkippedRun("gone", "runs/gone", "the task produced no result")]
    assert "Runs not used (1)" in render_pr_body(report, applied=[], threshold="t", skipped=skipped).text
