"""Markdown for text we did not write: eval data, model outputs, a reflection model's rationale.

Such text ends up in PR bodies, job summaries and `report.md` on GitHub, where it must not ping people
(`@user`, `@org/team`), link or close issues (`#12`, `closes #1`, `GH-12`, `owner/repo#3`, an issue URL),
inject HTML, break the table it sits in, or close the code block it sits in. All escaping happens here,
once, so a reviewer has one file to check; callers pass every untrusted string through one of:

- `inline(text)`  a single line for a table cell or the middle of a sentence;
- `quote(text)`   a blockquote that keeps the text's line breaks (a rationale, an error);
- `code_block(text, lang)`  verbatim text in a fence it cannot close;
- `table(headers, rows)` / `details(summary, body)`  which escape their cells and summary themselves.

Numbers are formatted here too (`fmt_score`, `fmt_signed`, `fmt_count`, ...), each showing "n/a" for a
missing value, so report.md, the PR body and the terminal write a score the same way.

Why a zero-width space and not an HTML entity or a code span: GitHub looks for mentions and issue
references in the rendered text, where `&#64;user` has already become `@user` again, and also in plain
text that never goes through Markdown (commit messages, email replies to a PR). A U+200B ZERO WIDTH SPACE
right after the `@` or `#` survives all of these, is invisible to a reader, and no longer matches GitHub's
patterns; Dependabot and Renovate settled on the same character for changelogs. Fenced code is not
scanned in rendered Markdown, so `code_block` only has to get the fence right.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

# GitHub refuses a pull-request body or comment longer than this with a 422 (stated here once; the PR body's
# size ladder, the Action and the GitHub client all use it).
GITHUB_LIMIT = 65_536

ZWSP = "\u200b"
ELLIPSIS = "…"
REPLACEMENT = "\ufffd"

# C0/C1 control characters other than tab and line breaks: terminal escapes, NUL and friends.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Bidirectional embedding/override/isolate controls can make text read differently from what it is
# ("Trojan Source"); they become a visible U+FFFD so a reviewer sees something is there.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_NEWLINES = re.compile(r"\r\n?")

# Where GitHub would see a reference: every `@` and `#`, `GH-<digits>`, and URL / `www.` autolinks (an
# issue URL in a PR body cross-references, and after a closing keyword closes, the issue).
_REFERENCES = re.compile(r"[@#]|(?i:\bgh-)(?=\d)|:(?=//)|(?i:\bwww)(?=\.)")

# Markdown punctuation is backslash-escaped (CommonMark allows it before any ASCII punctuation); the
# three HTML metacharacters become entities so no tag or entity of the input survives.
_INLINE = str.maketrans({
    "\\": "\\\\", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "|": "\\|", "~": "\\~",
    "$": "\\$", "&": "&amp;", "<": "&lt;", ">": "&gt;",
})
# Block syntax that only counts at the start of a line: list bullets, `1.`/`1)` lists, setext underlines.
_LINE_START = re.compile(r"^(?:([-+=])|(\d{1,9})([.)]))")
_FENCE_CHARS = re.compile(r"[^\w+.-]")


def plain(text: object, limit: int | None = None) -> str:
    """One line of harmless plain text: whitespace runs (newlines included) become one space, control
    characters go, bidi overrides become U+FFFD, and with `limit` the text is cut to that many characters
    ending in "…". No Markdown escaping: this is for terminals and for the other helpers to build on.
    """
    if text is None:
        return ""
    value = " ".join(str(text).split())
    value = _BIDI.sub(REPLACEMENT, _CONTROLS.sub("", value))
    return abbreviate(value, limit)


def abbreviate(text: str, limit: int | None, *, trim: bool = True) -> str:
    """`text` cut to at most `limit` characters, the last one an ellipsis when anything was dropped;
    `trim` drops whitespace before the ellipsis (the terminal's fixed-width columns keep it)."""
    if limit is None or len(text) <= limit:
        return text
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    kept = text[: limit - 1]
    return (kept.rstrip() if trim else kept) + ELLIPSIS


def _defuse(text: str) -> str:
    """A zero-width space after each spot GitHub would turn into a mention, reference or link."""
    return _REFERENCES.sub(lambda m: m.group(0) + ZWSP, text)


def inline(text: object, limit: int | None = None) -> str:
    """`text` as one line that is safe inside a table cell or the middle of a sentence.

    `limit` counts the characters a reader sees (it applies before escaping, so an entity is never cut
    in half). The result may still start with `-` or `1.`: to start a line with it, use `quote`.
    """
    return _defuse(plain(text, limit)).translate(_INLINE)


def html_text(text: object, limit: int | None = None) -> str:
    """`text` as one line inside raw HTML (a `<summary>`), where Markdown escapes are not processed but
    entities are, and where GitHub still looks for mentions."""
    return html.escape(_defuse(plain(text, limit)), quote=True)


def quote(text: object, limit: int | None = None) -> str:
    """A blockquote of `text`, keeping its line breaks; each line escaped as by `inline`.

    Runs of blank lines shrink to one, and a line that would start a list or a setext heading gets its
    first character escaped. `limit` caps the whole text. An empty text gives an empty string.
    """
    raw = "" if text is None else _NEWLINES.sub("\n", str(text)).strip()
    if limit is not None and len(raw) > limit:
        raw = abbreviate(raw, limit)
    lines: list[str] = []
    for line in raw.split("\n"):
        escaped = _LINE_START.sub(_escape_line_start, inline(line))
        if escaped or (lines and lines[-1] != ">"):
            lines.append(f"> {escaped}" if escaped else ">")
    return "\n".join(lines)


def _escape_line_start(match: re.Match[str]) -> str:
    if match.group(1):
        return "\\" + match.group(1)
    return match.group(2) + "\\" + match.group(3)


def code_block(text: object, lang: str = "") -> str:
    """`text` verbatim in a fenced block whose fence is longer than any backtick run in the text.

    A closing fence must be at least as long as the opening one, so no line of the text can end the block
    early. `lang` is reduced to word characters, `+`, `.` and `-` (an info string may not contain
    backticks). Controls other than tab and newline and bidi overrides become U+FFFD.
    """
    body = "" if text is None else _NEWLINES.sub("\n", str(text))
    body = _BIDI.sub(REPLACEMENT, _CONTROLS.sub(REPLACEMENT, body))
    fence = "`" * max(3, _longest_backticks(body) + 1)
    if body and not body.endswith("\n"):
        body += "\n"
    return f"{fence}{_FENCE_CHARS.sub('', lang)}\n{body}{fence}"


def code_span(text: object, limit: int | None = None) -> str:
    """`text` as an inline code span: shown literally (no mention, link or HTML is rendered inside one),
    with a backtick run longer than any in the text so it cannot end the span early."""
    value = plain(text, limit)
    fence = "`" * (_longest_backticks(value) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def table(headers: Sequence[object], rows: Iterable[Sequence[object]], *, align: str | None = None) -> str:
    """A GitHub table; every header and cell goes through `inline`, so none can add or drop a column.

    `align` is one letter per column, `l`, `r` or `c` (default: all left). Rows shorter than the header
    are padded with empty cells; longer ones raise, since they would silently lose data.
    """
    width = len(headers)
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    align = align or "l" * width
    if len(align) != width or any(a not in marks for a in align):
        raise ValueError(f"align needs one of l/r/c per column ({width}), got {align!r}")
    lines = [_row(headers), "| " + " | ".join(marks[a] for a in align) + " |"]
    for row in rows:
        if len(row) > width:
            raise ValueError(f"a row has {len(row)} cells, the table {width} columns")
        lines.append(_row([*row, *[""] * (width - len(row))]))
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(inline(cell) for cell in cells) + " |"


def details(summary: object, body: str, *, expanded: bool = False) -> str:
    """A collapsible section. `summary` is untrusted-safe (escaped here); `body` must already be Markdown
    built from the helpers above. Blank lines around the body let GitHub render it as Markdown."""
    tag = "<details open>" if expanded else "<details>"
    return f"{tag}<summary>{html_text(summary)}</summary>\n\n{body.strip()}\n\n</details>"


# -- numbers -------------------------------------------------------------------------------------------


def as_number(value: Any) -> float | None:
    """A float for anything numeric; None for None, booleans and junk (the report shows "n/a")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def fmt_score(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:.3f}"


def fmt_signed(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{number:+.3f}"


def fmt_count(value: Any) -> str:
    number = as_number(value)
    return "n/a" if number is None else f"{round(number):,}"


def fmt_duration(seconds: Any) -> str:
    number = as_number(seconds)
    if number is None:
        return "n/a"
    if number < 60:
        return f"{number:.1f} s"
    minutes, secs = divmod(round(number), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def fmt_percent(confidence: Any) -> str:
    number = as_number(confidence)
    return "95%" if number is None else f"{number * 100:g}%"
