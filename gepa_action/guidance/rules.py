"""Checkable guidance rules: `forbid /re/` and `require /re/` on the task's final output.

A rule is a reviewer's regular expression run on every output of every candidate, so it is bounded three
ways: the pattern's length, its shape (a repeat inside a repeat, the usual cause of catastrophic
backtracking, is refused when the comment is read, so the item is reported invalid rather than slowing
every call), and, for what slips through, the `regex` module's time limit on each match and a cap on how
much of an output is checked. A check that runs out of time counts as no violation and says so in the
feedback: a rule that cannot be checked must not silently zero a candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex

from .items import MAX_PATTERN, Item, Rule

#: The longest a single rule check may take (the regex module checks its clock coarsely).
MATCH_SECONDS = 0.2
#: How much of an output a rule looks at: labels and answers are far shorter; an essay-length output
#: is checked on its first 20,000 characters.
CHECKED_CHARS = 20_000

#: Long, repetitive outputs a pattern is tried on when a comment is read, and the time it may take on each.
_PROBES = tuple(unit * (4000 // len(unit)) for unit in (" ", "a", "0", "\n", "aA0 .-_", "<a>"))
PROBE_SECONDS = 0.05

try:  # the parser of the `re` module, to read a pattern's shape (named sre_parse before 3.11)
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


def rule_problem(rule: Rule, *, probe: bool = True) -> str | None:
    """Why `rule` cannot be used (too long, does not compile, may backtrack without end), or None.

    `probe` also times the pattern on long repetitive outputs: done when a comment is read, not when
    gepa.guidance.yaml is loaded, where a timing must never decide whether a file is valid (a hand-written
    slow rule is still bounded by the time limit of each check)."""
    if not rule.pattern:
        return "the pattern is empty"
    if len(rule.pattern) > MAX_PATTERN:
        return f"the pattern is {len(rule.pattern)} characters long; at most {MAX_PATTERN} are allowed"
    try:
        parsed = _sre_parse.parse(rule.pattern, re.IGNORECASE if rule.ignore_case else 0)
        _compiled(rule.pattern, rule.ignore_case)
    except (re.error, regex.error, RecursionError, OverflowError) as exc:
        return f"the pattern /{rule.pattern}/ does not compile: {exc}"
    if _nested_repeat(parsed, inside=False):
        return (f"the pattern /{rule.pattern}/ repeats a repeat or an alternation (like (a+)+ or (a|ab)*): it can "
                "take exponential time; write it without the outer repeat")
    for text in _PROBES if probe else ():  # polynomial backtracking (\s*\s*\s*\S) has the right shape
        try:
            _compiled(rule.pattern, rule.ignore_case).search(text, timeout=PROBE_SECONDS)
        except TimeoutError:
            return (f"the pattern /{rule.pattern}/ takes over {PROBE_SECONDS:g} s on a {len(text):,}-character "
                    r"output; write it with fewer adjacent repeats (like \s*\s*)")
    return None


def _nested_repeat(parsed: Any, *, inside: bool) -> bool:
    """Whether a repeat of more than one holds another such repeat or an alternation (star height > 1)."""
    for op, arg in parsed:
        name = str(op)
        if name in _REPEATS:
            _low, high, sub = arg
            many = high is _sre_parse.MAXREPEAT or high > 1
            if (inside and many) or _nested_repeat(sub, inside=inside or many):
                return True
            continue
        if name == "BRANCH" and inside and len(arg[1]) > 1:
            return True
        children = (arg[1] if name == "BRANCH" else [arg[-1]] if name in ("SUBPATTERN", "ATOMIC_GROUP")
                    else [arg[1]] if name in ("ASSERT", "ASSERT_NOT")
                    else [p for p in arg[1:] if p is not None] if name == "GROUPREF_EXISTS" else [])
        if any(_nested_repeat(child, inside=inside) for child in children):
            return True
    return False


@lru_cache(maxsize=256)
def _compiled(pattern: str, ignore_case: bool) -> Any:
    return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)


@dataclass(frozen=True)
class Verdict:
    """One rule on one output: `violated`, or `unchecked` when the check ran out of time."""

    item: Item
    violated: bool
    unchecked: bool = False

    def feedback(self) -> str:
        rule = self.item.rule
        assert rule is not None
        if self.unchecked:
            return (f"Reviewer rule {self.item.id} ({rule.describe()}) could not be checked within "
                    f"{MATCH_SECONDS:g} s; not counted.")
        what = "the output matches it" if rule.kind == "forbid" else "the output does not match it"
        return f"Violates reviewer rule {self.item.id} ({rule.describe()}): {what}; score set to 0."


def check(item: Item, output: str) -> Verdict:
    """Apply the item's rule to `output` (its first CHECKED_CHARS characters)."""
    rule = item.rule
    assert rule is not None
    try:
        found = _compiled(rule.pattern, rule.ignore_case).search(output[:CHECKED_CHARS], timeout=MATCH_SECONDS,
                                                                 concurrent=True)  # the GIL is released
    except TimeoutError:
        return Verdict(item, violated=False, unchecked=True)
    return Verdict(item, violated=(found is not None) == (rule.kind == "forbid"))


def judge(items: Iterable[Item], output: str) -> list[Verdict]:
    """The verdict of every checkable item on `output`, violated or not."""
    return [check(item, output) for item in items if item.rule is not None]


def apply(items: Iterable[Item], output: str, score: float, feedback: str) -> tuple[float, str]:
    """The metric's score and feedback with the rules applied: any violation makes the score 0, and the
    feedback names each rule broken (the reflection model reads it and can fix the template)."""
    notes = [v for v in judge(items, output) if v.violated or v.unchecked]
    if not notes:
        return score, feedback
    violated = any(v.violated for v in notes)
    text = "\n".join([feedback, *(v.feedback() for v in notes)]) if feedback else "\n".join(v.feedback() for v in notes)
    return (0.0 if violated else score), text
