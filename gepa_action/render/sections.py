"""The parts report.md and the PR body both show, written once so the two always say the same thing.

Input is the report's JSON data (`report.model.as_data`), walked defensively with `mapping_at` and `list_at`:
a section that is missing renders as "n/a" or not at all. Untrusted text goes through `text.py`; the
Mermaid charts are built from ids, numbers and origins reduced to letters only, so no data text reaches
Mermaid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..lm.client import RETRY_KINDS, format_retries
from ..runner import mean
from .text import as_number, code_block, fmt_count, fmt_percent, fmt_score, fmt_signed, inline, quote

ID_LIMIT = 40
RATIONALE_LIMIT = 1500
MAX_CHART_POINTS = 50
MAX_GRAPH_NODES = 60
MAX_MINIBATCH_IDS = 8

Row = Mapping[str, Any]


# -- walking the data ----------------------------------------------------------------------------------


def mapping_at(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """`data[key]` when it is an object, else an empty one: a missing part renders as missing, not a crash."""
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def list_at(data: Mapping[str, Any], key: str) -> list[Any]:
    """`data[key]` when it is a list, else an empty one."""
    value = data.get(key)
    return list(value) if isinstance(value, (list, tuple)) else []


def mean_of(values: Any) -> float | None:
    """The mean of the numeric entries (report.json may come from elsewhere: junk is skipped)."""
    return mean(n for n in map(as_number, values or []) if n is not None)


def cid(value: Any) -> str:
    """A candidate as `c7`: never `#7`, which GitHub would link to issue 7."""
    number = as_number(value)
    return f"c{int(number)}" if number is not None and number == int(number) else "c?"


def row_delta(row: Row) -> float | None:
    """The row's change, from `before` and `after` when `delta` itself is missing."""
    delta = as_number(row.get("delta"))
    if delta is None:
        before, after = as_number(row.get("before")), as_number(row.get("after"))
        delta = after - before if before is not None and after is not None else None
    return delta


def word(value: Any) -> str:
    """An origin such as `reflection` reduced to letters and dashes: safe in Markdown and in Mermaid."""
    letters = re.sub(r"[^a-z-]", "", str(value or "").lower())[:20]
    return letters or "other"


def moved_rows(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """The regressions (worst first) and the gains (biggest first) among `rows`, ties by id; a missing
    delta counts as unchanged. Both outputs list a split this way, regressions first."""
    regressions = sorted((r for r in rows if (row_delta(r) or 0) < 0), key=lambda r: (row_delta(r), str(r.get("id"))))
    gains = sorted((r for r in rows if (row_delta(r) or 0) > 0), key=lambda r: (-(row_delta(r) or 0), str(r.get("id"))))
    return regressions, gains


# -- scores --------------------------------------------------------------------------------------------


def score_rows(task: Mapping[str, Any]) -> list[list[str]]:
    """Seed against best per split (`val (12)`, seed, best, change with the CI when there is one)."""
    scores = mapping_at(task, "scores")
    sizes = mapping_at(task, "split_sizes")
    rows = []
    for split in ("val", "test"):
        part = mapping_at(scores, split)
        if not part:
            continue
        size = as_number(sizes.get(split))
        label = f"{split} ({int(size)})" if size is not None else split
        change = fmt_signed(part.get("delta"))
        ci = mapping_at(part, "ci95")
        if ci:
            change += f" [{fmt_signed(ci.get('low'))}, {fmt_signed(ci.get('high'))}]"
        rows.append([label, fmt_score(part.get("seed")), fmt_score(part.get("best")), change])
    return rows


def test_verdict(scores: Mapping[str, Any], counts: Mapping[str, Any]) -> str:
    """The plain sentence under the table: does the test split show a real difference?"""
    test = mapping_at(scores, "test")
    if not test:
        return ("No test split: the numbers above are on the validation split, which guided the search, so "
                "they overstate the gain.")
    ci = mapping_at(test, "ci95")
    delta = fmt_signed(test.get("delta"))
    if not ci:
        sentence = f"Test change {delta}; no confidence interval was computed."
    else:
        low, high = as_number(ci.get("low")), as_number(ci.get("high"))
        level = fmt_percent(ci.get("confidence"))
        how = (f"paired bootstrap over {fmt_count(ci.get('n'))} test instances, "
               f"{fmt_count(ci.get('resamples'))} resamples")
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
        sentence += (f" Test instances: {fmt_count(counts.get('improved'))} improved, "
                     f"{fmt_count(counts.get('regressed'))} regressed, {fmt_count(counts.get('unchanged'))} unchanged.")
    return sentence


def retries_text(usage: Mapping[str, Any]) -> str | None:
    """`3 retries (2 rate_limited, 1 invalid_reply)`, or None when the run needed none.

    Kinds outside the client's own names are counted as `other`: report.json may come from a tampered
    run folder, and only names this program wrote may reach Markdown.
    """
    total = as_number(usage.get("retries"))
    if not total:
        return None
    kinds: dict[str, int] = {}
    for kind, n in mapping_at(usage, "retries_by_kind").items():
        if (count := as_number(n)) is not None and count > 0:
            name = kind if kind in RETRY_KINDS else "other"
            kinds[name] = kinds.get(name, 0) + round(count)
    return format_retries(round(total), kinds)


def val_scoring_line(task: Mapping[str, Any]) -> str:
    """How much of val the candidates were scored on, when some children were stopped part-way (racing);
    empty when every child was scored on all of val. Shared by report.md and the PR body."""
    scoring = mapping_at(task, "val_scoring")
    stopped = [s for s in scoring.get("stopped") or [] if isinstance(s, Mapping)]
    if not stopped:
        return ""
    children = sum(as_number(s.get("children")) or 0 for s in stopped)
    where = " or ".join(f"{fmt_count(s.get('val_instances'))} ({fmt_count(s.get('children'))})" for s in stopped)
    return (f"Val scoring: the winner and every candidate in the pool were scored on all "
            f"{fmt_count(scoring.get('val_size'))} val instances; {fmt_count(children)} "
            f"{'child' if children == 1 else 'children'} that fell behind their parent on val were stopped "
            f"after {where} of them, which saved {fmt_count(scoring.get('calls_saved'))} metric calls.")


# -- the template change -------------------------------------------------------------------------------


def template_change(task: Mapping[str, Any]) -> str:
    best = mapping_at(task, "best")
    heading = "### Template change"
    if not best:
        return f"{heading}\n\nNo best candidate was recorded."
    diff = best.get("diff")
    if not diff:
        return f"{heading}\n\nNo change: the seed stayed best."
    return f"{heading}\n\n{diff_intro(best)}\n\n{code_block(diff, 'diff')}"


def diff_intro(best: Row) -> str:
    """`Best candidate c7 changes prompts/x.j2:`, the line above the diff."""
    changed = [inline(m) for m in list_at(best, "changed_modules")]
    return f"Best candidate {cid(best.get('candidate'))}" + (f" changes {', '.join(changed)}:" if changed else ":")


# -- how the search got there --------------------------------------------------------------------------


def lineage_section(task: Mapping[str, Any], heading: str, *, limit: int | None = RATIONALE_LIMIT,
                    with_seed: bool = True) -> str:
    """The winning lineage, a line per step and the reflection model's rationale quoted under it."""
    steps = [s for s in list_at(task, "lineage")
             if isinstance(s, Mapping) and (with_seed or s.get("origin") != "seed")]
    if not steps:
        return ""
    blocks = [heading]
    for step in steps:
        blocks.append(lineage_step(step))
        if step.get("rationale"):
            blocks.append(quote(step["rationale"], limit))
    return "\n\n".join(blocks)


def lineage_step(step: Mapping[str, Any]) -> str:
    origin = word(step.get("origin"))
    parents = [cid(p) for p in list_at(step, "parents")]
    head = f"**{cid(step.get('candidate'))}**"
    if origin == "merge" and parents:
        head += f" merge of {' + '.join(parents)}"
    else:
        head += f" {origin}"
        if parents:
            head += f" from {', '.join(parents)}"
    facts = [head]
    if step.get("module"):
        facts.append(f"module {inline(step['module'])}")
    if origin != "seed" and as_number(step.get("iteration")) is not None:
        facts.append(f"iteration {fmt_count(step.get('iteration'))}")
    ids = list_at(step, "minibatch_ids")
    before, after = mean_of(step.get("minibatch_before")), mean_of(step.get("minibatch_after"))
    if ids or before is not None:
        shown = ", ".join(inline(i, ID_LIMIT) for i in ids[:MAX_MINIBATCH_IDS])
        if len(ids) > MAX_MINIBATCH_IDS:
            shown += f", … ({len(ids)} in all)"
        label = f"minibatch ({shown})" if shown else "minibatch"
        facts.append(f"{label} {fmt_score(before)} → {fmt_score(after)}")
    facts.append(f"val {fmt_score(step.get('val_score'))}")
    if as_number(step.get("metric_calls")) is not None:
        facts.append(f"at {fmt_count(step.get('metric_calls'))} metric calls")
    return " · ".join(facts)


def charts(task: Row) -> list[str]:
    """The progress chart and the candidate graph, each only when it has something to show."""
    return [chart for chart in (progress_chart(task), candidate_graph(task)) if chart]


def progress_chart(task: Mapping[str, Any]) -> str:
    """Best validation score against metric calls spent, as a Mermaid line chart."""
    points = []
    for entry in list_at(task, "history"):
        if isinstance(entry, Mapping):
            calls, score = as_number(entry.get("metric_calls")), as_number(entry.get("best_val"))
            if calls is not None and score is not None:
                points.append((int(calls), score))
    points = thin(points)
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


def thin(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Drop points that repeat the previous score (except the last), then sample evenly down to
    `MAX_CHART_POINTS`, keeping the first and the last so the chart spans the whole run."""
    kept = [p for i, p in enumerate(points) if i in (0, len(points) - 1) or p[1] != points[i - 1][1]]
    if len(kept) <= MAX_CHART_POINTS:
        return kept
    step = (len(kept) - 1) / (MAX_CHART_POINTS - 1)
    return [kept[round(i * step)] for i in range(MAX_CHART_POINTS)]


def candidate_graph(task: Mapping[str, Any]) -> str:
    """The candidate tree as a Mermaid graph; the best candidate's lineage drawn bold.

    Labels hold only `c<id>`, an origin reduced to letters and a score, so no data text reaches Mermaid.
    Past `MAX_GRAPH_NODES` candidates only the lineage is drawn, to stay readable.
    """
    candidates = {}
    for entry in list_at(task, "candidates"):
        if isinstance(entry, Mapping) and cid(entry.get("candidate")) != "c?":
            candidates[cid(entry["candidate"])] = entry
    if len(candidates) < 2:
        return ""
    path = {cid(s.get("candidate")) for s in list_at(task, "lineage") if isinstance(s, Mapping)}
    shown = candidates
    note = ""
    if len(candidates) > MAX_GRAPH_NODES:
        shown = {k: v for k, v in candidates.items() if k in path}
        note = f"Showing the {len(shown)} candidates on the best's lineage, of {len(candidates)}.\n\n"
    lines = ["graph LR"]
    for node, entry in shown.items():
        lines.append(f'    {node}["{node} {word(entry.get("origin"))} {fmt_score(entry.get("val_score"))}"]')
    for node, entry in shown.items():
        for parent in list_at(entry, "parents"):
            if cid(parent) in shown:
                lines.append(f"    {cid(parent)} --> {node}")
    on_path = [node for node in shown if node in path]
    if on_path:
        lines += ["    classDef lineage stroke-width:3px", f"    class {','.join(on_path)} lineage"]
    graph = "\n".join(lines)
    return f"{note}```mermaid\n{graph}\n```"
