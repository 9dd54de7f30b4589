"""What the CLI prints about a run or an eval: the one-line task summary and cut-down model text.

Terminal text is plain (no Markdown) but still untrusted: names go through `text.plain`, which drops the
control characters that could drive a terminal. Model outputs shown in fixed-width columns are flattened
to one line and cut by `shorten`, the one truncation helper of the CLI, the pre-commit gate and `eval`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..lm.client import format_cost
from ..report.model import as_data
from .sections import mapping_at, retries_text
from .text import abbreviate, as_number, fmt_duration, fmt_percent, fmt_score, fmt_signed, plain

if TYPE_CHECKING:
    from ..lm.client import Usage
    from ..scoring import TaskResult


def shorten(text: object, width: int) -> str:
    """`text` on one line (whitespace runs become one space), cut to `width` characters ending in "…"."""
    return abbreviate(" ".join(str(text).split()), width, trim=False)


def quoted(text: object, width: int) -> str:
    """`shorten`ed and in Python quotes, so an empty or blank output is still visible in a line."""
    return repr(shorten(text, width))


def render_summary_line(task: Mapping[str, Any]) -> str:
    """One line for the terminal, e.g.
    `triage: val 0.500 → 0.857, test 0.467 → 0.800 (+0.333, 95% CI +0.133…+0.533), 288/300 calls, $0.0123`.

    Plain text (no Markdown), with control characters removed from names so nothing can drive the terminal.
    """
    task = as_data(task)
    scores = mapping_at(task, "scores")
    parts = []
    val = mapping_at(scores, "val")
    if val:
        parts.append(f"val {fmt_score(val.get('seed'))} → {fmt_score(val.get('best'))}")
    test = mapping_at(scores, "test")
    if test:
        text = f"test {fmt_score(test.get('seed'))} → {fmt_score(test.get('best'))} ({fmt_signed(test.get('delta'))}"
        ci = mapping_at(test, "ci95")
        if ci:
            text += f", {fmt_percent(ci.get('confidence'))} CI {fmt_signed(ci.get('low'))}…{fmt_signed(ci.get('high'))}"
        parts.append(text + ")")
    else:
        parts.append("no test split")
    usage = mapping_at(task, "usage")
    if as_number(usage.get("metric_calls")) is not None:
        budget = as_number(usage.get("budget"))
        spent = f"{round(as_number(usage['metric_calls']))}"
        calls = f"{spent}/{round(budget)} calls" if budget is not None else f"{spent} calls"
        if as_number(usage.get("test_calls")):
            calls += f" (+{round(as_number(usage['test_calls']))} on test)"
        parts.append(calls)
    cost = as_number(usage.get("cost_usd"))
    if cost is not None:
        parts.append(format_cost(cost))
    if retries := retries_text(usage):
        parts.append(retries)
    if as_number(usage.get("wall_s")) is not None:
        parts.append(fmt_duration(usage["wall_s"]))
    status = task.get("status")
    if status and status != "finished":
        parts.append(plain(status, 80))
    return f"{plain(task.get('task') or 'task', 60)}: {', '.join(parts)}"


def format_results(results: list[TaskResult], usage: Usage) -> str:
    """The per-instance table and the aggregate, for a person at a terminal."""
    lines: list[str] = []
    for result in results:
        task, es = result.task, result.task.eval_set
        lines.append(f"{task.name}: {es.name}@{es.version} sha256:{es.sha256[:12]}  split={result.split}  "
                     f"model={task.model}")
        id_width = max([len("id"), *(len(t.instance_id) for t in result.traces)])
        lines.append(f"  {'id':<{id_width}}  {'split':<5}  score  {'output':<24}  feedback")
        for t in result.traces:
            flag = " [truncated]" if t.truncated else ""
            lines.append(f"  {t.instance_id:<{id_width}}  {t.split:<5}  {t.score:5.2f}  "
                         f"{shorten(t.output, 24):<24}  {shorten(t.feedback, 70)}{flag}")
        score = result.mean_score
        shown = "n/a (no instances in this split)" if score is None else f"{score:.3f}"
        lines.append(f"  mean {shown} over {len(result.traces)} instances")
        lines.append("")
    lines.append(f"usage: {usage.summary()}")
    return "\n".join(lines)
