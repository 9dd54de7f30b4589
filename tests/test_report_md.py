"""Markdown escaping of untrusted text, and the run report rendered from the typed report.

The task builders write report.json data (as the engine writes it) and hand it to the renderers only
through the model's reader (`tests/fakes/report_factory.py`), so every report rendered here is one
`load` would accept; states the model cannot hold are tested as refusals in test_report_model.py."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import pytest
from fakes.report_factory import report_from_json, report_of, task_from_json, task_report

from gepa_action.render.report_md import render_report, render_task
from gepa_action.render.terminal import render_summary_line
from gepa_action.render.text import ZWSP, code_block, details, html_text, inline, plain, quote, table
from gepa_action.report.model import Instances, Models, Report, Scores

# GitHub's closing keywords followed by something it treats as an issue reference.
CLOSING = re.compile(r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\b:?\s+(?:[\w.-]+/[\w.-]+)?#\d+")
MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")
ISSUE_REF = re.compile(r"(?<![\w&])#\d|\bGH-\d|[\w.-]+/[\w.-]+#\d", re.IGNORECASE)
AUTOLINK = re.compile(r"https?://|\bwww\.", re.IGNORECASE)

HOSTILE = (
    "hey @octocat and @acme/security-team, this closes #1 and fixes acme/app#3, see GH-12 | "
    "<script>alert(1)</script> <img src=x onerror=alert(2)> <details open> ``` `code` ```` "
    "**bold** [link](https://evil.example/issues/1) www.evil.example &amp; $x^2$ ~~gone~~\n"
    "second line\r\n- list item\n# heading\n\x1b[31mred\x1b[0m \u202eevil\u202c"
)


def assert_harmless(text: str) -> None:
    """No mention, issue reference, closing keyword, autolink or raw HTML tag survives in `text`."""
    assert not MENTION.search(text), text
    assert not ISSUE_REF.search(text), text
    assert not CLOSING.search(text), text
    assert not AUTOLINK.search(text), text
    assert not re.search(r"<(?:script|img|details open|/script)", text, re.IGNORECASE), text
    assert "\x1b" not in text and "\u202e" not in text


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


# -- markdown.py ---------------------------------------------------------------------------------------


def test_inline_defuses_mentions_references_links_and_html() -> None:
    text = inline(HOSTILE)
    assert_harmless(text)
    assert "\n" not in text and "\r" not in text
    assert "&lt;script&gt;" in text
    assert "@" + ZWSP + "octocat" in text
    # What a reader sees is still the original words.
    assert text.replace(ZWSP, "").count("octocat") == 1


def test_inline_escapes_markdown_syntax() -> None:
    text = inline("**bold** _em_ `code` [a](b) |x| ~~s~~ $m$ \\n")
    for raw in ("**", "_em_", "`code`", "[a]", "|x|", "~~", "$m$"):
        assert raw not in text
    assert text == r"\*\*bold\*\* \_em\_ \`code\` \[a\](b) \|x\| \~\~s\~\~ \$m\$ \\n"


def test_inline_escapes_entities_so_they_render_literally() -> None:
    assert inline("&amp; &#64;user &lt;b&gt;") == "&amp;amp; &amp;#" + ZWSP + "64;user &amp;lt;b&amp;gt;"


def test_plain_text_stays_readable() -> None:
    assert inline("The model confused billing with bugs.") == "The model confused billing with bugs."
    assert inline("gpt-4o-mini 0.857 +0.333") == "gpt-4o-mini 0.857 +0.333"


def test_inline_limit_counts_visible_characters_and_never_cuts_an_entity() -> None:
    assert inline("a" * 100, limit=10) == "a" * 9 + "…"
    assert inline("abc", limit=10) == "abc"
    cut = inline("<" * 50, limit=5)
    assert cut == "&lt;" * 4 + "…"


def test_plain_collapses_whitespace_and_drops_controls() -> None:
    assert plain("a\n\n b\t\r\nc\x00\x1b[1m") == "a b c[1m"
    assert plain(None) == ""
    assert plain("x\u202ey") == "x\ufffdy"


def test_closing_keywords_no_longer_match() -> None:
    for phrase in ("closes #1", "Fixes: #22", "resolved acme/app#3", "fix https://github.com/a/b/issues/4"):
        assert CLOSING.search(phrase) or AUTOLINK.search(phrase)
        assert_harmless(inline(phrase))


def test_table_cells_cannot_change_the_column_count() -> None:
    rendered = table(["id", "output"], [["t|1", "a | b\nc || d"], ["x\\|y", "`|`"], ["short"]])
    lines = rendered.split("\n")
    assert len(lines) == 5
    assert {unescaped_pipes(line) for line in lines} == {3}


def test_table_rejects_rows_that_would_lose_data() -> None:
    with pytest.raises(ValueError):
        table(["a"], [["1", "2"]])
    with pytest.raises(ValueError):
        table(["a", "b"], [], align="l")


@pytest.mark.parametrize("text", ["```\nend\n```", "````\n```", "a ````` b", "", "no fence", "`"])
def test_code_block_cannot_be_closed_from_inside(text: str) -> None:
    block = code_block(text, "diff")
    lines = block.split("\n")
    fence = re.match(r"`+", lines[0]).group(0)
    assert len(fence) >= 3 and lines[0] == fence + "diff"
    assert lines[-1] == fence
    # No inner line can close the block: a closing fence needs at least `len(fence)` backticks.
    for line in lines[1:-1]:
        assert not re.match(rf"\s{{0,3}}`{{{len(fence)},}}\s*$", line)
    assert "\n".join(lines[1:-1]).rstrip("\n") == text.rstrip("\n")


def test_code_block_sanitises_the_language_and_controls() -> None:
    block = code_block("x\x1by\u202ez", "py`\nthon")
    assert block.startswith("```python\n")
    assert "\x1b" not in block and "\u202e" not in block


def test_quote_keeps_lines_but_no_block_syntax() -> None:
    text = quote("First line @user\n\n\n- not a list\n1. not a list\n---\n# not a heading\n    not code\n<details>")
    lines = text.split("\n")
    assert all(line.startswith(">") for line in lines)
    assert lines[0] == "> First line @" + ZWSP + "user"
    assert lines[1] == ">" and lines[2] == r"> \- not a list"  # blank runs shrink to one
    assert r"> 1\. not a list" in lines
    assert r"> \---" in lines
    assert "> not code" in lines
    assert_harmless(text)
    assert quote("") == "" and quote(None) == ""


def test_details_escapes_the_summary_as_html() -> None:
    block = details("</summary><script>x</script> @team #5", "body")
    assert block.startswith("<details><summary>&lt;/summary&gt;&lt;script&gt;")
    assert block.endswith("\n\nbody\n\n</details>")
    assert_harmless(block)
    assert html_text("a\nb") == "a b"


# -- report_md.py --------------------------------------------------------------------------------------


def make_task(**overrides: Any) -> dict[str, Any]:
    """A task report shaped exactly like the engine's report.json entries."""
    task: dict[str, Any] = {
        "task": "triage",
        "description": "Route support tickets to a queue.",
        "status": "finished",
        "stop_reason": "metric-call budget: the next step needs 17 calls, 9 are left",
        "stop_code": "budget",
        "eval_set": {"name": "tickets", "version": "1.0", "sha256": "3f2a9c0b1d2e" + "a" * 52,
                     "path": "evals/tickets.jsonl"},
        "models": {"task": "gpt-4o-mini", "reflection": "gpt-4o", "judge": None},
        "modules": ["prompts/triage/system.j2", "prompts/triage/user.j2"],
        "optimized": ["prompts/triage/system.j2"],
        "split_sizes": {"train": 19, "val": 14, "test": 15},
        "scores": {
            "val": {"seed": 0.5, "best": 0.8571, "delta": 0.3571},
            "test": {"seed": 0.4667, "best": 0.8, "delta": 0.3333,
                     "ci95": {"mean_delta": 0.333, "low": 0.133, "high": 0.533, "n": 15, "resamples": 10000,
                              "confidence": 0.95}},
        },
        "counts": {"improved": 6, "regressed": 1, "unchanged": 8},
        "instances": [
            {"id": "t003", "split": "test", "before": 0.0, "after": 1.0, "delta": 1.0,
             "output_before": "other", "output_after": "bug"},
            {"id": "t007", "split": "test", "before": 1.0, "after": 0.0, "delta": -1.0,
             "output_before": "billing", "output_after": "account"},
            {"id": "t011", "split": "test", "before": 1.0, "after": 1.0, "delta": 0.0,
             "output_before": "bug", "output_after": "bug"},
            {"id": "v002", "split": "val", "before": 0.0, "after": 1.0, "delta": 1.0,
             "output_before": "x" * 200, "output_after": "feature"},
        ],
        "best": {"candidate": 7, "templates": {"prompts/triage/system.j2": "Classify into bug, billing..."},
                 "diff": "--- a/prompts/triage/system.j2\n+++ b/prompts/triage/system.j2\n@@ -1 +1 @@\n"
                         "-Classify the ticket.\n+Classify into bug, billing, account or other.\n",
                 "changed_modules": ["prompts/triage/system.j2"]},
        "lineage": [
            {"candidate": 0, "parents": [], "origin": "seed", "module": None, "iteration": 0, "rationale": "",
             "minibatch_ids": [], "minibatch_before": [], "minibatch_after": [], "val_score": 0.5,
             "metric_calls": 14},
            {"candidate": 3, "parents": [0], "origin": "reflection", "module": "prompts/triage/system.j2",
             "iteration": 2, "rationale": "The model never saw the list of labels.\nList them.",
             "minibatch_ids": ["t1", "t9", "t4"], "minibatch_before": [0, 0, 1], "minibatch_after": [1, 1, 1],
             "val_score": 0.71, "metric_calls": 40},
            {"candidate": 7, "parents": [3, 5], "origin": "merge", "module": None, "iteration": 6,
             "rationale": "", "minibatch_ids": [], "minibatch_before": [], "minibatch_after": [],
             "val_score": 0.8571, "metric_calls": 120},
        ],
        "history": [{"metric_calls": 14, "best_val": 0.5}, {"metric_calls": 40, "best_val": 0.71},
                    {"metric_calls": 80, "best_val": 0.71}, {"metric_calls": 120, "best_val": 0.8571}],
        "candidates": [
            {"candidate": 0, "parents": [], "origin": "seed", "module": None, "val_score": 0.5,
             "val_instances": 14, "iteration": 0},
            {"candidate": 3, "parents": [0], "origin": "reflection", "module": "prompts/triage/system.j2",
             "val_score": 0.71, "val_instances": 14, "iteration": 2},
            {"candidate": 5, "parents": [0], "origin": "reflection", "module": "prompts/triage/user.j2",
             "val_score": 0.64, "val_instances": 14, "iteration": 4},
            {"candidate": 7, "parents": [3, 5], "origin": "merge", "module": None, "val_score": 0.8571,
             "val_instances": 14, "iteration": 6},
        ],
        "proposals": {"total": 20, "accepted": 5, "rejected_invalid": {"no fenced block": 2, "changes variables": 1},
                      "rejected_not_better": 9, "stopped_on_val": 0, "dropped": 0, "skipped_perfect": 3,
                      "repeats": 0, "merges": {"tried": 2, "accepted": 1}},
        "val_scoring": {"val_size": 14, "pool_on_all_of_val": 4, "winner_val_instances": 14, "stopped": [],
                        "calls_saved": 0},
        "errors": ["reflection model gpt-4o: HTTP 503 at http://localhost:8080/v1: upstream unavailable"],
        "usage": {"metric_calls": 288, "budget": 300, "test_calls": 30, "reflection_calls": 21, "requests": 330,
                  "cached": 0, "prompt_tokens": 123456, "completion_tokens": 7890, "cost_usd": 0.0123, "retries": 0,
                  "retries_by_kind": {}, "wall_s": 42.1, "search_wall_s": 30.5},
    }
    task.update(overrides)
    return task


def make_report(*tasks: dict[str, Any]) -> Report:
    return report_from_json({
        "schema": 1, "run_id": "20261125-101500-3f2a", "status": "finished",
        "started_at": "2026-11-25T10:15:00Z", "finished_at": "2026-11-25T10:16:42Z",
        "options": {"seed": 0, "budget": None, "strategy": "pareto", "minibatch": 3, "parallel": 1, "max_merges": 5},
        "tasks": list(tasks) or [make_task()],
    })


def section(text: str, heading: str) -> str:
    """The text from `heading` to the next heading of the same or a higher level."""
    start = text.index(heading)
    level = heading.split(" ")[0]
    rest = text[start + len(heading):]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)]
    return heading + (rest[: ends[0]] if ends else rest)


def test_report_has_the_sections_in_reading_order() -> None:
    md = render_report(make_report())
    order = ["# gepa-tune run 20261125-101500-3f2a", "## triage", "| split |", "**Stopped:**", "**Errors (1):**",
             "### Template change", "### Test instances that changed", "### How the best candidate was found",
             "xychart-beta", "graph LR", "### Proposals", "### Usage"]
    positions = [md.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert md.endswith("\n") and not md.endswith("\n\n")


def test_headline_names_the_eval_set_hash_and_models() -> None:
    md = render_report(make_report())
    assert "eval set tickets@" + ZWSP + "1.0 (sha256 3f2a9c0b1d2e)" in md
    assert "task model gpt-4o-mini · reflection model gpt-4o" in md
    assert "judge model" not in md
    assert "19 train / 14 val / 15 test" in md
    assert "Optimized: prompts/triage/system.j2 (of 2 modules)" in md
    assert "status: finished" in md and "seed 0, strategy pareto" in md and "max merges 5" in md


def test_summary_table_and_verdict() -> None:
    md = render_report(make_report())
    assert "| val (14) | 0.500 | 0.857 | +0.357 |" in md
    assert r"| test (15) | 0.467 | 0.800 | +0.333 \[+0.133, +0.533\] |" in md
    assert "The gain of +0.333 on the test split is distinguishable from zero at 95%" in md
    assert "15 test instances, 10,000 resamples" in md
    assert "6 improved, 1 regressed, 8 unchanged" in md


def test_verdict_when_the_interval_contains_zero_or_is_negative() -> None:
    task = make_task()
    task["scores"]["test"]["ci95"].update(low=-0.1, high=0.4)
    assert "is not distinguishable from zero at 95%" in render_task(task_from_json(task))
    task["scores"]["test"].update(delta=-0.3)
    task["scores"]["test"]["ci95"].update(low=-0.5, high=-0.1)
    assert "The loss of -0.300 on the test split is distinguishable from zero" in render_task(task_from_json(task))


def test_diff_stop_reason_and_errors() -> None:
    md = render_report(make_report())
    assert "```diff\n--- a/prompts/triage/system.j2\n" in md
    assert "+Classify into bug, billing, account or other.\n```" in md
    assert "Best candidate c7 changes prompts/triage/system.j2:" in md
    assert "**Stopped:** metric-call budget: the next step needs 17 calls, 9 are left" in md
    assert "HTTP 503 at http:" + ZWSP + "//localhost:8080/v1" in md


def test_instances_regressions_first_then_improvements_rest_folded() -> None:
    md = render_report(make_report())
    changed = section(md, "### Test instances that changed")
    table_part, folded = changed.split("<details>")
    assert table_part.index("| t007 | 1.000 | 0.000 | -1.000 | billing | account |") < table_part.index(
        "| t003 | 0.000 | 1.000 | +1.000 | other | bug |")
    assert "t011" not in table_part and "v002" not in table_part
    assert "<summary>Unchanged test instances (1) and validation instances (1)</summary>" in folded
    assert "| t011 | test | 1.000 | 1.000 | bug | bug |" in folded
    assert "| v002 | val | 0.000 | 1.000 | " + "x" * 59 + "… | feature |" in folded


def test_lineage_steps_and_rationale() -> None:
    lineage = section(render_report(make_report()), "### How the best candidate was found")
    assert "**c0** seed · val 0.500 · at 14 metric calls" in lineage
    assert ("**c3** reflection from c0 · module prompts/triage/system.j2 · iteration 2 · "
            "minibatch (t1, t9, t4) 0.333 → 1.000 · val 0.710 · at 40 metric calls") in lineage
    assert "**c7** merge of c3 + c5" in lineage
    assert "> The model never saw the list of labels.\n> List them." in lineage
    assert "#3" not in lineage and "#7" not in lineage  # candidate numbers must not link issues


def test_mermaid_chart_and_graph() -> None:
    md = render_report(make_report())
    assert 'x-axis "metric calls" ["14", "40", "120"]' in md  # the flat point at 80 is dropped
    assert "line [0.500, 0.710, 0.857]" in md
    assert 'y-axis "val score" 0 --> 1' in md
    graph = md[md.index("graph LR"):]
    graph = graph[: graph.index("```")]
    assert 'c7["c7 merge 0.857"]' in graph
    for edge in ("c0 --> c3", "c0 --> c5", "c3 --> c7", "c5 --> c7"):
        assert edge in graph
    assert "class c0,c3,c7 lineage" in graph


def test_proposals_and_usage() -> None:
    md = render_report(make_report())
    assert ("- 20 proposed: 5 accepted, 9 not better on their minibatch, 3 invalid, 3 skipped (minibatch "
            "already perfect), 0 repeats") in md
    assert "- invalid because: no fenced block (2); changes variables (1)" in md
    assert "- merges: 2 tried, 1 accepted" in md
    assert "- 288 metric calls of a budget of 300, plus 30 on the test split" in md
    assert "- 21 reflection calls" in md
    assert "- tokens: 123,456 prompt + 7,890 completion" in md
    assert "- cost $0.0123, wall time 42.1 s" in md
    assert "- 330 model requests\n" in md and "retries" not in md  # no cache hits, no retries: not mentioned


def test_summary_line() -> None:
    assert render_summary_line(task_from_json(make_task())) == (
        "triage: val 0.500 → 0.857, test 0.467 → 0.800 (+0.333, 95% CI +0.133…+0.533), 288/300 calls "
        "(+30 on test), $0.0123, 42.1 s")
    task = make_task(task="tri\x1b[2Jage", status="interrupted",
                     scores={"val": {"seed": 0.5, "best": 0.5, "delta": 0.0}, "test": None})
    task["usage"].update(metric_calls=12, budget=None, test_calls=0, cost_usd=0.0, wall_s=0.4)
    line = render_summary_line(task_from_json(task))
    assert line == "tri[2Jage: val 0.500 → 0.500, no test split, 12 calls, $0, 0.4 s, interrupted"


def test_hostile_text_everywhere_is_rendered_harmless() -> None:
    task = make_task(
        task="triage @owner",
        description=HOSTILE,
        stop_reason=HOSTILE,
        errors=[HOSTILE, "closes #9"],
        status="failed: " + HOSTILE,
        models={"task": "@evil/model", "reflection": "<b>x</b>", "judge": "www.x.io"},
        eval_set={"name": "@org/team", "version": "#4", "sha256": "<script>", "path": "@x/y#5"},
        optimized=["@a/b#1"],
    )
    task["instances"] = [
        {"id": f"@{name} #{n}", "split": split, "before": 0.0, "after": after, "delta": after,
         "output_before": HOSTILE, "output_after": "</details> @x " + HOSTILE}
        for n, (name, split, after) in enumerate([("a", "test", 1.0), ("b", "test", 0.0), ("c", "val", 1.0)])
    ]
    task["lineage"][1].update(rationale=HOSTILE + "\n```\n<details>\n@everyone closes #2",
                              minibatch_ids=["@x", "#1", "a|b"], module="GH-7 @mod")
    task["candidates"][1]["origin"] = 'x"] --> evil["@admin'
    task["proposals"]["rejected_invalid"] = {HOSTILE: 1}
    task["best"]["changed_modules"] = ["@who"]
    task["best"]["diff"] = "+ closes #1 @someone\n+```\n+````\n"
    report = replace(make_report(task), run_id="@run #1", options={"@opt": "<i>"})
    md = render_report(report)

    # Only the fenced blocks may hold raw text; everything outside them must be harmless.
    outside = re.sub(r"(?ms)^(`{3,})[^\n]*\n.*?^\1$", "", md)
    assert "closes" in md.split("```diff")[1]  # the diff is shown verbatim, inside its fence
    assert_harmless(outside)
    assert outside.count("<details>") == 1 and outside.count("</details>") == 1
    # Every table row keeps its column count despite pipes and newlines in the cells.
    for block in re.findall(r"(?m)(?:^\|.*\n?)+", outside):
        rows = block.strip("\n").split("\n")
        assert len({unescaped_pipes(row) for row in rows}) == 1, block
    graph = md[md.index("graph LR"):]
    graph = graph[: graph.index("```")]
    assert 'c3["c3 x--eviladmin 0.710"]' in graph  # the origin is reduced to letters and dashes
    for label in re.findall(r'\["([^"]*)"\]', graph):
        assert re.fullmatch(r"c\d+ [a-z-]+ (?:\d\.\d{3}|n/a)", label), label


# States the model can hold, built from a real report (route_v1); the ones it cannot hold (a section that
# is null, a missing key, junk in a row) are refused by `load`: test_report_model.py.
@pytest.mark.parametrize(
    "change",
    [
        lambda t: replace(t, scores=replace(t.scores, test=None)),
        lambda t: replace(t, scores=replace(t.scores, test=replace(t.scores.test, ci95=None))),
        lambda t: replace(t, best=replace(t.best, diff="")),
        lambda t: replace(t, best=None, lineage=[], history=[], candidates=[], instances=Instances()),
        lambda t: replace(t, errors=[], stop_reason=None, stop_code=None, status="interrupted"),
        lambda t: replace(t, models=Models(None, None, None), split_sizes={}, scores=Scores(None, None)),
        lambda t: replace(t, usage=replace(t.usage, budget=None, search_wall_s=None, wall_s=7384)),
        lambda t: replace(t, instances=Instances(test=t.instances.test)),
    ],
    ids=["no test split", "no interval", "seed stayed best", "no candidate at all", "unfinished",
         "nothing scored", "no budget", "no val rows"],
)
def test_optional_parts_absent_still_render(change: Any) -> None:
    task = change(task_report())
    md = render_report(report_of(task))
    assert md.startswith("# gepa-tune run ") and f"\n## {task.task}" in md
    assert render_summary_line(task).startswith(f"{task.task}: ")


def test_missing_parts_say_so() -> None:
    task = make_task()
    task["scores"]["test"] = None
    task["best"]["diff"] = ""
    task.update(errors=[], stop_reason=None)
    md = render_task(task_from_json(task))
    assert "No test split: the numbers above are on the validation split" in md
    assert "No change: the seed stayed best." in md
    assert "Errors" not in md and "Stopped" not in md
    assert render_report(report_of()).endswith("No task produced a result.\n")
    nothing = render_task(replace(task_report(), best=None, scores=Scores(None, None)))
    assert "No scores were recorded." in nothing and "No best candidate was recorded." in nothing
    long = render_task(replace(task_report(), usage=replace(task_report().usage, budget=None, wall_s=7384)))
    assert "wall time 2 h 3 min" in long and "of a budget" not in long


def test_long_runs_stay_compact() -> None:
    task = make_task()
    task["history"] = [{"metric_calls": i, "best_val": i / 1000} for i in range(1000)]
    task["candidates"] = [{"candidate": i, "parents": [max(0, i - 1)] if i else [], "origin": "reflection",
                           "module": None, "val_score": 0.5, "val_instances": 14, "iteration": i}
                          for i in range(200)]
    task["errors"] = [f"error {i}" for i in range(50)]
    md = render_task(task_from_json(task))
    x_axis = next(line for line in md.split("\n") if "x-axis" in line)
    assert x_axis.count(",") == 49 and x_axis.endswith(', "999"]')
    assert "Showing the 3 candidates on the best's lineage, of 200." in md
    assert re.findall(r'(?m)^    (c\d+)\["', md) == ["c0", "c3", "c7"]
    assert "- … and 30 more (see events.jsonl)" in md


def test_three_hundred_instances_render_quickly() -> None:
    task = make_task()
    task["instances"] = [
        {"id": f"t{i:03d}", "split": "test" if i % 2 else "val", "before": float(i % 3 == 0),
         "after": float(i % 5 != 0), "delta": float(i % 5 != 0) - float(i % 3 == 0),
         "output_before": f"output {i} " * 20, "output_after": f"answer <{i}> @u" * 10}
        for i in range(600)
    ]
    start = time.perf_counter()
    md = render_report(make_report(task))
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"rendering took {elapsed:.2f} s"
    assert len(re.findall(r"(?m)^\| t\d{3} \|", md)) == 600
