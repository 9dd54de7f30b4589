"""Metrics that read structure out of the output: JSON fields and numbers."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..evals import Instance
from ..yamlsrc import Section
from .base import BuildContext, Metric, MetricResult, _describe, _fmt, _show

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
