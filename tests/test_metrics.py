"""Metrics: scores, the feedback a reflection model reads, config errors, Python metrics, the LLM judge."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gepa_action.errors import InputError, RunError
from gepa_action.evals import Instance
from gepa_action.lm.client import LMClient
from gepa_action.metrics import (
    METRIC_OPTIONS,
    REGISTRY,
    Metric,
    MetricResult,
    build_metric,
    find_numbers,
    parse_json_output,
    parse_judge_reply,
)
from gepa_action.yamlsrc import parse_yaml

# -- helpers ---------------------------------------------------------------------------------------------


def build(yaml_text: str, *, root: Path | None = None, judge: str | None = None) -> Metric:
    """Build the metric under `tasks[0].metric`, as the workspace loader would."""
    text = "tasks:\n  - name: triage\n" + textwrap.indent(textwrap.dedent(yaml_text).strip("\n"), "    ") + "\n"
    doc = parse_yaml(text, "gepa.yaml")
    return build_metric(doc, ("tasks", 0, "metric"), root=root or Path("."), default_judge_model=judge)


def config_error(yaml_text: str, **kwargs: Any) -> str:
    with pytest.raises(InputError) as info:
        build(yaml_text, **kwargs)
    return str(info.value)


def instance(expected: Any = None, *, notes: str | None = None, inputs: dict[str, Any] | None = None,
             id: str = "t1") -> Instance:
    return Instance(id, inputs or {"ticket": "I was charged twice"}, expected, notes=notes, line=3)


def run(metric: Metric, output: str, expected: Any = None, lm: LMClient | None = None, **kwargs: Any) -> MetricResult:
    return asyncio.run(metric.score(output, instance(expected, **kwargs), lm))


# -- exact -----------------------------------------------------------------------------------------------


def test_exact_correct_gets_short_positive_feedback() -> None:
    result = run(build("metric: exact"), "  billing\n", "billing")
    assert result == MetricResult(1.0, "correct: 'billing'")


def test_exact_mismatch_says_expected_got_and_how_compared() -> None:
    result = run(build("metric: exact"), "Billing: refund", "billing")
    assert result.score == 0.0
    assert result.feedback.startswith("expected 'billing', got 'Billing: refund' (compared ignoring whitespace)")
    assert "extra text around it" in result.feedback


def test_exact_diagnoses_case_only_difference() -> None:
    result = run(build("metric: exact"), "Billing", "billing")
    assert result.score == 0.0
    assert "differs from the answer only in letter case" in result.feedback


def test_exact_choices_name_the_label_set_when_the_answer_is_outside_it() -> None:
    metric = build("""
        metric: {type: exact, ignore_case: true, choices: [bug, billing, how_to]}
    """)
    outside = run(metric, "Refund", "billing")
    assert outside.score == 0.0 and outside.feedback.endswith(
        "'Refund' is not an allowed answer: answer with exactly one of bug, billing, how_to (the prompt should "
        'say: "Answer with exactly one of: bug, billing, how_to.")')
    inside = run(metric, "bug", "billing")
    assert inside.score == 0.0 and "not an allowed answer" not in inside.feedback
    assert run(metric, "Billing", "billing").score == 1.0
    assert metric.check_instance(instance("refund")) == (
        "expected 'refund' is not one of the metric's choices (bug, billing, how_to); "
        "fix the label or add it to choices")
    assert metric.check_instance(instance("BUG")) is None


def test_exact_choices_must_be_strings() -> None:
    assert "gepa.yaml:3: tasks[0].metric.choices: item 2 is not a non-empty string" in config_error("""
        metric: {type: exact, choices: [bug, 3]}
    """)


def test_exact_options() -> None:
    metric = build("""
        metric:
          type: exact
          ignore_case: true
          ignore_punctuation: true
    """)
    assert run(metric, "Billing.", "billing").score == 1.0
    strict = build("metric: {type: exact, ignore_whitespace: false}")
    assert run(strict, "billing ", "billing").score == 0.0
    assert "only in whitespace" in run(strict, "billing ", "billing").feedback
    assert run(build("metric: exact"), "a   b", "a b").score == 1.0


def test_exact_accepts_a_list_of_answers_and_non_strings() -> None:
    metric = build("metric: exact")
    assert run(metric, "refund", ["billing", "refund"]).score == 1.0
    result = run(metric, "bug", ["billing", "refund"])
    assert "expected one of 'billing', 'refund', got 'bug'" in result.feedback
    assert run(metric, "42", 42).score == 1.0
    assert run(metric, "true", True).score == 1.0


def test_exact_extra_text_hint_needs_a_whole_word() -> None:
    assert "extra text" not in run(build("metric: exact"), "I don't know", "no").feedback
    assert "extra text" in run(build("metric: exact"), "The answer: no.", "no").feedback
    assert build("metric: exact").check_instance(instance([])) == \
        "the exact metric needs 'expected' to be a string or a list of strings, got an empty list"


def test_exact_clips_long_outputs_in_feedback() -> None:
    result = run(build("metric: exact"), "x" * 1000, "billing")
    assert "(1000 chars)" in result.feedback
    assert len(result.feedback) < 400


def test_notes_are_appended_on_failure_only() -> None:
    metric = build("metric: exact")
    failed = run(metric, "bug", "billing", notes="Double charges are billing, not bugs.")
    assert failed.feedback.endswith("\nNote: Double charges are billing, not bugs.")
    passed = run(metric, "billing", "billing", notes="Double charges are billing, not bugs.")
    assert "Note" not in passed.feedback


def test_missing_expected_is_reported_by_check_and_at_run_time() -> None:
    metric = build("metric: exact")
    assert metric.check_instance(instance(None)) == "the exact metric needs an 'expected' value"
    with pytest.raises(RunError, match=r"instance 't1' \(line 3\): the exact metric needs an 'expected' value"):
        run(metric, "billing", None)


# -- contains --------------------------------------------------------------------------------------------


def test_contains_all_gives_partial_credit_and_lists_missing() -> None:
    metric = build("metric: contains")
    result = run(metric, "We will REFUND you.", ["refund", "apolog", "24 hours"])
    assert result.score == pytest.approx(1 / 3)
    assert "missing 2 of 3 required strings (ignoring case): 'apolog', '24 hours'" in result.feedback
    assert "got 'We will REFUND you.'" in result.feedback
    assert run(metric, "Sorry, refund", "refund").feedback == "correct: the output contains 'refund'"


def test_contains_options() -> None:
    any_of = build("metric: {type: contains, require: any, ignore_case: false}")
    assert run(any_of, "a refund", ["Refund", "refund"]).score == 1.0
    result = run(any_of, "a REFUND", ["Refund", "refund"])
    assert result.score == 0.0
    assert result.feedback.startswith("the output contains none of 'Refund', 'refund'; got 'a REFUND'")


def test_contains_check_instance() -> None:
    metric = build("metric: contains")
    assert "a string or a list of strings, got a mapping" in metric.check_instance(instance({"a": 1}))
    assert metric.check_instance(instance(["a", "b"])) is None


# -- regex -----------------------------------------------------------------------------------------------


def test_regex_pattern_option() -> None:
    metric = build(r"""
        metric:
          type: regex
          pattern: '^(billing|bug)$'
          full: true
          ignore_case: true
    """)
    assert run(metric, "Billing\n").score == 1.0
    result = run(metric, "Label: billing")
    assert result.score == 0.0
    assert "the output does not match /^(billing|bug)$/ (as a whole, ignoring case); got 'Label: billing'" \
        in result.feedback
    assert metric.check_instance(instance(None)) is None


def test_regex_search_vs_full_and_expected_as_pattern() -> None:
    search = build("metric: regex")
    assert run(search, "order #123 shipped", r"#\d+").score == 1.0
    assert run(search, "order #123 shipped", r"#\d+").feedback == "correct: '#123' matches /#\\d+/"
    full = build("metric: {type: regex, full: true}")
    result = run(full, "order #123 shipped", r"#\d+")
    assert result.score == 0.0
    assert "the pattern matches part of the output, but the whole output must match" in result.feedback


def test_regex_invalid_instance_pattern() -> None:
    metric = build("metric: regex")
    problem = metric.check_instance(instance("(unclosed"))
    assert problem.startswith("'expected' is not a valid regular expression: missing )")
    assert "'pattern' option or an 'expected' pattern" in metric.check_instance(instance(None))


# -- json ------------------------------------------------------------------------------------------------


def test_json_all_fields_right() -> None:
    result = run(build("metric: json"), '{"label": "billing", "priority": 2}', {"label": "billing", "priority": 2})
    assert result == MetricResult(1.0, "correct: all 2 fields match (label, priority)")


def test_json_lists_wrong_and_missing_fields() -> None:
    expected = {"label": "billing", "priority": 2, "tags": ["refund"]}
    result = run(build("metric: json"), '{"label": "bug", "priority": 2.0}', expected)
    assert result.score == pytest.approx(1 / 3)
    assert result.feedback == ("1 of 3 fields right. wrong: label: expected 'billing', got 'bug'. "
                               'missing: tags (expected ["refund"])')


def test_json_extracts_from_fences_and_prose() -> None:
    metric = build("metric: json")
    fenced = 'Here you go:\n```json\n{"label": "billing"}\n```\nAnything else?'
    assert run(metric, fenced, {"label": "billing"}).score == 1.0
    prose = 'The answer is {"label": "billing"} as requested.'
    assert run(metric, prose, {"label": "billing"}).score == 1.0
    strict = build("metric: {type: json, extract: false}")
    result = run(strict, prose, {"label": "billing"})
    assert result.score == 0.0
    assert result.feedback.startswith("the output is not valid JSON: Expecting value at line 1 column 1 (char 0)")


def test_json_parse_error_names_position() -> None:
    result = run(build("metric: json"), 'Result: {"label": "billing" "priority": 1}', {"label": "billing"})
    assert result.score == 0.0
    assert "Expecting ',' delimiter at line 1 column 29 (char 28)" in result.feedback
    assert "expected an object with label" in result.feedback
    assert "no JSON object or array found" in run(build("metric: json"), "billing", {"label": "x"}).feedback


def test_json_non_object_output() -> None:
    result = run(build("metric: json"), "[1, 2]", {"label": "billing"})
    assert result.feedback == "expected a JSON object with label, got an array: [1, 2]"


def test_json_fields_and_ignore_case() -> None:
    metric = build("""
        metric:
          type: json
          fields: [customer.name, items.0.sku]
          ignore_case: true
    """)
    expected = {"customer": {"name": "Ada", "id": 7}, "items": [{"sku": "A1"}], "ignored": 1}
    output = json.dumps({"customer": {"name": "ADA", "id": 8}, "items": [{"sku": "B2"}]})
    result = run(metric, output, expected)
    assert result.score == 0.5
    assert "wrong: items.0.sku: expected 'A1', got 'B2'" in result.feedback
    assert "(strings compared ignoring case)" in result.feedback
    assert metric.check_instance(instance({"customer": {}})) == \
        "'expected' has no field 'customer.name' (listed in the metric's fields)"


def test_json_type_strictness() -> None:
    metric = build("metric: json")
    result = run(metric, '{"n": "1", "ok": 1}', {"n": 1, "ok": True})
    assert result.score == 0.0
    assert "n: expected 1, got '1'" in result.feedback
    assert "ok: expected true, got 1" in result.feedback


def test_json_check_instance() -> None:
    metric = build("metric: json")
    assert metric.check_instance(instance("billing")) == \
        "the json metric needs 'expected' to be a mapping of field: value, got 'billing'"
    assert "empty mapping" in metric.check_instance(instance({}))


def test_parse_json_output_helper() -> None:
    assert parse_json_output('noise [1, 2] more') == ([1, 2], None)
    assert parse_json_output('```\n"just a string"\n```') == ("just a string", None)
    value, error = parse_json_output("{oops}")
    assert value is None and error.startswith("Expecting property name enclosed in double quotes")


# -- numeric ---------------------------------------------------------------------------------------------


def test_find_numbers() -> None:
    assert find_numbers("Total: $1,234.50, minus -3 and +2.5e3; step-4 v2 .5") == [1234.5, -3, 2500, 4, 0.5]
    assert find_numbers("1,2,3 and 2024-05") == [1, 2, 3, 2024, 5]
    assert find_numbers("\u221242") == [-42]


def test_numeric_exact_and_tolerance_feedback() -> None:
    metric = build("metric: {type: numeric, tolerance: 0.5}")
    assert run(metric, "The answer is 42.", 42).feedback == "correct: 42"
    assert run(metric, "about 41.7", 42).feedback == "correct: 41.7, within 0.5 of 42"
    result = run(metric, "I think 41.2", 42)
    assert result == MetricResult(0.0, "expected 42 (±0.5), got 41.2 (off by 0.8)")


def test_numeric_relative_and_pick() -> None:
    relative = build("metric: {type: numeric, relative: 0.01}")
    assert run(relative, "1,005", 1000).score == 1.0
    assert run(relative, "1,011", 1000).feedback == "expected 1000 (±10), got 1011 (off by 11)"
    last = build("metric: numeric")
    result = run(last, "3 apples + 4 apples = 8", 7)
    assert result.feedback == "expected 7, got 8 (the last of 3 numbers in the output) (off by 1)"
    assert run(build("metric: {type: numeric, pick: first}"), "7 then 8", 7).score == 1.0
    only = run(build("metric: {type: numeric, pick: only}"), "7 then 8", 7)
    assert only == MetricResult(0.0, "expected exactly one number (7) in the output, found 2: 7, 8")


def test_numeric_no_number_and_expected_forms() -> None:
    metric = build("metric: numeric")
    result = run(metric, "I don't know", "42", notes="Always answer with a number.")
    assert result.feedback == ("no number found in the output; expected 42, got \"I don't know\"\n"
                               "Note: Always answer with a number.")
    assert run(metric, "-1,234.5", "-1,234.5").score == 1.0
    assert metric.check_instance(instance("forty-two")) == \
        "the numeric metric needs 'expected' to be a number, got 'forty-two'"
    assert metric.check_instance(instance(True)) is not None


# -- config errors ---------------------------------------------------------------------------------------


def test_unknown_metric_type_suggests_the_closest() -> None:
    assert config_error("metric: exakt") == \
        "gepa.yaml:3: tasks[0].metric: unknown metric 'exakt'; did you mean 'exact'?"
    message = config_error("metric:\n  type: fuzzy\n")
    assert message.startswith("gepa.yaml:4: tasks[0].metric.type: unknown metric 'fuzzy'; use one of: exact, ")


def test_unknown_option_suggests_the_closest() -> None:
    message = config_error("metric:\n  type: exact\n  ignore_cas: true\n")
    assert message == "gepa.yaml:5: tasks[0].metric.ignore_cas: unknown key 'ignore_cas'; did you mean 'ignore_case'?"


def test_wrong_option_types_and_values() -> None:
    assert config_error("metric: {type: exact, ignore_case: 'yes please'}") == \
        "gepa.yaml:3: tasks[0].metric.ignore_case: expected true or false, got 'yes please'"
    assert config_error("metric:\n  type: numeric\n  tolerance: -1\n") == \
        "gepa.yaml:5: tasks[0].metric.tolerance: must be at least 0, got -1.0"
    assert config_error("metric:\n  type: contains\n  require: most\n") == \
        "gepa.yaml:5: tasks[0].metric.require: unknown value 'most'; use one of: all, any"
    assert config_error("metric:\n  type: json\n  fields: [a, 3]\n") == \
        "gepa.yaml:5: tasks[0].metric.fields[1]: expected a dotted field path like 'customer.name', got 3"
    assert "missing required key 'type'" in config_error("metric:\n  pattern: x\n")
    assert "expected a metric name or a mapping with 'type:', got a list" in config_error("metric: [exact]")
    assert "gepa.yaml:3: tasks[0].metric: no metric given" in config_error("metric:")


def test_bad_regex_option() -> None:
    message = config_error("metric:\n  type: regex\n  pattern: '(billing'\n")
    assert message.startswith("gepa.yaml:5: tasks[0].metric.pattern: invalid regular expression: "
                              "missing ), unterminated subpattern at position 0")
    assert "single-quote it" in message


def test_llm_judge_config_errors() -> None:
    assert config_error("metric: llm_judge") == (
        "gepa.yaml:3: tasks[0].metric: the llm_judge metric needs the option 'rubric'; "
        "write it as a mapping: metric: {type: llm_judge, rubric: ...}")
    assert config_error("metric:\n  type: llm_judge\n  rubric: Be polite.\n") == (
        "gepa.yaml:3: tasks[0].metric: no judge model is configured for the llm_judge metric; "
        "add 'model: <name>' here, or set judge_model in the lm section")
    assert "rubric: the rubric is empty" in config_error("metric: {type: llm_judge, rubric: ' '}", judge="j")
    assert "max_tokens: must be at least 1" in config_error(
        "metric: {type: llm_judge, rubric: r, max_tokens: 0}", judge="j")
    assert "pass_threshold: must be at most 1" in config_error(
        "metric: {type: llm_judge, rubric: r, pass_threshold: 7}", judge="j")


def test_registry_and_options_table_agree() -> None:
    assert set(REGISTRY) == {"exact", "contains", "regex", "json", "numeric", "llm_judge", "python"}
    assert set(METRIC_OPTIONS["exact"]) == {"ignore_case", "ignore_whitespace", "ignore_punctuation", "choices"}
    assert "default 400" in METRIC_OPTIONS["llm_judge"]["max_tokens"]
    assert all(REGISTRY[name].name == name for name in REGISTRY)


# -- python metrics --------------------------------------------------------------------------------------


def write(root: Path, name: str, source: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def test_python_metric_float_return(tmp_path: Path) -> None:
    write(tmp_path, "metrics/grade.py", """
        def score(output, expected):
            return 1.0 if output.strip() == expected else 0.25
    """)
    metric = build("metric: metrics/grade.py:score", root=tmp_path)
    assert not metric.uses_lm
    assert run(metric, "billing", "billing") == MetricResult(1.0, "correct (score 1 from metrics/grade.py:score)")
    result = run(metric, "bug", "billing", notes="Charges are billing.")
    assert result == MetricResult(0.25, "score 0.25 from metrics/grade.py:score, which gave no feedback; "
                                        "expected 'billing'\nNote: Charges are billing.")


def test_python_metric_tuple_dict_and_kwargs(tmp_path: Path) -> None:
    write(tmp_path, "m.py", """
        def pair(output, id, notes):
            return (0.5, f"half marks for {id}: {output}")

        def mapping(**kwargs):
            inst = kwargs["instance"]
            return {"score": True, "feedback": f"{kwargs['id']} {inst.inputs['ticket']} {kwargs['expected']}"}

        def with_default(output, extra=3):
            return extra / 3
    """)
    pair = build("metric: {type: python, function: 'm.py:pair'}", root=tmp_path)
    assert run(pair, "x", None) == MetricResult(0.5, "half marks for t1: x")
    mapping = build("metric: m.py:mapping", root=tmp_path)
    assert run(mapping, "x", "billing") == MetricResult(1.0, "t1 I was charged twice billing")
    assert run(build("metric: m.py:with_default", root=tmp_path), "x").score == 1.0


def test_python_metric_async(tmp_path: Path) -> None:
    write(tmp_path, "a.py", """
        import asyncio

        async def score(output, inputs):
            await asyncio.sleep(0)
            return 0.75, "async " + inputs["ticket"]
    """)
    result = run(build("metric: a.py:score", root=tmp_path), "x")
    assert result == MetricResult(0.75, "async I was charged twice")


def test_python_metric_crash_names_file_line_and_instance(tmp_path: Path) -> None:
    write(tmp_path, "metrics/crash.py", """
        def helper(output):
            return 1 / len(output)

        def score(output):
            value = helper(output)
            return value
    """)
    metric = build("metric: metrics/crash.py:score", root=tmp_path)
    with pytest.raises(RunError) as info:
        asyncio.run(metric.score("", instance("x", id="ticket-7"), None))
    assert str(info.value) == ("python metric metrics/crash.py:score failed on instance 'ticket-7': "
                               "ZeroDivisionError: division by zero (raised at metrics/crash.py:3)")


@pytest.mark.parametrize(("body", "problem"), [
    ("return 'yes'", "returned 'yes'"),
    ("return 1.5", "returned the score 1.5, outside [0, 1]"),
    ("return float('nan')", "returned the score nan, outside [0, 1]"),
    ("return (0.5, 3)", "returned feedback that is 3, not a string"),
    ("return None", "returned nothing"),
])
def test_python_metric_bad_return(tmp_path: Path, body: str, problem: str) -> None:
    write(tmp_path, "bad.py", f"def score(output):\n    {body}\n")
    metric = build("metric: bad.py:score", root=tmp_path)
    with pytest.raises(RunError) as info:
        run(metric, "x")
    assert str(info.value).startswith(f"python metric bad.py:score {problem} for instance 't1'; return a score")


def test_python_metric_load_errors(tmp_path: Path) -> None:
    assert config_error("metric: metrics/missing.py:score", root=tmp_path) == (
        f"gepa.yaml:3: tasks[0].metric: python metric file 'metrics/missing.py' not found; "
        f"paths are relative to the workspace root ({tmp_path})")
    write(tmp_path, "syntax.py", "def score(output):\n    return (\n")
    message = config_error("metric: syntax.py:score", root=tmp_path)
    assert message.startswith("gepa.yaml:3: tasks[0].metric: syntax.py:2: syntax error: ")
    assert message.endswith("; fix the Python file")
    write(tmp_path, "boom.py", "x = 1\nraise ValueError('no config')\n")
    assert config_error("metric: boom.py:score", root=tmp_path) == (
        "gepa.yaml:3: tasks[0].metric: importing boom.py failed: ValueError: no config (at boom.py:2); "
        "fix the file so it imports cleanly")
    write(tmp_path, "ok.py", "def scorer(output):\n    return 1\n")
    assert config_error("metric: ok.py:score", root=tmp_path) == (
        "gepa.yaml:3: tasks[0].metric: 'ok.py' has no function 'score'; did you mean 'scorer'?")
    assert config_error("metric:\n  type: python\n  function: ok.py:nope\n", root=tmp_path) == (
        "gepa.yaml:5: tasks[0].metric.function: 'ok.py' has no function 'nope'; functions defined there: scorer")
    write(tmp_path, "params.py", "def score(output, answer):\n    return 1\n")
    assert config_error("metric: params.py:score", root=tmp_path) == (
        "gepa.yaml:3: tasks[0].metric: function 'score' has a parameter 'answer' that gepa-tune cannot fill; "
        "name its parameters from: output, expected, inputs, instance, notes, id (any subset, in any order)")
    assert "names a file but no function; write it as 'ok.py:function_name'" in config_error(
        "metric: ok.py", root=tmp_path)
    assert "does not name a Python function" in config_error("metric: 'ok.py:'", root=tmp_path)


def test_python_metric_does_not_write_pycache(tmp_path: Path) -> None:
    write(tmp_path, "clean.py", "def score(output):\n    return 1\n")
    build("metric: clean.py:score", root=tmp_path)
    assert not (tmp_path / "__pycache__").exists()


# -- llm_judge (over HTTP against the fake server) -------------------------------------------------------


def judge_metric(*extra: str) -> Metric:
    lines = ["metric:", "  type: llm_judge", "  rubric: The reply must apologise and promise a refund.",
             *(f"  {line}" for line in extra)]
    return build("\n".join(lines), judge="judge-model")


def run_judge(metric: Metric, lm_config: Any, output: str, expected: Any = None, **kwargs: Any) -> MetricResult:
    async def go() -> MetricResult:
        async with LMClient(lm_config(), api_key="test-key", base_url=None, cache=None,
                            backoff_base=0.001, backoff_cap=0.01) as lm:
            return await metric.score(output, instance(expected, **kwargs), lm)
    return asyncio.run(go())


def test_llm_judge_scores_with_reasoning(openai_server: Any, lm_config: Any) -> None:
    openai_server.responder = lambda body: '{"reasoning": "Apologises but promises no refund.", "score": 0.5}'
    metric = judge_metric()
    assert metric.uses_lm
    result = run_judge(metric, lm_config, "We are sorry.", expected="Sorry, refund coming.",
                       notes="Refunds are always offered.")
    assert result == MetricResult(0.5, "judge score 0.5: Apologises but promises no refund.\n"
                                       "Note: Refunds are always offered.")
    request = openai_server.requests[0]
    assert request["model"] == "judge-model"
    assert request["temperature"] == 0
    assert request["max_tokens"] == 400
    prompt = request["messages"][-1]["content"]
    assert "The reply must apologise and promise a refund." in prompt
    assert "<output>\nWe are sorry.\n</output>" in prompt
    assert "ticket: I was charged twice" in prompt
    assert "Sorry, refund coming." in prompt
    assert '"score"' in request["messages"][0]["content"]


def test_llm_judge_model_option_and_threshold(openai_server: Any, lm_config: Any) -> None:
    openai_server.responder = lambda body: 'Looks fine.\n```json\n{"score": "0.8", "reasoning": "ok"}\n```'
    metric = judge_metric("model: other-judge", "pass_threshold: 0.7", "max_tokens: 50")
    result = run_judge(metric, lm_config, "Sorry, refund coming.")
    assert result == MetricResult(1.0, "judge score 0.8 (passed, pass threshold 0.7): ok")
    assert openai_server.requests[0]["model"] == "other-judge"
    assert openai_server.requests[0]["max_tokens"] == 50
    openai_server.responder = lambda body: '{"score": 0.6, "reasoning": "no refund"}'
    assert run_judge(metric, lm_config, "Sorry.").score == 0.0


def test_llm_judge_unparseable_reply(openai_server: Any, lm_config: Any) -> None:
    openai_server.responder = lambda body: "I would give this an 8 out of 10."
    result = run_judge(judge_metric(), lm_config, "Sorry.")
    assert result == MetricResult(0.0, "the judge's reply could not be parsed as a score from 0 to 1: "
                                       "'I would give this an 8 out of 10.'")


def test_llm_judge_truncated_reply_says_so(openai_server: Any, lm_config: Any) -> None:
    openai_server.responder = lambda body: "Let me think about this step by step before scoring it"
    result = run_judge(judge_metric("max_tokens: 4"), lm_config, "Sorry.")
    assert result == MetricResult(0.0, "the judge's reply could not be parsed as a score from 0 to 1: "
                                       "'Let me think about' (the reply was cut off at max_tokens=4; "
                                       "raise max_tokens)")


def test_llm_judge_needs_a_client() -> None:
    with pytest.raises(RunError, match="llm_judge metric needs a model client to score instance 't1'"):
        run(judge_metric(), "Sorry.")


def test_parse_judge_reply_forms() -> None:
    assert parse_judge_reply('{"reasoning": "good", "score": 1}') == (1.0, "good")
    assert parse_judge_reply("Reasoning: polite but vague.\n**Score:** 0.4") == (0.4, "Reasoning: polite but vague.")
    assert parse_judge_reply('{"score": 8, "reasoning": "x"}') == (None, "")
    assert parse_judge_reply("score: 85") == (None, "")
    assert parse_judge_reply('{"score": 0.3}') == (0.3, "(the judge gave no reasoning)")
