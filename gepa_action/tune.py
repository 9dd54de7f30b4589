"""A tuning run over one or more tasks: start or resume it, drive the engines, score the held-out test
split, write the report. Shared by `gepa-tune tune` and the GitHub Action (`action.py`), so it lives outside
the CLI.

Interruption is part of the design, not an afterthought: the engine checkpoints after every round and
every answer is in the response cache, so Ctrl-C or SIGTERM only marks the run as interrupted and
writes a report of what was done; `--resume` continues from the last checkpoint, replaying the
interrupted round from the cache at no cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cache import CacheFull
from .cost_model import TaskEstimate
from .engine.budget import Limits
from .engine.loop import Engine
from .engine.options import CHAIN_MODES, DEFAULT_SEED, MAX_PARALLEL, EngineOptions
from .engine.reasons import StopReason
from .engine.state import EngineState
from .errors import GepaError, InputError, RunError
from .estimate import estimate_task, prompt_cost
from .lm.client import LMClient
from .lm.session import check_credentials, with_client
from .paths import write_inside
from .render.report_md import render_report
from .report.build import run_report, task_report
from .report.model import Report, ReportFormatError, dumps, read_part
from .run_origin import origin_meta
from .runs import RunDir, RunWriteError, text_hash, utc_now, write_atomic
from .signals import sigterm_as_interrupt
from .workspace import Task, Workspace


@dataclass(frozen=True)
class TuneOptions:
    """What `gepa-tune tune` was asked for; stored in run.json so `--resume` continues the same run."""

    seed: int = DEFAULT_SEED
    budget: int | None = None  # overrides every task's budget.max_metric_calls
    max_minutes: float | None = None  # overrides every task's budget.max_minutes
    strategy: str = EngineOptions.strategy
    minibatch: int = EngineOptions.minibatch
    parallel: int = EngineOptions.parallel
    max_merges: int = EngineOptions.max_merges
    race: bool = EngineOptions.race  # score accepted children on val in stages (see engine/evaluation.py)
    lookahead: bool = EngineOptions.lookahead  # propose from a child while it is raced on val (see engine/loop.py)
    chain: str = EngineOptions.chain  # take a child further on train before val: auto, always, never (engine/rounds.py)
    #: The bundled local models (`--local`): part of the run, so `--resume` serves them again unasked.
    local: bool = False

    def engine(self) -> EngineOptions:
        return EngineOptions(strategy=self.strategy, minibatch=self.minibatch, parallel=self.parallel,
                             max_merges=self.max_merges, race=self.race, lookahead=self.lookahead,
                             chain=self.chain)


@dataclass
class TaskOutcome:
    task: Task
    state: EngineState | None
    status: str  # "finished", "failed: ...", "interrupted"
    error: GepaError | None = None


@dataclass
class TuneResult:
    run: RunDir
    report: Report
    outcomes: list[TaskOutcome]
    write_error: RunWriteError | None = None  # the report could not be saved (it is still in `report`)


class Interrupted(GepaError):
    """Ctrl-C or SIGTERM: the state is saved; the message says how to resume."""

    exit_code = 130


def fingerprint(task: Task) -> dict[str, Any]:
    """What must not change under a run for `--resume` to be honest: the seed templates, the eval set, and
    the reviewer guidance (it is in every reflection prompt and its rules in the metric; the key is left
    out without guidance, so runs started before it existed still resume)."""
    found: dict[str, Any] = {"templates": {m: text_hash(t.source) for m, t in sorted(task.templates.items())},
                             "eval_sha256": task.eval_set.sha256, "model": task.model}
    if task.guidance.items:
        found["guidance"] = text_hash(repr([(i.id, i.text, i.rule) for i in task.guidance.items]))
    return found


def limits_for(task: Task, options: TuneOptions, run: RunDir) -> Limits:
    budget = task.budget
    calls = options.budget if options.budget is not None else budget.max_metric_calls
    minutes = options.max_minutes if options.max_minutes is not None else budget.max_minutes
    return Limits(calls, budget.max_cost_usd, minutes, run.stop_file)


def estimate_for(workspace: Workspace, task: Task, options: TuneOptions) -> TaskEstimate:
    """What tuning `task` with `options` may call and cost (`--estimate`, run.json, the job summary)."""
    calls = options.budget if options.budget is not None else task.budget.max_metric_calls
    minutes = options.max_minutes if options.max_minutes is not None else task.budget.max_minutes
    return estimate_task(task, workspace.lm, options.engine(), max_metric_calls=calls, max_minutes=minutes)


def start_run(workspace: Workspace, tasks: list[Task], options: TuneOptions,
              estimates: Mapping[str, TaskEstimate] | None = None) -> RunDir:
    """A new run folder. `estimates`: the ones the caller already made (the Action's job summary shows
    them before tuning) for these tasks and options; the estimate renders every instance, so it is made
    once per run, not twice."""
    estimates = estimates or {}
    return RunDir.create(workspace.root, {
        "config": workspace.relative(workspace.config_file),
        "tasks": [t.name for t in tasks],
        "options": asdict(options),
        "fingerprints": {t.name: fingerprint(t) for t in tasks},
        **origin_meta(workspace.root, workspace.config_file),  # for `action --from-runs` (matrix.py)
        # made before anything is spent, so the report can set it beside what the run did spend
        "estimates": {t.name: asdict(estimates.get(t.name) or estimate_for(workspace, t, options)) for t in tasks},
    })


def recorded_estimate(meta: Mapping[str, Any], task: str) -> TaskEstimate | None:
    """The estimate run.json holds for `task`; None for a run started before estimates were recorded, or
    one whose record was edited into something else (the report then shows no estimate)."""
    data = (meta.get("estimates") or {}).get(task) if isinstance(meta.get("estimates"), dict) else None
    try:
        return None if data is None else read_part(TaskEstimate, data, f"estimates.{task}")
    except ReportFormatError:
        return None


def options_from(meta: Mapping[str, Any], run: RunDir) -> TuneOptions:
    """run.json's options, checked like a config: a damaged or edited record is one line, not a TypeError."""
    raw = meta.get("options")
    fields = {f.name: f for f in dataclasses.fields(TuneOptions)}
    if not isinstance(raw, dict) or not set(raw) <= set(fields):
        raise InputError(str(run.meta_file), "'options' is not what gepa-tune writes", key="options",
                         hint="the run folder is damaged or was edited; start a new run")
    for name, value in raw.items():
        default = fields[name].default
        if name == "strategy":
            ok = value in ("pareto", "best")
        elif name == "chain":
            ok = value in CHAIN_MODES
        elif isinstance(default, bool):  # flags such as `local`
            ok = isinstance(value, bool)
        elif name in ("budget", "max_minutes") and value is None:
            ok = True
        elif name == "max_minutes":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        else:  # the integer options; none may be negative, and the counts start at 1
            ok = (isinstance(value, int) and not isinstance(value, bool)
                  and (name == "seed" or value >= (0 if name == "max_merges" else 1)))
            ok = ok and not (name == "parallel" and value > MAX_PARALLEL)
        if not ok:
            raise InputError(str(run.meta_file), f"{value!r} is not a valid value (default {default!r})",
                             key=f"options.{name}", hint="the run folder is damaged or was edited; start a new run")
    return TuneOptions(**raw)


def resumes_local(workspace: Workspace, run_id: str) -> bool:
    """Whether run `run_id` was started on the bundled local models (`--local`), so its resume is too."""
    options = RunDir.open(workspace.root, run_id).read_meta().get("options")
    return isinstance(options, dict) and options.get("local") is True


def reopen_run(workspace: Workspace, run_id: str) -> tuple[RunDir, list[Task], TuneOptions]:
    """A run to resume, with its tasks and options; refuses when the inputs changed since it started."""
    run = RunDir.open(workspace.root, run_id)
    meta = run.read_meta()
    options = options_from(meta, run)
    if not meta.get("tasks"):
        raise InputError(str(run.meta_file), "the run record names no task", key="tasks",
                         hint="the run folder is damaged or was edited; start a new run")
    tasks = workspace.select(meta["tasks"])
    for task in tasks:
        then = meta.get("fingerprints", {}).get(task.name)
        if then is None:
            raise InputError(str(run.meta_file), f"no fingerprint for task '{task.name}'", key="fingerprints",
                             hint="the run folder is damaged or was edited; start a new run")
        now = fingerprint(task)
        if now != then:
            changed = [m for m in now["templates"] if now["templates"][m] != then["templates"].get(m)]
            what = (f"template {changed[0]}" if changed else
                    f"eval set {task.eval_set.file}" if now["eval_sha256"] != then["eval_sha256"] else
                    "reviewer guidance (gepa.guidance.yaml)" if now.get("guidance") != then.get("guidance")
                    else "task model")
            raise InputError(workspace.relative(workspace.config_file),
                             f"task '{task.name}': the {what} changed since run {run.run_id} started",
                             hint="resume only with the inputs the run started from, or start a new run")
    return run, tasks, options


ProgressFn = Callable[[str, EngineState, int | None], None]


async def _tune_task(workspace: Workspace, run: RunDir, task: Task, options: TuneOptions, lm: Any,
                     progress: ProgressFn | None) -> TaskOutcome:
    state = run.load_state(task.name, list(task.modules)) or EngineState.new(task.name, options.seed)
    run.drop_replayed_events(task.name)  # a resume replays the interrupted round: its events come again
    limits = limits_for(task, options, run)
    buffer: list[dict[str, Any]] = []

    def emit(event: dict[str, Any]) -> None:
        buffer.append({"time": utc_now(), "task": task.name, **event})

    def checkpoint(current: EngineState) -> None:
        run.save(current, buffer)
        buffer.clear()

    def show(current: EngineState) -> None:
        if progress is not None:
            progress(task.name, current, limits.max_metric_calls)

    engine = Engine(task, lm, state, options.engine(), limits, emit=emit, checkpoint=checkpoint, progress=show)
    try:
        if not state.finished:
            await engine.run()
        await engine.score_test()
    except GepaError as exc:
        # The checkpoint stays at the last finished round; the events of the failed one are kept.
        emit({"event": "error", "message": str(exc)})
        saved = run.load_state(task.name, list(task.modules))
        try:
            if saved is None:
                run.number_events(task.name, buffer)
                run.append_events(buffer)
            else:  # the error goes into the report; the pool and budget stay as checkpointed
                saved.errors.append(str(exc))
                run.save(saved, buffer, covered=False)
        except RunWriteError:
            # The disk that failed the run fails this record too: the error is reported from memory,
            # and the checkpoint on disk is the last whole round, which is what a resume needs.
            pass
        return TaskOutcome(task, saved, f"failed: {exc}", exc)
    return TaskOutcome(task, engine.state, "finished")


def write_reports(workspace: Workspace, run: RunDir, tasks: list[Task], statuses: dict[str, str],
                  *, run_status: str | None = None) -> Report:
    """report.json and report.md from the checkpoints on disk. `run_status` None re-renders an ended
    run as it was (its status, times and per-task statuses come from run.json).

    Raises `ReportNotSaved` (carrying the report) when the files cannot be written, e.g. on a full disk."""
    meta = run.read_meta()
    known = dict(statuses) if run_status is not None else {**meta.get("task_status", {}), **statuses}
    for task in tasks:  # a task that got as far as its test scoring finished, whatever came after
        state = run.load_state(task.name, list(task.modules))
        if task.name not in known and state is not None:
            known[task.name] = "finished" if state.final is not None else "interrupted"
    failure: RunWriteError | None = None
    if run_status is not None:
        meta = {**meta, "status": run_status, "finished_at": utc_now(), "task_status": known}
        try:
            run.write_meta(meta)
        except RunWriteError as exc:
            failure = exc
    options = options_from(meta, run)
    task_reports = []
    for task in tasks:
        state = run.load_state(task.name, list(task.modules))
        if state is None or not state.candidates:
            continue
        limits = limits_for(task, options, run)
        reflection = workspace.lm.reflection_model or task.model
        best = state.candidate(state.final["best"]) if state.final else state.best()
        task_reports.append(task_report(task, state, budget=limits.max_metric_calls, reflection_model=reflection,
                                        status=known.get(task.name, "interrupted"),
                                        estimate=recorded_estimate(meta, task.name),
                                        prompt_cost=prompt_cost(task, state.candidate(0).texts, best.texts,
                                                                workspace.lm.prices, task.cost)))
    report = run_report(meta, task_reports)
    try:
        write_atomic(run.path / "report.json", dumps(report))
        write_atomic(run.path / "report.md", render_report(report))
    except RunWriteError as exc:
        failure = failure or exc
    if failure is not None:
        raise ReportNotSaved(str(failure), report)
    return report


class ReportNotSaved(RunWriteError):
    """The run's report (and maybe its status) could not be written; the report itself is attached."""

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


def run_tune(workspace: Workspace, tasks: list[Task], options: TuneOptions, *, resume: str | None = None,
             use_cache: bool = True, progress: ProgressFn | None = None,
             estimates: Mapping[str, TaskEstimate] | None = None) -> TuneResult:
    """Start (or resume) a run, drive every task to its end, and write the reports. `estimates`: see
    `start_run`."""
    check_credentials(workspace.lm, os.environ)
    if resume is not None:
        run, tasks, options = reopen_run(workspace, resume)
        run.lock()  # before any write: a second process resuming this run stops here
        run.update_meta(status="running")
    else:
        run = start_run(workspace, tasks, options, estimates)
    try:
        return _drive(workspace, run, tasks, options, use_cache=use_cache, progress=progress)
    finally:
        run.unlock()


def _drive(workspace: Workspace, run: RunDir, tasks: list[Task], options: TuneOptions, *, use_cache: bool,
           progress: ProgressFn | None) -> TuneResult:
    """Run the tasks of a locked run to their end and write the reports."""

    async def work(lm: LMClient) -> list[TaskOutcome]:
        return list(await asyncio.gather(*(_tune_task(workspace, run, task, options, lm, progress) for task in tasks)))

    try:
        with sigterm_as_interrupt():  # the client, its cache and any local servers close on every exit
            outcomes = with_client(workspace, work, use_cache=use_cache, reflection=True)
    except GepaError as exc:  # e.g. the local servers failed to start or their readiness check: nothing was spent
        # The run folder says so too; a folder that cannot take it (a full or read-only disk) must not hide
        # the error that stopped the run behind one of its own.
        with contextlib.suppress(RunWriteError, OSError):
            run.append_events([{"time": utc_now(), "event": "error", "message": str(exc)}])
            write_reports(workspace, run, tasks, {t.name: f"failed: {exc}" for t in tasks},
                          run_status=f"failed: {exc}")
        raise
    except KeyboardInterrupt:
        with contextlib.suppress(ReportNotSaved):  # the checkpoints are what a resume needs
            write_reports(workspace, run, tasks, {}, run_status="interrupted")
        raise Interrupted(f"run {run.run_id} interrupted; every finished round is saved and every answer is "
                          f"cached: continue with `gepa-tune tune --resume {run.run_id}`") from None
    statuses = {o.task.name: o.status for o in outcomes}
    failed = [o for o in outcomes if o.error is not None]
    status = "finished" if not failed else f"failed: {failed[0].error}"
    write_error: RunWriteError | None = None
    try:
        report = write_reports(workspace, run, tasks, statuses, run_status=status)
    except ReportNotSaved as exc:
        report, write_error = exc.report, exc
    if failed and not report.tasks and all(o.error.exit_code == 2 for o in failed):
        raise failed[0].error  # nothing ran at all: report the input problem as the error it is
    return TuneResult(run, report, outcomes, write_error)


def write_templates(workspace: Workspace, report: Report) -> list[str]:
    """Write each task's best templates into the workspace (only files that changed); returns them."""
    written = []
    for task in report.tasks:
        if task.best is None:
            continue
        for module in task.best.changed_modules:
            text = task.best.templates[module]
            # Confined: a template path that is a symlink out of the repository is refused, not written through.
            write_inside(workspace.root, module, text if text.endswith("\n") else text + "\n", module)
            written.append(module)
    return written


def raise_for(result: TuneResult) -> None:
    """After printing, turn a failed run into its exit code (the report is already written)."""
    disk = (RunWriteError, CacheFull)  # the run stopped because a write failed: resuming continues it
    if result.write_error is not None or any(isinstance(o.error, disk) for o in result.outcomes):
        cause = result.write_error or next(o.error for o in result.outcomes if isinstance(o.error, disk))
        raise RunWriteError(f"{cause}; the last finished round is checkpointed: continue with "
                            f"`gepa-tune tune --resume {result.run.run_id}`")
    failed = [o for o in result.outcomes if o.error is not None]
    if failed:
        raise failed[0].error  # type: ignore[misc]
    stuck = [o for o in result.outcomes
             if o.state and o.state.stop is not None and o.state.stop.reason is StopReason.NOTHING_EVALUATED]
    if stuck:
        raise RunError(f"task '{stuck[0].task.name}': every proposal was rejected before evaluation; the reasons "
                       f"are in {Path(result.run.path) / 'events.jsonl'}")


def rerender(workspace: Workspace, run: RunDir) -> Report:
    """Rebuild report.json and report.md of an existing run from its checkpoints."""
    return write_reports(workspace, run, workspace.select(run.read_meta()["tasks"]), {})
