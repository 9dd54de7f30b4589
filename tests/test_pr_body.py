"""The pull-request body and job summary: content, the size ladder, and how GitHub's Markdown renders them.

Reports are built as report.json data and reach the renderers only through the model's reader
(`tests/fakes/report_factory.py`), so each is one `load` would accept.

Rendering goes through cmark-gfm (GitHub's own parser, via `cmarkgfm`) with raw HTML allowed, so a tag
smuggled in by eval data would show up as a tag in the HTML, and a broken table as a wrong row count.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import replace
from typing import Any

import cmarkgfm
import pytest
from fakes.report_factory import report_from_json, report_of, task_report

from gepa_action.render.pr_body import (
    LADDER,
    MARKER,
    SAFETY_MARGIN,
    github_length,
    render_job_summary,
    render_pr_body,
)
from gepa_action.render.text import ZWSP
from gepa_action.report.model import Instances, Models, Report, Scores

LIMIT = 65_536
THRESHOLD = "test delta 95% CI lower bound > +0"
RUN_URL = "https://github.com/acme/app/actions/runs/42"
FULL = "https://github.com/acme/app/blob/gepa-tune/triage/.gepa-tune/report.md"

# What GitHub would turn into a notification, an issue link or a closing reference, in rendered text.
MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")
ISSUE_REF = re.compile(r"(?<![\w&])#\d|\bGH-\d|[\w.-]+/[\w.-]+#\d", re.IGNORECASE)
CLOSING = re.compile(r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\b:?\s+(?:[\w.-]+/[\w.-]+)?#\d+")
AUTOLINK = re.compile(r"https?://|\bwww\.", re.IGNORECASE)
# Every tag the body may produce: Markdown's own output plus our <details>/<summary>.
ALLOWED_TAGS = {"p", "h2", "h3", "hr", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "pre",
                "code", "blockquote", "strong", "a", "br"}
HOSTILE = ("@octocat @org/team closes #1, fixes acme/app#3 GH-12 | <script>alert(1)</script> <img src=x "
           "onerror=alert(2)> </details> </summary> </td> ``` `tick` **bold** [x](https://evil.example) "
           "www.evil.example &amp; ~~s~~\n```\n- item\n# heading\n| a | b |\n\x1b[31m\u202eevil")


# -- fixtures ------------------------------------------------------------------------------------------


def instance(i: int, split: str, *, output: str = "", delta: float | None = None) -> dict[str, Any]:
    """Instance `i`: every 5th regresses, the next two improve, the rest stay (unless `delta` is given)."""
    if delta is None:
        delta = -1.0 if i % 5 == 0 else 1.0 if i % 5 in (1, 2) else 0.0
    before = 1.0 if delta < 0 else 0.0 if delta > 0 else float(i % 2)
    return {"id": f"{split[0]}{i:04d}", "split": split, "before": before, "after": before + delta, "delta": delta,
            "output_before": output or f"before {i}", "output_after": output or f"after {i}"}


def make_task(name: str = "triage", *, test: int = 3, val: int = 2, output: str = "", diff: str | None = None,
              **overrides: Any) -> dict[str, Any]:
    """A task report shaped like the engine's report.json entry (see report.py)."""
    instances = [instance(i, "test", output=output) for i in range(test)]
    instances += [instance(i, "val", output=output) for i in range(val)]
    counts = {"improved": sum(r["delta"] > 0 for r in instances if r["split"] == "test"),
              "regressed": sum(r["delta"] < 0 for r in instances if r["split"] == "test"),
              "unchanged": sum(r["delta"] == 0 for r in instances if r["split"] == "test")}
    task: dict[str, Any] = {
        "task": name,
        "description": "Route support tickets to a queue.",
        "status": "finished",
        "stop_reason": "metric-call budget",
        "stop_code": "budget",
        "eval_set": {"name": "tickets", "version": "1.2", "sha256": "3f2a9c0b1d2e" + "b" * 52, "path": "evals/t.jsonl"},
        "models": {"task": "gpt-4o-mini", "reflection": "gpt-4o", "judge": None},
        "modules": ["prompts/triage/system.j2"],
        "optimized": ["prompts/triage/system.j2"],
        "split_sizes": {"train": 20, "val": val, "test": test},
        "scores": {
            "val": {"seed": 0.5, "best": 0.8571, "delta": 0.3571},
            "test": {"seed": 0.4667, "best": 0.8, "delta": 0.3333,
                     "ci95": {"mean_delta": 0.3333, "low": 0.1333, "high": 0.5333, "n": test, "resamples": 10000,
                              "confidence": 0.95}},
        },
        "counts": counts,
        "instances": instances,
        "best": {"candidate": 7, "templates": {"prompts/triage/system.j2": "Classify into bug or billing."},
                 "diff": diff if diff is not None else (
                     "--- a/prompts/triage/system.j2\n+++ b/prompts/triage/system.j2\n@@ -1 +1 @@\n"
                     "-Classify the ticket.\n+Classify into bug or billing.\n"),
                 "changed_modules": ["prompts/triage/system.j2"]},
        "lineage": [
            {"candidate": 0, "parents": [], "origin": "seed", "module": None, "iteration": 0, "rationale": "",
             "minibatch_ids": [], "minibatch_before": [], "minibatch_after": [], "val_score": 0.5,
             "metric_calls": 14},
            {"candidate": 3, "parents": [0], "origin": "reflection", "module": "prompts/triage/system.j2",
             "iteration": 2, "rationale": "The model never saw the labels.\nList them.",
             "minibatch_ids": ["t1", "t9"], "minibatch_before": [0, 0], "minibatch_after": [1, 1],
             "val_score": 0.71, "metric_calls": 40},
            {"candidate": 7, "parents": [3], "origin": "reflection", "module": "prompts/triage/system.j2",
             "iteration": 6, "rationale": "Billing and bug were confused; say which is which.",
             "minibatch_ids": ["t2"], "minibatch_before": [0], "minibatch_after": [1],
             "val_score": 0.8571, "metric_calls": 120},
        ],
        "history": [{"metric_calls": 14, "best_val": 0.5}, {"metric_calls": 40, "best_val": 0.71},
                    {"metric_calls": 120, "best_val": 0.8571}],
        "candidates": [
            {"candidate": 0, "parents": [], "origin": "seed", "module": None, "val_score": 0.5,
             "val_instances": val, "iteration": 0},
            {"candidate": 3, "parents": [0], "origin": "reflection", "module": "m", "val_score": 0.71,
             "val_instances": val, "iteration": 2},
            {"candidate": 5, "parents": [0], "origin": "reflection", "module": "m", "val_score": 0.6,
             "val_instances": val, "iteration": 4},
            {"candidate": 7, "parents": [3], "origin": "reflection", "module": "m", "val_score": 0.8571,
             "val_instances": val, "iteration": 6},
        ],
        "proposals": {"total": 10, "accepted": 3, "rejected_invalid": {}, "rejected_not_better": 7,
                      "stopped_on_val": 0, "dropped": 0, "skipped_perfect": 0, "repeats": 0,
                      "merges": {"tried": 0, "accepted": 0}},
        "val_scoring": {"val_size": val, "pool_on_all_of_val": 3, "winner_val_instances": val, "stopped": [],
                        "calls_saved": 0},
        "errors": [],
        "usage": {"metric_calls": 288, "budget": 300, "test_calls": 2 * test, "reflection_calls": 11,
                  "requests": 400, "cached": 20, "prompt_tokens": 123456, "completion_tokens": 7890,
                  "cost_usd": 0.0123, "retries": 0, "retries_by_kind": {}, "wall_s": 42.1, "search_wall_s": 30.0},
    }
    task.update(overrides)
    return task


def make_report(*tasks: dict[str, Any]) -> Report:
    return report_from_json({
        "schema": 1, "run_id": "20261125-101500-3f2a", "status": "finished", "started_at": None,
        "finished_at": None,
        "options": {"seed": 7, "budget": 300, "strategy": "pareto", "minibatch": 3, "parallel": 1, "max_merges": 5},
        "tasks": list(tasks) or [make_task()]})


def body(report: Report | None = None, applied: tuple[str, ...] = ("triage",), **kwargs: Any):
    kwargs.setdefault("run_url", RUN_URL)
    kwargs.setdefault("full_report", FULL)
    return render_pr_body(report or make_report(), applied=applied, threshold=THRESHOLD, **kwargs)


def render(markdown: str) -> str:
    """HTML as GitHub's parser makes it, raw HTML kept (GitHub sanitises afterwards; we must not rely on it)."""
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=cmarkgfm.Options.CMARK_OPT_UNSAFE)


def visible_text(page: str) -> str:
    """What a reader sees outside code blocks, where GitHub looks for mentions and references."""
    page = re.sub(r"(?s)<pre[^>]*>.*?</pre>", "", page)
    page = re.sub(r"(?s)<code>.*?</code>", "", page)
    return html.unescape(re.sub(r"<[^>]*>", " ", page))


def tables(page: str) -> list[str]:
    return re.findall(r"(?s)<table>.*?</table>", page)


def row_count(table_html: str) -> int:
    return table_html.count("<tr>")


def fences_balanced(markdown: str) -> bool:
    """Every fence opened is closed by a fence of the same length (what `code_block` guarantees)."""
    open_fence = None
    for line in markdown.split("\n"):
        match = re.match(r"(`{3,})", line)
        if open_fence is None and match:
            open_fence = match.group(1)
        elif open_fence is not None and line == open_fence:
            open_fence = None
    return open_fence is None


# -- content -------------------------------------------------------------------------------------------


def test_marker_first_then_headline_with_the_numbers() -> None:
    result = body()
    first, _, rest = result.text.partition("\n")
    assert first == MARKER
    headline = rest.strip().split("\n\n")[0]
    assert "**triage** (test 0.467 → 0.800, +0.333, 95% CI +0.133 … +0.533)" in headline
    assert "Run 20261125-101500-3f2a: 288 metric calls, $0.0123." in headline
    assert "Threshold: test delta 95% CI lower bound &gt; +0." in headline
    assert not result.truncated and result.cuts == ()


def test_summary_tables_have_every_fact() -> None:
    text = body().text
    assert "| split | baseline | evolved | change \\[95% CI\\] |" in text
    assert "| val (2) | 0.500 | 0.857 | +0.357 |" in text
    assert "| test (3) | 0.467 | 0.800 | +0.333 \\[+0.133, +0.533\\] |" in text
    assert "The gain of +0.333 on the test split is distinguishable from zero at 95%" in text
    facts = ("| 2 improved · 1 regressed · 0 unchanged | 288 of 300 (+6 on test) | 123,456 + 7,890 | \\$0.0123 | "
             "gpt-4o-mini / gpt-4o | tickets@" + ZWSP + "1.2 (sha256 3f2a9c0b1d2e) |")
    assert facts in text


def test_template_diff_is_fenced() -> None:
    text = body().text
    assert "Best candidate c7 changes prompts/triage/system.j2:" in text
    assert "```diff\n--- a/prompts/triage/system.j2\n" in text
    assert "+Classify into bug or billing.\n```" in text


def test_instances_test_first_regressions_before_improvements_then_unchanged() -> None:
    text = body(make_report(make_task(test=10, val=5))).text
    section = text[text.index("### Per-instance scores"):]
    assert "<summary>Test split: 2 regressed, 4 improved, 4 unchanged (10 instances)</summary>" in section
    assert section.index("Test split") < section.index("Validation split")
    test_part = section[: section.index("Validation split")]
    ids = re.findall(r"(?m)^\| (t\d{4}) \|", test_part)
    assert ids == ["t0000", "t0005", "t0001", "t0002", "t0006", "t0007", "t0003", "t0004", "t0008", "t0009"]
    assert "| t0000 | 1.000 | 0.000 | -1.000 | before 0 | after 0 |" in test_part
    val_part = section[section.index("Validation split"):]
    assert re.findall(r"(?m)^\| (v\d{4}) \|", val_part) == ["v0000", "v0001", "v0002", "v0003", "v0004"]


def test_rationales_of_the_accepted_steps_are_quoted() -> None:
    text = body().text
    section = text[text.index("### Why the prompt changed"):]
    assert "**c3** reflection from c0 · module prompts/triage/system.j2 · iteration 2" in section
    assert "> The model never saw the labels.\n> List them." in section
    assert "> Billing and bug were confused; say which is which." in section
    assert "**c0**" not in section  # the seed is no step


def test_both_mermaid_charts() -> None:
    text = body().text
    blocks = re.findall(r"(?s)```mermaid\n(.*?)```", text)
    assert len(blocks) == 2
    assert blocks[0].startswith("xychart-beta") and "line [0.500, 0.710, 0.857]" in blocks[0]
    assert blocks[1].startswith("graph LR") and "c3 --> c7" in blocks[1]


def test_footer_links_the_run_and_says_how_to_reproduce() -> None:
    text = body().text
    footer = text[text.rindex("\n---\n"):]
    assert f"gepa-tune run 20261125-101500-3f2a · [workflow run]({RUN_URL})" in footer
    assert ("```sh\ngepa-tune tune triage --seed 7 --budget 300 --strategy pareto --minibatch 3 --parallel 1 "
            "--max-merges 5\n```") in footer
    assert "report.md in .gepa/runs/20261125-101500-3f2a/" in footer
    assert FULL not in text  # only committed (and linked) when the body was cut


def test_tasks_not_applied_say_why() -> None:
    kept = make_task("summarise")
    kept["scores"]["test"]["ci95"].update(low=-0.05)
    seed_best = make_task("extract", best={"candidate": 0, "diff": "", "changed_modules": [], "templates": {}})
    failed = make_task("classify", status="failed: endpoint down")
    text = body(make_report(make_task(), kept, seed_best, failed)).text
    assert "3 other tasks kept their seed prompts (see below)." in text
    assert ("## summarise: not applied\n\nRoute support tickets to a queue.\n\nKept the seed prompts: the gain "
            "(test 0.467 → 0.800, +0.333, 95% CI -0.050 … +0.533) does not clear the threshold "
            "(test delta 95% CI lower bound &gt; +0).") in text
    assert "Kept the seed prompts: the seed templates stayed best." in text
    assert "Kept the seed prompts: the run did not finish (failed: endpoint down)." in text
    # Only applied tasks show a diff, instances and charts.
    assert text.count("### Template change") == 1 and text.count("```mermaid") == 2


def test_nothing_applied() -> None:
    result = body(applied=())
    assert "No task's gain clears the threshold, so this run of gepa-tune applies no prompt." in result.text
    assert "### Template change" not in result.text


# States the model can hold, built from a real report (route_v1); the ones it cannot hold (a section that
# is null, a missing key, junk in a row) are refused by `load`: test_report_model.py.
@pytest.mark.parametrize("change", [
    lambda t: replace(t, scores=replace(t.scores, test=None)),
    lambda t: replace(t, best=None, lineage=[], history=[], candidates=[], instances=Instances()),
    lambda t: replace(t, models=Models(None, None, None), split_sizes={}, scores=Scores(None, None)),
    lambda t: replace(t, status="interrupted", stop_reason=None, stop_code=None),
], ids=["no test split", "no candidate at all", "nothing scored", "unfinished"])
def test_optional_parts_absent_still_render(change: Any) -> None:
    task = change(task_report())
    result = body(report_of(task), applied=(task.task,))
    assert result.text.startswith(MARKER + "\n") and not result.truncated
    assert render_job_summary(report_of(task), applied=[task.task], threshold=THRESHOLD, operation="created",
                              pr_url=None).startswith("## gepa-tune run")


# -- size ----------------------------------------------------------------------------------------------


def test_github_length_is_pessimistic() -> None:
    assert github_length("abc") == 3
    assert github_length("a\nb") == 4  # CRLF after a web edit
    assert github_length("😀") == 2  # UTF-16 surrogate pair
    assert github_length("é…") == 2


def test_small_body_is_not_cut() -> None:
    result = body()
    assert not result.truncated
    assert "Shortened" not in result.text
    assert len(result.text) < 10_000


def test_three_hundred_test_instances_with_long_outputs_fit() -> None:
    long_output = "The ticket describes a failed payment on an invoice; routing it to billing. " * 6  # ~460 chars
    report = make_report(make_task(test=300, val=100, output=long_output))
    start = time.perf_counter()
    result = body(report)
    elapsed = time.perf_counter() - start
    assert len(result.text) <= LIMIT - SAFETY_MARGIN and github_length(result.text) <= LIMIT - SAFETY_MARGIN
    assert elapsed < 3.0, f"rendering took {elapsed:.2f} s"
    # The essentials and every changed test instance are still there.
    assert result.text.startswith(MARKER) and "```diff\n" in result.text
    listed = re.findall(r"(?m)^\| (t\d{4}) \|", result.text)
    assert len(listed) >= 180  # 60 regressions + 120 improvements
    assert listed[:2] == ["t0000", "t0005"]  # regressions first
    # Abbreviating the outputs is enough here: every instance is still listed.
    assert result.truncated and result.cuts == ("model outputs abbreviated to 30 characters",)
    assert len(re.findall(r"(?m)^\| ([tv]\d{4}) \|", result.text)) == 400
    assert "**Shortened to fit GitHub's 65,536-character limit:** model outputs abbreviated to 30" in result.text
    assert f"Everything is in the full report: [report.md]({FULL})." in result.text


def test_monstrous_report_fits_with_a_note_and_the_full_report_link() -> None:
    diff = "".join(f"+line {i} of a prompt that grew far too long `x` @user closes #{i}\n" for i in range(3500))
    assert len(diff) > 200_000
    task = make_task(test=5000, val=3000, output="y" * 600, diff=diff)
    task["lineage"][1]["rationale"] = "r" * 50_000
    report = make_report(task)
    start = time.perf_counter()
    result = body(report)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"rendering took {elapsed:.2f} s"
    assert result.truncated
    assert len(result.text) <= LIMIT - SAFETY_MARGIN and github_length(result.text) <= LIMIT - SAFETY_MARGIN
    assert "**Shortened to fit GitHub's 65,536-character limit:**" in result.text
    assert "template diffs cut" in result.text
    assert f"Everything is in the full report: [report.md]({FULL})." in result.text
    assert f"The full report, with every instance, proposal and cost: [report.md]({FULL})." in result.text
    assert re.search(r"The diff was cut after line [\d,]+ of 3,500 \(", result.text)
    assert result.text.count("<details>") == result.text.count("</details>")
    assert fences_balanced(result.text)
    assert "## triage: applied" in result.text and "| test (5000) |" in result.text  # essentials stay


def test_a_diff_larger_than_the_limit_is_cut_alone() -> None:
    diff = "+" + "z" * 250_000 + "\n"  # one line: cut mid-line
    result = body(make_report(make_task(diff=diff)))
    assert result.truncated and len(result.text) <= LIMIT - SAFETY_MARGIN
    assert "The diff was cut in line 1 of 1 (" in result.text
    assert fences_balanced(result.text)


def test_hundreds_of_tasks_still_fit() -> None:
    tasks = [make_task(f"task{i}", test=20, val=10, diff="+x\n" * 400) for i in range(300)]
    result = body(make_report(*tasks), applied=tuple(f"task{i}" for i in range(300)))
    assert result.truncated and len(result.text) <= LIMIT - SAFETY_MARGIN
    headline = result.text.split("\n\n")[1]
    assert headline.count("**task") == 5 and "+0.533) and 295 more, measured" in headline
    assert "later sections left out" in result.text
    assert result.text.rstrip().endswith("cost: [report.md](" + FULL + ").")
    assert fences_balanced(result.text) and result.text.count("<details>") == result.text.count("</details>")


def test_absurd_task_names_are_abbreviated_and_leave_the_command() -> None:
    name = "n" * 200_000
    result = body(make_report(make_task(name)), applied=(name,))
    assert not result.truncated and len(result.text) < 10_000
    assert f"## {'n' * 79}…: applied" in result.text
    assert "this run had 1 task):\n\n```sh\ngepa-tune tune --seed 7 --budget 300" in result.text


def test_every_level_of_the_ladder_stays_under_the_limit_and_well_formed() -> None:
    report = make_report(make_task(test=300, val=60, output="o" * 200))
    seen = {}
    for limit in range(2_000, 80_000, 2_000):
        result = body(report, limit=limit)
        assert github_length(result.text) <= limit - SAFETY_MARGIN, limit
        assert result.truncated == bool(result.cuts)
        seen.setdefault(result.cuts, result.text)
    assert len(seen) >= 8, list(seen)
    assert () in seen and any("template diffs cut" in cuts for cuts in seen)
    for cuts, text in seen.items():
        assert fences_balanced(text) and text.count("<details>") == text.count("</details>"), cuts
        assert all(cut in text for cut in cuts)
        page = render(text)
        for table_html in tables(page):
            cells = re.findall(r"<t[dh][ >]", table_html)
            assert len(cells) % row_count(table_html) == 0  # every row has the header's cell count


def test_ladder_order_cuts_outputs_before_rows_before_charts_before_rationales() -> None:
    cuts = [set(level.__dict__.items()) for level in LADDER]
    assert LADDER[0].outputs and LADDER[0].unchanged and LADDER[0].val and LADDER[0].charts
    firsts = {}
    for index, level in enumerate(LADDER):
        for name, full in (("outputs", LADDER[0].outputs), ("unchanged", True), ("val", True), ("charts", True),
                           ("rationale", LADDER[0].rationale)):
            if getattr(level, name) != full:
                firsts.setdefault(name, index)
    assert firsts["outputs"] < firsts["unchanged"] < firsts["val"] < firsts["charts"] < firsts["rationale"]
    assert len(cuts) == len(LADDER)


def test_limit_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        body(limit=500)


# -- rendering -----------------------------------------------------------------------------------------


def test_renders_as_github_tables_inside_details() -> None:
    page = render(body(make_report(make_task(test=10, val=5))).text)
    assert page.startswith("<!-- gepa-tune -->")
    assert "<script" not in page
    assert page.count("<details>") == 2 and page.count("</details>") == 2
    rows = [row_count(t) for t in tables(page)]
    # scores (header + val + test), facts (header + 1), test instances (header + 10), val (header + 5)
    assert rows == [3, 2, 11, 6]
    assert '<pre lang="diff"><code>' in page or '<pre><code class="language-diff">' in page
    assert page.count("<blockquote>") == 2


def test_hostile_eval_data_renders_harmless() -> None:
    task = make_task(HOSTILE, test=4, val=2, description=HOSTILE, status="finished",
                     models={"task": "@evil/model", "reflection": "<b>x</b>", "judge": "closes #4"},
                     eval_set={"name": "@org/team", "version": "#4", "sha256": "<script>", "path": "#7"})
    for row in task["instances"]:
        row.update(id=f"{row['id']} {HOSTILE}", output_before=HOSTILE, output_after="</details>\n```\n" + HOSTILE)
    task["lineage"][1].update(rationale=HOSTILE + "\n```\n</details>\n@everyone closes #2",
                              minibatch_ids=["@x", "#1", "a|b"], module="GH-7 @mod")
    task["candidates"][1]["origin"] = 'x"] --> evil["@admin'
    task["best"].update(diff="+ closes #1 @someone\n+```\n+</details>\n+<script>alert(3)</script>\n",
                        changed_modules=["@who #9"])
    kept = make_task("@org/kept closes #5", description=HOSTILE, status="failed: " + HOSTILE)
    report = replace(make_report(task, kept), run_id="@run #1")
    markdown = render_pr_body(report, applied=[HOSTILE], threshold=THRESHOLD + " @admin #3", run_url=RUN_URL,
                              full_report=FULL).text
    page = render(markdown)

    tags = {m.lower() for m in re.findall(r"</?([a-zA-Z][\w-]*)", page)}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    assert "<script" not in page and "&lt;script>" not in page  # not even via GFM's tag filter
    assert re.findall(r'href="([^"]*)"', page) == [RUN_URL]
    text = visible_text(page)
    for pattern in (MENTION, ISSUE_REF, CLOSING, AUTOLINK):
        assert not pattern.search(text), pattern.search(text)
    assert "@org" not in text and "#1" not in text
    assert "\x1b" not in page and "\u202e" not in page
    # Readers still see the text, defused.
    assert "alert(1)" in text and "@" + ZWSP + "octocat" in text
    # The structure survived: 2 details, every instance one row, code only where we put it.
    assert page.count("<details>") == 2 and page.count("</details>") == 2
    rows = [row_count(t) for t in tables(page)]
    assert rows == [3, 2, 5, 3, 3, 2], rows
    pres = re.findall(r"(?s)<pre[^>]*>.*?</pre>", page)
    assert len(pres) == 4  # diff, two charts, the reproduce command
    assert "closes #1 @someone" in html.unescape(pres[0])  # the diff is verbatim, inside its block
    # Mermaid labels hold only ids, letters and numbers.
    for label in re.findall(r'\[&quot;(.*?)&quot;\]', pres[2]):
        assert re.fullmatch(r"c\d+ [a-z-]+ (?:\d\.\d{3}|n/a)", label), label


def test_hostile_data_in_a_cut_body_stays_harmless() -> None:
    task = make_task(test=400, val=200, output=HOSTILE * 3, diff="+" + HOSTILE.replace("\n", "\n+") * 5000)
    for row in task["instances"]:
        row["id"] = f"{row['id']} @org/team closes #1 |"
    result = body(make_report(task))
    assert result.truncated and len(result.text) <= LIMIT - SAFETY_MARGIN
    page = render(result.text)
    assert {m.lower() for m in re.findall(r"</?([a-zA-Z][\w-]*)", page)} <= ALLOWED_TAGS
    text = visible_text(page)
    assert not MENTION.search(text) and not ISSUE_REF.search(text) and not CLOSING.search(text)
    for table_html in tables(page):
        cells = re.findall(r"<t[dh][ >]", table_html)
        assert len(cells) % row_count(table_html) == 0


# -- job summary ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("operation", "expected"), [
    ("created", f"Opened [the pull request]({RUN_URL}) with the evolved prompts."),
    ("updated", f"Updated [the pull request]({RUN_URL}) with the evolved prompts of this run."),
    ("closed", f"Closed [the pull request]({RUN_URL}): no task's gain clears the threshold any more."),
    ("none", "Prompts to apply were found, but no pull request was opened or changed"),
])
def test_job_summary_says_what_happened_to_the_pr(operation: str, expected: str) -> None:
    summary = render_job_summary(make_report(), applied=["triage"], threshold=THRESHOLD, operation=operation,
                                 pr_url=RUN_URL)
    assert summary.startswith("## gepa-tune run 20261125-101500-3f2a\n\n")
    assert expected in summary
    assert "| test (3) | 0.467 | 0.800 | +0.333 \\[+0.133, +0.533\\] |" in summary
    assert "```diff" not in summary and "<details>" not in summary


def test_job_summary_nothing_applied_and_hostile_names() -> None:
    task = make_task("@org/team closes #1 <script>", description=HOSTILE)
    summary = render_job_summary(make_report(task), applied=[], threshold=THRESHOLD, operation="none",
                                 pr_url=None)
    assert "No task's gain clears the threshold: no pull request." in summary
    assert ": not applied\n\nKept the seed prompts: the gain" in summary
    page = render(summary)
    assert {m.lower() for m in re.findall(r"</?([a-zA-Z][\w-]*)", page)} <= ALLOWED_TAGS
    text = visible_text(page)
    assert not MENTION.search(text) and not ISSUE_REF.search(text) and not CLOSING.search(text)
    assert [row_count(t) for t in tables(page)] == [3, 2]


def test_retries_are_shown_by_kind_and_unknown_kinds_stay_harmless() -> None:
    task = make_task()
    task["usage"] = {**task["usage"], "retries": 5,
                     "retries_by_kind": {"rate_limited": 3, "invalid_reply": 1, "@org/team <b>x</b>": 1}}
    text = body(make_report(task)).text
    assert r"288 of 300 (+6 on test), 5 retries (3 rate\_limited, 1 invalid\_reply, 1 other)" in text
    assert "@org/team" not in text
    assert "5 retries" not in body().text, "a run without retries says nothing about them"
