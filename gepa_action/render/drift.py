"""What people read about a drift watch: the issue body, the recovery comment, the job summary and the
terminal lines. Everything from outside (task names, model output, metric feedback, lock stamps) goes
through `render.text`'s escaping here, once; the issue is read by people, never by the tool as orders.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..report.drift import DRIFTED, SKIPPED, DriftReport, SplitScore, TaskDrift
from .text import GITHUB_LIMIT, fmt_score, fmt_signed, inline, plain, table

#: Rows of regressed instances shown per task in the issue (all of them are in drift.json).
MAX_REGRESSION_ROWS = 30
OUTPUT_CHARS = 80
NAME_CHARS = 100
#: Room kept under GitHub's body limit for the markers and for a comment's quoting.
BODY_MARGIN = 2_000


def _scores(split: SplitScore | None) -> str:
    if split is None:
        return "n/a"
    return f"{fmt_score(split.before)} → {fmt_score(split.now)} ({fmt_signed(split.delta)})"


def _split_rows(task: TaskDrift) -> list[list[str]]:
    return [[s.split, fmt_score(s.before), fmt_score(s.now), fmt_signed(s.delta), f"{task.tolerance:g}", str(s.count)]
            for s in task.splits]


def _provenance(task: TaskDrift) -> list[str]:
    lines = []
    if task.models is not None:
        models = [f"task {inline(task.models.task)}"]
        if task.models.judge:
            models.append(f"judge {inline(task.models.judge)}")
        lines.append(f"- Models: {', '.join(models)}")
    if task.eval_set is not None:
        es = task.eval_set
        where = f" ({inline(es.path)})" if es.path else ""
        lines.append(f"- Eval set: {inline(es.name)}@{inline(es.version)} sha256:{inline(es.sha256[:12])}{where}")
    if task.lock_written_at or task.lock_written_by:
        lines.append(f"- Recorded in gepa.lock: {inline(task.lock_written_at or 'unknown')} by "
                     f"{inline(task.lock_written_by or 'unknown')}")
    return lines


def _task_section(task: TaskDrift, max_rows: int) -> str:
    parts = [f"### {inline(task.task, NAME_CHARS)}: {'drifted' if task.drifted else task.status}",
             table(["split", "gepa.lock", "now", "change", "tolerance", "instances"], _split_rows(task),
                   align="lrrrrr"),
             "\n".join(_provenance(task))]
    if task.regressions:
        shown = task.regressions[:max_rows]
        rows = [[r.split, r.id, fmt_score(r.before), fmt_score(r.now), plain(r.output, OUTPUT_CHARS),
                 plain(r.feedback, OUTPUT_CHARS)] for r in shown]
        header = f"Instances that score lower than recorded ({len(task.regressions)}):"
        block = [header]
        if rows:
            block.append(table(["split", "instance", "gepa.lock", "now", "output now", "feedback"], rows,
                               align="llrrll"))
        if len(task.regressions) > len(shown):
            block.append(f"… and {len(task.regressions) - len(shown)} more (see the run's drift.json).")
        parts.append("\n\n".join(block))
    if task.note:
        parts.append(f"Note: {inline(task.note)}")
    return "\n\n".join(p for p in parts if p)


def _others(tasks: Iterable[TaskDrift]) -> str:
    lines = []
    for task in tasks:
        if task.status == SKIPPED:
            lines.append(f"- {inline(task.task, NAME_CHARS)}: skipped: {inline(task.note)}")
        else:
            lines.append(f"- {inline(task.task, NAME_CHARS)}: within tolerance {task.tolerance:g} "
                         f"(val {_scores(task.split('val'))}, test {_scores(task.split('test'))})")
    return "\n".join(lines)


def render_issue_body(report: DriftReport, *, markers: str, tune_command: str, run_url: str | None = None,
                      dispatch: tuple[str, str] | None = None) -> str:
    """The drift issue: per drifted task the scores then and now, the regressed instances, the models,
    the eval set and the record's stamps, then how to re-tune. `markers` (HTML comments) go first.
    `dispatch` is the tuning workflow to start (its file name and its page's URL), when known."""
    for max_rows in (MAX_REGRESSION_ROWS, 5, 0):
        text = _issue_body(report, markers, tune_command, run_url, max_rows, dispatch)
        if len(text) <= GITHUB_LIMIT - BODY_MARGIN:
            return text
    return text[: GITHUB_LIMIT - BODY_MARGIN]


def _issue_body(report: DriftReport, markers: str, tune_command: str, run_url: str | None, max_rows: int,
                dispatch: tuple[str, str] | None) -> str:
    seen = f"[this run]({run_url})" if run_url else "a `gepa-tune watch` run"
    parts = [markers,
             "## The committed prompts score lower than recorded in gepa.lock",
             f"Seen by {seen} at {inline(report.checked_at)}. The prompts, eval sets, metrics and model names of "
             "these tasks are unchanged since their record, so the model behind the name has most likely "
             "changed. Each answer was asked afresh (the response cache was not trusted)."]
    parts.extend(_task_section(task, max_rows) for task in report.drifted)
    others = [t for t in report.tasks if not t.drifted]
    if others:
        parts.append("### Other tasks\n\n" + _others(others))
    command = plain(tune_command).replace("`", "")
    names = " ".join(t.task for t in report.drifted)
    if dispatch is not None:
        workflow, page = dispatch
        where = (f"start the [tuning workflow]({page}) for them: Run workflow with tasks `{names}`, or "
                 f"`gh workflow run {plain(workflow)} -f tasks=\"{names}\"`")
    else:
        where = "run your gepa-tune tuning workflow for them (Actions → the workflow → Run workflow, tasks: " \
                f"`{names}`)"
    parts.append("### What to do\n\n"
                 f"Re-tune the drifted prompts against today's model: {where}; or `{command}` in a clone. "
                 "If the lower scores are acceptable, record them with `gepa-tune eval --update-baseline` and "
                 "commit gepa.lock. This issue is updated by each watch run and closed when the scores recover.")
    return "\n\n".join(parts) + "\n"


def render_update_comment(report: DriftReport, run_url: str | None = None) -> str:
    """A short comment on the open issue when the finding changed (the body holds the details)."""
    seen = f"[this run]({run_url})" if run_url else "the latest watch"
    lines = [f"Still drifted, and the finding changed, as seen by {seen} at {inline(report.checked_at)}:"]
    lines.extend(f"- {inline(t.task, NAME_CHARS)}: val {_scores(t.split('val'))}, test {_scores(t.split('test'))}"
                 for t in report.drifted)
    lines.append("\nThe issue description is updated.")
    return "\n".join(lines)


def render_recovery_comment(report: DriftReport, run_url: str | None = None) -> str:
    """Why the issue is being closed: every compared task is back within its tolerance."""
    seen = f"[this run]({run_url})" if run_url else "the latest watch"
    lines = [f"Scores recovered: {seen} at {inline(report.checked_at)} finds every compared task within its "
             "tolerance of gepa.lock. Closing.", "", _others(report.tasks)]
    return "\n".join(lines)


def render_watch_summary(report: DriftReport, *, operation: str, issue_url: str | None) -> str:
    """Markdown for `$GITHUB_STEP_SUMMARY`: one row per task and what happened to the issue."""
    rows = [[t.task, t.status, _scores(t.split("val")), _scores(t.split("test")), f"{t.tolerance:g}",
             str(len(t.regressions))] for t in report.tasks]
    what = {"created": "opened", "updated": "updated", "unchanged": "left as it is (same finding)",
            "closed": "closed (scores recovered)", "none": "none"}.get(operation, operation)
    issue = f"[{what}]({issue_url})" if issue_url and operation != "none" else what
    parts = ["## gepa-tune watch",
             f"{len(report.drifted)} of {len(report.tasks)} task(s) drifted beyond tolerance. Drift issue: {issue}.",
             table(["task", "status", "val (lock → now)", "test (lock → now)", "tolerance", "regressed"], rows)]
    notes = [f"- {inline(t.task, NAME_CHARS)}: {inline(t.note)}" for t in report.tasks if t.note]
    if notes:
        parts.append("\n".join(notes))
    return "\n\n".join(parts) + "\n"


def render_watch_lines(report: DriftReport, max_regressions: int = 10) -> list[str]:
    """The terminal's account: a line per task, its regressed instances, and the notes."""
    lines = []
    for task in report.tasks:
        name = plain(task.task, NAME_CHARS)
        if task.status == SKIPPED:
            lines.append(f"{name}: skipped: {plain(task.note)}")
            continue
        verdict = "DRIFTED" if task.status == DRIFTED else "ok"
        lines.append(f"{name}: val {_scores(task.split('val'))}, test {_scores(task.split('test'))}, "
                     f"tolerance {task.tolerance:g} {verdict}")
        for r in task.regressions[:max_regressions]:
            lines.append(f"  regressed {r.split} {plain(r.id, 60)}: {r.before:.2f} → {r.now:.2f}  "
                         f"{plain(r.output, 40)!r}")
        if len(task.regressions) > max_regressions:
            lines.append(f"  … and {len(task.regressions) - max_regressions} more regressed instances")
        if task.note:
            lines.append(f"  note: {plain(task.note)}")
    return lines
