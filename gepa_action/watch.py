"""The drift watch: re-score the committed prompts on val and test and compare them with gepa.lock.

Providers update the weights behind a model name; a prompt that scored 0.92 when it was committed may
score 0.80 today while nothing in git changed. The watch measures that, and only that:

* A task whose templates, eval set, metric or models changed since its record is *skipped*: a lower
  score there says the repository changed, not the model (that is `gepa-tune check`'s and the pre-push
  gate's business). Tasks without a record are skipped too. Skipped tasks cost nothing.
* Every answer is fresh: the response cache is not trusted for the watch's scores (a cached answer is
  exactly what would hide a model update). Fresh answers still replace the cached ones, so the tuning
  run the watch suggests starts from what the model says today rather than from what it said then.
  The watch pays for the eval calls of the tasks it compares, never for tuning.
* A task drifts when its val or test mean falls more than its tolerance below the recorded mean. The
  instances that score lower than recorded are listed (test instances only when the lock has their
  scores: locks written before `test_instances` existed have val's alone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .baseline import Baseline, Entry, changes, score_for_baseline, utc_now
from .report.drift import DRIFTED, SKIPPED, STEADY, DriftReport, Regression, SplitScore, TaskDrift
from .report.model import EvalSetRef, Models

if TYPE_CHECKING:
    from .scoring import TaskResult
    from .workspace import Task, Workspace

#: Two floats that differ by less than this are the same score (sums of per-instance scores).
EPSILON = 1e-9


def tolerance_for(workspace: Workspace, task: Task, override: float | None) -> float:
    """--tolerance (the Action's `watch-tolerance`) wins over the task's `watch:`, then the workspace's."""
    if override is not None:
        return override
    if task.watch is not None:
        return task.watch.tolerance
    return workspace.watch.tolerance


def _regressions(split: str, result: TaskResult, recorded: dict[str, float]) -> list[Regression]:
    return [Regression(split, t.instance_id, recorded[t.instance_id], float(t.score), t.output or "", t.feedback or "")
            for t in result.traces
            if t.instance_id in recorded and float(t.score) < recorded[t.instance_id] - EPSILON]


def compare(task: Task, entry: Entry, val: TaskResult, test: TaskResult, tolerance: float) -> TaskDrift:
    """The verdict on one task from its fresh val and test results and its record."""
    splits = tuple(SplitScore(r.split, entry.scores.get(r.split), r.mean_score, len(r.traces)) for r in (val, test))
    drifted = any(s.delta is not None and s.delta < -tolerance - EPSILON for s in splits)
    regressions = [*_regressions("val", val, entry.val_instances), *_regressions("test", test, entry.test_instances)]
    regressions.sort(key=lambda r: (r.now - r.before, r.split, r.id))
    note = ""
    if not entry.test_instances and test.traces:
        note = (f"gepa.lock has no per-instance test scores for '{task.name}' (written by an older gepa-tune): "
                f"only val instances are compared; `gepa-tune eval --update-baseline {task.name}` records them")
    es = entry.eval_set
    return TaskDrift(
        task=task.name, status=DRIFTED if drifted else STEADY, tolerance=tolerance, splits=splits,
        regressions=tuple(regressions),
        models=Models(task=entry.models.get("task"), reflection=entry.models.get("reflection"),
                      judge=entry.models.get("judge")),
        eval_set=EvalSetRef(name=str(es.get("name")), version=str(es.get("version")), sha256=str(es.get("sha256")),
                            path=es.get("path")),
        lock_written_at=entry.written_at, lock_written_by=entry.written_by, note=note)


@dataclass
class Plan:
    """Which tasks the watch can compare (with their records) and which it skips, with why."""

    compared: list[tuple[Task, Entry]]
    skipped: list[TaskDrift]


def plan(workspace: Workspace, tasks: list[Task], baseline: Baseline | None,
         override: float | None = None) -> Plan:
    """Sort `tasks` into comparable ones and skipped ones, before anything is paid for."""
    compared: list[tuple[Task, Entry]] = []
    skipped: list[TaskDrift] = []
    for task in tasks:
        tolerance = tolerance_for(workspace, task, override)
        entry = baseline.tasks.get(task.name) if baseline is not None else None
        if entry is None:
            skipped.append(TaskDrift(task.name, SKIPPED, tolerance,
                                     note=f"no record in gepa.lock: record one with "
                                          f"`gepa-tune eval --update-baseline {task.name}` and commit gepa.lock"))
            continue
        what = changes(task, entry)
        if what:
            skipped.append(TaskDrift(task.name, SKIPPED, tolerance, lock_written_at=entry.written_at,
                                     lock_written_by=entry.written_by,
                                     note=f"changed since its record ({', '.join(what)}), so a score change would "
                                          f"not be drift; `gepa-tune eval --update-baseline {task.name}` "
                                          f"records the new state"))
            continue
        compared.append((task, entry))
    return Plan(compared, skipped)


def run_watch(workspace: Workspace, tasks: list[Task], baseline: Baseline | None, *,
              tolerance: float | None = None, use_cache: bool = True,
              progress: Callable[[str, int, int], None] | None = None) -> DriftReport:
    """Score the comparable tasks afresh and return the verdicts, in the order of `tasks`."""
    chosen = plan(workspace, tasks, baseline, tolerance)
    verdicts = {t.task: t for t in chosen.skipped}
    usage: dict[str, Any] = {}
    if chosen.compared:
        compared_tasks = [task for task, _ in chosen.compared]
        val, test, spent = score_for_baseline(workspace, compared_tasks, use_cache=use_cache, progress=progress,
                                              fresh=True)
        for (task, entry), v, t in zip(chosen.compared, val, test, strict=True):
            verdicts[task.name] = compare(task, entry, v, t, tolerance_for(workspace, task, tolerance))
        usage = spent.to_dict()
    return DriftReport(checked_at=utc_now(), tasks=tuple(verdicts[t.name] for t in tasks), usage=usage)


def fingerprint(report: DriftReport) -> str:
    """What a drift finding is, independent of when it was seen: the drifted tasks, their means (to
    three places) and regressed instances. An open issue is commented on again only when this changes."""
    parts = []
    for task in report.drifted:
        means = ",".join(f"{s.split}={'-' if s.now is None else format(s.now, '.3f')}" for s in task.splits)
        regressed = ",".join(f"{r.split}:{r.id}" for r in sorted(task.regressions, key=lambda r: (r.split, r.id)))
        parts.append(f"{task.task}|{means}|{regressed}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def tune_command(report: DriftReport) -> str:
    """The command that re-tunes the drifted tasks (shown in the issue and the terminal)."""
    return "gepa-tune tune " + " ".join(t.task for t in report.drifted)
