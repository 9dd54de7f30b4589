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
default and meaning (the README's config reference is generated from it).
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import itertools
import json
import math
import numbers
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import RunError
from .evals import Instance
from .yamlsrc import Doc, KeyPath, Section, format_key

if TYPE_CHECKING:
    from .lm import LMClient


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
        raise NotImplementedError

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


# ------------------------------------------------------------------------------------------ exact


def _normalize(text: str, *, case: bool, whitespace: bool, punctuation: bool) -> str:
    if punctuation:
        text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    if whitespace:
        text = " ".join(text.split())
    if case:
        text = text.casefold()
    return text


@dataclass(frozen=True)
class ExactMetric(Metric):
    """The output must equal `expected` (or one of a list of acceptable answers).

    Non-string expected values compare as text (`true`/`false` for booleans).
    """

    name = "exact"
    options = {
        "ignore_case": "bool, default false: compare case-insensitively",
        "ignore_whitespace": "bool, default true: strip the ends and collapse runs of whitespace",
        "ignore_punctuation": "bool, default false: drop punctuation before comparing",
    }

    ignore_case: bool = False
    ignore_whitespace: bool = True
    ignore_punctuation: bool = False

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        return cls(
            ignore_case=section.get("ignore_case", bool, False),
            ignore_whitespace=section.get("ignore_whitespace", bool, True),
            ignore_punctuation=section.get("ignore_punctuation", bool, False),
        )

    def _same(self, a: str, b: str, *, case: bool = False, whitespace: bool = False,
              punctuation: bool = False) -> bool:
        def norm(t: str) -> str:
            return _normalize(t, case=case or self.ignore_case,
                              whitespace=whitespace or self.ignore_whitespace,
                              punctuation=punctuation or self.ignore_punctuation)
        return norm(a) == norm(b)

    def check_instance(self, instance: Instance) -> str | None:
        return super().check_instance(instance) or _text_problem(self.name, instance.expected)

    def compare(self, output: str, instance: Instance) -> MetricResult:
        accepted = _text_list(instance.expected) or []
        for want in accepted:
            if self._same(output, want):
                return MetricResult(1.0, f"correct: {_show(want)}")
        want_text = _show(accepted[0]) if len(accepted) == 1 else "one of " + ", ".join(map(_show, accepted))
        feedback = f"expected {want_text}, got {_show(output)}"
        flags = [name for name, on in (("whitespace", self.ignore_whitespace), ("case", self.ignore_case),
                                       ("punctuation", self.ignore_punctuation)) if on]
        if flags:
            feedback += f" (compared ignoring {_flag_list(flags)})"
        hint = self._diagnose(output, accepted)
        if hint:
            feedback += f"; {hint}"
        return MetricResult(0.0, feedback)

    def _diagnose(self, output: str, accepted: list[str]) -> str | None:
        """Name the one difference that separates a near miss from the answer."""
        for label, kwargs in (("letter case", {"case": True}), ("whitespace", {"whitespace": True}),
                              ("punctuation", {"punctuation": True})):
            if any(self._same(output, want, **kwargs) for want in accepted):
                return f"the output differs from the answer only in {label}"
        loose = _normalize(output, case=True, whitespace=True, punctuation=True)
        for want in accepted:
            core = _normalize(want, case=True, whitespace=True, punctuation=True)
            if core and re.search(rf"(?<!\w){re.escape(core)}(?!\w)", loose):
                return "the answer appears in the output, but with extra text around it"
        return None


# --------------------------------------------------------------------------------------- contains


@dataclass(frozen=True)
class ContainsMetric(Metric):
    """The output must contain `expected` (a string or a list of strings).

    With `require: all` the score is the fraction of strings found; with `require: any` it is 1 when
    at least one is found, else 0.
    """

    name = "contains"
    options = {
        "ignore_case": "bool, default true: search case-insensitively",
        "require": "all | any, default all: every string must appear (partial credit) or any one",
    }

    ignore_case: bool = True
    require: str = "all"

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        return cls(ignore_case=section.get("ignore_case", bool, True),
                   require=section.choice("require", ("all", "any"), "all"))

    def check_instance(self, instance: Instance) -> str | None:
        return super().check_instance(instance) or _text_problem(self.name, instance.expected)

    def compare(self, output: str, instance: Instance) -> MetricResult:
        needles = _text_list(instance.expected) or []
        fold = (lambda t: t.casefold()) if self.ignore_case else (lambda t: t)
        haystack = fold(output)
        found = [n for n in needles if fold(n) in haystack]
        missing = [n for n in needles if n not in found]
        case = " (ignoring case)" if self.ignore_case else ""
        if self.require == "any":
            if found:
                return MetricResult(1.0, f"correct: the output contains {_show(found[0])}")
            return MetricResult(0.0, f"the output contains none of {', '.join(map(_show, needles))}{case}; "
                                     f"got {_show(output)}")
        if not missing:
            return MetricResult(1.0, f"correct: the output contains {', '.join(map(_show, needles))}")
        return MetricResult(
            len(found) / len(needles),
            f"the output is missing {len(missing)} of {len(needles)} required strings{case}: "
            f"{', '.join(map(_show, missing))}; got {_show(output)}",
        )


# ------------------------------------------------------------------------------------------ regex


_REGEX_HINT = "check the pattern; in YAML, single-quote it so backslashes stay as written"


@dataclass(frozen=True)
class RegexMetric(Metric):
    """The output must match a regular expression: the `pattern` option, or else the instance's
    `expected`. With `full: true` the whole output (ends stripped) must match, otherwise a match
    anywhere counts."""

    name = "regex"
    options = {
        "pattern": "string, optional: the regular expression; if absent, each instance's `expected` is the pattern",
        "full": "bool, default false: the whole output (ends stripped) must match, not just a part of it",
        "ignore_case": "bool, default false: match case-insensitively",
    }

    pattern: str | None = None
    full: bool = False
    ignore_case: bool = False

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        metric = cls(pattern=section.get("pattern", str),
                     full=section.get("full", bool, False),
                     ignore_case=section.get("ignore_case", bool, False))
        if metric.pattern is not None:
            try:
                metric._compile(metric.pattern)
            except re.error as exc:
                raise section.error("pattern", f"invalid regular expression: {exc}", hint=_REGEX_HINT) from None
        return metric

    def _compile(self, pattern: str) -> re.Pattern[str]:
        return re.compile(pattern, re.IGNORECASE if self.ignore_case else 0)

    def check_instance(self, instance: Instance) -> str | None:
        if self.pattern is not None:
            return None
        if instance.expected is None:
            return "the regex metric needs a 'pattern' option or an 'expected' pattern on each instance"
        if not isinstance(instance.expected, str):
            return (f"the regex metric needs 'expected' to be a pattern string, got {_describe(instance.expected)}")
        try:
            self._compile(instance.expected)
        except re.error as exc:
            return f"'expected' is not a valid regular expression: {exc}"
        return None

    def compare(self, output: str, instance: Instance) -> MetricResult:
        source = self.pattern if self.pattern is not None else str(instance.expected)
        pattern = self._compile(source)
        match = pattern.fullmatch(output.strip()) if self.full else pattern.search(output)
        if match:
            return MetricResult(1.0, f"correct: {_show(match.group(0))} matches /{source}/")
        how = [w for w, on in (("as a whole", self.full), ("ignoring case", self.ignore_case)) if on]
        feedback = f"the output does not match /{source}/"
        if how:
            feedback += f" ({', '.join(how)})"
        feedback += f"; got {_show(output)}"
        if self.full and pattern.search(output):
            feedback += "; the pattern matches part of the output, but the whole output must match"
        return MetricResult(0.0, feedback)


# ------------------------------------------------------------------------------------------- json


_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)


def _json_error(exc: json.JSONDecodeError, text: str) -> str:
    near = text[max(0, exc.pos - 15): exc.pos + 15]
    return f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos}), near {near!r}"


def parse_json_output(text: str, *, extract: bool = True) -> tuple[Any, str | None]:
    """Parse a model's output as JSON. Returns (value, None) or (None, why it failed).

    With `extract`, JSON inside ``` fences or surrounded by prose is accepted too: the first fenced
    block that parses, else the first object or array in the text that parses. A failure reports the
    position of the most likely JSON (a fenced block, else the first `{` or `[`) in the output.
    """
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        error = _json_error(exc, text)
    if not extract:
        return None, error
    decoder = json.JSONDecoder()
    starts = []
    for fence in _FENCE.finditer(text):
        block = fence.group(1)
        offset = len(block) - len(block.lstrip())
        if block.strip():
            starts.append(fence.start(1) + offset)
    fenced = len(starts)
    starts += [m.start() for m in re.finditer(r"[{\[]", text)]
    if not starts:
        return None, "no JSON object or array found in the output"
    first_error = None
    for index, start in enumerate(starts):
        try:
            value, _end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            if first_error is None:
                first_error = _json_error(exc, text)
            continue
        if index < fenced or isinstance(value, (dict, list)):
            return value, None
    return None, first_error or error


def _lookup(value: Any, parts: tuple[str, ...]) -> tuple[bool, Any]:
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _json_equal(want: Any, got: Any, ignore_case: bool) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and want == got
    if isinstance(want, str) and isinstance(got, str):
        return want.casefold() == got.casefold() if ignore_case else want == got
    if isinstance(want, dict) and isinstance(got, dict):
        return want.keys() == got.keys() and all(_json_equal(want[k], got[k], ignore_case) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_json_equal(a, b, ignore_case) for a, b in zip(want, got, strict=True))
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return want == got
    return type(want) is type(got) and want == got


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


@dataclass(frozen=True)
class JsonMetric(Metric):
    """The output must be JSON whose fields equal those of `expected` (a mapping).

    The score is the fraction of fields that are right. Values compare exactly (1 equals 1.0, but
    "1" does not equal 1); nested objects and arrays compare as a whole.
    """

    name = "json"
    options = {
        "fields": "list of dotted paths (e.g. customer.name, items.0.sku), default: every top-level key "
                  "of expected: the fields to compare",
        "extract": "bool, default true: also accept JSON in ``` fences or surrounded by prose "
                   "(the first object or array that parses)",
        "ignore_case": "bool, default false: compare string values case-insensitively",
    }

    fields: tuple[str, ...] | None = None
    extract: bool = True
    ignore_case: bool = False

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        fields = section.get("fields", list)
        if fields is not None:
            if not fields:
                raise section.error("fields", "the list of fields is empty",
                                    hint="list at least one field, or remove 'fields' to compare every key")
            for i, item in enumerate(fields):
                if not isinstance(item, str) or not item.strip() or any(not p for p in item.split(".")):
                    raise section.doc.error((*section.path, "fields", i),
                                            f"expected a dotted field path like 'customer.name', got {_describe(item)}")
            fields = tuple(fields)
        return cls(fields=fields, extract=section.get("extract", bool, True),
                   ignore_case=section.get("ignore_case", bool, False))

    def _paths(self, expected: dict[str, Any]) -> list[tuple[str, ...]]:
        if self.fields is not None:
            return [tuple(f.split(".")) for f in self.fields]
        return [(key,) for key in expected]

    def check_instance(self, instance: Instance) -> str | None:
        problem = super().check_instance(instance)
        if problem is not None:
            return problem
        expected = instance.expected
        if not isinstance(expected, dict):
            return f"the json metric needs 'expected' to be a mapping of field: value, got {_describe(expected)}"
        if not expected:
            return "'expected' is an empty mapping, so there is nothing to compare"
        for parts in self._paths(expected):
            if not _lookup(expected, parts)[0]:
                return f"'expected' has no field '{'.'.join(parts)}' (listed in the metric's fields)"
        return None

    def compare(self, output: str, instance: Instance) -> MetricResult:
        expected: dict[str, Any] = instance.expected
        paths = self._paths(expected)
        names = ", ".join(".".join(p) for p in paths)
        value, error = parse_json_output(output, extract=self.extract)
        if error is not None:
            return MetricResult(0.0, f"the output is not valid JSON: {error}; expected an object with {names}")
        if not isinstance(value, dict):
            return MetricResult(0.0, f"expected a JSON object with {names}, got {_json_type(value)}: {_show(value)}")
        wrong, missing = [], []
        for parts in paths:
            name = ".".join(parts)
            want = _lookup(expected, parts)[1]
            found, got = _lookup(value, parts)
            if not found:
                missing.append(f"{name} (expected {_show(want, 80)})")
            elif not _json_equal(want, got, self.ignore_case):
                wrong.append(f"{name}: expected {_show(want, 80)}, got {_show(got, 80)}")
        right = len(paths) - len(wrong) - len(missing)
        if right == len(paths):
            return MetricResult(1.0, f"correct: all {len(paths)} fields match ({names})")
        parts_text = [f"{right} of {len(paths)} fields right"]
        if wrong:
            parts_text.append("wrong: " + "; ".join(wrong))
        if missing:
            parts_text.append("missing: " + "; ".join(missing))
        feedback = ". ".join(parts_text)
        if wrong and self.ignore_case:
            feedback += " (strings compared ignoring case)"
        return MetricResult(right / len(paths), feedback)


# ---------------------------------------------------------------------------------------- numeric


_NUMBER = re.compile(
    r"(?<![\w.])([-+\u2212]?)"
    r"(\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE]([-+]?\d+))?"
)


def find_numbers(text: str) -> list[float]:
    """Every number in `text`, in order: signs, decimals, exponents and 1,234.5 separators."""
    out = []
    for match in _NUMBER.finditer(text):
        sign, digits, exponent = match.groups()
        literal = ("-" if sign in ("-", "\u2212") else "") + digits.replace(",", "")
        if exponent:
            literal += "e" + exponent
        out.append(float(literal))
    return out


def _expected_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _NUMBER.fullmatch(value.strip())
        if match:
            return find_numbers(value.strip())[0]
    return None


@dataclass(frozen=True)
class NumericMetric(Metric):
    """A number in the output must equal `expected` (a number) within the tolerance.

    A value passes when |got - expected| <= max(tolerance, relative * |expected|). Score 1 or 0.
    """

    name = "numeric"
    options = {
        "tolerance": "number, default 0: allowed absolute difference",
        "relative": "number, default 0: allowed difference as a fraction of expected (0.01 = 1%)",
        "pick": "last | first | only, default last: which number of the output counts "
                "(only: the output must contain exactly one)",
    }

    tolerance: float = 0.0
    relative: float = 0.0
    pick: str = "last"

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        return cls(tolerance=section.number("tolerance", 0.0, minimum=0),
                   relative=section.number("relative", 0.0, minimum=0),
                   pick=section.choice("pick", ("last", "first", "only"), "last"))

    def check_instance(self, instance: Instance) -> str | None:
        problem = super().check_instance(instance)
        if problem is None and _expected_number(instance.expected) is None:
            return f"the numeric metric needs 'expected' to be a number, got {_describe(instance.expected)}"
        return problem

    def compare(self, output: str, instance: Instance) -> MetricResult:
        want = _expected_number(instance.expected)
        assert want is not None
        allowed = max(self.tolerance, self.relative * abs(want))
        want_text = _fmt(want) + (f" (±{_fmt(allowed)})" if allowed else "")
        numbers = find_numbers(output)
        if not numbers:
            return MetricResult(0.0, f"no number found in the output; expected {want_text}, got {_show(output)}")
        if self.pick == "only" and len(numbers) > 1:
            shown = ", ".join(_fmt(n) for n in numbers[:6]) + (", ..." if len(numbers) > 6 else "")
            return MetricResult(0.0, f"expected exactly one number ({want_text}) in the output, found "
                                     f"{len(numbers)}: {shown}")
        got = numbers[0] if self.pick == "first" else numbers[-1]
        diff = abs(got - want)
        which = f" (the {self.pick} of {len(numbers)} numbers in the output)" if len(numbers) > 1 else ""
        if diff <= allowed or math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12):
            within = f", within {_fmt(allowed)} of {_fmt(want)}" if diff and allowed else ""
            return MetricResult(1.0, f"correct: {_fmt(got)}{within}")
        return MetricResult(0.0, f"expected {want_text}, got {_fmt(got)}{which} (off by {_fmt(diff)})")


# -------------------------------------------------------------------------------------- llm_judge


JUDGE_SYSTEM = (
    "You grade the output of an AI system against a rubric. Be strict and concrete: say exactly what "
    "the output gets right and what it gets wrong with respect to the rubric. Reply with only a JSON "
    'object: {"reasoning": "<your assessment>", "score": <a number from 0 to 1>}.'
)


def _judge_prompt(rubric: str, instance: Instance, output: str) -> str:
    inputs = "\n".join(
        f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in instance.inputs.items()
    ) or "(none)"
    parts = [f"## Rubric\n{rubric}", f"## Inputs given to the system\n{inputs}"]
    if instance.expected is not None:
        expected = instance.expected
        if not isinstance(expected, str):
            expected = json.dumps(expected, ensure_ascii=False, default=str)
        parts.append(f"## Expected answer (reference)\n{expected}")
    parts.append(f"## Output to grade\n<output>\n{output}\n</output>")
    parts.append('Grade the output against the rubric. Reply with JSON only: '
                 '{"reasoning": "...", "score": <number from 0 to 1>}')
    return "\n\n".join(parts)


_SCORE_LINE = re.compile(r"(?im)^[^\n]*?\bscore\b\**\s*[:=]\s*\**\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))[^\n]*$")


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return float(value)
    return None


def parse_judge_reply(text: str) -> tuple[float | None, str]:
    """(score, reasoning) from a judge's reply; score None when no score in [0, 1] can be found.

    Accepts a JSON object with "score" anywhere in the reply (in fences or prose), else a
    "score: x" line. Scores outside [0, 1] (say 8 on a 0-10 scale) count as unparseable.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "score" in value:
            score = _as_score(value["score"])
            if score is None:
                return None, ""
            reasoning = next((value[k] for k in ("reasoning", "explanation", "feedback", "reason")
                              if isinstance(value.get(k), str) and value[k].strip()), "")
            return score, reasoning.strip() or "(the judge gave no reasoning)"
    match = _SCORE_LINE.search(text)
    if match:
        score = _as_score(match.group(1))
        if score is None:
            return None, ""
        reasoning = (text[: match.start()] + text[match.end():]).strip()
        return score, reasoning or "(the judge gave no reasoning)"
    return None, ""


@dataclass(frozen=True)
class LlmJudgeMetric(Metric):
    """A judge model grades the output against a rubric (temperature 0) and explains its grade.

    The judge sees the rubric, the instance's inputs, its `expected` answer if any, and the output,
    and replies {"reasoning", "score"}; the feedback is its reasoning. A reply without a usable
    score in [0, 1] scores 0.
    """

    name = "llm_judge"
    uses_lm = True
    needs_expected = False
    required = ("rubric",)
    options = {
        "rubric": "string, required: what a good output looks like; the judge grades against it",
        "model": "string, default: lm.judge_model (else lm.task_model): the model that grades",
        "max_tokens": "integer, default 400: limit for the judge's reply",
        "pass_threshold": "number in [0, 1], optional: if set, the score becomes 1 when the judge's "
                          "score reaches it, else 0",
    }

    rubric: str = ""
    model: str = ""
    max_tokens: int = 400
    pass_threshold: float | None = None

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        rubric = section.get("rubric", str, required=True)
        if not rubric.strip():
            raise section.error("rubric", "the rubric is empty", hint="describe what a good output looks like")
        model = section.get("model", str) or ctx.default_judge_model
        if not model:
            raise section.error(None, "no judge model is configured for the llm_judge metric",
                                hint="add 'model: <name>' here, or set judge_model in the lm section")
        return cls(rubric=rubric.strip(), model=model,
                   max_tokens=section.number("max_tokens", 400, minimum=1, integer=True),
                   pass_threshold=section.number("pass_threshold", None, minimum=0, maximum=1))

    def messages(self, output: str, instance: Instance) -> list[dict[str, str]]:
        return [{"role": "system", "content": JUDGE_SYSTEM},
                {"role": "user", "content": _judge_prompt(self.rubric, instance, output)}]

    async def evaluate(self, output: str, instance: Instance, lm: LMClient | None) -> MetricResult:
        if lm is None:
            raise RunError(f"the llm_judge metric needs a model client to score instance '{instance.id}'")
        completion = await lm.complete(self.model, self.messages(output, instance),
                                       temperature=0, max_tokens=self.max_tokens)
        score, reasoning = parse_judge_reply(completion.text)
        if score is None:
            feedback = f"the judge's reply could not be parsed as a score from 0 to 1: {_show(completion.text, 160)}"
            if completion.truncated:
                feedback += f" (the reply was cut off at max_tokens={self.max_tokens}; raise max_tokens)"
            return MetricResult(0.0, feedback)
        if len(reasoning) > 2000:
            reasoning = reasoning[:2000] + "..."
        if self.pass_threshold is None:
            return MetricResult(score, f"judge score {_fmt(score)}: {reasoning}")
        passed = score >= self.pass_threshold
        verdict = "passed" if passed else "failed"
        return MetricResult(1.0 if passed else 0.0, f"judge score {_fmt(score)} ({verdict}, pass threshold "
                                                    f"{_fmt(self.pass_threshold)}): {reasoning}")


# ----------------------------------------------------------------------------------------- python


ARGUMENTS = ("output", "expected", "inputs", "instance", "notes", "id")
_ARG_HINT = "name its parameters from: " + ", ".join(ARGUMENTS) + " (any subset, in any order)"
_module_counter = itertools.count(1)


@dataclass(frozen=True, eq=False)
class PythonMetric(Metric):
    """A function in the user's repository: `path/to/file.py:function`, path relative to the workspace.

    It is called with the keyword arguments its signature names, out of `output`, `expected`,
    `inputs`, `instance`, `notes` and `id` (a `**kwargs` function gets them all); it may be async.
    It returns a score (number or bool), a `(score, feedback)` tuple, or a dict with `score` and
    `feedback`. Scores must be in [0, 1].
    """

    name = "python"
    needs_expected = False
    required = ("function",)
    options = {
        "function": "string, required: 'path/to/file.py:function' (shorthand: metric: path/to/file.py:function)",
    }

    function: Callable[..., Any] | None = None
    label: str = ""
    file: str = ""
    params: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        spec = section.get("function", str, required=True)
        return cls.load(spec, section.doc, (*section.path, "function"), ctx.root)

    @classmethod
    def load(cls, spec: str, doc: Doc, path: KeyPath, root: Path) -> PythonMetric:
        """Import the file and find the function now, so `gepa-tune check` reports a broken metric."""
        file_part, _, func_name = spec.strip().rpartition(":")
        if not file_part or not func_name.isidentifier():
            raise doc.error(path, f"'{spec}' does not name a Python function",
                            hint="write it as 'path/to/file.py:function'")
        file = Path(file_part)
        if not file.is_absolute():
            file = Path(root) / file
        if not file.is_file():
            raise doc.error(path, f"python metric file '{file_part}' not found",
                            hint=f"paths are relative to the workspace root ({root})")
        file = file.resolve()
        try:
            source = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise doc.error(path, f"'{file_part}' is not UTF-8 text", hint="save it as UTF-8") from None
        try:
            code = compile(source, str(file), "exec")
        except SyntaxError as exc:
            raise doc.error(path, f"{file_part}:{exc.lineno}: syntax error: {exc.msg}",
                            hint="fix the Python file") from None
        stem = re.sub(r"\W", "_", file.stem)
        module_name = f"_gepa_metric_{next(_module_counter)}_{stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, file)
        assert module_spec is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        if str(file.parent) not in sys.path:
            sys.path.append(str(file.parent))  # so the file can import its neighbours
        try:
            exec(code, module.__dict__)  # not exec_module: no __pycache__ in the user's repository
        except Exception as exc:
            del sys.modules[module_name]
            line = _raised_at(exc, str(file))
            where = f"{file_part}:{line}" if line else file_part
            raise doc.error(path, f"importing {file_part} failed: {type(exc).__name__}: {exc} (at {where})",
                            hint="fix the file so it imports cleanly") from None
        function = getattr(module, func_name, None)
        if function is None:
            defined = [n for n, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == module_name]
            close = difflib.get_close_matches(func_name, defined, n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    f"functions defined there: {', '.join(defined)}" if defined else "define it in that file")
            raise doc.error(path, f"'{file_part}' has no function '{func_name}'", hint=hint)
        if not callable(function):
            raise doc.error(path, f"'{func_name}' in '{file_part}' is not a function", hint="point at a function")
        params = _parameters(function, func_name, doc, path)
        return cls(function=function, label=f"{file_part}:{func_name}", file=str(file), params=params)

    async def evaluate(self, output: str, instance: Instance, lm: LMClient | None) -> MetricResult:
        values = {"output": output, "expected": instance.expected, "inputs": instance.inputs,
                  "instance": instance, "notes": instance.notes, "id": instance.id}
        kwargs = values if self.params is None else {k: values[k] for k in self.params}
        assert self.function is not None
        try:
            result = self.function(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            line = _raised_at(exc, self.file)
            where = f" (raised at {self.label.rpartition(':')[0]}:{line})" if line else ""
            raise RunError(f"python metric {self.label} failed on instance '{instance.id}': "
                           f"{type(exc).__name__}: {exc}{where}") from exc
        return self._coerce(result, instance)

    def _coerce(self, result: Any, instance: Instance) -> MetricResult:
        feedback: Any = None
        if isinstance(result, MetricResult):
            score, feedback = result.score, result.feedback
        elif isinstance(result, tuple) and len(result) == 2:
            score, feedback = result
        elif isinstance(result, dict) and "score" in result:
            score, feedback = result["score"], result.get("feedback")
        else:
            score = result
        problem = None
        if isinstance(score, bool):
            score = 1.0 if score else 0.0
        if not isinstance(score, numbers.Real) or isinstance(score, bool):
            problem = f"returned {_describe(result)}"
        elif not 0 <= float(score) <= 1:  # also rejects NaN
            problem = f"returned the score {score}, outside [0, 1]"
        elif feedback is not None and not isinstance(feedback, str):
            problem = f"returned feedback that is {_describe(feedback)}, not a string"
        if problem:
            raise RunError(f"python metric {self.label} {problem} for instance '{instance.id}'; return a "
                           "score from 0 to 1, a (score, feedback) tuple, or a dict with 'score' and 'feedback'")
        score = float(score)
        if not feedback:
            if score >= 1:
                feedback = f"correct (score 1 from {self.label})"
            else:
                feedback = f"score {_fmt(score)} from {self.label}, which gave no feedback"
                if instance.expected is not None:
                    feedback += f"; expected {_show(instance.expected)}"
        return MetricResult(score, feedback)


def _parameters(function: Callable[..., Any], func_name: str, doc: Doc, path: KeyPath) -> tuple[str, ...] | None:
    """The argument names to pass, or None for a `**kwargs` function (it gets them all)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise doc.error(path, f"cannot read the parameters of '{func_name}'", hint=_ARG_HINT) from None
    names: list[str] = []
    takes_all = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            takes_all = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.name in ARGUMENTS and param.kind is not param.POSITIONAL_ONLY:
            names.append(param.name)
        elif param.default is param.empty:
            raise doc.error(path, f"function '{func_name}' has a parameter '{param.name}' that gepa-tune "
                                  "cannot fill", hint=_ARG_HINT)
    return None if takes_all else tuple(names)


def _raised_at(exc: BaseException, file: str) -> int | None:
    """The line of the innermost traceback frame that lies in `file`."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(exc, SyntaxError) and exc.filename == file:
        line = exc.lineno
    return line


# --------------------------------------------------------------------------------------- building


REGISTRY: dict[str, type[Metric]] = {
    cls.name: cls
    for cls in (ExactMetric, ContainsMetric, RegexMetric, JsonMetric, NumericMetric, LlmJudgeMetric, PythonMetric)
}

METRIC_OPTIONS: dict[str, dict[str, str]] = {name: dict(cls.options) for name, cls in REGISTRY.items()}
"""metric type -> option -> "type, default: meaning", for the README's config reference."""


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
