"""The drift issue's body stays within GitHub's limit, keeps its markers, and escapes what it quotes."""

from __future__ import annotations

from gepa_action.render.drift import render_issue_body, render_watch_lines
from gepa_action.render.text import GITHUB_LIMIT
from gepa_action.report.drift import DRIFTED, DriftReport, Regression, SplitScore, TaskDrift
from gepa_action.report.model import EvalSetRef, Models

MARKERS = "<!-- gepa-tune:drift abc -->\n<!-- gepa-tune:drift-state f00 tasks=t0 -->"


def drifted_task(name: str, regressions: int, id_chars: int = 40) -> TaskDrift:
    rows = tuple(Regression("val", f"{i:06d}-" + "x" * id_chars, 1.0, 0.0, "o" * 500, "f" * 500)
                 for i in range(regressions))
    return TaskDrift(name, DRIFTED, 0.05, splits=(SplitScore("val", 0.9, 0.1, regressions),
                                                  SplitScore("test", 0.9, None, 0)),
                     regressions=rows, models=Models("m", None, None),
                     eval_set=EvalSetRef("set", "1", "a" * 64, "evals/set.jsonl"),
                     lock_written_at="2026-11-01T00:00:00Z", lock_written_by="eval --update-baseline")


def test_a_huge_finding_fits_in_one_issue_with_its_markers() -> None:
    report = DriftReport("2026-12-01T00:00:00Z", tuple(drifted_task(f"t{i}", 3000, 400) for i in range(40)), {})
    body = render_issue_body(report, markers=MARKERS, tune_command="gepa-tune tune t0")
    assert len(body) <= GITHUB_LIMIT
    assert body.startswith(MARKERS)


def test_a_small_finding_lists_rows_and_says_how_many_more() -> None:
    report = DriftReport("2026-12-01T00:00:00Z", (drifted_task("t0", 45),), {})
    body = render_issue_body(report, markers=MARKERS, tune_command="gepa-tune tune t0")
    assert "Instances that score lower than recorded (45):" in body
    assert "… and 15 more" in body
    assert "| test | 0.900 | n/a | n/a | 0.05 | 0 |" in body  # a split measured only in the lock


def test_hostile_instance_ids_are_inert_in_the_issue_and_the_terminal() -> None:
    task = TaskDrift("t0", DRIFTED, 0.05, splits=(SplitScore("val", 1.0, 0.0, 1),),
                     regressions=(Regression("val", "@admins\n# closes #7 | <img src=x>", 1.0, 0.0,
                                             "\x1b[31mred\x1b[0m", ""),))
    report = DriftReport("now", (task,), {})
    body = render_issue_body(report, markers=MARKERS, tune_command="gepa-tune tune t0")
    row = next(line for line in body.splitlines() if line.startswith("| val | "))
    assert "@admins" not in row and "#7" not in row and "<img" not in row and row.count(" | ") == 5
    lines = render_watch_lines(report)
    assert not any("\x1b" in line or "\n" in line for line in lines)
