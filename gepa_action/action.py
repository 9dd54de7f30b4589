"""`gepa-tune action`: tune, judge the gain on held-out data, and open or update one pull request.

The flow, and the rules a reviewer can rely on:

1. Tune the chosen tasks (the same run as `gepa-tune tune`, in `.gepa/runs/<id>/`). A matrix job stops
   here (`--no-propose`); a final job takes the matrix's finished runs from disk instead of tuning
   (`--from-runs`: the checks a run folder must pass are in `matrix.py`) and goes on from step 2.
2. A task's evolved templates are *applied* only when its test-split gain clears the threshold
   (default: the 95% CI lower bound of the test delta is above 0). Test never took part in selection.
3. Applied: one commit on top of the base branch's current tip (built without touching the checkout)
   holding the templates and the updated `gepa.lock`, pushed to the PR branch; then the open PR from
   that branch is updated, or one is created. Never two PRs for one branch.
4. Nothing applied: no PR. An open PR from the branch that gepa-tune made and nobody touched is closed
   with a comment that says why.
5. A branch with a commit gepa-tune did not make belongs to a human now: nothing is pushed over it; the
   open PR gets a comment instead.
6. If the base branch changed a tuned file (template, eval set, gepa.yaml) while the run went on, the
   result is stale and nothing is pushed.
7. Before tuning (not after the run is paid for), a pre-flight checks the repository name, that the
   token can see the repository and read its pull requests, and that the remote accepts a push.
8. An identical result is not news: when the open PR's branch already holds exactly this tree (only
   gepa.lock's `written_at`/`written_by` would change), nothing is pushed and the PR is left as it is
   (`operation=unchanged`), so reviews are not dismissed by a no-op force-push.
9. A finding told in a comment (a human commit on the branch, a base that moved) is told once: the
   comment carries a marker, and a later run that finds the same thing looks for it first.
10. Whatever fails, `$GITHUB_OUTPUT` and the job summary are written, so later steps and the run page
    say what happened.
11. Reviewers steer the next run: `/gepa-tune` comments on the open PR from accounts with write access
    become guidance (guidance_sync.py) that the run follows, and the updated `gepa.guidance.yaml` goes
    into the same commit as the templates. With no gain, a PR holding guidance not yet committed is left
    open rather than closed, so the guidance is not lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GepaError, InputError, RunError
from .gitops import TRAILER, Git, Identity
from .guidance import store as guidance_store
from .render.pr_body import MARKER, render_job_summary, render_pr_body
from .render.skipped import skipped_runs_section
from .render.text import GITHUB_LIMIT, inline
from .report.model import Report, TaskReport
from .report.skipped import SkippedRun
from .workspace import Task, Workspace

PR_BODY_LIMIT = GITHUB_LIMIT
FULL_REPORT_PATH = ".gepa-tune/report.md"


# -- the threshold -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """When a gain is real enough to propose: `ci` + bound (the CI's lower end must exceed it) or `mean`
    + bound (the plain test delta must exceed it; for eval sets too small for a useful CI)."""

    kind: str = "ci"
    bound: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Threshold:
        value = (text or "").strip().lower()
        if value in ("", "ci"):
            return cls()
        if value == "any":
            return cls("mean", 0.0)
        match = re.fullmatch(r"(ci|mean)?\s*[:>=]*\s*([-+]?\d*\.?\d+)", value)
        if not match:
            raise InputError(None, f"cannot read '{text}'", key="min-improvement",
                             hint="use a number (the test delta's 95% CI lower bound must exceed it), "
                                  "'mean:0.05' (the mean test delta must exceed it), 'any' or 'ci'")
        return cls(match.group(1) or "ci", float(match.group(2)))

    def describe(self) -> str:
        what = "test delta 95% CI lower bound" if self.kind == "ci" else "mean test delta"
        return f"{what} > {self.bound:g}"

    def verdict(self, task: TaskReport) -> tuple[bool, str]:
        """Whether this task's evolved templates go into the PR, and why (shown to the reviewer)."""
        blocker = task.blocker()
        if blocker == "unfinished":
            return False, f"the run did not finish ({task.status})"
        if blocker == "seed_best":
            return False, "the seed templates stayed best"
        test = task.scores.test
        if blocker == "no_test" or test is None:
            return False, "no test split to measure the gain on"
        if self.kind == "ci" and test.ci95 is None:
            return False, "no confidence interval was computed for the test gain"
        value = test.ci95.low if self.kind == "ci" and test.ci95 is not None else test.delta
        shown = f"{'CI lower bound' if self.kind == 'ci' else 'test delta'} {value:+.3f}"
        if value > self.bound:
            return True, f"{shown} clears {self.describe()}"
        return False, f"{shown} does not clear {self.describe()}"


# -- options and result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionOptions:
    """What to propose and where; how to tune (budget, seed, cache) is the `tune` callable's business."""

    tasks: tuple[str, ...] = ()
    branch: str | None = None
    base: str | None = None
    labels: tuple[str, ...] = ()
    draft: bool = False
    threshold: Threshold = field(default_factory=Threshold)
    commit_message: str | None = None
    title: str | None = None
    base_url: str | None = None
    task_model: str | None = None
    reflection_model: str | None = None
    dry_run: bool = False
    propose: bool = True  # False: tune and keep the run folder (a matrix job)
    from_runs: tuple[Path, ...] = ()  # combine these finished runs instead of tuning (matrix.py)


@dataclass
class ActionResult:
    operation: str  # created / updated / unchanged / closed / none
    improved: bool
    report_path: str
    pr_number: int | None = None
    pr_url: str | None = None
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown as ::warning annotations
    applied: list[str] = field(default_factory=list)
    tune_result: Any = None  # the TuneResult (or matrix.Combined): its report, run folder, outcomes
    skipped: list[SkippedRun] = field(default_factory=list)  # runs --from-runs could not use

    def outputs(self) -> dict[str, str]:
        """The step outputs as action.yml documents them: no PR number or URL with `none`."""
        has_pr = self.operation != "none" and self.pr_number is not None
        return {"pull-request-number": str(self.pr_number) if has_pr else "",
                "pull-request-url": (self.pr_url or "") if has_pr else "",
                "operation": self.operation, "improved": "true" if self.improved else "false",
                "report-path": self.report_path}


def default_branch(tasks: list[Task]) -> str:
    names = "-".join(sorted(t.name for t in tasks))
    return "gepa-tune/" + re.sub(r"[^A-Za-z0-9._-]+", "-", names).strip("-.")[:80]


def apply_overrides(workspace: Workspace, options: ActionOptions) -> Workspace:
    """The Action's model inputs win over gepa.yaml (a task with its own model keeps it)."""
    lm = workspace.lm
    changes = {k: v for k, v in (("base_url", options.base_url), ("task_model", options.task_model),
                                 ("reflection_model", options.reflection_model)) if v}
    if not changes:
        return workspace
    new_lm = dataclasses.replace(lm, **changes)
    tasks = [dataclasses.replace(t, model=new_lm.task_model) if t.model == lm.task_model else t
             for t in workspace.tasks]
    return dataclasses.replace(workspace, lm=new_lm, tasks=tasks)


# -- the flow -------------------------------------------------------------------------------------------


@dataclass
class GitHubContext:
    """Where the PR goes; from the Actions environment, or given by hand."""

    repository: str | None
    token: str | None
    api_url: str
    server_url: str
    run_url: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GitHubContext:
        server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = environ.get("GITHUB_REPOSITORY") or None
        run_id = environ.get("GITHUB_RUN_ID")
        return cls(repository=repo, token=environ.get("GITHUB_TOKEN") or environ.get("GH_TOKEN") or None,
                   api_url=environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
                   server_url=server,
                   run_url=f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None)


def tuned_paths(workspace: Workspace, tasks: list[Task]) -> list[Path]:
    """Every file a result depends on: if the base branch changes one of them, the result is stale."""
    paths = {workspace.config_file, guidance_store.path_for(workspace.config_file)}
    for task in tasks:
        paths.update(workspace.root / m for m in task.modules)
        paths.add(workspace.root / task.eval_set.file)
        metric_file = getattr(task.metric, "file", None)  # a Python metric's source (resolved)
        if metric_file:
            paths.add(Path(metric_file))
    return sorted(paths)


class ActionFlow:
    """One `gepa-tune action` run; each step is a method so the rules above read in order."""

    def __init__(self, workspace: Workspace, options: ActionOptions, github: GitHubContext,
                 environ: Mapping[str, str], log: Callable[[str], None]) -> None:
        self.workspace = workspace
        self.options = options
        self.github = github
        self.environ = environ
        self.log = log
        self.git = Git(workspace.root)
        self.git.use_token(github.token, github.server_url)
        self.identity = Identity.from_env(environ)
        self.outcome: ActionResult | None = None  # what is known so far, for the outputs of a failed run
        self.run_ids: dict[str, str] = {}  # task -> its own run, when runs were combined
        self.skipped: list[SkippedRun] = []
        self.guidance_text: str | None = None  # gepa.guidance.yaml after the PR's comments, when they changed it

    def run(self, tune: Callable[[Workspace, list[Task]], Any]) -> ActionResult:
        tasks = self.workspace.select(self.options.tasks)
        branch = self.options.branch or default_branch(tasks)
        base = self.options.base or self._default_base()
        snapshot = {path: p.read_text(encoding="utf-8") for p in tuned_paths(self.workspace, tasks)
                    if p.exists() and not (path := self.git.path_in_repo(p)).startswith("../")}
        if not self.options.dry_run and self.options.propose:
            self._preflight(branch)  # fail on a wrong repository, token or permission before paying for a run
            tasks = self._read_guidance(branch, base, tasks)

        result = tune(self.workspace, tasks)
        return self._conclude(result, Path(result.run.path), branch, base, snapshot)

    def run_from_runs(self) -> ActionResult:
        """The propose half alone, on runs finished by other jobs (a matrix): one PR, one commit."""
        from .matrix import combine, describe, write_combined

        combined = combine(self.workspace, self.options.from_runs, selected=self.options.tasks)
        for line in describe(combined):
            self.log(line)
        self.run_ids, self.skipped = combined.run_ids, combined.skipped
        if not combined.runs:
            raise RunError(f"none of the {len(combined.skipped)} run(s) given to --from-runs can be used; "
                           "the reasons are above and in the job summary")
        # The branch is named after every task asked for, not the ones that happened to finish, so a failed
        # job does not move the proposal to another branch (and another pull request).
        branch = self.options.branch or default_branch(self.workspace.select(self.options.tasks))
        base = self.options.base or self._default_base()
        tasks = self.workspace.select([t.task for t in combined.report.tasks])
        snapshot = {path: p.read_text(encoding="utf-8") for p in tuned_paths(self.workspace, tasks)
                    if p.exists() and not (path := self.git.path_in_repo(p)).startswith("../")}
        if not self.options.dry_run:
            self._preflight(branch)
        return self._conclude(combined, write_combined(self.workspace, combined), branch, base, snapshot)

    def _conclude(self, result: Any, run_path: Path, branch: str, base: str,
                  snapshot: dict[str, str]) -> ActionResult:
        """Judge each task's gain, write the PR body, then propose or withdraw (the propose half)."""
        report = result.report
        report_rel = self.workspace.relative(run_path / "report.md")
        verdicts = {t.task: self.options.threshold.verdict(t) for t in report.tasks}
        applied = [name for name, (ok, _) in verdicts.items() if ok]
        for name, (ok, why) in verdicts.items():
            self.log(f"{name}: {'apply' if ok else 'keep the seed'}: {why}")
        outcome = ActionResult("none", bool(applied), report_rel, applied=applied, tune_result=result,
                               skipped=list(self.skipped))
        outcome.warnings.extend(f"{s.task or '(unknown task)'}: run {s.run} not used: {s.reason}"
                                for s in self.skipped)
        self.outcome = outcome
        full_link = f"{self.github.server_url}/{self.github.repository}/blob/{branch}/{FULL_REPORT_PATH}"
        body = render_pr_body(report, applied=applied, threshold=self.options.threshold.describe(),
                              run_url=self.github.run_url, full_report=full_link, limit=PR_BODY_LIMIT,
                              skipped=self.skipped)
        (run_path / "pr-body.md").write_text(body.text, encoding="utf-8")
        if self.options.dry_run:
            outcome.messages.append(f"dry run: the PR body is in {self.workspace.relative(run_path / 'pr-body.md')}")
            return outcome
        if not self.options.propose:
            outcome.messages.append(f"tune only: the run folder is {self.workspace.relative(run_path)}; combine it "
                                    "with others by `gepa-tune action --from-runs DIR`")
            return outcome
        if applied:
            self._propose(report, applied, branch, base, body, snapshot, run_path, outcome)
        else:
            self._withdraw(report, branch, base, verdicts, outcome)
        return outcome

    # -- steps --

    def _default_base(self) -> str:
        return (self.environ.get("GITHUB_BASE_REF") or self.environ.get("GITHUB_REF_NAME")
                or self.git.current_branch() or "main")

    def _preflight(self, branch: str) -> None:
        """Seconds, not a paid run: the repository, the token and its permissions, the remote's push."""
        self._pull_requests().preflight()
        self.git.can_push(branch)

    def _read_guidance(self, branch: str, base: str, tasks: list[Task]) -> list[Task]:
        """The tasks with the guidance of the open gepa-tune PR's `/gepa-tune` comments added (see
        guidance_sync.py); gepa.guidance.yaml's new text is kept for the commit when it changed."""
        from .guidance_sync import sync

        prs = self._pull_requests()
        pr = prs.find_open(branch, base)
        if pr is None or MARKER not in (pr.body or ""):
            return tasks
        paths = {t.name: {self.git.path_in_repo(self.workspace.root / m) for m in t.modules} for t in tasks}
        synced = sync({t.name: t.guidance.items for t in self.workspace.tasks}, prs.reviewer_comments(pr.number),
                      prs.permission, paths)
        for ignored in synced.ignored:
            self.log(f"guidance: ignored a comment by {ignored.author or 'unknown'}: {ignored.reason}")
        if synced.changed:
            self.guidance_text = guidance_store.dumps(synced.items)
        self.workspace = dataclasses.replace(self.workspace, tasks=[
            dataclasses.replace(t, guidance=synced.per_task[t.name]) if t.name in synced.per_task else t
            for t in self.workspace.tasks])
        return self.workspace.select([t.name for t in tasks])

    def _pull_requests(self) -> Any:
        from .github import InvalidRepository, PullRequests, check_repository

        if not self.github.repository:
            raise InputError(None, "no repository to open the pull request in", key="repository",
                             hint="set GITHUB_REPOSITORY=owner/name (Actions sets it) or use --dry-run")
        try:
            check_repository(self.github.repository)
        except InvalidRepository:
            raise InputError(None, f"'{self.github.repository[:100]}' is not 'owner/name'", key="repository",
                             hint="set GITHUB_REPOSITORY=owner/name (Actions sets it) or use --dry-run") from None
        if not self.github.token:
            raise InputError(None, "no GitHub token", key="github-token",
                             hint="set GITHUB_TOKEN (the action passes the workflow token) or use --dry-run")
        if not hasattr(self, "_prs"):
            self._prs = PullRequests(self.github.repository, self.github.token, api_url=self.github.api_url)
        return self._prs

    def _ownership(self, branch: str, base_tip: str) -> tuple[str | None, list[str]]:
        """The remote branch's tip and the commits on it that gepa-tune did not make."""
        remote = self.git.remote_sha(branch)
        if remote is None:
            return None, []
        self.git.fetch(branch)
        foreign = [f"{c.sha[:7]} by {c.author_name}" for c in self.git.commits(base_tip, remote)
                   if not c.made_by(self.identity)]
        return remote, foreign

    def _propose(self, report: Report, applied: list[str], branch: str, base: str, body: Any,
                 snapshot: dict[str, str], run_path: Path, outcome: ActionResult) -> None:
        prs = self._pull_requests()
        base_tip = self.git.fetch(base)
        stale = [p for p, text in snapshot.items() if self.git.show(base_tip, p) != text]
        pr = prs.find_open(branch, base)
        if stale:
            message = (f"{MARKER}\ngepa-tune did not update this branch: `{base}` changed "
                       f"{', '.join(f'`{p}`' for p in stale[:5])} since the tuned files were read, so the "
                       f"result is stale. The next run tunes the new version.")
            self._tell(pr, message, f"stale {base_tip} {' '.join(stale)}", outcome,
                       f"not pushed: {base} changed {', '.join(stale[:5])} during the run "
                       "(or the checkout had uncommitted changes); re-run on the new base")
            return
        remote, foreign = self._ownership(branch, base_tip)
        if foreign:
            message = (f"{MARKER}\ngepa-tune found a better prompt (run `{report.run_id}`) but did not push: "
                       f"branch `{branch}` has commits it did not make ({', '.join(foreign[:5])}). Merge or "
                       f"close this pull request, or delete the branch, and the next run will propose again.")
            self._tell(pr, message, f"foreign {remote}", outcome,
                       f"not pushed: branch {branch} has commits gepa-tune did not make: {', '.join(foreign[:5])}")
            return
        files = self._files(report, applied, base_tip, body, run_path)
        title = self.options.title or self._title(report, applied)
        if pr is not None and remote is not None and self._same_proposal(remote, base_tip, files, pr, title):
            outcome.operation, outcome.pr_number, outcome.pr_url = "unchanged", pr.number, pr.url
            outcome.messages.append(f"pull request #{pr.number} unchanged: its branch already holds this result "
                                    f"({pr.url})")
            missing = [label for label in self.options.labels if label not in pr.labels]
            if missing:  # a label asked for since: added, which neither pushes nor edits the body
                outcome.warnings.extend(prs.update(pr.number, labels=missing).warnings)
            return
        sha = self.git.commit_files(base_tip, files, self._commit_message(report, applied), self.identity)
        self.git.push(sha, branch, replace=remote)
        if pr is not None:
            info = prs.update(pr.number, title=title, body=body.text, labels=list(self.options.labels))
            outcome.operation = "updated"
        else:
            info, outcome.operation = prs.create(branch=branch, base=base, title=title, body=body.text,
                                                 draft=self.options.draft, labels=list(self.options.labels))
        outcome.pr_number, outcome.pr_url = info.number, info.url
        outcome.messages.append(f"pull request #{info.number} {outcome.operation}: {info.url}")
        outcome.warnings.extend(info.warnings)

    def _same_proposal(self, remote: str, base_tip: str, files: dict[str, str], pr: Any, title: str) -> bool:
        """Whether the branch's tip already proposes this result: our one commit on the current base, with
        the same tree once gepa.lock's `written_at`/`written_by` (and the cut-off full report's run
        details) are set aside, and the same title."""
        from . import baseline

        if self.git.parents(remote) != [base_tip] or pr.title != title:
            return False
        candidate = dict(files)
        for path, text in files.items():
            old = self.git.show(remote, path)
            if old is None or old == text:
                continue
            if path == FULL_REPORT_PATH:
                candidate[path] = old  # the full report of an identical result differs in its run id only
            elif path == self.git.path_in_repo(baseline.lock_path(self.workspace.root)):
                try:
                    same = _lock_without_stamps(baseline.parse(old)) == _lock_without_stamps(baseline.parse(text))
                except InputError:
                    same = False
                if same:
                    candidate[path] = old
        return self.git.tree_with(base_tip, candidate) == self.git.tree_of(remote)

    def _withdraw(self, report: Report, branch: str, base: str,
                  verdicts: dict[str, tuple[bool, str]], outcome: ActionResult) -> None:
        prs = self._pull_requests()
        pr = prs.find_open(branch, base)
        if pr is None:
            outcome.messages.append("no gain cleared the threshold: no pull request")
            return
        if MARKER not in (pr.body or ""):
            outcome.messages.append(f"no gain; pull request #{pr.number} was not made by gepa-tune: left open")
            return
        _, foreign = self._ownership(branch, self.git.fetch(base))
        if foreign:
            outcome.messages.append(f"no gain; pull request #{pr.number} has commits by others: left open")
            return
        if self.guidance_text is not None:  # closing would lose the reviewers' new guidance with the PR
            finding = f"guidance pending {hashlib.sha256(self.guidance_text.encode()).hexdigest()}"
            self._tell(pr, f"{MARKER}\nRun `{report.run_id}` followed the new reviewer guidance but found no gain "
                           "that clears the threshold. This pull request stays open so the guidance is kept "
                           "for the next run.", finding, outcome,
                       f"no gain; pull request #{pr.number} left open: it holds reviewer guidance not yet committed")
            return
        reasons = "\n".join(f"- `{name}`: {why}" for name, (_, why) in verdicts.items())
        comment = (f"{MARKER}\nClosing: run `{report.run_id}` found no gain that clears the threshold "
                   f"({self.options.threshold.describe()}), so this proposal no longer stands.\n\n{reasons}\n\n"
                   "gepa-tune opens a new pull request when a later run finds one.")
        info = prs.close(pr.number, comment)
        outcome.operation, outcome.pr_number, outcome.pr_url = "closed", info.number, info.url
        outcome.messages.append(f"pull request #{info.number} closed: no gain cleared the threshold")

    def _tell(self, pr: Any, comment: str, finding: str, outcome: ActionResult, message: str) -> None:
        """Log `message`; comment on the open PR, once per `finding` (the marker holds its hash)."""
        if pr is not None:
            marker = f"<!-- gepa-tune:finding {hashlib.sha256(finding.encode()).hexdigest()[:16]} -->"
            if not self._pull_requests().comment_once(pr.number, comment, marker):
                message += f" (already said on pull request #{pr.number})"
        outcome.messages.append(message)
        outcome.warnings.append(message)

    def _files(self, report: Report, applied: list[str], base_tip: str, body: Any,
               run_path: Path) -> dict[str, str]:
        """Repo path -> text for the commit: evolved templates, gepa.lock, and the full report if cut."""
        files: dict[str, str] = {}
        for task in report.tasks:
            if task.task not in applied or task.best is None:
                continue
            for module in task.best.changed_modules:
                text = task.best.templates[module]
                path = self.git.path_in_repo(self.workspace.root / module)
                files[path] = text if text.endswith("\n") else text + "\n"
        lock_path, lock_text = self._lock_text(report, applied, base_tip)
        files[lock_path] = lock_text
        if self.guidance_text is not None:  # reviewers' new guidance goes in with the templates it shaped
            files[self.git.path_in_repo(guidance_store.path_for(self.workspace.config_file))] = self.guidance_text
        if body.truncated:
            files[FULL_REPORT_PATH] = (run_path / "report.md").read_text(encoding="utf-8")
        return files

    def _lock_text(self, report: Report, applied: list[str], base_tip: str) -> tuple[str, str]:
        """gepa.lock as on the base branch, with the applied tasks' entries replaced by the evolved scores,
        so the pre-commit gate compares later edits against what this PR brings in."""
        from . import baseline

        path = self.git.path_in_repo(baseline.lock_path(self.workspace.root))
        on_base = self.git.show(base_tip, path)
        current = baseline.parse(on_base) if on_base is not None else baseline.Baseline()
        tasks = {t.name: t for t in self.workspace.tasks}
        entries = {t.task: baseline.entry_from_report(tasks[t.task], t, run_id=self.run_ids.get(t.task, report.run_id))
                   for t in report.tasks if t.task in applied}
        return path, baseline.dumps(current.merged(entries))

    def _commit_message(self, report: Report, applied: list[str]) -> str:
        lines = []
        for task in report.tasks:
            if task.task in applied and task.scores.test is not None and task.best is not None:
                test, es = task.scores.test, task.eval_set
                run = f", run {self.run_ids[task.task]}" if task.task in self.run_ids else ""
                lines.append(f"- {task.task}: test {test.seed:.3f} -> {test.best:.3f} on "
                             f"{es.name}@{es.version} ({', '.join(task.best.changed_modules)}{run})")
        subject = self.options.commit_message or f"gepa-tune: evolve prompts of {', '.join(applied)}"
        return (f"{subject}\n\n" + "\n".join(lines) + f"\n\nThreshold: {self.options.threshold.describe()}\n\n"
                f"{TRAILER}: {report.run_id}\n")

    def _title(self, report: Report, applied: list[str]) -> str:
        parts = []
        for task in report.tasks:
            if task.task in applied and task.scores.test is not None:
                parts.append(f"{task.task} {task.scores.test.delta:+.2f}")
        return f"gepa-tune: evolved prompts ({', '.join(parts)} on test)"


def _lock_without_stamps(lock: Any) -> dict[str, Any]:
    """gepa.lock's entries without the fields that change on every write (when and by which run)."""
    return {name: {**entry.to_dict(), "written_at": "", "written_by": ""} for name, entry in lock.tasks.items()}


def load_for_action(load: Callable[[], Workspace], options: ActionOptions, environ: dict[str, str]) -> Workspace:
    """Load the workspace and put the Action's API key where the config expects it."""
    workspace = apply_overrides(load(), options)
    key = environ.get("GEPA_TUNE_API_KEY")
    if key and not environ.get(workspace.lm.api_key_env):
        os.environ[workspace.lm.api_key_env] = key
    return workspace


def _annotation_root(config_dir: Path) -> Path | None:
    """The workspace folder relative to the repository, so annotations point at the right file."""
    try:
        return Path(os.path.relpath(config_dir.resolve(), Git(config_dir).root.resolve()))
    except Exception:  # noqa: BLE001 - no git here: annotate with the path as the error names it
        return None


def run_action(load: Callable[[], Workspace], config_dir: Path, options: ActionOptions,
               log: Callable[[str], None], tune: Callable[[Workspace, list[Task]], Any]) -> ActionResult:
    """The whole `gepa-tune action`, including the runner side channels (masks, annotations, outputs,
    job summary). `tune` runs the tasks and returns a TuneResult (the CLI passes `run_tune`)."""
    from .gha import Runner

    environ = dict(os.environ)
    runner = Runner(environ)
    for secret in (environ.get("GEPA_TUNE_API_KEY"), environ.get("GITHUB_TOKEN"), environ.get("GH_TOKEN")):
        runner.mask(secret)
    flow: ActionFlow | None = None
    try:
        workspace = load_for_action(load, options, environ)
        runner.mask(os.environ.get(workspace.lm.api_key_env))
        flow = ActionFlow(workspace, options, GitHubContext.from_env(environ), environ, log)
        result = flow.run_from_runs() if options.from_runs else flow.run(tune)
    except Exception as error:  # a bug too: later steps still get outputs and a summary, then it surfaces
        if isinstance(error, InputError):
            runner.annotate(error, _annotation_root(config_dir))
        _report_failure(runner, error, flow.outcome if flow is not None else None, options, flow)
        raise
    runner.set_outputs(result.outputs())
    shown = result.operation if options.propose or options.dry_run else "tune-only"  # the output stays "none"
    runner.add_summary(render_job_summary(result.tune_result.report, applied=result.applied,
                                          threshold=options.threshold.describe(), operation=shown,
                                          pr_url=result.pr_url, skipped=result.skipped))
    for message in result.messages:
        log(message)
    for warning in result.warnings:
        if warning not in result.messages:
            log(f"warning: {warning}")
        runner.warning(warning)
    return result


def _report_failure(runner: Any, error: Exception, outcome: ActionResult | None, options: ActionOptions,
                    flow: ActionFlow | None = None) -> None:
    """Outputs and a job summary for a failed step too: later steps (and people) see what happened.

    The outputs say `none` unless a PR was already created or updated before the failure."""
    if outcome is not None and outcome.operation != "none" and outcome.pr_number is not None:
        runner.set_outputs(outcome.outputs())
    else:
        runner.set_outputs({"operation": "none", "improved": "true" if outcome and outcome.improved else "false",
                            "pull-request-number": "", "pull-request-url": "",
                            "report-path": outcome.report_path if outcome else ""})
    parts = []
    if outcome is not None and outcome.tune_result is not None:
        parts.append(render_job_summary(outcome.tune_result.report, applied=outcome.applied,
                                        threshold=options.threshold.describe(), operation=outcome.operation,
                                        pr_url=outcome.pr_url, skipped=outcome.skipped).rstrip("\n"))
    else:
        parts.append("## gepa-tune")
        if flow is not None and flow.skipped:  # --from-runs found no usable run: say which and why
            parts.append(skipped_runs_section(flow.skipped))
    text = str(error) if isinstance(error, GepaError) else f"{type(error).__name__} (a bug: see the log)"
    parts.append(f"**Failed:** {inline(text, 2000)}")
    runner.add_summary("\n\n".join(parts))
