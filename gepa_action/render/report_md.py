"""The run report for people: `report.md` in the run directory.

Input is the typed report exactly as the engine wrote it; nothing is recomputed here, so a report
rendered again later says the same thing. Parts the model allows to be absent (an interrupted run, an
empty test split) render as a sentence saying so or not at all. Eval data, model outputs, rationales and
error messages are untrusted: each goes through `text.py`. The blocks the PR body shows too (scores,
template change, lineage, charts) come from `sections.py`; this module adds what only the full report
has (every instance, proposals, usage).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..lm.client import format_cost
from ..report.model import Report, Row, TaskReport
from ..report.skipped import SkippedRun
from .estimate import estimate_section
from .guidance import guidance_block
from .sections import (
    ID_LIMIT,
    charts,
    lineage_section,
    moved_rows,
    retries_text,
    score_rows,
    template_change,
    test_verdict,
    val_scoring_line,
)
from .skipped import skipped_runs_section
from .text import details, fmt_count, fmt_duration, fmt_score, fmt_signed, inline, plain, table

OUTPUT_LIMIT = 60  # characters of a model output shown in an instance table
ERROR_LIMIT = 300
MAX_ERRORS = 20


# -- the whole report ----------------------------------------------------------------------------------


def render_report(report: Report, *, skipped: Sequence[SkippedRun] = ()) -> str:
    """`report.json` as Markdown: a short run header, then one section per task. `skipped`: the runs a
    combined report (`action --from-runs`) could not use."""
    parts = [_run_header(report), *filter(None, [skipped_runs_section(skipped)])]
    parts += [render_task(task) for task in report.tasks] or ["No task produced a result."]
    return "\n\n".join(parts) + "\n"


def _run_header(report: Report) -> str:
    lines = [f"# gepa-tune run {inline(report.run_id or 'unknown')}"]
    facts = [f"status: {inline(report.status or 'unknown')}"]
    for key, value in (("started", report.started_at), ("finished", report.finished_at)):
        if value:
            facts.append(f"{key} {inline(value)}")
    options = {k: v for k, v in report.options.items() if v is not None and v != ""}
    if options:
        facts.append(", ".join(f"{inline(str(k).replace('_', ' '))} {inline(v)}" for k, v in options.items()))
    lines.append(" · ".join(facts))
    return "\n\n".join(lines)


def render_task(task: TaskReport) -> str:
    """One task's section, in the order a reviewer reads it: what, how much better, why it stopped, what
    changed in the templates, which instances moved, how the search got there, and what it cost."""
    blocks = [
        _headline(task),
        _scores(task),
        _stop_and_errors(task),
        template_change(task),
        _instances(task),
        guidance_block(task.guidance, text_limit=None),
        _lineage(task),
        _charts(task),
        _proposals(task),
        _usage(task),
        estimate_section(task.estimate, task.usage),
    ]
    return "\n\n".join(block for block in blocks if block)


def _headline(task: TaskReport) -> str:
    title = f"## {inline(task.task or 'task')}"
    if task.status and task.status != "finished":
        title += f" ({inline(task.status, 80)})"
    lines = [title]
    if task.description:
        lines.append(inline(task.description, 300))

    eval_set = task.eval_set
    name = f"{eval_set.name or '?'}@{eval_set.version or '?'}"
    ref = f"eval set {inline(name)}"
    if eval_set.sha256:
        ref += f" (sha256 {inline(eval_set.sha256[:12])})"
    facts = [ref]
    models = task.models
    for role, model in (("task", models.task), ("reflection", models.reflection), ("judge", models.judge)):
        if model:
            facts.append(f"{role} model {inline(model)}")
    sizes = task.split_sizes
    if sizes:
        facts.append(" / ".join(f"{fmt_count(sizes.get(s))} {s}" for s in ("train", "val", "test")))
    lines.append(" · ".join(facts))
    if task.optimized:
        total = f" (of {len(task.modules)} modules)" if task.modules else ""
        lines.append(f"Optimized: {', '.join(inline(m) for m in task.optimized)}{total}")
    return "\n\n".join(lines)


# -- scores --------------------------------------------------------------------------------------------


def _scores(task: TaskReport) -> str:
    rows = score_rows(task)
    if not rows:
        return "No scores were recorded."
    text = table(["split", "seed", "best", "change [95% CI]"], rows, align="lrrr")
    return f"{text}\n\n{test_verdict(task.scores, task.counts)}"


def _stop_and_errors(task: TaskReport) -> str:
    blocks = []
    if task.stop_reason:
        blocks.append(f"**Stopped:** {inline(task.stop_reason, ERROR_LIMIT)}")
    errors = [e for e in task.errors if e]
    if errors:
        lines = [f"**Errors ({len(errors)}):**", ""]
        lines += [f"- {inline(error, ERROR_LIMIT)}" for error in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            lines.append(f"- … and {len(errors) - MAX_ERRORS} more (see events.jsonl)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- instances -----------------------------------------------------------------------------------------


def _instances(task: TaskReport) -> str:
    test, val = task.instances.test, task.instances.val
    if not test and not val:
        return ""
    regressions, improvements = moved_rows(test)
    moved = regressions + improvements
    rest = [r for r in test if not r.delta] + list(val)

    blocks = ["### Test instances that changed"]
    if moved:
        blocks.append(table(["id", "before", "after", "change", "output before", "output after"],
                            [[_ident(r), fmt_score(r.before), fmt_score(r.after), fmt_signed(r.delta),
                              _output(r.output_before), _output(r.output_after)]
                             for r in moved], align="lrrrll"))
    else:
        blocks.append("No test instance changed its score.")
    if rest:
        unchanged = len(rest) - len(val)
        summary = f"Unchanged test instances ({unchanged}) and validation instances ({len(val)})"
        body = table(["id", "split", "before", "after", "output before", "output after"],
                     [[_ident(r), r.split, fmt_score(r.before), fmt_score(r.after),
                       _output(r.output_before), _output(r.output_after)] for r in rest],
                     align="llrrll")
        blocks.append(details(summary, body))
    return "\n\n".join(blocks)


def _ident(row: Row) -> str:
    return plain(row.id, ID_LIMIT)


def _output(value: str) -> str:
    # `table` escapes; here the text is only cut to a readable length (plain counts visible characters).
    return plain(value, OUTPUT_LIMIT)


# -- how the search got there --------------------------------------------------------------------------


def _lineage(task: TaskReport) -> str:
    return lineage_section(task, "### How the best candidate was found")


def _charts(task: TaskReport) -> str:
    return "\n\n".join(charts(task))


# -- proposals and usage -------------------------------------------------------------------------------


def _proposals(task: TaskReport) -> str:
    stats = task.proposals
    invalid = stats.rejected_invalid
    lines = ["### Proposals", "",
             f"- {fmt_count(stats.total)} proposed: {fmt_count(stats.accepted)} accepted, "
             f"{fmt_count(stats.rejected_not_better)} not better on their minibatch, "
             f"{fmt_count(sum(invalid.values()))} invalid, {fmt_count(stats.skipped_perfect)} skipped "
             f"(minibatch already perfect), {fmt_count(stats.repeats)} repeats"]
    if invalid:
        reasons = sorted(invalid.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("- invalid because: " + "; ".join(f"{inline(k, 80)} ({fmt_count(v)})" for k, v in reasons))
    lines.append(f"- merges: {fmt_count(stats.merges.tried)} tried, {fmt_count(stats.merges.accepted)} accepted")
    scoring = val_scoring_line(task)
    if scoring:
        lines.append(f"- {scoring}")
    return "\n".join(lines)


def _usage(task: TaskReport) -> str:
    usage = task.usage
    calls = f"{fmt_count(usage.metric_calls)} metric calls"
    if usage.budget is not None:
        calls += f" of a budget of {fmt_count(usage.budget)}"
    calls += f", plus {fmt_count(usage.test_calls)} on the test split"
    lines = ["### Usage", "", f"- {calls}", f"- {fmt_count(usage.reflection_calls)} reflection calls"]
    cached = f" ({fmt_count(usage.cached)} from the cache)" if usage.cached else ""
    lines.append(f"- {fmt_count(usage.requests)} model requests{cached}")
    lines.append(f"- tokens: {fmt_count(usage.prompt_tokens)} prompt + {fmt_count(usage.completion_tokens)} completion")
    if retries := retries_text(usage):
        lines.append(f"- {retries} of model requests (transient failures that were tried again)")
    lines.append(f"- cost {format_cost(usage.cost_usd)}, wall time {fmt_duration(usage.wall_s)}")
    return "\n".join(lines)
