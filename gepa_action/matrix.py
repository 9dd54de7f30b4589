"""Combine run folders made by separate jobs into one result: `gepa-tune action --from-runs DIR...`.

A repository with many prompts tunes them in a matrix, one job per task, each uploading its run folder
as an artifact; a final job downloads them all and opens ONE pull request with ONE commit and ONE
gepa.lock update, instead of N pull requests that each rewrite gepa.lock and conflict.

Run folders are untrusted input here: an artifact can be damaged, cut off, made by another commit or
config, or crafted. So, before any of it reaches a commit:

* the folder is walked without following links: a symbolic link or a special file anywhere in it, too
  many files or too many bytes, and the folder is not used;
* run.json must be what `gepa-tune tune` writes, and report.json must pass the report model's checks;
* the run must belong to this workspace: the same config path and the same gepa.yaml bytes, a recorded
  base commit that is the checkout's HEAD or an ancestor of it in which the task's templates, eval set
  and metric file are the same as now, the same template hashes, eval set hash and task model;
* the task must have finished, and its best templates must name only modules the task optimizes, parse,
  and use exactly the seed's variables (the file paths of the commit come from gepa.yaml, never from
  the folder).

A run that fails a check is not an error: its tasks are listed with the reason (`SkippedRun`) in the
PR body and the job summary, and the other runs still propose. Two usable runs of one task are an error
(exit 2): which one is meant is the user's decision, not a guess.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, redact_secrets
from .gitops import Git
from .report.model import Report, TaskReport
from .report.model import load as load_report
from .report.skipped import SkippedRun
from .run_origin import file_sha256
from .runs import check_meta, new_run_id
from .templates import syntax_problem, template_variables
from .tune import fingerprint
from .workspace import Task, Workspace

MAX_RUN_FOLDERS = 256  # a matrix this wide is already past GitHub's 256-job limit per matrix
MAX_SEARCH_DEPTH = 3  # DIR / artifact name / run id
MAX_TREE_DEPTH = 4  # a run folder has state/ one level down; nothing deeper is ours
MAX_ENTRIES = 20_000  # files and folders in one run folder (checkpoints, events, cache-free)
MAX_RUN_BYTES = 512 * 1024 * 1024
MAX_META_BYTES = 1024 * 1024
MAX_REPORT_BYTES = 64 * 1024 * 1024
COMBINED_PREFIX = "combined-"
#: A run id goes into the commit message and gepa.lock: no newline, no space, nothing to inject a trailer.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class UsableRun:
    """A run folder that passed every check, with the task results it contributes."""

    folder: Path
    label: str  # the folder as people see it (see `find_run_folders`)
    run_id: str
    base_commit: str
    report: Report
    tasks: tuple[TaskReport, ...]


@dataclass
class Combined:
    """The runs combined: one report over their tasks, the runs used and those that were not."""

    report: Report
    runs: list[UsableRun]
    skipped: list[SkippedRun] = field(default_factory=list)

    @property
    def run_ids(self) -> dict[str, str]:
        """Task -> the run that tuned it (gepa.lock records each task's own run)."""
        return {t.task: run.run_id for run in self.runs for t in run.tasks}


class _Unusable(Exception):
    """This run folder (or one task of it) cannot be used; the message is the reason shown to people."""

    def __init__(self, reason: str, tasks: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tasks = tuple(tasks)


# -- finding run folders ----------------------------------------------------------------------------------


def find_run_folders(dirs: Sequence[Path]) -> tuple[list[tuple[Path, str]], list[SkippedRun]]:
    """Each DIR is a run folder (it holds run.json) or a folder with run folders below it (as
    `actions/download-artifact` lays them out: DIR/<artifact>/<run id>/). Links are not followed: a
    linked folder is reported, not entered. Each folder comes with its label for people: its path from
    the DIR given (`runs/gepa-tune-run-x-1/<run id>`), not the runner's temporary path."""
    found: list[Path] = []
    skipped: list[SkippedRun] = []
    for given in dirs:
        where = str(given)
        if given.is_symlink():
            raise InputError(where, "is a symbolic link", key="--from-runs",
                             hint="pass the folder the artifacts were downloaded to, not a link to it")
        if not given.is_dir():
            raise InputError(where, "is not a folder", key="--from-runs",
                             hint="pass the folder the run artifacts were downloaded to")
        before = len(found)
        _search(given, 0, found, skipped)
        if len(found) == before and not any(s.run.startswith(where) for s in skipped):
            raise InputError(where, "holds no run folder (no run.json below it)", key="--from-runs",
                             hint="download the tune jobs' artifacts there (actions/download-artifact)")
    if len(found) > MAX_RUN_FOLDERS:
        raise InputError(str(dirs[0]), f"holds more than {MAX_RUN_FOLDERS} run folders", key="--from-runs",
                         hint="combine fewer runs per job")
    unique = {p.resolve(): p for p in found}  # the same folder given twice is one run
    return [(p, _label(p, dirs)) for p in unique.values()], [
        SkippedRun(s.task, _label(Path(s.run), dirs), s.reason) for s in skipped]


def _label(path: Path, dirs: Sequence[Path]) -> str:
    for given in dirs:
        try:
            return (Path(given.name or ".") / path.relative_to(given)).as_posix()
        except ValueError:
            continue
    return path.name


def _search(folder: Path, depth: int, found: list[Path], skipped: list[SkippedRun]) -> None:
    if (folder / "run.json").exists() or (folder / "run.json").is_symlink():
        found.append(folder)
        return
    if depth >= MAX_SEARCH_DEPTH or len(found) > MAX_RUN_FOLDERS:
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append(SkippedRun(None, str(folder), f"cannot be listed: {exc.strerror or exc}"))
        return
    for entry in entries:
        if entry.is_symlink():
            skipped.append(SkippedRun(None, str(folder / entry.name), "is a symbolic link; not followed"))
        elif entry.is_dir(follow_symlinks=False) and not entry.name.startswith(COMBINED_PREFIX):
            _search(folder / entry.name, depth + 1, found, skipped)


# -- checking one folder ----------------------------------------------------------------------------------


def check_tree(folder: Path) -> None:
    """No link, no special file, bounded depth, entries and bytes: a folder safe to read anything from."""
    entries = 0
    total = 0

    def unreadable(error: OSError) -> None:
        raise _Unusable(f"cannot be read ({error.strerror or type(error).__name__})")

    for top, dirs, files in os.walk(folder, followlinks=False, onerror=unreadable):
        if len(Path(top).relative_to(folder).parts) >= MAX_TREE_DEPTH:  # checked before os.walk goes deeper
            raise _Unusable(f"is nested more than {MAX_TREE_DEPTH} folders deep")
        for name in dirs + files:
            entries += 1
            path = Path(top) / name
            if entries > MAX_ENTRIES:
                raise _Unusable(f"holds more than {MAX_ENTRIES} files")
            info = path.lstat()
            relative = path.relative_to(folder).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise _Unusable(f"holds a symbolic link ({relative[:120]}); run folders hold plain files only")
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise _Unusable(f"holds a special file ({relative[:120]})")
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if total > MAX_RUN_BYTES:
                raise _Unusable(f"is larger than {MAX_RUN_BYTES // (1024 * 1024)} MB")


def _read_json(path: Path, limit: int) -> object:
    try:
        size = path.lstat().st_size
        if size > limit:
            raise _Unusable(f"{path.name} is {size:,} bytes, more than {limit:,}")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Unusable(f"has no {path.name}: the job ended before writing it") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Unusable(f"{path.name} cannot be read: {type(exc).__name__}") from None


def task_files(workspace: Workspace, task: Task) -> list[Path]:
    """The files a task's scores depend on, besides gepa.yaml (checked whole)."""
    paths = {workspace.root / m for m in task.modules} | {workspace.root / task.eval_set.file}
    metric_file = getattr(task.metric, "file", None)
    if metric_file:
        paths.add(Path(metric_file))
    return sorted(paths)


class RunChecker:
    """Checks run folders against the workspace as checked out now (its HEAD and its files)."""

    def __init__(self, workspace: Workspace, git: Git, selected: Iterable[str] = ()) -> None:
        self.workspace = workspace
        self.git = git
        self.head = git.head()
        self.config = workspace.relative(workspace.config_file)
        self.config_sha = file_sha256(workspace.config_file)
        self.tasks = {t.name: t for t in workspace.tasks}
        self.selected = set(selected)

    def check(self, folder: Path, label: str) -> tuple[UsableRun | None, list[SkippedRun]]:
        """The usable part of a run folder, and a `SkippedRun` per task (or folder) that is not."""
        names: list[str] = []
        try:
            if folder.is_symlink():
                raise _Unusable("is a symbolic link")
            check_tree(folder)
            meta = _read_json(folder / "run.json", MAX_META_BYTES)
            try:
                check_meta(meta, folder / "run.json")
            except InputError as exc:
                raise _Unusable(f"run.json: {exc.message}") from None
            assert isinstance(meta, dict)
            names = [n for n in meta.get("tasks") or [] if not self.selected or n in self.selected]
            if not meta.get("tasks") or not RUN_ID.fullmatch(str(meta.get("run_id"))):
                raise _Unusable("run.json names no task, or no run id of letters, digits, '.', '_' and '-'")
            if not names:
                return None, []  # tasks the caller did not ask for: not an error, not news
            base = self._check_origin(meta, names)
            report = self._report(folder, meta)
        except _Unusable as exc:
            names = names or _peek_tasks(folder)
            return None, [SkippedRun(n, label, exc.reason) for n in (names or [None])]  # type: ignore[list-item]
        usable: list[TaskReport] = []
        skipped: list[SkippedRun] = []
        for name in names:
            try:
                usable.append(self._check_task(name, meta, report))
            except _Unusable as exc:
                skipped.append(SkippedRun(name, label, exc.reason))
        run = UsableRun(folder, label, str(meta["run_id"]), base, report, tuple(usable)) if usable and report else None
        return run, skipped

    def _check_origin(self, meta: dict, names: list[str]) -> str:
        if meta.get("config") != self.config:
            raise _Unusable(f"made with config {str(meta.get('config'))[:120]!r}, this workspace's is {self.config!r}")
        base = meta.get("base_commit")
        if not isinstance(base, str) or not meta.get("config_sha256"):
            raise _Unusable("run.json records no base commit (made outside a git checkout, or by an older "
                            "gepa-tune); re-run the job")
        if meta["config_sha256"] != self.config_sha:
            raise _Unusable(f"the run read another gepa.yaml than this checkout's (run started at {base[:12]}); "
                            "re-run the job on this commit")
        if base != self.head:
            known = self.git.is_ancestor(base, self.head)
            if known is None:
                raise _Unusable(f"its base commit {base[:12]} is not in this checkout's history (check out "
                                "with fetch-depth: 0, or re-run the job on this commit)")
            if not known:
                raise _Unusable(f"its base commit {base[:12]} is not an ancestor of {self.head[:12]}")
            paths = [self.git.path_in_repo(p) for n in names if n in self.tasks
                     for p in task_files(self.workspace, self.tasks[n])]
            if self.git.changed(base, self.head, paths):
                raise _Unusable(f"the task's files changed between its base commit {base[:12]} and "
                                f"{self.head[:12]}; re-run the job on this commit")
        return base

    def _report(self, folder: Path, meta: dict) -> Report | None:
        path = folder / "report.json"
        if not path.exists():
            status = str(meta.get("status") or "unknown")
            raise _Unusable(f"no report.json: the run did not end ({status[:200]})")
        size = path.lstat().st_size
        if size > MAX_REPORT_BYTES:
            raise _Unusable(f"report.json is {size:,} bytes, more than {MAX_REPORT_BYTES:,}")
        try:
            report = load_report(path)
        except InputError as exc:
            where = f" at {exc.key}" if exc.key else ""
            raise _Unusable(f"report.json{where}: {exc.message}") from None
        if report.run_id != meta["run_id"]:
            raise _Unusable("report.json is of another run than run.json")
        if str(meta.get("status") or "").startswith(("running", "interrupted")):
            raise _Unusable(f"the run did not finish ({meta['status'][:200]})")
        return report

    def _check_task(self, name: str, meta: dict, report: Report | None) -> TaskReport:
        task = self.tasks.get(name)
        if task is None:
            raise _Unusable("gepa.yaml has no task of that name")
        then = (meta.get("fingerprints") or {}).get(name)
        now = fingerprint(task)
        if then != now:
            raise _Unusable(_what_changed(task, then, now))
        result = report.task(name) if report is not None else None
        if result is None:
            status = (meta.get("task_status") or {}).get(name) or meta.get("status") or "unknown"
            raise _Unusable(f"the task produced no result ({str(status)[:300]})")
        if not result.finished:
            raise _Unusable(f"the task did not finish ({result.status[:300]})")
        if result.eval_set.sha256 != task.eval_set.sha256:
            raise _Unusable(f"scored on eval set sha256:{result.eval_set.sha256[:12]}, the repository's is "
                            f"sha256:{task.eval_set.sha256[:12]}")
        if result.models.task != task.model:
            raise _Unusable(f"tuned with task model {str(result.models.task)[:80]!r}, the config says {task.model!r}")
        if result.best is not None:
            _check_templates(task, result)
        return result


def _peek_tasks(folder: Path) -> list[str]:
    """The task names of an unusable folder's run.json, to say whose run it was: read only when run.json
    is a small regular file (not a link), and only names that are plain strings."""
    path = folder / "run.json"
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_META_BYTES:
            return []
        tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks")
    except (OSError, ValueError, AttributeError, RecursionError):
        return []
    return [t[:200] for t in tasks[:50] if isinstance(t, str)] if isinstance(tasks, list) else []


def _what_changed(task: Task, then: object, now: dict) -> str:
    if not isinstance(then, dict):
        return "run.json has no fingerprint of the task"
    if then.get("templates") != now["templates"]:
        return "its seed templates differ from this checkout's"
    if then.get("eval_sha256") != now["eval_sha256"]:
        return f"its eval set differs from this checkout's {task.eval_set.file}"
    return f"it was tuned with another task model than {task.model!r}"


def _check_templates(task: Task, result: TaskReport) -> None:
    """The templates a commit would write: only modules the task optimizes, each parsing and keeping the
    seed's variables (the engine checks this when it adopts a candidate; the folder could be edited)."""
    best = result.best
    assert best is not None
    unknown = [m for m in (*best.templates, *best.changed_modules) if m not in task.modules]
    if unknown:
        raise _Unusable(f"its best candidate names a template the task does not have: {unknown[0][:120]!r}")
    not_optimized = [m for m in best.changed_modules if m not in task.optimize]
    if not_optimized or any(m not in best.templates for m in best.changed_modules):
        raise _Unusable("its best candidate changes a template the task does not optimize")
    for module in best.changed_modules:
        text = best.templates[module]
        problem = syntax_problem(text)
        if problem is not None:
            raise _Unusable(f"its evolved {module} does not parse: {problem[0][:200]}")
        if template_variables(text) != template_variables(task.templates[module].source):
            raise _Unusable(f"its evolved {module} uses other variables than the seed")


# -- combining ---------------------------------------------------------------------------------------------


def combine(workspace: Workspace, dirs: Sequence[Path], *, selected: Sequence[str] = ()) -> Combined:
    """Check every run folder under `dirs` and join the usable tasks into one report."""
    folders, skipped = find_run_folders(dirs)
    checker = RunChecker(workspace, Git(workspace.root), selected)
    runs: list[UsableRun] = []
    for folder, label in folders:
        run, problems = checker.check(folder, label)
        skipped.extend(problems)
        if run is not None:
            runs.append(run)
    owners: dict[str, UsableRun] = {}
    for run in runs:
        for result in run.tasks:
            if result.task in owners:
                first = owners[result.task]
                raise InputError(str(run.folder), f"task '{result.task}' is also tuned by run {first.run_id} "
                                                  f"({first.folder})", key="--from-runs",
                                 hint="pass one finished run per task (remove the older folder)")
            owners[result.task] = run
    # A reason quotes run.json's status, an error message of the job: no secret of it reaches the PR.
    skipped = [SkippedRun(s.task, s.run, redact_secrets(s.reason)) for s in skipped]
    order = {t.name: i for i, t in enumerate(workspace.tasks)}
    results = sorted((t for run in runs for t in run.tasks), key=lambda t: order.get(t.task, len(order)))
    return Combined(combined_report(runs, results), runs, skipped)


def combined_report(runs: Sequence[UsableRun], results: Sequence[TaskReport]) -> Report:
    """One report over the tasks of several runs. Options shared by every run are kept (the PR's reproduce
    command shows them); where the runs differ the option is left out rather than shown wrong."""
    ids = sorted(run.run_id for run in runs)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:6]
    reports = [run.report for run in runs]
    options: dict[str, object] = {}
    if reports:
        first = reports[0].options
        options = {k: v for k, v in first.items() if all(r.options.get(k) == v for r in reports[1:])}
    started = [r.started_at for r in reports if r.started_at]
    finished = [r.finished_at for r in reports if r.finished_at]
    return Report(run_id=f"{COMBINED_PREFIX}{new_run_id()}-{digest}", status="finished",
                  started_at=min(started) if started else None, finished_at=max(finished) if finished else None,
                  options=options, tasks=list(results))


def describe(combined: Combined) -> list[str]:
    """Log lines: which run each task came from (the runs not used are warnings of the Action)."""
    return [f"{t.task}: from run {run.run_id} ({run.label})" for run in combined.runs for t in run.tasks]


def write_combined(workspace: Workspace, combined: Combined) -> Path:
    """`.gepa/runs/<combined id>/` with report.json, report.md (the skipped runs listed) and combine.json
    (which run each task came from), for the job's artifact and for people. It has no run.json: it is
    not a run that `--resume` or `report` could take for one."""
    from .paths import write_inside
    from .render.report_md import render_report
    from .report.model import dumps

    folder = Path(".gepa") / "runs" / combined.report.run_id
    record = {"runs": [{"run_id": r.run_id, "folder": r.label, "base_commit": r.base_commit,
                        "tasks": [t.task for t in r.tasks]} for r in combined.runs],
              "skipped": [{"task": s.task, "run": s.run, "reason": s.reason} for s in combined.skipped]}
    write_inside(workspace.root, folder / "report.json", dumps(combined.report))
    write_inside(workspace.root, folder / "report.md", render_report(combined.report, skipped=combined.skipped))
    write_inside(workspace.root, folder / "combine.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return workspace.root / folder
