"""The metric protocol and the small text helpers every metric's feedback uses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import RunError
from ..evals import Instance
from ..yamlsrc import Section

if TYPE_CHECKING:
    from ..lm.client import LMClient


@dataclass(frozen=True)
class MetricResult:
    """A score in [0, 1] and the feedback text explaining it."""

    score: float
    feedback: str


@dataclass(frozen=True)
class BuildContext:
    """What a metric may need while it is built from `gepa.yaml`."""

    root: Path
    default_judge_model: str | None = None


class Metric:
    """Base of all metrics.

    Subclasses set `name`, `options` (option -> "type, default: meaning") and implement either
    `compare` (a pure function of output and instance) or `evaluate` (async, may use the LM client).
    `score` checks the instance, runs the metric and appends the instance's notes on a failure.
    """

    name: ClassVar[str] = ""
    uses_lm: ClassVar[bool] = False
    needs_expected: ClassVar[bool] = True
    options: ClassVar[dict[str, str]] = {}
    required: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        """Build from the metric's mapping in gepa.yaml (unknown keys were already rejected)."""
        return cls()

    async def score(self, output: str, instance: Instance, lm: LMClient | None = None) -> MetricResult:
        """Score `output` for `instance`; an instance the metric cannot use is a `RunError`."""
        problem = self.check_instance(instance)
        if problem is not None:
            where = f" (line {instance.line})" if instance.line is not None else ""
            raise RunError(f"instance '{instance.id}'{where}: {problem}")
        result = await self.evaluate(output, instance, lm)
        return _with_notes(result, instance)

    async def evaluate(self, output: str, instance: Instance, lm: LMClient | None) -> MetricResult:
        return self.compare(output, instance)

    def compare(self, output: str, instance: Instance) -> MetricResult:
        raise TypeError(f"{type(self).__name__} must define compare() or evaluate()")

    def check_instance(self, instance: Instance) -> str | None:
        """Offline check used by `gepa-tune check`: a description of what is wrong, or None."""
        if self.needs_expected and instance.expected is None:
            return f"the {self.name} metric needs an 'expected' value"
        return None


def _with_notes(result: MetricResult, instance: Instance) -> MetricResult:
    if result.score < 1 and instance.notes and instance.notes.strip():
        return MetricResult(result.score, f"{result.feedback}\nNote: {instance.notes.strip()}")
    return result


# ---------------------------------------------------------------------------------------- helpers


def _show(value: Any, limit: int = 200) -> str:
    """A value as the feedback quotes it: strings in quotes, other values as JSON; long ones clipped."""
    if isinstance(value, str):
        if len(value) > limit:
            return f"{value[:limit]!r}... ({len(value)} chars)"
        return repr(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _fmt(x: float) -> str:
    """A number without float noise: 42 not 42.0, 0.8 not 0.7999999999999972."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.10g}"


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _text_list(expected: Any) -> list[str] | None:
    """`expected` as a list of strings (a scalar or a list of scalars), or None when it is not one."""
    items = expected if isinstance(expected, list) else [expected]
    if not items or any(isinstance(item, (dict, list)) or item is None for item in items):
        return None
    return [_as_text(item) for item in items]


def _text_problem(metric: str, expected: Any) -> str | None:
    if _text_list(expected) is None:
        got = "an empty list" if expected == [] else _describe(expected)
        return f"the {metric} metric needs 'expected' to be a string or a list of strings, got {got}"
    return None


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _show(value, 40)


def _flag_list(flags: list[str]) -> str:
    return flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " and " + flags[-1]
