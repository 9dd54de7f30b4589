"""The guidance part of a task's report: each item the run followed, the reflection model's answer to
it along the winning lineage, and for checkable rules how many outputs broke them before and after.

Answers come from the lineage (seed -> best) only: a proposal that lost says nothing about the template
the pull request brings in. When several steps answered an item, the latest (closest to the winner)
wins, since it describes the template that was actually kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..guidance.items import Guidance, Item
from ..guidance.prompt import answers_in
from ..guidance.rules import check
from .model import GuidanceEntry, GuidanceReport, GuidanceViolations, IgnoredComment, Row, Step


def guidance_report(guidance: Guidance, lineage: Sequence[Step], test_rows: Sequence[Row],
                    val_rows: Sequence[Row]) -> GuidanceReport | None:
    """None when the task had no guidance and no comment was set aside (the report then has no key)."""
    if not guidance:
        return None
    ids = [item.id for item in guidance.items]
    answers: dict[str, tuple[str, int]] = {}
    for step in lineage:
        for item_id, answer in answers_in(step.rationale, ids).items():
            answers[item_id] = (answer, step.candidate)
    entries = [_entry(item, answers.get(item.id), item.id in guidance.new, test_rows, val_rows)
               for item in guidance.items]
    ignored = [IgnoredComment(author=i.author, url=i.url, reason=i.reason, text=i.text) for i in guidance.ignored]
    return GuidanceReport(items=entries, ignored=ignored, dropped=list(guidance.dropped))


def _entry(item: Item, answer: tuple[str, int] | None, new: bool, test_rows: Sequence[Row],
           val_rows: Sequence[Row]) -> GuidanceEntry:
    return GuidanceEntry(
        id=item.id, text=item.text, author=item.author, url=item.url, source=item.source.kind,
        path=item.source.path, line=item.source.line, created_at=item.created_at,
        rule=item.rule.describe() if item.rule is not None else None, new=int(new),
        answer=answer[0] if answer else None, answered_by=answer[1] if answer else None,
        violations=_violations(item, test_rows, val_rows) if item.rule is not None else None)


def _violations(item: Item, test_rows: Sequence[Row], val_rows: Sequence[Row]) -> GuidanceViolations:
    def count(rows: Sequence[Row], attribute: str) -> int:
        return sum(1 for row in rows if check(item, getattr(row, attribute)).violated)

    return GuidanceViolations(val_before=count(val_rows, "output_before"), val_after=count(val_rows, "output_after"),
                              test_before=count(test_rows, "output_before"),
                              test_after=count(test_rows, "output_after"),
                              val_size=len(val_rows), test_size=len(test_rows))
