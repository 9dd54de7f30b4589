"""pre-commit hooks: an offline check on commit, a regression gate on push.

pre-commit calls a hook with the files a commit (or a push) touches. Most commits touch no prompt at
all, so the first job of both hooks is to map those files to tasks cheaply, from the raw `gepa.yaml`
(no eval set is loaded, no metric imported, no model client built), and to leave at once when nothing
that feeds a task changed. A file matters when it is `gepa.yaml`, `gepa.lock` or `gepa.guidance.yaml`
(every task: reviewers' rules are part of the metric), a
template a task uses, a task's eval set, or a task's Python metric file.

* `gepa-tune hook check FILES...` then runs `gepa-tune check` on the affected tasks: offline, well under
  a second, and it never imports the openai SDK.
* `gepa-tune hook eval FILES...` re-scores the val split of each affected task whose prompts, eval set,
  models or metric differ from its record in `gepa.lock`, and fails when the mean dropped more than the
  tolerance below the recorded val score. Without a model to ask (no key, no endpoint) it cannot judge,
  so it says loudly that it skipped and passes, because a gate that blocks every push of a contributor
  without an API key gets uninstalled; `--strict` makes that, and a missing baseline, an error instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .baseline import LOCK_NAME, Baseline, Entry, changes
from .errors import InputError
from .guidance.store import FILE_NAME as GUIDANCE_NAME
from .lm.session import model_configured
from .yamlsrc import load_yaml

if TYPE_CHECKING:
    from .config import LMConfig
    from .scoring import TaskResult
    from .workspace import Task, Workspace

#: Used when neither --tolerance nor gate.tolerance in gepa.yaml says otherwise: any drop fails.
DEFAULT_TOLERANCE = 0.0
#: Scores are means of floats; a drop smaller than this is rounding, not a regression.
EPSILON = 1e-9
#: Per-instance regressions listed per task before the rest are counted instead.
MAX_REGRESSIONS_SHOWN = 20

Echo = Callable[[str], None]


# ------------------------------------------------------------------------------------- files -> tasks


def _as_paths(value: Any) -> list[str]:
    return [value] if isinstance(value, str) and value.strip() else []


def _metric_file(metric: Any) -> list[str]:
    """The Python file of a `path/to/file.py:function` metric (shorthand or `function:` option)."""
    spec = metric.get("function") if isinstance(metric, dict) else metric
    if not isinstance(spec, str) or ":" not in spec:
        return []
    file_part = spec.strip().rpartition(":")[0]
    return [file_part] if file_part else []


def task_files(config_file: Path) -> dict[str, list[str]]:
    """Each task's input files as written in gepa.yaml (templates, eval set, Python metric), by task name.

    Read from the raw YAML on purpose: a task that is broken (which `check` must report) still maps
    to its files, and nothing is loaded or imported. Entries that are not what they should be are
    skipped here; validating them is `check`'s job.
    """
    doc = load_yaml(config_file, config_file.name)
    tasks = doc.data.get("tasks") if isinstance(doc.data, dict) else None
    out: dict[str, list[str]] = {}
    for raw in tasks if isinstance(tasks, list) else []:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            continue
        files: list[str] = []
        steps = [raw.get("prompt")] + (raw.get("steps") if isinstance(raw.get("steps"), list) else [])
        for step in steps:
            if isinstance(step, dict):
                for role in ("system", "user"):
                    files += _as_paths(step.get(role))
        if isinstance(raw.get("eval"), dict):
            files += _as_paths(raw["eval"].get("path"))
        files += _metric_file(raw.get("metric"))
        out[raw["name"]] = files
    return out


@dataclass
class Affected:
    """What a set of changed files touches: tasks (name -> the files feeding it) and workspace-wide files."""

    tasks: dict[str, list[str]] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)  # gepa.yaml / gepa.lock / gepa.guidance.yaml among the files

    def __bool__(self) -> bool:
        return bool(self.tasks or self.shared)


def affected_tasks(config_file: Path, files: Sequence[str | Path], cwd: Path | None = None) -> Affected:
    """Which tasks the given files feed (config order), and whether gepa.yaml or gepa.lock is among them.

    `files` are relative to `cwd` (pre-commit runs hooks at the repository root and passes paths
    relative to it). `gepa.yaml` and `gepa.lock` feed every task. A broken gepa.yaml that is part of
    the change is not an error here (`check` reports it with its line); one that is not is.
    """
    base = (cwd or Path.cwd()).resolve()
    root = config_file.resolve().parent
    given = {(base / f).resolve(): str(f) for f in files}
    shared = [given[p] for p in (config_file.resolve(), root / LOCK_NAME, root / GUIDANCE_NAME) if p in given]
    if not given:
        return Affected()
    try:
        per_task = task_files(config_file)
    except InputError:
        if shared:
            return Affected(shared=shared)
        raise
    out: dict[str, list[str]] = {}
    for name, task_inputs in per_task.items():
        hits = list(shared)
        for rel in task_inputs:
            path = (root / rel).resolve()
            if path in given and given[path] not in hits:
                hits.append(given[path])
        if hits:
            out[name] = hits
    return Affected(out, shared)


# -------------------------------------------------------------------------------------------- gate


def _no_model_message(lm: LMConfig) -> str:
    return (f"set {lm.api_key_env} (the variable lm.api_key_env names), or lm.base_url in gepa.yaml / "
            "OPENAI_BASE_URL for another OpenAI-compatible server, or lm.provider: local")


@dataclass
class TaskVerdict:
    """The gate's decision for one task, and the lines that explain it."""

    task: str
    status: str  # "pass", "fail", "skip"
    lines: list[str] = field(default_factory=list)


def judge(result: TaskResult, entry: Entry, what_changed: list[str], tolerance: float) -> TaskVerdict:
    """Compare a fresh val scoring with the record: FAIL when the mean dropped more than `tolerance`."""
    from .render.terminal import quoted  # here, not at the top: `hook check` must not load the LM client

    name = result.task.name
    now, base = result.mean_score, entry.val_score
    if now is None or base is None:
        missing = "the val split is empty now" if now is None else "its baseline has no val score"
        return TaskVerdict(name, "skip", [f"warning: gate: task '{name}': {missing}; nothing to compare "
                                          f"(run `gepa-tune eval --update-baseline {name}`)"])
    delta = now - base
    failed = delta < -tolerance - EPSILON
    verdict = "FAIL" if failed else "PASS"
    lines = [f"{name}: val {base:.3f} → {now:.3f} ({delta:+.3f}, tolerance {tolerance:.3f}) {verdict}"
             f"  [{'; '.join(what_changed)}]"]
    regressions = [(t, entry.val_instances[t.instance_id]) for t in result.traces
                   if t.instance_id in entry.val_instances and t.score < entry.val_instances[t.instance_id] - EPSILON]
    for trace, before in regressions[:MAX_REGRESSIONS_SHOWN]:
        lines.append(f"  regressed {trace.instance_id}: {before:.2f} → {trace.score:.2f}  {quoted(trace.output, 40)}"
                     f"  {quoted(trace.feedback, 70)}")
    if len(regressions) > MAX_REGRESSIONS_SHOWN:
        lines.append(f"  … and {len(regressions) - MAX_REGRESSIONS_SHOWN} more regressed instances")
    return TaskVerdict(name, "fail" if failed else "pass", lines)


def resolve_tolerance(workspace: Workspace, option: float | None) -> float:
    """--tolerance wins over `gate: {tolerance}` in gepa.yaml, which wins over the default."""
    if option is not None:
        return option
    gate = getattr(workspace, "gate", None)
    value = getattr(gate, "tolerance", None)
    return DEFAULT_TOLERANCE if value is None else float(value)


def run_gate(workspace: Workspace, tasks: list[Task], baseline: Baseline | None, *, tolerance: float,
             strict: bool = False, use_cache: bool = True, out: Echo = print, err: Echo = print,
             environ: Mapping[str, str] | None = None) -> int:
    """Gate `tasks` against `baseline`; returns the exit code (0 pass or skipped, 1 a regression).

    `--strict` problems (no baseline, no model) raise `InputError` (exit 2) before any call is made.
    """
    env = os.environ if environ is None else environ
    lock = LOCK_NAME
    to_score: list[tuple[Task, Entry, list[str]]] = []
    for task in tasks:
        entry = baseline.tasks.get(task.name) if baseline is not None else None
        if entry is None:
            where = lock if baseline is not None else f"{lock} (there is none)"
            if strict:
                raise InputError(lock, f"task '{task.name}' has no baseline, so the gate cannot compare",
                                 hint=f"run `gepa-tune eval --update-baseline {task.name}` and commit {lock}")
            err(f"warning: gate: task '{task.name}' has no baseline in {where}; not checked. Record one with "
                f"`gepa-tune eval --update-baseline {task.name}` and commit {lock}")
            continue
        what = changes(task, entry)
        if not what:
            out(f"{task.name}: unchanged since its baseline (val "
                f"{'n/a' if entry.val_score is None else format(entry.val_score, '.3f')}) PASS")
            continue
        to_score.append((task, entry, what))
    if not to_score:
        return 0
    names = ", ".join(t.name for t, _, _ in to_score)
    if not model_configured(workspace.lm, env):
        if strict:
            display = workspace.relative(workspace.config_file)
            line = load_yaml(workspace.config_file, display).line(("lm",))  # where a user would add base_url
            raise InputError(display, f"no model configured, so the gate cannot re-score {names}", line=line,
                             key="lm", hint=_no_model_message(workspace.lm))
        err(f"warning: gate SKIPPED for {names}: no model configured, so the changed prompts were NOT checked "
            f"for regressions; {_no_model_message(workspace.lm)} (--strict makes this an error)")
        return 0
    from .scoring import run_eval

    results, usage = run_eval(workspace, [t for t, _, _ in to_score], "val", use_cache=use_cache)
    verdicts = [judge(result, entry, what, tolerance)
                for result, (_, entry, what) in zip(results, to_score, strict=True)]
    for verdict in verdicts:
        for line in verdict.lines:
            (err if line.startswith("warning:") else out)(line)
    out(f"usage: {usage.summary()}")
    unjudged = [v.task for v in verdicts if v.status == "skip"]
    if strict and unjudged:
        raise InputError(lock, f"nothing to compare for {', '.join(unjudged)} (no val instances now or in the "
                               "baseline)", hint="give the eval set val instances, then run "
                                                 f"`gepa-tune eval --update-baseline {' '.join(unjudged)}`")
    failed = [v.task for v in verdicts if v.status == "fail"]
    if failed:
        err(f"gate: val score of {', '.join(failed)} dropped more than {tolerance:.3f} below the baseline; "
            f"fix the prompt, or accept the new score with `gepa-tune eval --update-baseline "
            f"{' '.join(failed)}` and commit {lock}")
        return 1
    return 0
