"""Metrics on the output as text: exact match, contains, regex."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex

from ..errors import InputError
from ..evals import Instance
from ..yamlsrc import Section, format_key
from .base import BuildContext, Metric, MetricResult, _describe, _flag_list, _show, _text_list, _text_problem

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
        "choices": "list of strings: the allowed answers (a label set); every expected value must be one, and "
                   "feedback on an answer outside the set names the set",
    }

    ignore_case: bool = False
    ignore_whitespace: bool = True
    ignore_punctuation: bool = False
    #: The label set of a classification task. Saying "X is not an allowed answer; the answers are ..." in
    #: the feedback is what lets a reflection model write the label set into the prompt (a small local
    #: model did not infer it from "expected 'billing', got 'Refund'" alone).
    choices: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        choices = section.get("choices", list, [])
        for index, choice in enumerate(choices):
            if not isinstance(choice, str) or not choice.strip():
                raise section.error("choices", f"item {index + 1} is not a non-empty string",
                                    hint="list the allowed answers as strings, e.g. choices: [bug, billing]")
        return cls(
            ignore_case=section.get("ignore_case", bool, False),
            ignore_whitespace=section.get("ignore_whitespace", bool, True),
            ignore_punctuation=section.get("ignore_punctuation", bool, False),
            choices=tuple(choices),
        )

    def _same(self, a: str, b: str, *, case: bool = False, whitespace: bool = False,
              punctuation: bool = False) -> bool:
        def norm(t: str) -> str:
            return _normalize(t, case=case or self.ignore_case,
                              whitespace=whitespace or self.ignore_whitespace,
                              punctuation=punctuation or self.ignore_punctuation)
        return norm(a) == norm(b)

    def check_instance(self, instance: Instance) -> str | None:
        problem = super().check_instance(instance) or _text_problem(self.name, instance.expected)
        if problem is None and self.choices:
            outside = [w for w in _text_list(instance.expected) or [] if not self._allowed(w)]
            if outside:
                return (f"expected {_show(outside[0])} is not one of the metric's choices "
                        f"({', '.join(self.choices)}); fix the label or add it to choices")
        return problem

    def _allowed(self, answer: str) -> bool:
        return any(self._same(answer, choice) for choice in self.choices)

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
        if self.choices and not self._allowed(output):
            allowed = ", ".join(self.choices)
            # Said as the instruction the prompt lacks: a small reflection model copies a sentence it is
            # shown far more reliably than it turns a diagnosis into one.
            feedback += (f"; {_show(output)} is not an allowed answer: answer with exactly one of {allowed}"
                         f" (the prompt should say: \"Answer with exactly one of: {allowed}.\")")
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
#: The longest one match of a user's pattern may take (the regex module checks its clock coarsely: up to ~2.5x).
MATCH_SECONDS = 0.5


@lru_cache(maxsize=256)
def _compile_bounded(pattern: str, flags: int) -> Any:
    return regex.compile(pattern, regex.IGNORECASE if flags & re.IGNORECASE else 0)


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
    #: Where `pattern` was written (gepa.yaml, its line and key), for the error when a match times out.
    where: tuple[str, int | None, str | None] | None = None

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        pattern = section.get("pattern", str)
        metric = cls(pattern=pattern,
                     full=section.get("full", bool, False),
                     ignore_case=section.get("ignore_case", bool, False),
                     where=(section.doc.file, section.doc.line((*section.path, "pattern")),
                            format_key((*section.path, "pattern"))) if pattern is not None else None)
        if metric.pattern is not None:
            try:
                metric._compile(metric.pattern)
            except re.error as exc:
                raise section.error("pattern", f"invalid regular expression: {exc}", hint=_REGEX_HINT) from None
        return metric

    def _compile(self, pattern: str) -> Any:
        """Checked with Python's `re` (its error messages), matched with `regex` under a time limit.

        A user's pattern can backtrack catastrophically (`^(\\w|\\s|.)*\\d$` on a long answer never
        ends); `regex` accepts the same syntax and stops a match after `MATCH_SECONDS`.
        """
        flags = re.IGNORECASE if self.ignore_case else 0
        re.compile(pattern, flags)
        try:
            return _compile_bounded(pattern, flags)
        except regex.error as exc:
            raise re.error(str(exc)) from None

    def _match(self, pattern: Any, output: str, instance: Instance, source: str, *, full: bool) -> Any:
        try:
            if full:
                return pattern.fullmatch(output, timeout=MATCH_SECONDS)
            return pattern.search(output, timeout=MATCH_SECONDS)
        except TimeoutError:
            problem = (f"the regular expression /{source}/ took longer than {MATCH_SECONDS:g} s on the output for "
                       f"instance '{instance.id}' (catastrophic backtracking)")
            hint = "rewrite it without nested or overlapping repeats such as (a|.)* or (a+)+"
            if self.pattern is not None and self.where is not None:
                file, line, key = self.where
                raise InputError(file, problem, line=line, key=key, hint=hint) from None
            raise InputError(instance.file, problem, line=instance.line, key="expected", hint=hint) from None

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
        match = self._match(pattern, output.strip() if self.full else output, instance, source, full=self.full)
        if match:
            return MetricResult(1.0, f"correct: {_show(match.group(0))} matches /{source}/")
        how = [w for w, on in (("as a whole", self.full), ("ignoring case", self.ignore_case)) if on]
        feedback = f"the output does not match /{source}/"
        if how:
            feedback += f" ({', '.join(how)})"
        feedback += f"; got {_show(output)}"
        if self.full and self._match(pattern, output, instance, source, full=False):
            feedback += "; the pattern matches part of the output, but the whole output must match"
        return MetricResult(0.0, feedback)
