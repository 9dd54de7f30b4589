"""What the CLI prints about a run or an eval: live progress, the one-line task summary, the eval table
and cut-down model text.

Terminal text is plain (no Markdown) but still untrusted: names go through `text.plain`, which drops the
control characters that could drive a terminal. Model outputs shown in fixed-width columns are flattened
to one line and cut by `shorten`, the one truncation helper of the CLI, the pre-commit gate and `eval`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lm.client import format_cost
from ..report.model import TaskReport
from .sections import retries_text
from .text import abbreviate, fmt_duration, fmt_percent, fmt_score, fmt_signed, plain

if TYPE_CHECKING:
    from ..engine.state import EngineState
    from ..lm.client import Usage
    from ..scoring import TaskResult


def shorten(text: object, width: int) -> str:
    """`text` on one line (whitespace runs become one space), cut to `width` characters ending in "…"."""
    return abbreviate(" ".join(str(text).split()), width, trim=False)


def quoted(text: object, width: int) -> str:
    """`shorten`ed and in Python quotes, so an empty or blank output is still visible in a line."""
    return repr(shorten(text, width))


def render_summary_line(task: TaskReport) -> str:
    """One line for the terminal, e.g.
    `triage: val 0.500 → 0.857, test 0.467 → 0.800 (+0.333, 95% CI +0.133…+0.533), 288/300 calls, $0.0123`.

    Plain text (no Markdown), with control characters removed from names so nothing can drive the terminal.
    """
    parts = []
    val, test = task.scores.val, task.scores.test
    if val is not None:
        parts.append(f"val {fmt_score(val.seed)} → {fmt_score(val.best)}")
    if test is not None:
        text = f"test {fmt_score(test.seed)} → {fmt_score(test.best)} ({fmt_signed(test.delta)}"
        if test.ci95 is not None:
            ci = test.ci95
            text += f", {fmt_percent(ci.confidence)} CI {fmt_signed(ci.low)}…{fmt_signed(ci.high)}"
        parts.append(text + ")")
    else:
        parts.append("no test split")
    usage = task.usage
    calls = f"{usage.metric_calls}/{usage.budget} calls" if usage.budget is not None else f"{usage.metric_calls} calls"
    if usage.test_calls:
        calls += f" (+{usage.test_calls} on test)"
    parts += [calls, format_cost(usage.cost_usd)]
    if retries := retries_text(usage):
        parts.append(retries)
    parts.append(fmt_duration(usage.wall_s))
    if task.status and task.status != "finished":
        parts.append(plain(task.status, 80))
    return f"{plain(task.task or 'task', 60)}: {', '.join(parts)}"


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


# -- live progress ---------------------------------------------------------------------------------------


def progress_printer(stream: Any = None) -> Callable[[str, EngineState, int | None], None]:
    """`tune`'s progress: a live line on a terminal; in a log (CI), one line whenever a task's best val
    score changes, so a long run leaves a readable trail instead of thousands of rewrites."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    lines: dict[str, str] = {}
    last_best: dict[str, float] = {}
    done: set[str] = set()

    def show(name: str, state: EngineState, budget: int | None) -> None:
        if not state.candidates:
            return
        best = state.best().val_mean
        cost = sum(m.get("cost_usd", 0.0) for m in state.usage.values())
        calls = f"{state.metric_calls}/{budget}" if budget is not None else str(state.metric_calls)
        lines[name] = f"{name}: best val {best:.3f}  calls {calls}  ${cost:.4f}  round {state.iteration}"
        if tty:
            stream.write("\r\033[K" + "   ".join(lines.values()))
            if state.finished:
                stream.write("\n")
            stream.flush()
        elif last_best.get(name) != best or (state.finished and name not in done):
            last_best[name] = best
            if state.finished:
                done.add(name)
            stream.write(lines[name] + ("  (done)" if state.finished else "") + "\n")
            stream.flush()

    return show


def terminal_progress(stream: Any = None) -> Callable[[str, int, int], None] | None:
    """`eval`'s progress: a one-line display that rewrites itself, only when a person is watching a
    terminal (piped or logged output stays clean)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    state: dict[str, tuple[int, int]] = {}

    def show(name: str, done: int, total: int) -> None:
        state[name] = (done, total)
        line = "  ".join(f"{n}: {d}/{t}" for n, (d, t) in state.items())
        finished = all(d == t for d, t in state.values())
        stream.write(f"\r  scored {line}" + ("\n" if finished else ""))
        stream.flush()

    return show
