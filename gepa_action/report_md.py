"""The run report for people: `report.md` in the run directory and the one-line terminal summary.

Input is the `report.json` dict exactly as the engine wrote it; nothing is recomputed here, so a report
rendered again later says the same thing. Parts may be missing (an interrupted run, an empty test split)
and every lookup tolerates that. Eval data, model outputs, rationales and error messages are untrusted:
each goes through `markdown.py`, and the Mermaid charts are built from ids, origins reduced to letters
and numbers only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .lm.client import RETRY_KINDS, format_cost, format_retries
from .markdown import code_block, details, inline, plain, quote, table
from .runner import mean

OUTPUT_LIMIT = 60  # characters of a model output shown in an instance table
ID_LIMIT = 40
RATIONALE_LIMIT = 1500
ERROR_LIMIT = 300
MAX_ERRORS = 20
MAX_CHART_POINTS = 50
MAX_GRAPH_NODES = 60
MAX_MINIBATCH_IDS = 8

Row = Mapping[str, Any]


# -- numbers -------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A float for anything numeric; None for None, booleans and junk (the report shows "n/a")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.3f}"


def _signed(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:+.3f}"


def _count(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{round(number):,}"


def _mean(values: Any) -> float | None:
    """The mean of the numeric entries (report.json may come from elsewhere: junk is skipped)."""
    return mean(n for n in map(_number, values or []) if n is not None)


def _duration(seconds: Any) -> str:
    number = _number(seconds)
    if number is None:
        return "n/a"
    if number < 60:
        return f"{number:.1f} s"
    minutes, secs = divmod(round(number), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _percent(confidence: Any) -> str:
    number = _number(confidence)
    return "95%" if number is None else f"{number * 100:g}%"


def _cid(value: Any) -> str:
    """A candidate as `c7`: never `#7`, which GitHub would link to issue 7."""
    number = _number(value)
    return f"c{int(number)}" if number is not None and number == int(number) else "c?"


def _delta(row: Row) -> float | None:
    delta = _number(row.get("delta"))
    if delta is None:
        before, after = _number(row.get("before")), _number(row.get("after"))
        delta = after - before if before is not None and after is not None else None
    return delta


def retries_text(usage: Mapping[str, Any]) -> str | None:
    """`3 retries (2 rate_limited, 1 invalid_reply)`, or None when the run needed none.

    Kinds outside the client's own names are counted as `other`: report.json may come from a tampered
    run folder, and only names this program wrote may reach Markdown.
    """
    total = _number(usage.get("retries"))
    if not total:
        return None
    kinds: dict[str, int] = {}
    for kind, n in _section(usage, "retries_by_kind").items():
        if (count := _number(n)) is not None and count > 0:
            name = kind if kind in RETRY_KINDS else "other"
            kinds[name] = kinds.get(name, 0) + round(count)
    return format_retries(round(total), kinds)


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _items(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return list(value) if isinstance(value, (list, tuple)) else []


# -- the whole report ----------------------------------------------------------------------------------


def render_report(report: Mapping[str, Any]) -> str:
    """`report.json` as Markdown: a short run header, then one section per task."""
    parts = [_run_header(report)]
    tasks = [t for t in _items(report, "tasks") if isinstance(t, Mapping)]
    parts += [render_task(task) for task in tasks] or ["No task produced a result."]
    return "\n\n".join(parts) + "\n"


def _run_header(report: Mapping[str, Any]) -> str:
    lines = [f"# gepa-tune run {inline(report.get('run_id') or 'unknown')}"]
    facts = [f"status: {inline(report.get('status') or 'unknown')}"]
    for key in ("started_at", "finished_at"):
        if report.get(key):
            facts.append(f"{key.split('_')[0]} {inline(report[key])}")
    options = {k: v for k, v in _section(report, "options").items() if v is not None and v != ""}
    if options:
        facts.append(", ".join(f"{inline(str(k).replace('_', ' '))} {inline(v)}" for k, v in options.items()))
    lines.append(" · ".join(facts))
    return "\n\n".join(lines)


def render_task(task: Mapping[str, Any]) -> str:
    """One task's section, in the order a reviewer reads it: what, how much better, why it stopped, what
    changed in the templates, which instances moved, how the search got there, and what it cost."""
    blocks = [
        _headline(task),
        _scores(task),
        _stop_and_errors(task),
        _diff(task),
        _instances(task),
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
    eval_set = _section(task, "eval_set")
    if eval_set:
        name = f"{eval_set.get('name') or '?'}@{eval_set.get('version') or '?'}"
        ref = f"eval set {inline(name)}"
        if eval_set.get("sha256"):
            ref += f" (sha256 {inline(str(eval_set['sha256'])[:12])})"
        facts.append(ref)
    models = _section(task, "models")
    for role in ("task", "reflection", "judge"):
        if models.get(role):
            facts.append(f"{role} model {inline(models[role])}")
    sizes = _section(task, "split_sizes")
    if sizes:
        facts.append(" / ".join(f"{_count(sizes.get(s))} {s}" for s in ("train", "val", "test")))
    if facts:
        lines.append(" · ".join(facts))
    optimized = _items(task, "optimized")
    if optimized:
        of = len(_items(task, "modules"))
        total = f" (of {of} modules)" if of else ""
        lines.append(f"Optimized: {', '.join(inline(m) for m in optimized)}{total}")
    return "\n\n".join(lines)


# -- scores --------------------------------------------------------------------------------------------


def score_rows(task: Mapping[str, Any]) -> list[list[str]]:
    """Seed against best per split (`val (12)`, seed, best, change with the CI when there is one)."""
    scores = _section(task, "scores")
    sizes = _section(task, "split_sizes")
    rows = []
    for split in ("val", "test"):
        part = _section(scores, split)
        if not part:
            continue
        size = _number(sizes.get(split))
        label = f"{split} ({int(size)})" if size is not None else split
        change = _signed(part.get("delta"))
        ci = _section(part, "ci95")
        if ci:
            change += f" [{_signed(ci.get('low'))}, {_signed(ci.get('high'))}]"
        rows.append([label, _fmt(part.get("seed")), _fmt(part.get("best")), change])
    return rows


def _scores(task: Mapping[str, Any]) -> str:
    scores = _section(task, "scores")
    rows = score_rows(task)
    if not rows:
        return "No scores were recorded."
    text = table(["split", "seed", "best", "change [95% CI]"], rows, align="lrrr")
    return f"{text}\n\n{_verdict(scores, _section(task, 'counts'))}"


def _verdict(scores: Mapping[str, Any], counts: Mapping[str, Any]) -> str:
    """The plain sentence under the table: does the test split show a real difference?"""
    test = _section(scores, "test")
    if not test:
        return ("No test split: the numbers above are on the validation split, which guided the search, so "
                "they overstate the gain.")
    ci = _section(test, "ci95")
    delta = _signed(test.get("delta"))
    if not ci:
        sentence = f"Test change {delta}; no confidence interval was computed."
    else:
        low, high = _number(ci.get("low")), _number(ci.get("high"))
        level = _percent(ci.get("confidence"))
        how = f"paired bootstrap over {_count(ci.get('n'))} test instances, {_count(ci.get('resamples'))} resamples"
        if low is not None and low > 0:
            sentence = f"The gain of {delta} on the test split is distinguishable from zero at {level} ({how})."
        elif high is not None and high < 0:
            sentence = f"The loss of {delta} on the test split is distinguishable from zero at {level} ({how})."
        elif low == high == 0:
            sentence = "Seed and best score the same on every test instance."
        else:
            sentence = (f"The change of {delta} on the test split is not distinguishable from zero at {level} "
                        f"({how}): this test set cannot tell the two prompts apart.")
    if counts:
        sentence += (f" Test instances: {_count(counts.get('improved'))} improved, "
                     f"{_count(counts.get('regressed'))} regressed, {_count(counts.get('unchanged'))} unchanged.")
    return sentence


def _stop_and_errors(task: Mapping[str, Any]) -> str:
    blocks = []
    if task.get("stop_reason"):
        blocks.append(f"**Stopped:** {inline(task['stop_reason'], ERROR_LIMIT)}")
    errors = [e for e in _items(task, "errors") if e]
    if errors:
        lines = [f"**Errors ({len(errors)}):**", ""]
        lines += [f"- {inline(error, ERROR_LIMIT)}" for error in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            lines.append(f"- … and {len(errors) - MAX_ERRORS} more (see events.jsonl)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _diff(task: Mapping[str, Any]) -> str:
    best = _section(task, "best")
    heading = "### Template change"
    if not best:
        return f"{heading}\n\nNo best candidate was recorded."
    diff = best.get("diff")
    if not diff:
        return f"{heading}\n\nNo change: the seed stayed best."
    changed = [inline(m) for m in _items(best, "changed_modules")]
    intro = f"Best candidate {_cid(best.get('candidate'))}"
    intro += f" changes {', '.join(changed)}:" if changed else ":"
    return f"{heading}\n\n{intro}\n\n{code_block(diff, 'diff')}"


# -- instances -----------------------------------------------------------------------------------------


def _instances(task: Mapping[str, Any]) -> str:
    rows = [r for r in _items(task, "instances") if isinstance(r, Mapping)]
    if not rows:
        return ""
    test = [r for r in rows if r.get("split") == "test"]
    # Worst regression first, then the biggest gains; a missing delta counts as unchanged.
    regressions = sorted((r for r in test if (_delta(r) or 0) < 0), key=lambda r: (_delta(r), str(r.get("id"))))
    improvements = sorted((r for r in test if (_delta(r) or 0) > 0), key=lambda r: (-_delta(r), str(r.get("id"))))
    moved = regressions + improvements
    rest = [r for r in test if not _delta(r)] + [r for r in rows if r.get("split") != "test"]

    blocks = ["### Test instances that changed"]
    if moved:
        blocks.append(table(["id", "before", "after", "change", "output before", "output after"],
                            [[_ident(r), _fmt(r.get("before")), _fmt(r.get("after")), _signed(_delta(r)),
                              _output(r.get("output_before")), _output(r.get("output_after"))]
                             for r in moved], align="lrrrll"))
    else:
        blocks.append("No test instance changed its score.")
    if rest:
        unchanged = len(rest) - sum(1 for r in rest if r.get("split") != "test")
        summary = f"Unchanged test instances ({unchanged}) and validation instances ({len(rest) - unchanged})"
        body = table(["id", "split", "before", "after", "output before", "output after"],
                     [[_ident(r), r.get("split") or "?", _fmt(r.get("before")), _fmt(r.get("after")),
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


def lineage_section(task: Mapping[str, Any], heading: str, *, limit: int | None = RATIONALE_LIMIT,
                    with_seed: bool = True) -> str:
    """The winning lineage, a line per step and the reflection model's rationale quoted under it."""
    steps = [s for s in _items(task, "lineage")
             if isinstance(s, Mapping) and (with_seed or s.get("origin") != "seed")]
    if not steps:
        return ""
    blocks = [heading]
    for step in steps:
        blocks.append(_step(step))
        if step.get("rationale"):
            blocks.append(quote(step["rationale"], limit))
    return "\n\n".join(blocks)


def _lineage(task: Mapping[str, Any]) -> str:
    return lineage_section(task, "### How the best candidate was found")


def _step(step: Mapping[str, Any]) -> str:
    origin = _word(step.get("origin"))
    parents = [_cid(p) for p in _items(step, "parents")]
    head = f"**{_cid(step.get('candidate'))}**"
    if origin == "merge" and parents:
        head += f" merge of {' + '.join(parents)}"
    else:
        head += f" {origin}"
        if parents:
            head += f" from {', '.join(parents)}"
    facts = [head]
    if step.get("module"):
        facts.append(f"module {inline(step['module'])}")
    if origin != "seed" and _number(step.get("iteration")) is not None:
        facts.append(f"iteration {_count(step.get('iteration'))}")
    ids = _items(step, "minibatch_ids")
    before, after = _mean(step.get("minibatch_before")), _mean(step.get("minibatch_after"))
    if ids or before is not None:
        shown = ", ".join(inline(i, ID_LIMIT) for i in ids[:MAX_MINIBATCH_IDS])
        if len(ids) > MAX_MINIBATCH_IDS:
            shown += f", … ({len(ids)} in all)"
        label = f"minibatch ({shown})" if shown else "minibatch"
        facts.append(f"{label} {_fmt(before)} → {_fmt(after)}")
    facts.append(f"val {_fmt(step.get('val_score'))}")
    if _number(step.get("metric_calls")) is not None:
        facts.append(f"at {_count(step.get('metric_calls'))} metric calls")
    return " · ".join(facts)


def _word(value: Any) -> str:
    """An origin such as `reflection` reduced to letters and dashes: safe in Markdown and in Mermaid."""
    word = re.sub(r"[^a-z-]", "", str(value or "").lower())[:20]
    return word or "other"


def _charts(task: Mapping[str, Any]) -> str:
    return "\n\n".join(chart for chart in (_progress_chart(task), _candidate_graph(task)) if chart)


def _progress_chart(task: Mapping[str, Any]) -> str:
    """Best validation score against metric calls spent, as a Mermaid line chart."""
    points = []
    for entry in _items(task, "history"):
        if isinstance(entry, Mapping):
            calls, score = _number(entry.get("metric_calls")), _number(entry.get("best_val"))
            if calls is not None and score is not None:
                points.append((int(calls), score))
    points = _thin(points)
    if len(points) < 2:
        return ""
    scores = [s for _, s in points]
    low, high = min(0.0, *scores), max(1.0, *scores)
    calls = ", ".join(f'"{c}"' for c, _ in points)  # quoted: x-axis entries are category labels
    chart = "\n".join([
        "xychart-beta",
        '    title "Best validation score"',
        f'    x-axis "metric calls" [{calls}]',
        f'    y-axis "val score" {low:g} --> {high:g}',
        f"    line [{', '.join(f'{s:.3f}' for s in scores)}]",
    ])
    return f"```mermaid\n{chart}\n```"


def _thin(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Drop points that repeat the previous score (except the last), then sample evenly down to
    `MAX_CHART_POINTS`, keeping the first and the last so the chart spans the whole run."""
    kept = [p for i, p in enumerate(points) if i in (0, len(points) - 1) or p[1] != points[i - 1][1]]
    if len(kept) <= MAX_CHART_POINTS:
        return kept
    step = (len(kept) - 1) / (MAX_CHART_POINTS - 1)
    return [kept[round(i * step)] for i in range(MAX_CHART_POINTS)]


def _candidate_graph(task: Mapping[str, Any]) -> str:
    """The candidate tree as a Mermaid graph; the best candidate's lineage drawn bold.

    Labels hold only `c<id>`, an origin reduced to letters and a score, so no data text reaches Mermaid.
    Past `MAX_GRAPH_NODES` candidates only the lineage is drawn, to stay readable.
    """
    candidates = {}
    for entry in _items(task, "candidates"):
        if isinstance(entry, Mapping) and _cid(entry.get("candidate")) != "c?":
            candidates[_cid(entry["candidate"])] = entry
    if len(candidates) < 2:
        return ""
    path = {_cid(s.get("candidate")) for s in _items(task, "lineage") if isinstance(s, Mapping)}
    shown = candidates
    note = ""
    if len(candidates) > MAX_GRAPH_NODES:
        shown = {k: v for k, v in candidates.items() if k in path}
        note = f"Showing the {len(shown)} candidates on the best's lineage, of {len(candidates)}.\n\n"
    lines = ["graph LR"]
    for node, entry in shown.items():
        lines.append(f'    {node}["{node} {_word(entry.get("origin"))} {_fmt(entry.get("val_score"))}"]')
    for node, entry in shown.items():
        for parent in _items(entry, "parents"):
            if _cid(parent) in shown:
                lines.append(f"    {_cid(parent)} --> {node}")
    on_path = [node for node in shown if node in path]
    if on_path:
        lines += ["    classDef lineage stroke-width:3px", f"    class {','.join(on_path)} lineage"]
    graph = "\n".join(lines)
    return f"{note}```mermaid\n{graph}\n```"


# -- proposals and usage -------------------------------------------------------------------------------


def val_scoring_line(task: Mapping[str, Any]) -> str:
    """How much of val the candidates were scored on, when some children were stopped part-way (racing);
    empty when every child was scored on all of val. Shared by report.md and the PR body."""
    scoring = _section(task, "val_scoring")
    stopped = [s for s in scoring.get("stopped") or [] if isinstance(s, Mapping)]
    if not stopped:
        return ""
    children = sum(_number(s.get("children")) or 0 for s in stopped)
    where = " or ".join(f"{_count(s.get('val_instances'))} ({_count(s.get('children'))})" for s in stopped)
    return (f"Val scoring: the winner and every candidate in the pool were scored on all "
            f"{_count(scoring.get('val_size'))} val instances; {_count(children)} "
            f"{'child' if children == 1 else 'children'} that fell behind their parent on val were stopped "
            f"after {where} of them, which saved {_count(scoring.get('calls_saved'))} metric calls.")


def _proposals(task: Mapping[str, Any]) -> str:
    stats = _section(task, "proposals")
    if not stats:
        return ""
    invalid = _section(stats, "rejected_invalid")
    invalid_total = sum(n for n in map(_number, invalid.values()) if n is not None)
    lines = ["### Proposals", "",
             f"- {_count(stats.get('total'))} proposed: {_count(stats.get('accepted'))} accepted, "
             f"{_count(stats.get('rejected_not_better'))} not better on their minibatch, "
             f"{_count(invalid_total)} invalid, {_count(stats.get('skipped_perfect'))} skipped "
             f"(minibatch already perfect), {_count(stats.get('repeats'))} repeats"]
    if invalid:
        reasons = sorted(invalid.items(), key=lambda kv: (-(_number(kv[1]) or 0), str(kv[0])))
        lines.append("- invalid because: " + "; ".join(f"{inline(k, 80)} ({_count(v)})" for k, v in reasons))
    merges = _section(stats, "merges")
    if merges:
        lines.append(f"- merges: {_count(merges.get('tried'))} tried, {_count(merges.get('accepted'))} accepted")
    scoring = val_scoring_line(task)
    if scoring:
        lines.append(f"- {scoring}")
    return "\n".join(lines)


def _usage(task: Mapping[str, Any]) -> str:
    usage = _section(task, "usage")
    if not usage:
        return ""
    calls = f"{_count(usage.get('metric_calls'))} metric calls"
    if _number(usage.get("budget")) is not None:
        calls += f" of a budget of {_count(usage['budget'])}"
    if _number(usage.get("test_calls")) is not None:
        calls += f", plus {_count(usage['test_calls'])} on the test split"
    lines = ["### Usage", "", f"- {calls}"]
    if _number(usage.get("reflection_calls")) is not None:
        lines.append(f"- {_count(usage['reflection_calls'])} reflection calls")
    if _number(usage.get("requests")) is not None:
        cached = f" ({_count(usage.get('cached'))} from the cache)" if _number(usage.get("cached")) else ""
        lines.append(f"- {_count(usage['requests'])} model requests{cached}")
    if _number(usage.get("prompt_tokens")) is not None or _number(usage.get("completion_tokens")) is not None:
        lines.append(f"- tokens: {_count(usage.get('prompt_tokens'))} prompt + "
                     f"{_count(usage.get('completion_tokens'))} completion")
    if retries := retries_text(usage):
        lines.append(f"- {retries} of model requests (transient failures that were tried again)")
    cost = _number(usage.get("cost_usd"))
    lines.append(f"- cost {format_cost(cost) if cost is not None else 'n/a'}, "
                 f"wall time {_duration(usage.get('wall_s'))}")
    return "\n".join(lines)


# -- terminal ------------------------------------------------------------------------------------------


def render_summary_line(task: Mapping[str, Any]) -> str:
    """One line for the terminal, e.g.
    `triage: val 0.500 → 0.857, test 0.467 → 0.800 (+0.333, 95% CI +0.133…+0.533), 288/300 calls, $0.0123`.

    Plain text (no Markdown), with control characters removed from names so nothing can drive the terminal.
    """
    scores = _section(task, "scores")
    parts = []
    val = _section(scores, "val")
    if val:
        parts.append(f"val {_fmt(val.get('seed'))} → {_fmt(val.get('best'))}")
    test = _section(scores, "test")
    if test:
        text = f"test {_fmt(test.get('seed'))} → {_fmt(test.get('best'))} ({_signed(test.get('delta'))}"
        ci = _section(test, "ci95")
        if ci:
            text += f", {_percent(ci.get('confidence'))} CI {_signed(ci.get('low'))}…{_signed(ci.get('high'))}"
        parts.append(text + ")")
    else:
        parts.append("no test split")
    usage = _section(task, "usage")
    if _number(usage.get("metric_calls")) is not None:
        budget = _number(usage.get("budget"))
        spent = f"{round(_number(usage['metric_calls']))}"
        calls = f"{spent}/{round(budget)} calls" if budget is not None else f"{spent} calls"
        if _number(usage.get("test_calls")):
            calls += f" (+{round(_number(usage['test_calls']))} on test)"
        parts.append(calls)
    cost = _number(usage.get("cost_usd"))
    if cost is not None:
        parts.append(format_cost(cost))
    if retries := retries_text(usage):
        parts.append(retries)
    if _number(usage.get("wall_s")) is not None:
        parts.append(_duration(usage["wall_s"]))
    status = task.get("status")
    if status and status != "finished":
        parts.append(plain(status, 80))
    return f"{plain(task.get('task') or 'task', 60)}: {', '.join(parts)}"

