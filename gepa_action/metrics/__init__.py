"""Metrics: score one model output against one eval instance, with feedback a reflection model can use.

A metric returns a `MetricResult(score, feedback)`. The score is in [0, 1]; the feedback is the text
GEPA's reflection model reads to find out *why* a prompt failed, so it says concretely what was
expected, what came back and which rule was broken. When the score is below 1 and the instance has
`notes`, they are appended ("Note: ..."): notes carry the rule a reflection model can learn.

In `gepa.yaml` a task's `metric` is either a shorthand string::

    metric: exact                      # or contains, regex, json, numeric
    metric: metrics/grade.py:score     # a Python function, path relative to the workspace root

or a mapping with `type:` and options::

    metric:
      type: numeric
      tolerance: 0.5

Each built-in metric is one small class in `REGISTRY`; `METRIC_OPTIONS` lists every option with its
default and meaning. The README's metric table is written by hand; tests/test_metric_docs.py checks
that it names exactly these options.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..yamlsrc import Doc, KeyPath, Section, format_key
from .base import BuildContext, Metric, MetricResult, _describe
from .judge import LlmJudgeMetric, parse_judge_reply
from .python_metric import ARGUMENTS, PythonMetric
from .structured import JsonMetric, NumericMetric, find_numbers, parse_json_output
from .text import ContainsMetric, ExactMetric, RegexMetric

# --------------------------------------------------------------------------------------- building


REGISTRY: dict[str, type[Metric]] = {
    cls.name: cls
    for cls in (ExactMetric, ContainsMetric, RegexMetric, JsonMetric, NumericMetric, LlmJudgeMetric, PythonMetric)
}

METRIC_OPTIONS: dict[str, dict[str, str]] = {name: dict(cls.options) for name, cls in REGISTRY.items()}
"""metric type -> option -> "type, default: meaning"; the README's metric table must name every one."""


def _metric_class(name: str, doc: Doc, path: KeyPath) -> type[Metric]:
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f"did you mean '{close[0]}'?" if close else (
        f"use one of: {', '.join(REGISTRY)}, or 'path/to/file.py:function' for a Python metric")
    raise doc.error(path, f"unknown metric '{name}'", hint=hint)


def build_metric(doc: Doc, path: KeyPath, *, root: Path, default_judge_model: str | None) -> Metric:
    """Build the metric configured at `path` in `doc` (a shorthand string or a mapping with `type:`).

    Every problem is an `InputError` naming the gepa.yaml line and key and how to fix it. `root` is
    the workspace root that Python metric paths are relative to.
    """
    path = tuple(path)
    value: Any = doc.data
    for part in path:
        value = value.get(part) if isinstance(value, dict) else (
            value[part] if isinstance(value, list) and isinstance(part, int) and part < len(value) else None)
    ctx = BuildContext(root=Path(root), default_judge_model=default_judge_model)
    if value is None:
        raise doc.error(path, "no metric given", hint="set e.g. 'metric: exact' (see the metric types in the README)")
    if isinstance(value, str):
        text = value.strip()
        if ":" in text or text.endswith(".py"):
            if ":" not in text:
                raise doc.error(path, f"'{text}' names a file but no function",
                                hint=f"write it as '{text}:function_name'")
            return PythonMetric.load(text, doc, path, ctx.root)
        cls = _metric_class(text, doc, path)
        if cls.required:
            key = format_key(path).rpartition(".")[2] or "metric"
            raise doc.error(path, f"the {cls.name} metric needs the option '{cls.required[0]}'",
                            hint=f"write it as a mapping: {key}: {{type: {cls.name}, {cls.required[0]}: ...}}")
        return cls.from_config(Section(doc, path, {}), ctx)
    if isinstance(value, dict):
        section = Section(doc, path, value)
        type_name = section.get("type", str, required=True)
        cls = _metric_class(type_name, doc, (*path, "type"))
        section.check_keys(("type", *cls.options))
        return cls.from_config(section, ctx)
    raise doc.error(path, f"expected a metric name or a mapping with 'type:', got {_describe(value)}",
                    hint="e.g. 'metric: exact' or 'metric: {type: numeric, tolerance: 0.5}'")


__all__ = [
    "ARGUMENTS", "METRIC_OPTIONS", "REGISTRY", "BuildContext", "ContainsMetric", "ExactMetric",
    "JsonMetric", "LlmJudgeMetric", "Metric", "MetricResult", "NumericMetric", "PythonMetric", "RegexMetric",
    "build_metric", "find_numbers", "parse_json_output", "parse_judge_reply",
]
