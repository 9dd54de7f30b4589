"""`gepa-tune watch`: the drift watch's flow around `watch.run_watch`: the drift issue, the runner's side
channels (masks, outputs, job summary) and drift.json.

The issue's life, one per workspace:

* drift and no open issue: one is opened, labelled (default `gepa-tune-drift`); when another watch
  opened one at the same moment, ours is closed as its duplicate and the older one is updated;
* drift and an open issue: its body is rewritten with today's numbers; when the finding changed (other
  tasks, other means, other instances), a short comment says so, so subscribers hear of it once, not on
  every scheduled run;
* no drift and an open issue: a comment says the scores recovered, and the issue is closed;
* a task the open issue is about could not be compared this time (skipped: it changed since its record,
  or lost its record): the issue is left as it is; nothing can be said about that task's recovery.

The look-up happens before any eval call, so a wrong repository, token or permission fails in seconds
instead of after the scoring was paid for.

Exit code: 0 whether or not drift was found (drift is a finding reported through the issue, the
`drifted` output and the job summary, not a failure of the step); 1 when the run failed (endpoint,
GitHub), 2 on bad input.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GepaError, InputError
from .render.drift import render_issue_body, render_recovery_comment, render_update_comment, render_watch_summary
from .render.text import inline
from .report.drift import STEADY, DriftReport
from .watch import fingerprint, run_watch, tune_command

DEFAULT_LABEL = "gepa-tune-drift"
#: A workflow file name as `gh workflow run` and the Actions URL take it.
WORKFLOW_FILE = re.compile(r"[A-Za-z0-9_.-]{1,100}\.ya?ml")
#: Where the latest watch's findings are written, relative to the workspace root.
DRIFT_JSON = Path(".gepa") / "watch" / "drift.json"


@dataclass(frozen=True)
class WatchOptions:
    tasks: tuple[str, ...] = ()
    tolerance: float | None = None
    issue: bool = False  # open / update / close the drift issue on GitHub
    label: str = DEFAULT_LABEL
    use_cache: bool = True
    base_url: str | None = None
    task_model: str | None = None
    tune_workflow: str | None = None  # the tuning workflow's file name, for the issue's dispatch line


@dataclass
class WatchOutcome:
    report: DriftReport | None = None
    operation: str = "none"  # created / updated / unchanged / closed / none
    issue_number: int | None = None
    issue_url: str | None = None
    report_path: str = ""
    messages: list[str] = field(default_factory=list)

    def outputs(self) -> dict[str, str]:
        drifted = self.report.drifted if self.report is not None else ()
        return {"drifted": "true" if drifted else "false",
                "drifted-tasks": " ".join(t.task for t in drifted),
                "issue-number": str(self.issue_number) if self.issue_number is not None else "",
                "issue-url": self.issue_url or "",
                "issue-operation": self.operation,
                "report-path": self.report_path}


def marker_for(workspace: Any) -> str:
    """The HTML comment that marks this workspace's drift issue (its config's path in the repository)."""
    from .gitops import Git

    try:
        where = Git(workspace.root).path_in_repo(workspace.config_file)
    except Exception:  # noqa: BLE001 - not in git (a run by hand): the file name is all there is
        where = workspace.config_file.name
    digest = hashlib.sha256(where.encode("utf-8")).hexdigest()[:12]
    return f"<!-- gepa-tune:drift {digest} -->"


def _state_marker(report: DriftReport) -> str:
    """The finding's fingerprint and the drifted tasks (task names cannot contain `>`: see workspace)."""
    names = ",".join(t.task for t in report.drifted)
    return f"<!-- gepa-tune:drift-state {fingerprint(report)} tasks={names} -->"


def _tasks_in(body: str) -> set[str]:
    """The drifted tasks an open issue was last written for (empty if its body has no state marker)."""
    match = re.search(r"<!-- gepa-tune:drift-state \w+ tasks=([^ >]*) -->", body)
    return set(filter(None, match.group(1).split(","))) if match else set()


def sync_issue(issues: Any, existing: Any, report: DriftReport, *, marker: str, label: str,
               run_url: str | None, outcome: WatchOutcome, dispatch: tuple[str, str] | None = None) -> None:
    """Open, update, or close the drift issue so that it tells what `report` found (see the module doc)."""
    if report.drifted:
        state = _state_marker(report)
        body = render_issue_body(report, markers=f"{marker}\n{state}", tune_command=tune_command(report),
                                 run_url=run_url, dispatch=dispatch)
        title = "gepa-tune: prompt scores drifted (" + ", ".join(t.task for t in report.drifted)[:200] + ")"
        if existing is None:
            info = issues.open_issue(title=title, body=body, labels=[label])
            outcome.operation = "created"
            oldest = issues.find_marked(label, marker)
            if oldest is not None and oldest.number != info.number:  # another watch opened one meanwhile
                issues.close_issue(info.number, f"Duplicate of #{oldest.number}: two watches ran at once.",
                                   reason="not_planned")
                info = issues.edit_issue(oldest.number, title=title, body=body)
                outcome.operation = "updated"
        else:
            changed = state not in existing.body
            info = issues.edit_issue(existing.number, title=title, body=body)
            if changed:
                issues.comment_issue(existing.number, render_update_comment(report, run_url))
            outcome.operation = "updated" if changed else "unchanged"
        outcome.issue_number, outcome.issue_url = info.number, info.url
        outcome.messages.append(f"drift issue #{info.number} {outcome.operation}: {info.url}")
        return
    if existing is None:
        return
    steady = {t.task for t in report.tasks if t.status == STEADY}
    about = _tasks_in(existing.body)  # empty for a body without the state marker: then any steady task will do
    unknown = sorted(about - steady) if about else ([] if steady else ["every task"])
    if unknown:  # a task the issue is about was skipped this time: nothing can be said about its recovery
        outcome.issue_number, outcome.issue_url = existing.number, existing.url
        outcome.messages.append(f"drift issue #{existing.number} left open: {', '.join(unknown)} could not be "
                                "compared this time")
        return
    info = issues.close_issue(existing.number, render_recovery_comment(report, run_url))
    outcome.operation, outcome.issue_number, outcome.issue_url = "closed", info.number, info.url
    outcome.messages.append(f"drift issue #{info.number} closed: the scores recovered")


def _issues(github: Any) -> Any:
    from .github import InvalidRepository, check_repository
    from .github_issues import Issues

    hint = "set GITHUB_REPOSITORY=owner/name (Actions sets it), or drop --issue"
    if not github.repository:
        raise InputError(None, "no repository to open the drift issue in", key="repository", hint=hint)
    try:
        check_repository(github.repository)
    except InvalidRepository:
        raise InputError(None, f"'{github.repository[:100]}' is not 'owner/name'", key="repository",
                         hint=hint) from None
    if not github.token:
        raise InputError(None, "no GitHub token", key="github-token",
                         hint="set GITHUB_TOKEN (the action passes the workflow token), or drop --issue")
    return Issues(github.repository, github.token, api_url=github.api_url)


def watch(load: Callable[[], Any], options: WatchOptions, environ: Mapping[str, str],
          progress: Callable[[str, int, int], None] | None = None, outcome: WatchOutcome | None = None,
          ) -> WatchOutcome:
    """The whole watch: score, compare, write drift.json, then (with `options.issue`) sync the issue.

    `outcome` is filled in as the watch goes, so a caller whose watch failed half-way (GitHub refused
    the issue after the scoring) still knows what was found."""
    from . import baseline
    from .action import ActionOptions, GitHubContext, load_for_action
    from .paths import confine, write_inside

    workspace = load_for_action(load, ActionOptions(base_url=options.base_url, task_model=options.task_model),
                                dict(environ))
    tasks = workspace.select(options.tasks)
    lock = baseline.load(workspace.root)  # a malformed lock stops here, before anything is paid for
    findings = DRIFT_JSON.as_posix()
    confine(workspace.root, findings, findings)  # so does a .gepa/watch that leads outside the workspace
    github = GitHubContext.from_env(environ)
    outcome = outcome if outcome is not None else WatchOutcome()
    issues = existing = None
    marker = marker_for(workspace)
    if options.issue:
        issues = _issues(github)
        existing = issues.find_marked(options.label, marker)
    report = run_watch(workspace, tasks, lock, tolerance=options.tolerance, use_cache=options.use_cache,
                       progress=progress)
    outcome.report = report
    write_inside(workspace.root, findings, report.dumps(), findings)
    outcome.report_path = findings
    if issues is not None:
        dispatch = None
        if options.tune_workflow:
            page = f"{github.server_url}/{github.repository}/actions/workflows/{options.tune_workflow}"
            dispatch = (options.tune_workflow, page)
        sync_issue(issues, existing, report, marker=marker, label=options.label, run_url=github.run_url,
                   outcome=outcome, dispatch=dispatch)
    return outcome


def run_watch_step(load: Callable[[], Any], options: WatchOptions, log: Callable[[str], None],
                   progress: Callable[[str, int, int], None] | None = None) -> WatchOutcome:
    """`watch` with the runner's side channels: secrets masked first, outputs and a job summary written
    whatever happens (a failed watch says so on the run page)."""
    from .gha import Runner

    environ = dict(os.environ)
    runner = Runner(environ)
    for secret in (environ.get("GEPA_TUNE_API_KEY"), environ.get("GITHUB_TOKEN"), environ.get("GH_TOKEN")):
        runner.mask(secret)
    outcome = WatchOutcome()
    try:
        watch(load, options, environ, progress, outcome)
    except Exception as error:
        runner.set_outputs(outcome.outputs())  # what was found before the failure (drifted, drift.json)
        text = str(error) if isinstance(error, GepaError) else f"{type(error).__name__} (a bug: see the log)"
        head = "## gepa-tune watch"
        if outcome.report is not None:
            head = render_watch_summary(outcome.report, operation=outcome.operation,
                                        issue_url=outcome.issue_url).rstrip("\n")
        runner.add_summary(f"{head}\n\n**Failed:** {inline(text, 2000)}")
        raise
    runner.set_outputs(outcome.outputs())
    assert outcome.report is not None
    runner.add_summary(render_watch_summary(outcome.report, operation=outcome.operation, issue_url=outcome.issue_url))
    for message in outcome.messages:
        log(message)
    if outcome.report.drifted:
        runner.warning(f"drift: {', '.join(t.task for t in outcome.report.drifted)} score lower than in gepa.lock")
    return outcome
