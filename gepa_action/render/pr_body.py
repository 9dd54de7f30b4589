"""The pull-request body the Action opens with the evolved prompts, and the shorter job summary.

Input is the typed report as the engine wrote it (`report/model.py`); nothing is recomputed, so the PR says
exactly what `report.md` says, and the blocks both show (score table and verdict, template change,
lineage, charts) come from `sections.py`. Eval data, model outputs, rationales, templates, diffs and even
task and model names are untrusted: every piece goes through `text.py` (diffs in a fence they cannot
close, everything else escaped so it cannot mention, reference or close, or inject HTML), and the Mermaid
charts are built from numbers and letters only.

Why the size ladder: GitHub refuses a body over `GITHUB_LIMIT` characters with a 422, which would lose the whole
PR. A big eval set with long outputs easily exceeds that, so the body is rendered at the most detailed
level first and then, only while it is too long, at cheaper levels (`LADDER`): each level gives up a
less important part, and a visible note says what went and links the full report. The essentials (marker,
headline, per-task tables, diffs, footer) are always there; a diff is cut only when those alone do not
fit, and a last resort drops trailing sections whole, so no fence or `<details>` is ever left open.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..lm.client import format_cost
from ..report.model import Report, Row, TaskReport
from ..report.skipped import SkippedRun
from .estimate import prompt_cost_lines
from .guidance import guidance_block, guidance_summary
from .sections import (
    ID_LIMIT,
    charts,
    diff_intro,
    lineage_section,
    moved_rows,
    retries_text,
    score_rows,
    template_change,
    test_verdict,
    val_scoring_line,
)
from .skipped import skipped_runs_section
from .text import GITHUB_LIMIT, code_block, details, fmt_count, fmt_score, fmt_signed, inline, plain, table

MARKER = "<!-- gepa-tune -->"  # the Action finds its own PRs by this first line
# Kept free below `limit`, on top of the pessimistic count of `github_length`: room for a human or a
# later edit to add a line without hitting the wall.
SAFETY_MARGIN = 300
MIN_LIMIT = 1_000
HEADLINE_TASKS = 5  # tasks named in the headline; the rest are "and N more"
DESCRIPTION_LIMIT = 300
NAME_LIMIT = 80  # a task name in prose and headings (the reproduce command has it whole)
MAX_COMMAND = 1_000  # a longer reproduce command leaves the task names out
FULL_OUTPUTS = 80  # characters of a model output at the most detailed level
FULL_RATIONALE = 1500
MIN_DIFF_CONTENT = 80  # below this a cut diff says only how long it was

# Options of `gepa-tune tune` that decide the run's path, in the order the command shows them.
_REPRO_FLAGS = ("seed", "budget", "max_minutes", "strategy", "minibatch", "parallel", "max_merges", "chain")
#: The on/off options that decide it too: the flag the command shows when the run's value was not the default.
_REPRO_SWITCHES = (("race", False, "--no-race"), ("lookahead", False, "--no-lookahead"), ("local", True, "--local"))
_URL = re.compile(r"https?://[^\s<>()\[\]`\"'\\]+")


@dataclass(frozen=True)
class PRBody:
    """The body, and whether anything was left out to fit (then the full report must be reachable)."""

    text: str
    truncated: bool
    cuts: tuple[str, ...] = ()  # what was left out, in the words of the note in the body


@dataclass(frozen=True)
class Detail:
    """How much of the optional parts a rendering shows; `LADDER` lists them from most to least."""

    outputs: int | None = FULL_OUTPUTS  # characters of each model output; None = no output columns
    unchanged: bool = True  # list instances whose score did not change
    val: bool = True  # list validation instances
    charts: bool = True
    rationale: int | None = FULL_RATIONALE  # characters per rationale; None = no lineage section
    max_rows: int | None = None  # changed test instances listed per task (regressions first)
    instances: bool = True  # the per-instance section at all


# Least important first: how outputs read, then bulk rows nobody reviews one by one, then pictures,
# then the prose of the search. Regressions stay listed longest, since they are what a reviewer must see.
LADDER: tuple[Detail, ...] = (
    Detail(),
    Detail(outputs=30),
    Detail(outputs=30, unchanged=False),
    Detail(outputs=30, unchanged=False, val=False),
    Detail(outputs=30, unchanged=False, val=False, charts=False),
    Detail(outputs=30, unchanged=False, val=False, charts=False, rationale=300),
    Detail(outputs=None, unchanged=False, val=False, charts=False, rationale=300),
    Detail(outputs=None, unchanged=False, val=False, charts=False, rationale=300, max_rows=100),
    Detail(outputs=None, unchanged=False, val=False, charts=False, rationale=300, max_rows=20),
    Detail(outputs=None, unchanged=False, val=False, charts=False, rationale=None, max_rows=20),
    Detail(outputs=None, unchanged=False, val=False, charts=False, rationale=None, max_rows=20, instances=False),
)


def github_length(text: str) -> int:
    """A length of `text` that GitHub's own count never exceeds, whatever it counts.

    GitHub's error says "characters", and measurements (2025) show 65,536 code points, ASCII or emoji
    alike, which is what `len` gives. This counts UTF-16 code units instead (an emoji is 2, as in a
    JavaScript client) plus one more per newline (a body saved from the web editor comes back with
    CRLF), so a body that passes here passes any of those readings; it over-counts by a few percent."""
    return len(text.encode("utf-16-le")) // 2 + text.count("\n")


def render_pr_body(report: Report, *, applied: Collection[str], threshold: str,
                   run_url: str | None = None, full_report: str | None = None, limit: int = GITHUB_LIMIT,
                   skipped: Sequence[SkippedRun] = ()) -> PRBody:
    """The Markdown body of the pull request that applies the evolved templates of the tasks in `applied`.

    `threshold` is the rule a gain had to clear, in words (shown to say why other tasks were left out);
    `run_url` links the workflow run; `full_report` is a URL or path of the complete report.md, shown
    when anything was cut. The text always has `github_length(text) <= limit - SAFETY_MARGIN` (so also
    `len(text) <= limit`), whatever the size of the report. `skipped`: runs a combined report could not
    use (`action --from-runs`), listed right after the headline.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters, got {limit}")
    body = _Body(report, set(applied), threshold, run_url, full_report, limit)
    body.skipped = skipped_runs_section(skipped)
    return body.fit(limit - SAFETY_MARGIN)


def render_job_summary(report: Report, *, applied: Collection[str], threshold: str, operation: str,
                       pr_url: str | None, skipped: Sequence[SkippedRun] = ()) -> str:
    """Markdown for `$GITHUB_STEP_SUMMARY`: what happened to the PR, and each task's numbers.

    Short on purpose (no diffs, no instances): the summary page shows every step's summary in a row, and
    the details are one click away in the PR and in report.md.
    """
    applied = set(applied)
    tasks = report.tasks
    parts = [f"## gepa-tune run {inline(report.run_id or 'unknown')}", _operation(operation, pr_url, applied)]
    parts.append(f"A task's evolved prompts are applied when its gain clears the threshold: {inline(threshold)}.")
    parts += filter(None, [skipped_runs_section(skipped)])
    for task in tasks:
        name = _name(task)
        if name in applied:
            parts.append(f"### {inline(name, NAME_LIMIT)}: applied")
        else:
            parts.append(f"### {inline(name, NAME_LIMIT)}: not applied\n\n"
                         f"Kept the seed prompts: {_reason(task, threshold)}.")
        parts.append(_summary_tables(task))
        parts.append(guidance_summary(task.guidance))
    if not tasks:
        parts.append("No task produced a result.")
    return "\n\n".join(part for part in parts if part) + "\n"


# -- the body, level by level -------------------------------------------------------------------------


class _Body:
    """One report, rendered at any `Detail`; sections are cached because the ladder re-renders them."""

    def __init__(self, report: Report, applied: set[str], threshold: str, run_url: str | None,
                 full_report: str | None, limit: int) -> None:
        self.report = report
        self.limit = limit
        self.threshold = threshold
        self.run_url = run_url
        self.full_report = full_report
        tasks = report.tasks
        self.applied = [t for t in tasks if _name(t) in applied]
        self.kept = [t for t in tasks if _name(t) not in applied]
        self.cache: dict[tuple[Any, ...], str] = {}
        self.skipped = ""  # the "runs not used" section of a combined report

    def fit(self, budget: int) -> PRBody:
        """The most detailed level that fits. Each level shows a subset of the one before, so the sizes
        fall along the ladder and a binary search finds it in a few renderings (each re-renders the
        instance tables, which dominate the time for big reports)."""
        texts: dict[int, str] = {}

        def fits(level: int) -> bool:
            texts[level] = _join(self.blocks(LADDER[level], cut=level > 0))
            return github_length(texts[level]) <= budget

        last = len(LADDER) - 1
        if fits(0):
            return PRBody(texts[0], False)
        if not fits(last):
            return self._cut_diffs(LADDER[last], budget)
        low, high = 0, last  # low does not fit, high does
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle, high)
        return PRBody(texts[high], True, tuple(_cuts(LADDER[high])))

    # The essentials did not fit: share what is left among the diffs, then drop trailing blocks if even
    # the cut diffs do not fit (thousands of tasks), then, as a guarantee, cut the text.
    def _cut_diffs(self, detail: Detail, budget: int) -> PRBody:
        cuts = [*_cuts(detail), "template diffs cut"]
        # Measured with every diff at its smallest, then those smallest blocks given back to the diffs.
        smallest = [_cut_diff(task, 0) for task in self.applied]
        without = self.blocks(detail, cut=True, cuts=cuts, diffs={i: 0 for i in range(len(self.applied))})
        available = budget - github_length(_join(without)) + sum(map(github_length, smallest))
        shares = _share([github_length(self._diff(task)) for task in self.applied], max(available, 0))
        blocks = self.blocks(detail, cut=True, cuts=cuts, diffs=dict(enumerate(shares)))
        text = _join(blocks)
        if github_length(text) > budget:
            cuts.append("later sections left out")
            text = _clamp(self.blocks(detail, cut=True, cuts=cuts, diffs=dict(enumerate(shares))), budget)
        return PRBody(text, True, tuple(cuts))

    def blocks(self, detail: Detail, *, cut: bool, cuts: Sequence[str] | None = None,
               diffs: Mapping[int, int] | None = None) -> list[str]:
        """Every block of the body in reading order; `diffs` caps diff blocks (task index -> counted size).

        Each block is complete Markdown (tables, fences and `<details>` closed), so dropping whole blocks
        from the end never leaves anything open. The first is the marker and headline, the second the cut
        note when `cut`, the last the footer.
        """
        blocks = [f"{MARKER}\n\n{self.headline()}"]
        if cut:
            blocks.append(self.note(cuts if cuts is not None else _cuts(detail)))
        blocks.append(self.skipped)
        for index, task in enumerate(self.applied):
            blocks.append(self._cached(("head", index), lambda t=task: _task_head(t, "applied")))
            blocks.append(self._cached(("summary", index), lambda t=task: _summary_tables(t)))
            allowance = diffs.get(index) if diffs is not None else None
            blocks.append(self._diff(task) if allowance is None else _cut_diff(task, allowance))
            blocks.append(self._cached(("guidance", index), lambda t=task: guidance_block(t.guidance)))
            if detail.instances:
                blocks.append(self._cached(("instances", index, detail.outputs, detail.unchanged, detail.val,
                                            detail.max_rows), lambda t=task: _instances(t, detail)))
            if detail.rationale is not None:
                blocks.append(self._cached(("lineage", index, detail.rationale),
                                           lambda t=task: _lineage(t, detail.rationale or 0)))
            if detail.charts:
                blocks.append(self._cached(("charts", index), lambda t=task: _charts(t)))
        for index, task in enumerate(self.kept):
            blocks.append(self._cached(("kept", index), lambda t=task: (
                f"{_task_head(t, 'not applied')}\n\nKept the seed prompts: {_reason(t, self.threshold)}.")))
            blocks.append(self._cached(("kept summary", index), lambda t=task: _summary_tables(t)))
            blocks.append(self._cached(("kept guidance", index),
                                       lambda t=task: guidance_block(t.guidance, proposed=False)))
        blocks.append(self.footer(cut))
        return [block for block in blocks if block]

    def _cached(self, key: tuple[Any, ...], render: Callable[[], str]) -> str:
        if key not in self.cache:
            self.cache[key] = render()
        return self.cache[key]

    def _diff(self, task: TaskReport) -> str:
        return self._cached(("diff", id(task)), lambda: template_change(task))

    def headline(self) -> str:
        """One paragraph: which tasks this PR changes and by how much on held-out data, and what it cost."""
        run = inline(self.report.run_id or "unknown")
        if self.applied:
            shown = [f"**{inline(_name(t), NAME_LIMIT)}** ({_gain(t)})" for t in self.applied[:HEADLINE_TASKS]]
            if len(self.applied) > HEADLINE_TASKS:
                shown.append(f"{len(self.applied) - HEADLINE_TASKS} more")
            text = (f"This pull request applies the prompts that gepa-tune evolved for {_and(shown)}, measured "
                    "on each task's held-out test split, which no step of the search saw.")
        else:
            text = "No task's gain clears the threshold, so this run of gepa-tune applies no prompt."
        if self.kept:
            text += (f" {fmt_count(len(self.kept))} other task{'s' if len(self.kept) != 1 else ''} kept "
                     f"{'their' if len(self.kept) != 1 else 'its'} seed prompts (see below).")
        text += f" Threshold: {inline(self.threshold)}."
        tasks = self.applied + self.kept
        calls = sum(t.usage.metric_calls for t in tasks)
        cost = sum(t.usage.cost_usd for t in tasks)
        text += f" Run {run}: {fmt_count(calls)} metric calls, {format_cost(cost)}."
        return text

    def note(self, cuts: Sequence[str]) -> str:
        where = self._full_report() or "report.md in the run folder"
        what = "; ".join(cuts) if cuts else "some details"
        return (f"**Shortened to fit GitHub's {self.limit:,}-character limit:** {what}. "
                f"Everything is in the full report: {where}.")

    def _full_report(self) -> str:
        return _link("report.md", self.full_report) if self.full_report else ""

    def footer(self, cut: bool) -> str:
        run_id = self.report.run_id or "unknown"
        facts = [f"gepa-tune run {inline(run_id)}"]
        if self.run_url:
            facts.append(_link("workflow run", self.run_url))
        tasks = self.applied + self.kept
        command = _repro_command(self.report, tasks)
        how = "Reproduce locally, with the same eval sets and models:"
        if len(command) > MAX_COMMAND:  # hundreds of tasks, or absurd names: the footer must stay small
            command = _repro_command(self.report, [])
            how = ("Reproduce locally, with the same eval sets and models (without names `gepa-tune tune` runs "
                   f"every task; this run had {_plural(len(tasks), 'task')}):")
        lines = ["---", " · ".join(facts), how, code_block(command, "sh")]
        # The full report is committed on the branch only when the body was cut: link it only then.
        full = self._full_report() if cut else ""
        lines.append(f"The full report, with every instance, proposal and cost: {full}." if full else
                     "The full report, with every instance, proposal and cost, is report.md in "
                     f".gepa/runs/{inline(run_id)}/ where the run was made.")
        return "\n\n".join(lines)


def _join(blocks: Sequence[str]) -> str:
    return "\n\n".join(blocks) + "\n"


def _clamp(blocks: list[str], budget: int) -> str:
    """The headline, the note and the footer, plus as many of the blocks between as fit, in order."""
    head, note, footer, middle = blocks[0], blocks[1], blocks[-1], blocks[2:-1]
    kept = [head, note]
    used = github_length(_join([*kept, footer]))
    for block in middle:
        size = github_length(block) + 4
        if used + size > budget:
            break
        kept.append(block)
        used += size
    text = _join([*kept, footer])
    if github_length(text) > budget:  # only when the headline itself is too long: cut, never exceed
        text = _prefix(text, budget)
    return text


def _prefix(text: str, budget: int) -> str:
    """The longest prefix of `text` that `github_length` counts at most `budget` (a cut at a line end
    when one is near, so a fence or table row is not split mid-line)."""
    if github_length(text) <= budget:
        return text
    end = min(len(text), budget)
    while end > 0 and github_length(text[:end]) > budget:
        end -= max(1, (github_length(text[:end]) - budget) // 2)
    newline = text.rfind("\n", 0, end)
    if newline >= end * 3 // 4:
        end = newline + 1
    return text[:max(end, 0)]


def _share(sizes: Sequence[int], available: int) -> list[int]:
    """Split `available` among blocks wanting `sizes`: small ones get all they want, the rest equal parts."""
    shares = [0] * len(sizes)
    left = available
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for position, i in enumerate(order):
        fair = left // (len(sizes) - position)
        shares[i] = min(sizes[i], fair)
        left -= shares[i]
    return shares


def _cuts(detail: Detail) -> list[str]:
    """What `detail` leaves out compared with the full body, as the note in the body says it."""
    cuts = []
    if not detail.instances:
        cuts.append("per-instance tables left out")
    else:
        if detail.outputs is None:
            cuts.append("model outputs left out of the instance tables")
        elif detail.outputs < FULL_OUTPUTS:
            cuts.append(f"model outputs abbreviated to {detail.outputs} characters")
        if not detail.unchanged:
            cuts.append("unchanged instances counted, not listed")
        if not detail.val:
            cuts.append("validation instances left out")
        if detail.max_rows is not None:
            cuts.append(f"at most {detail.max_rows} changed test instances listed per task")
    if not detail.charts:
        cuts.append("charts left out")
    if detail.rationale is None:
        cuts.append("rationales left out")
    elif detail.rationale < FULL_RATIONALE:
        cuts.append(f"rationales cut to {detail.rationale} characters")
    return cuts


# -- per task -------------------------------------------------------------------------------------------


def _name(task: TaskReport) -> str:
    return task.task or "task"


def _task_head(task: TaskReport, what: str) -> str:
    description = f"\n\n{inline(task.description, DESCRIPTION_LIMIT)}" if task.description else ""
    return f"## {inline(_name(task), NAME_LIMIT)}: {what}{description}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _gain(task: TaskReport) -> str:
    """`test 0.467 → 0.800, +0.333, 95% CI +0.133 … +0.533` (val numbers when there is no test split)."""
    test, val = task.scores.test, task.scores.val
    if test is None:
        seed, best = (val.seed, val.best) if val is not None else (None, None)
        return f"val {fmt_score(seed)} → {fmt_score(best)}, no test split"
    text = f"test {fmt_score(test.seed)} → {fmt_score(test.best)}, {fmt_signed(test.delta)}"
    if test.ci95 is not None:
        text += f", 95% CI {fmt_signed(test.ci95.low)} … {fmt_signed(test.ci95.high)}"
    return text


def _reason(task: TaskReport, threshold: str) -> str:
    """Why a task's templates are not in the PR: the Action's own verdict (`TaskReport.blocker`), in the
    reviewer's words."""
    why = task.blocker()
    if why == "unfinished":
        return f"the run did not finish ({inline(task.status or 'unknown', 120)})"
    if why == "seed_best":
        return "the seed templates stayed best"
    if why == "no_test":
        return "there is no test split to measure the gain on"
    return f"the gain ({_gain(task)}) does not clear the threshold ({inline(threshold)})"


def _summary_tables(task: TaskReport) -> str:
    """Baseline against evolved per split, the test verdict, then what the run used and on what data."""
    rows = score_rows(task)
    blocks = [table(["split", "baseline", "evolved", "change [95% CI]"], rows, align="lrrr")] if rows else []
    blocks.append(test_verdict(task.scores, task.counts) if rows else "No scores were recorded.")

    counts, usage, models, eval_set = task.counts, task.usage, task.models, task.eval_set
    instances = (f"{fmt_count(counts.improved)} improved · {fmt_count(counts.regressed)} regressed · "
                 f"{fmt_count(counts.unchanged)} unchanged")
    calls = fmt_count(usage.metric_calls)
    if usage.budget is not None:
        calls += f" of {fmt_count(usage.budget)}"
    if usage.test_calls:
        calls += f" (+{fmt_count(usage.test_calls)} on test)"
    if retries := retries_text(usage):  # a flaky endpoint is worth a reviewer's glance
        calls += f", {retries}"
    tokens = f"{fmt_count(usage.prompt_tokens)} + {fmt_count(usage.completion_tokens)}"
    used = f"{models.task or '?'} / {models.reflection or '?'}"
    if models.judge:
        used += f" (judge {models.judge})"
    data = f"{eval_set.name or '?'}@{eval_set.version or '?'}"
    if eval_set.sha256:
        data += f" (sha256 {eval_set.sha256[:12]})"
    blocks.append(table(
        ["test instances", "metric calls", "tokens (prompt + completion)", "cost", "models (task / reflection)",
         "eval set"],
        [[instances, calls, tokens, format_cost(usage.cost_usd), used, data]]))
    scoring = val_scoring_line(task)
    if scoring:
        blocks.append(scoring)
    blocks.extend(prompt_cost_lines(task.prompt_cost))
    return "\n\n".join(blocks)


def _cut_diff(task: TaskReport, allowance: int) -> str:
    """The diff block in at most `allowance` counted characters: the first lines of the diff and a line
    saying how much is missing, or only that line when there is no room for a useful part."""
    best = task.best
    diff = best.diff if best is not None else ""
    full = template_change(task)
    if github_length(full) <= allowance or best is None or not diff:
        return full
    total = diff.count("\n") + (0 if diff.endswith("\n") else 1)
    head = f"### Template change\n\n{diff_intro(best)}"
    room = allowance - github_length(head) - 200  # 200: the note and the fences
    while room >= MIN_DIFF_CONTENT:
        shown = _prefix(diff, room)
        lines = shown.count("\n")
        where = f"after line {lines:,}" if shown.endswith("\n") else f"in line {lines + 1:,}"
        note = (f"The diff was cut {where} of {total:,} ({len(diff) - len(shown):,} characters left out). "
                "The full diff is in the full report.")
        block = f"{head}\n\n{code_block(shown, 'diff')}\n\n{note}"
        if github_length(block) <= allowance:
            return block
        room -= github_length(block) - allowance
    return (f"### Template change\n\nThe diff ({total:,} lines, {len(diff):,} characters) is too long for "
            "this description: see the full report.")


def _instances(task: TaskReport, detail: Detail) -> str:
    """Test first (it is the headline), then val; within each, regressions, improvements, unchanged."""
    if not task.instances.test and not task.instances.val:
        return ""
    blocks = ["### Per-instance scores"]
    for split, label in (("test", "Test split"), ("val", "Validation split")):
        group = task.instances.rows(split)
        if not group:
            continue
        if split == "val" and not detail.val:
            blocks.append(f"{label}: {_plural(len(group), 'instance')}, not listed here.")
            continue
        regressions, gains = moved_rows(group)
        same = sorted((r for r in group if not r.delta), key=lambda r: r.id)
        listed = regressions + gains
        notes = []
        if detail.max_rows is not None and len(listed) > detail.max_rows:
            notes.append(f"{_plural(len(listed) - detail.max_rows, 'more changed instance')} (the smallest "
                         "changes) not listed.")
            listed = listed[:detail.max_rows]
        if detail.unchanged:
            listed += same
        elif same:
            notes.append(f"{_plural(len(same), 'unchanged instance')} not listed.")
        summary = (f"{label}: {len(regressions):,} regressed, {len(gains):,} improved, {len(same):,} unchanged "
                   f"({_plural(len(group), 'instance')})")
        body = [_instance_table(listed, detail.outputs)] if listed else []
        blocks.append(details(summary, "\n\n".join(body + notes) or "No instance listed."))
    return "\n\n".join(blocks)


def _instance_table(rows: Sequence[Row], outputs: int | None) -> str:
    headers = ["id", "before", "after", "change"]
    cells = [[plain(r.id, ID_LIMIT), fmt_score(r.before), fmt_score(r.after), fmt_signed(r.delta)] for r in rows]
    if outputs is None:
        return table(headers, cells, align="lrrr")
    for cell, row in zip(cells, rows, strict=True):
        # `table` escapes; `plain` only cuts to the length a reader sees.
        cell += [plain(row.output_before, outputs), plain(row.output_after, outputs)]
    return table([*headers, "output before", "output after"], cells, align="lrrrll")


def _lineage(task: TaskReport, limit: int) -> str:
    """Each accepted step of the winning lineage with the reflection model's stated reason, quoted."""
    return lineage_section(task, "### Why the prompt changed", limit=limit, with_seed=False)


def _charts(task: TaskReport) -> str:
    shown = charts(task)
    return "\n\n".join(["### Search progress", *shown]) if shown else ""


# -- links and commands ---------------------------------------------------------------------------------


def _link(text: str, target: str) -> str:
    """A Markdown link when `target` is a plain http(s) URL, else the target as escaped text (a path)."""
    if _URL.fullmatch(target):
        return f"[{inline(text)}]({target})"
    return inline(target, 300)


def _repro_command(report: Report, tasks: Sequence[TaskReport]) -> str:
    """`gepa-tune tune TASK... --seed N ...` with the run's options, quoted for the shell. Names are kept
    whole (an abbreviated name would not reproduce anything): the caller puts this in a `code_block`."""
    words = ["gepa-tune", "tune", *(shlex.quote(_name(t)) for t in tasks)]
    options = report.options
    for key in _REPRO_FLAGS:
        value = options.get(key)
        if key == "seed" and value is None:
            value = 0
        if value is None or isinstance(value, bool) or (key == "chain" and value == "auto"):
            continue  # `auto` is the default: the command of an ordinary run stays short
        shown = f"{value:g}" if isinstance(value, float) else str(value)  # --max-minutes 30, not 30.0
        words += [f"--{key.replace('_', '-')}", shlex.quote(shown)]
    words += [flag for key, value, flag in _REPRO_SWITCHES if options.get(key) is value]
    return " ".join(words)


def _operation(operation: str, pr_url: str | None, applied: set[str]) -> str:
    link = _link("the pull request", pr_url) if pr_url else "the pull request"
    if operation == "created":
        return f"Opened {link} with the evolved prompts."
    if operation == "updated":
        return f"Updated {link} with the evolved prompts of this run."
    if operation == "unchanged":
        return f"Left {link} as it is: it already proposes this result (nothing pushed, nothing edited)."
    if operation == "closed":
        return f"Closed {link}: no task's gain clears the threshold any more."
    if operation == "tune-only":
        return ("Tuned only (a matrix job): no pull request from this job; the job that runs "
                "`gepa-tune action --from-runs` combines the run folders into one.")
    if operation == "none":
        if applied:
            return ("Prompts to apply were found, but no pull request was opened or changed "
                    "(a dry run, or the branch or base changed: see the log).")
        return "No task's gain clears the threshold: no pull request."
    return f"Pull request: {inline(operation, 80)}" + (f" ({link})" if pr_url else "")
