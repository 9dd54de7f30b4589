"""The cost estimate and the prompt's own cost as people read them: the `--estimate` table (terminal and
job summary), the estimate beside the actual figures in report.md, and the PR body's cost lines.

Every function takes the model objects (`TaskEstimate`, `PromptCost`, `TaskReport`) and reads their
attributes; task names are user text and go through the table helper, which escapes every cell.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..cost_model import PromptCost, Range, TaskEstimate
from ..report.model import Usage
from .text import inline, plain, table

#: At this ratio of evolved to seed prompt size, the PR body says plainly that the prompt grew.
LONGER_WARNING = 2.0
HEADERS = ("task", "metric calls", "test calls", "reflection calls", "input tokens", "output tokens", "dollars")


def span(value: Range | None, *, dollars: bool = False) -> str:
    """"≈280 (30–300)", "$0.01–$0.42", "0–no limit": the likely figure, then the range; None is `unknown`
    (an unpriced model)."""
    if value is None:
        return "unknown"

    def one(x: float) -> str:
        if not dollars:
            return f"{x:,.0f}"
        return f"${x:,.2f}" if x >= 0.01 or x == 0 else f"${x:.4f}"  # cents hide a cheap run's fractions

    high = "no limit" if value.high is None else one(value.high)
    text = one(value.low) if value.high is not None and value.low == value.high else f"{one(value.low)}–{high}"
    if value.likely is not None and text != one(value.likely):
        text = f"≈{one(value.likely)} ({text})"
    return text


def _dollars(estimate: TaskEstimate) -> str:
    if estimate.cost_usd is None:
        return "unknown (no price for " + ", ".join(estimate.unpriced) + ")"
    return span(estimate.cost_usd, dollars=True)


def estimate_table(estimates: Sequence[tuple[str, TaskEstimate]], *, markdown: bool = False) -> str:
    """One table, a row per task, then one line per task saying what bounds it and what was assumed.

    Plain text with aligned columns for a terminal; `markdown` for the job summary (every cell escaped)."""
    rows = [[name, span(e.metric_calls), span(e.test_calls), span(e.reflection_calls), span(e.input_tokens),
             span(e.output_tokens), _dollars(e)] for name, e in estimates]
    if markdown:
        notes = [f"- {inline(name)}: bounded by {inline(e.bound)}; " + "; ".join(inline(n) for n in e.notes)
                 for name, e in estimates]
        return table(HEADERS, rows, align="lrrrrrr") + "\n\n" + "\n".join(notes)
    cells = [[plain(c, 60) for c in row] for row in [list(HEADERS), *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines += ["", *(f"{plain(name, 60)}: bounded by {e.bound}; " + "; ".join(e.notes) for name, e in estimates)]
    return "\n".join(lines)


def estimate_summary(estimates: Sequence[tuple[str, TaskEstimate]]) -> str:
    """The job summary's first block, written before tuning starts."""
    return "## gepa-tune: estimate before tuning\n\n" + estimate_table(estimates, markdown=True)


def estimate_section(estimate: TaskEstimate | None, usage: Usage | None) -> str:
    """report.md: the estimate made before the run beside what the run spent ("" without an estimate)."""
    if estimate is None or usage is None:
        return ""

    def verdict(value: Range | None, actual: float) -> str:
        return "" if value is None else ("within" if value.contains(actual) else "outside")

    rows = [
        ["metric calls", span(estimate.metric_calls), f"{usage.metric_calls:,}",
         verdict(estimate.metric_calls, usage.metric_calls)],
        ["test calls", span(estimate.test_calls), f"{usage.test_calls:,}",
         verdict(estimate.test_calls, usage.test_calls)],
        ["reflection calls", span(estimate.reflection_calls), f"{usage.reflection_calls:,}",
         verdict(estimate.reflection_calls, usage.reflection_calls)],
        ["input tokens", span(estimate.input_tokens), f"{usage.prompt_tokens:,}",
         verdict(estimate.input_tokens, usage.prompt_tokens)],
        ["output tokens", span(estimate.output_tokens), f"{usage.completion_tokens:,}",
         verdict(estimate.output_tokens, usage.completion_tokens)],
        ["dollars", _dollars(estimate), f"${usage.cost_usd:.4f}", verdict(estimate.cost_usd, usage.cost_usd)],
    ]
    note = ("Tokens and dollars spent count answers paid for; answers from the response cache cost nothing, "
            f"so a warm re-run spends less than estimated. The estimate was bounded by {inline(estimate.bound)}.")
    return "### Estimate and actual\n\n" + table(("", "estimated before the run", "actual", ""), rows,
                                                 align="lrrl") + "\n\n" + note


def prompt_cost_lines(cost: PromptCost | None) -> list[str]:
    """The PR body's lines on the prompt's own cost: tokens per call before and after, the size ratio
    said plainly when the prompt at least doubled, and the monthly difference at the stated volume."""
    if cost is None or cost.seed_tokens == cost.best_tokens:  # the seed won: nothing to compare
        return []
    lines = [f"**Prompt cost:** {cost.seed_tokens:,.0f} → {cost.best_tokens:,.0f} input tokens per call "
             f"(mean over the {cost.instances} test instances' rendered prompts, ~4 characters a token)."]
    if cost.seed_tokens and cost.ratio >= LONGER_WARNING:
        lines.append(f"**The evolved prompt is {cost.ratio:.1f}× longer than the committed prompt**: every call "
                     "pays for it.")
    if cost.calls_per_month is not None:
        if cost.monthly_usd_delta is None:
            lines.append(f"At {cost.calls_per_month:,} calls a month: unknown, there is no price for "
                         f"{inline(cost.model)} in lm.prices.")
        else:
            delta = cost.monthly_usd_delta
            word = "more" if delta > 0 else "less" if delta < 0 else "no change"
            amount = f"${abs(delta):,.2f} {word}" if delta else "no change"
            lines.append(f"At {cost.calls_per_month:,} calls a month of {inline(cost.model)}: {amount} a month "
                         "in input tokens.")
    return lines
