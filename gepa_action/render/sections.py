"""The parts report.md and the PR body both show, written once so the two always say the same thing.

Input is the typed report (`report/model.py`): every value has its type, checked when report.json was
read, so these functions read attributes and need no guard against junk. What the model allows to be
absent (no test split, no interval, no best candidate, an empty list) renders as a sentence saying so or
not at all. Untrusted text goes through `text.py`; the Mermaid charts are built from ids, numbers and
origins reduced to letters only, so no data text reaches Mermaid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..lm.client import RETRY_KINDS, format_retries
from ..report.model import Best, Counts, Row, Scores, Step, TaskReport, TestScore, Usage
from ..runner import mean
from .text import code_block, fmt_count, fmt_percent, fmt_score, fmt_signed, inline, quote

ID_LIMIT = 40
RATIONALE_LIMIT = 1500
MAX_CHART_POINTS = 50
MAX_GRAPH_NODES = 60
MAX_MINIBATCH_IDS = 8


def cid(candidate: int) -> str:
    """A candidate as `c7`: never `#7`, which GitHub would link to issue 7."""
    return f"c{candidate}"


def word(value: str | None) -> str:
    """An origin such as `reflection` reduced to letters and dashes: safe in Markdown and in Mermaid."""
    letters = re.sub(r"[^a-z-]", "", str(value or "").lower())[:20]
    return letters or "other"


def moved_rows(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """The regressions (worst first) and the gains (biggest first) among `rows`, ties by id. Both
    outputs list a split this way, regressions first."""
    regressions = sorted((r for r in rows if r.delta < 0), key=lambda r: (r.delta, r.id))
    gains = sorted((r for r in rows if r.delta > 0), key=lambda r: (-r.delta, r.id))
    return regressions, gains


# -- scores --------------------------------------------------------------------------------------------


def score_rows(task: TaskReport) -> list[list[str]]:
    """Seed against best per split (`val (12)`, seed, best, change with the CI when there is one)."""
    rows = []
    for split, part in (("val", task.scores.val), ("test", task.scores.test)):
        if part is None:
            continue
        size = task.split_sizes.get(split)
        label = f"{split} ({size})" if size is not None else split
        change = fmt_signed(part.delta)
        ci = part.ci95 if isinstance(part, TestScore) else None  # only the test split has an interval
        if ci is not None:
            change += f" [{fmt_signed(ci.low)}, {fmt_signed(ci.high)}]"
        rows.append([label, fmt_score(part.seed), fmt_score(part.best), change])
    return rows


def test_verdict(scores: Scores, counts: Counts) -> str:
    """The plain sentence under the table: does the test split show a real difference?"""
    test = scores.test
    if test is None:
        return ("No test split: the numbers above are on the validation split, which guided the search, so "
                "they overstate the gain.")
    ci = test.ci95
    delta = fmt_signed(test.delta)
    if ci is None:
        sentence = f"Test change {delta}; no confidence interval was computed."
    else:
        level = fmt_percent(ci.confidence)
        how = f"paired bootstrap over {fmt_count(ci.n)} test instances, {fmt_count(ci.resamples)} resamples"
        if ci.low > 0:
            sentence = f"The gain of {delta} on the test split is distinguishable from zero at {level} ({how})."
        elif ci.high < 0:
            sentence = f"The loss of {delta} on the test split is distinguishable from zero at {level} ({how})."
        elif ci.low == ci.high == 0:
            sentence = "Seed and best score the same on every test instance."
        else:
            sentence = (f"The change of {delta} on the test split is not distinguishable from zero at {level} "
                        f"({how}): this test set cannot tell the two prompts apart.")
    return sentence + (f" Test instances: {fmt_count(counts.improved)} improved, {fmt_count(counts.regressed)} "
                       f"regressed, {fmt_count(counts.unchanged)} unchanged.")


def retries_text(usage: Usage) -> str | None:
    """`3 retries (2 rate_limited, 1 invalid_reply)`, or None when the run needed none.

    Kinds outside the client's own names are counted as `other`: report.json may come from a tampered
    run folder, and only names this program wrote may reach Markdown.
    """
    if not usage.retries:
        return None
    kinds: dict[str, int] = {}
    for kind, count in usage.retries_by_kind.items():
        if count > 0:
            name = kind if kind in RETRY_KINDS else "other"
            kinds[name] = kinds.get(name, 0) + count
    return format_retries(usage.retries, kinds)


def val_scoring_line(task: TaskReport) -> str:
    """How much of val the candidates were scored on, when some children were stopped part-way (racing);
    empty when every child was scored on all of val. Shared by report.md and the PR body."""
    scoring = task.val_scoring
    if not scoring.stopped:
        return ""
    children = sum(s.children for s in scoring.stopped)
    where = " or ".join(f"{fmt_count(s.val_instances)} ({fmt_count(s.children)})" for s in scoring.stopped)
    return (f"Val scoring: the winner and every candidate in the pool were scored on all "
            f"{fmt_count(scoring.val_size)} val instances; {fmt_count(children)} "
            f"{'child' if children == 1 else 'children'} that fell behind their parent on val were stopped "
            f"after {where} of them, which saved {fmt_count(scoring.calls_saved)} metric calls.")


# -- the template change -------------------------------------------------------------------------------


def template_change(task: TaskReport) -> str:
    best = task.best
    heading = "### Template change"
    if best is None:
        return f"{heading}\n\nNo best candidate was recorded."
    if not best.diff:
        return f"{heading}\n\nNo change: the seed stayed best."
    return f"{heading}\n\n{diff_intro(best)}\n\n{code_block(best.diff, 'diff')}"


def diff_intro(best: Best) -> str:
    """`Best candidate c7 changes prompts/x.j2:`, the line above the diff."""
    changed = [inline(m) for m in best.changed_modules]
    return f"Best candidate {cid(best.candidate)}" + (f" changes {', '.join(changed)}:" if changed else ":")


# -- how the search got there --------------------------------------------------------------------------


def lineage_section(task: TaskReport, heading: str, *, limit: int | None = RATIONALE_LIMIT,
                    with_seed: bool = True) -> str:
    """The winning lineage, a line per step and the reflection model's rationale quoted under it."""
    steps = [s for s in task.lineage if with_seed or s.origin != "seed"]
    if not steps:
        return ""
    blocks = [heading]
    for step in steps:
        blocks.append(lineage_step(step))
        if step.rationale:
            blocks.append(quote(step.rationale, limit))
    return "\n\n".join(blocks)


def lineage_step(step: Step) -> str:
    origin = word(step.origin)
    parents = [cid(p) for p in step.parents]
    head = f"**{cid(step.candidate)}**"
    if origin == "merge" and parents:
        head += f" merge of {' + '.join(parents)}"
    else:
        head += f" {origin}"
        if parents:
            head += f" from {', '.join(parents)}"
    facts = [head]
    if step.module:
        facts.append(f"module {inline(step.module)}")
    if origin != "seed":
        facts.append(f"iteration {fmt_count(step.iteration)}")
    ids = step.minibatch_ids
    before, after = mean(step.minibatch_before), mean(step.minibatch_after)
    if ids or before is not None:
        shown = ", ".join(inline(i, ID_LIMIT) for i in ids[:MAX_MINIBATCH_IDS])
        if len(ids) > MAX_MINIBATCH_IDS:
            shown += f", … ({len(ids)} in all)"
        label = f"minibatch ({shown})" if shown else "minibatch"
        facts.append(f"{label} {fmt_score(before)} → {fmt_score(after)}")
    facts.append(f"val {fmt_score(step.val_score)}")
    facts.append(f"at {fmt_count(step.metric_calls)} metric calls")
    return " · ".join(facts)


def charts(task: TaskReport) -> list[str]:
    """The progress chart and the candidate graph, each only when it has something to show."""
    return [chart for chart in (progress_chart(task), candidate_graph(task)) if chart]


def progress_chart(task: TaskReport) -> str:
    """Best validation score against metric calls spent, as a Mermaid line chart."""
    points = thin([(point.metric_calls, point.best_val) for point in task.history])
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


def candidate_graph(task: TaskReport) -> str:
    """The candidate tree as a Mermaid graph; the best candidate's lineage drawn bold.

    Labels hold only `c<id>`, an origin reduced to letters and a score, so no data text reaches Mermaid.
    Past `MAX_GRAPH_NODES` candidates only the lineage is drawn, to stay readable.
    """
    candidates = {cid(entry.candidate): entry for entry in task.candidates}
    if len(candidates) < 2:
        return ""
    path = {cid(step.candidate) for step in task.lineage}
    shown = candidates
    note = ""
    if len(candidates) > MAX_GRAPH_NODES:
        shown = {k: v for k, v in candidates.items() if k in path}
        note = f"Showing the {len(shown)} candidates on the best's lineage, of {len(candidates)}.\n\n"
    lines = ["graph LR"]
    for node, entry in shown.items():
        lines.append(f'    {node}["{node} {word(entry.origin)} {fmt_score(entry.val_score)}"]')
    for node, entry in shown.items():
        for parent in entry.parents:
            if cid(parent) in shown:
                lines.append(f"    {cid(parent)} --> {node}")
    on_path = [node for node in shown if node in path]
    if on_path:
        lines += ["    classDef lineage stroke-width:3px", f"    class {','.join(on_path)} lineage"]
    graph = "\n".join(lines)
    return f"{note}```mermaid\n{graph}\n```"
