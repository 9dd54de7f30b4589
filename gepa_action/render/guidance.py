"""The reviewer-guidance block of report.md, the PR body and the job summary.

Every piece of it is untrusted: the guidance text and the ignored comments were written by people on a
pull request, the answers by the reflection model. Each is escaped here, once, as it enters Markdown
(`quote` for the guidance, `inline` for the rest), so a comment cannot mention anyone, close an issue,
inject HTML or break the block; links are shown only when they are plain http(s) URLs.
"""

from __future__ import annotations

import re

from ..report.model import GuidanceEntry, GuidanceReport, GuidanceViolations
from .text import code_span, inline, quote

_URL = re.compile(r"https?://[^\s<>()\[\]`\"'\\]+")
#: Longest guidance text and answer shown in the PR body (report.md and the file keep the whole text).
TEXT_LIMIT = 400
ANSWER_LIMIT = 300


def _link(text: str, url: str) -> str:
    return f"[{inline(text, 80)}]({url})" if _URL.fullmatch(url or "") else inline(text, 80)


def _where(entry: GuidanceEntry) -> str:
    if entry.source == "review" and entry.path:
        return f" on {code_span(entry.path, 120)}" + (f" line {entry.line}" if entry.line else "")
    return ""


def _violations(rule: str, counts: GuidanceViolations) -> str:
    return (f"Rule {code_span(rule, 220)}: outputs breaking it on val "
            f"{counts.val_before}/{counts.val_size} → {counts.val_after}/{counts.val_size}, on test "
            f"{counts.test_before}/{counts.test_size} → {counts.test_after}/{counts.test_size} (seed → evolved).")


def _answer(entry: GuidanceEntry, proposed: bool) -> str:
    if not proposed:
        return "Answer: none yet: this task's templates are not proposed in this run, so nothing here addresses it."
    if entry.answer:
        by = f" (reflection for candidate {entry.answered_by})" if entry.answered_by is not None else ""
        return f"Answer: {inline(entry.answer, ANSWER_LIMIT)}{by}"
    return "Answer: none: no reflection on the winning lineage answered this item."


def guidance_block(guidance: GuidanceReport | None, *, proposed: bool = True, heading: str = "###",
                   text_limit: int | None = TEXT_LIMIT) -> str:
    """Each item quoted with its author and link, the answer, and the rule's violations before/after;
    then the comments that were ignored and why. Empty without guidance."""
    if guidance is None or not (guidance.items or guidance.ignored or guidance.dropped):
        return ""
    new = sum(1 for e in guidance.items if e.new)
    lines = [f"{heading} Reviewer guidance"]
    if guidance.items:
        count = f"{len(guidance.items)} item{'s' if len(guidance.items) != 1 else ''}"
        lines.append(f"The run gave every reflection {count} from reviewers as a standing constraint"
                     + (f"; {new} new from comments on the pull request, committed in `gepa.guidance.yaml`."
                        if new else "."))
    for entry in guidance.items:
        who = _link("@" + entry.author if entry.author else "a reviewer", entry.url)
        head = f"**{inline(entry.id, 40)}** from {who}"
        lines += ["", head + _where(entry) + (" · new" if entry.new else ""), "",
                  quote(entry.text, text_limit), "", _answer(entry, proposed)]
        if entry.rule and entry.violations is not None:
            lines += ["", _violations(entry.rule, entry.violations)]
    if guidance.dropped:
        lines += ["", "Retired by `/gepa-tune drop`: " + ", ".join(inline(i, 40) for i in guidance.dropped) + "."]
    if guidance.ignored:
        lines += ["", "Ignored `/gepa-tune` comments (not used):"]
        lines += [f"- {_link('@' + i.author, i.url)}: {inline(i.reason, 200)}" for i in guidance.ignored]
    return "\n".join(lines)


def guidance_summary(guidance: GuidanceReport | None) -> str:
    """The job summary's short form: counts, each rule's violations after, and the ignored comments."""
    if guidance is None or not (guidance.items or guidance.ignored):
        return ""
    new = sum(1 for e in guidance.items if e.new)
    lines = [f"Reviewer guidance: {len(guidance.items)} item(s), {new} new"
             + (f", {len(guidance.dropped)} retired" if guidance.dropped else "") + "."]
    for entry in guidance.items:
        if entry.rule and entry.violations is not None:
            lines.append(f"- {inline(entry.id, 40)}: {_violations(entry.rule, entry.violations)}")
    for ignored in guidance.ignored:
        lines.append(f"- ignored: {_link('@' + ignored.author, ignored.url)}: {inline(ignored.reason, 200)}")
    return "\n".join(lines)
