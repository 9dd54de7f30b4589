"""Guidance items: what one reviewer asked of one task, where, and the optional checkable rule.

Sizes are bounded here, once: a comment is text from anyone with write access and it ends up in every
reflection prompt of the task, so a huge or endless list must not be able to crowd out the examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Most items one task keeps: a comment beyond it is ignored (with the reason), a longer file refused.
MAX_ITEMS = 20
#: Longest text of one item; longer comments are cut (with a note) rather than refused.
MAX_TEXT = 1000
#: Longest pattern of a checkable rule.
MAX_PATTERN = 200
RULE_KINDS = ("forbid", "require")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}")


@dataclass(frozen=True)
class Rule:
    """A check on the task's final output: `forbid` fails on a match, `require` fails without one."""

    kind: str
    pattern: str
    ignore_case: bool = False

    def describe(self) -> str:
        return f"{self.kind} /{self.pattern}/{'i' if self.ignore_case else ''}"


@dataclass(frozen=True)
class Source:
    """Where an item was said: a conversation comment, or a review comment on `path` at `line`."""

    kind: str  # "comment" or "review"
    path: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Item:
    """One piece of reviewer guidance for one task."""

    id: str
    text: str
    author: str
    url: str
    source: Source
    created_at: str
    rule: Rule | None = None


@dataclass(frozen=True)
class Ignored:
    """A `/gepa-tune` comment that did not become guidance, and why (shown in the job summary and PR)."""

    author: str
    url: str
    reason: str
    text: str = ""


@dataclass(frozen=True)
class Guidance:
    """A task's guidance for one run: the items it follows, and the comments set aside."""

    items: tuple[Item, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    #: Items the run took from comments that gepa.guidance.yaml did not hold yet (committed with the PR).
    new: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[tuple[Item, Rule], ...]:
        return tuple((item, item.rule) for item in self.items if item.rule is not None)

    def __bool__(self) -> bool:
        return bool(self.items or self.ignored)
