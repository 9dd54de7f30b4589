"""The `/gepa-tune` comment syntax: what a reviewer's comment on a pull request asks for.

A comment (or a review comment on a template line) whose first line starts with `/gepa-tune` is a
command from a reviewer:

* `/gepa-tune never promise refunds` — free text, a standing constraint for the reflection model;
* `/gepa-tune forbid /refund/` — a checkable rule as well: an output that matches scores 0;
* `/gepa-tune require /^[a-z_]+$/` — an output that does not match scores 0;
* `/gepa-tune drop c1234` — retire an item (by its id) from the guidance file.

An optional `task: NAME` right after the marker names the one task it is for (`/gepa-tune task: route
forbid /x/`); otherwise a conversation comment is for every task of the pull request and a review comment
for the tasks that use the template it was written on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .items import ID_PATTERN, MAX_TEXT, Rule
from .rules import rule_problem

MARKER = "/gepa-tune"
_COMMAND = re.compile(r"^\s*/gepa-tune(?![\w-])[ \t]*(?P<rest>.*)\Z", re.DOTALL)
_TASK = re.compile(r"^task\s*:\s*(?P<task>[A-Za-z0-9_.-]+)\s*", re.IGNORECASE)
_RULE = re.compile(r"^(?P<kind>forbid|require)[ \t]+/(?P<pattern>[^\n]*)/(?P<flags>i?)[ \t]*(?:\n(?P<more>.*))?\Z",
                   re.DOTALL)
_DROP = re.compile(r"^drop(?![\w-])(?P<ids>.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class Command:
    """What a comment asks for. `kind` is "add", "drop" or "invalid" (with `problem` saying why)."""

    kind: str
    text: str = ""
    task: str | None = None
    rule: Rule | None = None
    ids: tuple[str, ...] = field(default_factory=tuple)
    problem: str | None = None


def is_command(body: str) -> bool:
    return _COMMAND.match(body or "") is not None


def parse_command(body: str) -> Command | None:
    """The command in a comment's body, or None when the comment is not one (no marker first)."""
    match = _COMMAND.match(body or "")
    if match is None:
        return None
    rest = match.group("rest").strip()
    task = None
    task_match = _TASK.match(rest)
    if task_match:
        task, rest = task_match.group("task"), rest[task_match.end():].strip()
    drop = _DROP.match(rest)
    if drop:
        ids = tuple(i for i in re.split(r"[\s,]+", drop.group("ids").strip()) if i)
        bad = [i for i in ids if not ID_PATTERN.fullmatch(i)]
        if bad or not ids:
            return Command("invalid", task=task, problem="`drop` takes the ids of items, e.g. `drop c1234`")
        return Command("drop", task=task, ids=ids)
    rule = None
    rule_match = _RULE.match(rest)
    if rule_match:
        rule = Rule(rule_match.group("kind"), rule_match.group("pattern"), rule_match.group("flags") == "i")
        problem = rule_problem(rule)
        if problem is not None:
            return Command("invalid", text=rest, task=task, rule=rule, problem=problem)
    elif re.match(r"^(forbid|require)\b", rest):
        return Command("invalid", text=rest, task=task,
                       problem="a rule is written `forbid /PATTERN/` or `require /PATTERN/` (`/i` ignores case)")
    if not rest:
        return Command("invalid", task=task, problem="the comment has nothing after the marker")
    if len(rest) > MAX_TEXT:
        rest = rest[:MAX_TEXT] + f" [... {len(rest) - MAX_TEXT} more characters cut]"
    return Command("add", text=rest, task=task, rule=rule)
