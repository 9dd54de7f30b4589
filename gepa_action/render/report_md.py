"""The run report for people: `report.md` in the run directory.

Input is the report exactly as the engine wrote it; nothing is recomputed here, so a report rendered
again later says the same thing. Parts may be missing (an interrupted run, an empty test split) and
every lookup tolerates that. Eval data, model outputs, rationales and error messages are untrusted: each
goes through `text.py`. The blocks the PR body shows too (scores, template change, lineage, charts) come
from `sections.py`; this module adds what only the full report has (every instance, proposals, usage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..lm.client import format_cost
from ..report.model import as_data
from .guidance import guidance_block, guidance_of
from .sections import (
    ID_LIMIT,
    Row,
    charts,
    lineage_section,
    list_at,
    mapping_at,
    moved_rows,
    retries_text,
    row_delta,
    score_rows,
    template_change,
    test_verdict,
    val_scoring_line,
)
from .text import as_number, details, fmt_count, fmt_duration, fmt_score, fmt_signed, inline, plain, table

OUTPUT_LIMIT = 60  # characters of a model output shown in an instance table
ERROR_LIMIT = 300
MAX_ERRORS = 20


# -- the whole report ----------------------------------------------------------------------------------


def render_report(report: Mapping[str, Any]) -> str:
    """`report.json` as Markdown: a short run header, then one section per task."""
    report = as_data(report)
    parts = [_run_header(report)]
    tasks = [t for t in list_at(report, "tasks") if isinstance(t, Mapping)]
    parts += [render_task(task) for task in tasks] or ["No task produced a result."]
    return "\n\n".join(parts) + "\n"


def _run_header(report: Mapping[str, Any]) -> str:
    lines = [f"# gepa-tune run {inline(report.get('run_id') or 'unknown')}"]
    facts = [f"status: {inline(report.get('status') or 'unknown')}"]
    for key in ("started_at", "finished_at"):
        if report.get(key):
            facts.append(f"{key.split('_')[0]} {inline(report[key])}")
    options = {k: v for k, v in mapping_at(report, "options").items() if v is not None and v != ""}
    if options:
        facts.append(", ".join(f"{inline(str(k).replace('_', ' '))} {inline(v)}" for k, v in options.items()))
    lines.append(" · ".join(facts))
    return "\n\n".join(lines)


def render_task(task: Mapping[str, Any]) -> str:
    """One task's section, in the order a reviewer reads it: what, how much better, why it stopped, what
    changed in the templates, which instances moved, how the search got there, and what it cost."""
    task = as_data(task)
    blocks = [
        _headline(task),
        _scores(task),
        _stop_and_errors(task),
        template_change(task),
        _instances(task),
        guidance_block(guidance_of(task), text_limit=None),
        _lineage(task),
        _charts(task),
        _proposals(task),
        _usage(task),
    ]
    return "\n\n".join(block for block in blocks if block)


def _headline(task: Mapping[str, Any]) -> str:
    title = f"## {inline(task.get('task') or 'task')}"
    status = task.get("status")
    if status and status != "finished":
        title += f" ({inline(status, 80)})"
    lines = [title]
    if task.get("description"):
        lines.append(inline(task["description"], 300))

    facts = []
    eval_set = mapping_at(task, "eval_set")
    if eval_set:
        name = f"{eval_set.get('name') or '?'}@{eval_set.get('version') or '?'}"
        ref = f"eval set {inline(name)}"
        if eval_set.get("sha256"):
            ref += f" (sha256 {inline(str(eval_set['sha256'])[:12])})"
        facts.append(ref)
    models = mapping_at(task, "models")
    for role in ("task", "reflection", "judge"):
        if models.get(role):
            facts.append(f"{role} model {inline(models[role])}")
    sizes = mapping_at(task, "split_sizes")
    if sizes:
        facts.append(" / ".join(f"{fmt_count(sizes.get(s))} {s}" for s in ("train", "val", "test")))
    if facts:
        lines.append(" · ".join(facts))
    optimized = list_at(task, "optimized")
    if optimized:
        of = len(list_at(task, "modules"))
        total = f" (of {of} modules)" if of else ""
        lines.append(f"Optimized: {', '.join(inline(m) for m in optimized)}{total}")
    return "\n\n".join(lines)


# -- scores --------------------------------------------------------------------------------------------


def _scores(task: Mapping[str, Any]) -> str:
    scores = mapping_at(task, "scores")
    rows = score_rows(task)
    if not rows:
        return "No scores were recorded."
    text = table(["split", "seed", "best", "change [95% CI]"], rows, align="lrrr")
    return f"{text}\n\n{test_verdict(scores, mapping_at(task, 'counts'))}"


def _stop_and_errors(task: Mapping[str, Any]) -> str:
    blocks = []
    if task.get("stop_reason"):
        blocks.append(f"**Stopped:** {inline(task['stop_reason'], ERROR_LIMIT)}")
    errors = [e for e in list_at(task, "errors") if e]
    if errors:
        lines = [f"**Errors ({len(errors)}):**", ""]
        lines += [f"- {inline(error, ERROR_LIMIT)}" for error in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            lines.append(f"- … and {len(errors) - MAX_ERRORS} more (see events.jsonl)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# -- instances -----------------------------------------------------------------------------------------


def _instances(task: Mapping[str, Any]) -> str:
    rows = [r for r in list_at(task, "instances") if isinstance(r, Mapping)]
    if not rows:
        return ""
    test = [r for r in rows if r.get("split") == "test"]
    regressions, improvements = moved_rows(test)
    moved = regressions + improvements
    rest = [r for r in test if not row_delta(r)] + [r for r in rows if r.get("split") != "test"]

    blocks = ["### Test instances that changed"]
    if moved:
        blocks.append(table(["id", "before", "after", "change", "output before", "output after"],
                            [[_ident(r), fmt_score(r.get("before")), fmt_score(r.get("after")),
                              fmt_signed(row_delta(r)), _output(r.get("output_before")),
                              _output(r.get("output_after"))]
                             for r in moved], align="lrrrll"))
    else:
        blocks.append("No test instance changed its score.")
    if rest:
        unchanged = len(rest) - sum(1 for r in rest if r.get("split") != "test")
        summary = f"Unchanged test instances ({unchanged}) and validation instances ({len(rest) - unchanged})"
        body = table(["id", "split", "before", "after", "output before", "output after"],
                     [[_ident(r), r.get("split") or "?", fmt_score(r.get("before")), fmt_score(r.get("after")),
                       _output(r.get("output_before")), _output(r.get("output_after"))] for r in rest],
                     align="llrrll")
        blocks.append(details(summary, body))
    return "\n\n".join(blocks)


def _ident(row: Row) -> str:
    return plain(row.get("id"), ID_LIMIT)


def _output(value: Any) -> str:
    # `table` escapes; here the text is only cut to a readable length (plain counts visible characters).
    return plain(value, OUTPUT_LIMIT)


# -- how the search got there --------------------------------------------------------------------------


def _lineage(task: Mapping[str, Any]) -> str:
    return lineage_section(task, "### How the best candidate was found")


def _charts(task: Mapping[str, Any]) -> str:
    return "\n\n".join(charts(task))


# -- proposals and usage -------------------------------------------------------------------------------


def _proposals(task: Mapping[str, Any]) -> str:
    stats = mapping_at(task, "proposals")
    if not stats:
        return ""
    invalid = mapping_at(stats, "rejected_invalid")
    invalid_total = sum(n for n in map(as_number, invalid.values()) if n is not None)
    lines = ["### Proposals", "",
             f"- {fmt_count(stats.get('total'))} proposed: {fmt_count(stats.get('accepted'))} accepted, "
             f"{fmt_count(stats.get('rejected_not_better'))} not better on their minibatch, "
             f"{fmt_count(invalid_total)} invalid, {fmt_count(stats.get('skipped_perfect'))} skipped "
             f"(minibatch already perfect), {fmt_count(stats.get('repeats'))} repeats"]
    if invalid:
        reasons = sorted(invalid.items(), key=lambda kv: (-(as_number(kv[1]) or 0), str(kv[0])))
        lines.append("- invalid because: " + "; ".join(f"{inline(k, 80)} ({fmt_count(v)})" for k, v in reasons))
    merges = mapping_at(stats, "merges")
    if merges:
        lines.append(f"- merges: {fmt_count(merges.get('tried'))} tried, {fmt_count(merges.get('accepted'))} accepted")
    scoring = val_scoring_line(task)
    if scoring:
        lines.append(f"- {scoring}")
    return "\n".join(lines)


def _usage(task: Mapping[str, Any]) -> str:
    usage = mapping_at(task, "usage")
    if not usage:
        return ""
    calls = f"{fmt_count(usage.get('metric_calls'))} metric calls"
    if as_number(usage.get("budget")) is not None:
        calls += f" of a budget of {fmt_count(usage['budget'])}"
    if as_number(usage.get("test_calls")) is not None:
        calls += f", plus {fmt_count(usage['test_calls'])} on the test split"
    lines = ["### Usage", "", f"- {calls}"]
    if as_number(usage.get("reflection_calls")) is not None:
        lines.append(f"- {fmt_count(usage['reflection_calls'])} reflection calls")
    if as_number(usage.get("requests")) is not None:
        cached = f" ({fmt_count(usage.get('cached'))} from the cache)" if as_number(usage.get("cached")) else ""
        lines.append(f"- {fmt_count(usage['requests'])} model requests{cached}")
    if as_number(usage.get("prompt_tokens")) is not None or as_number(usage.get("completion_tokens")) is not None:
        lines.append(f"- tokens: {fmt_count(usage.get('prompt_tokens'))} prompt + "
                     f"{fmt_count(usage.get('completion_tokens'))} completion")
    if retries := retries_text(usage):
        lines.append(f"- {retries} of model requests (transient failures that were tried again)")
    cost = as_number(usage.get("cost_usd"))
    lines.append(f"- cost {format_cost(cost) if cost is not None else 'n/a'}, "
                 f"wall time {fmt_duration(usage.get('wall_s'))}")
    return "\n".join(lines)
