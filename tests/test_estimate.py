"""The cost estimate before spending (`tune --estimate`), the estimate beside the actual figures after a run,
and the prompt's own cost in the PR body, against the simulated rule task on the loopback OpenAI server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes import rule_task
from fakes.git_repos import ENV, make_origin
from fakes.openai_server import FakeOpenAI, Reply
from fakes.workspace_factory import INSTANCES, make_workspace, with_steps

from gepa_action.cli import main
from gepa_action.cost_model import Range
from gepa_action.render.pr_body import render_pr_body
from gepa_action.report.model import load

API_KEY = "sk-test-estimate-0123456789"


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with FakeOpenAI(responder=rule_task.responder()) as server:
        yield server


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(root), *args], catch_exceptions=False)


def with_cost(root: Path, top: str = "", task: str = "") -> None:
    """Add `cost:` at the top level and/or in the task of the rule workspace's gepa.yaml."""
    path = root / "gepa.yaml"
    text = path.read_text()
    if task:
        text = text.replace("    budget:", f"    cost: {task}\n    budget:")
    path.write_text(text + (f"cost: {top}\n" if top else ""))


def test_estimate_calls_no_model_and_prints_one_table(tmp_path: Path, sim: FakeOpenAI,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=120, per_rule=4)
    monkeypatch.delenv("OPENAI_API_KEY")  # no key needed either: nothing is sent
    result = run(tmp_path, "tune", "--estimate")
    assert result.exit_code == 0, result.output
    assert sim.requests == []
    assert not (tmp_path / ".gepa" / "runs").exists()  # no run folder, nothing cached
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["task", "metric", "calls", "test", "calls", "reflection", "calls", "input", "tokens",
                                "output", "tokens", "dollars"]
    row = lines[1].split()  # each cell: the likely figure, then the range
    assert row[:3] == ["route", "≈120", f"({len(sim_val(tmp_path))}–120)"] and row[-1].startswith("($")
    assert "bounded by max_metric_calls 120" in result.stdout and "characters/4" in result.stdout


def sim_val(root: Path) -> list[str]:
    from gepa_action.workspace import load_workspace

    return [i.id for i in load_workspace(root / "gepa.yaml").tasks[0].eval_set.by_split("val")]


def test_estimate_ranges_contain_what_a_real_run_with_the_same_settings_spends(tmp_path: Path,
                                                                               sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=150, per_rule=5)
    printed = run(tmp_path, "tune", "--estimate", "--json")
    assert printed.exit_code == 0 and sim.requests == []
    estimate = json.loads(printed.stdout)["route"]
    tuned = run(tmp_path, "tune", "--json")
    assert tuned.exit_code == 0, tuned.output
    report = json.loads(tuned.stdout)
    task = report["tasks"][0]
    assert task["estimate"] == estimate  # recorded before spending, beside the actual figures
    usage = task["usage"]
    assert usage["reflection_calls"] > 0 and usage["metric_calls"] > 2 * task["split_sizes"]["val"]
    actual = {"metric_calls": usage["metric_calls"], "test_calls": usage["test_calls"],
              "reflection_calls": usage["reflection_calls"], "input_tokens": usage["prompt_tokens"],
              "output_tokens": usage["completion_tokens"], "cost_usd": usage["cost_usd"]}
    for key, value in actual.items():
        span = Range(**estimate[key])
        assert span.high is not None and span.contains(value), (key, value, span)
        assert span.likely is not None and span.contains(span.likely), (key, span)
    run_dir = tmp_path / ".gepa/runs" / report["run_id"]
    md = (run_dir / "report.md").read_text()
    assert "### Estimate and actual" in md and md.count("| within |") == 6
    # a run.json edited into nonsense re-renders without the estimate, never with a traceback
    meta = json.loads((run_dir / "run.json").read_text())
    meta["estimates"]["route"] = {"metric_calls": "lots"}
    (run_dir / "run.json").write_text(json.dumps(meta))
    again = run(tmp_path, "report", report["run_id"], "--json")
    assert again.exit_code == 0 and "estimate" not in json.loads(again.stdout)["tasks"][0]
    assert "Estimate and actual" not in (run_dir / "report.md").read_text()


def test_an_unpriced_model_makes_the_dollars_unknown_not_zero(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=120)
    path = tmp_path / "gepa.yaml"
    path.write_text(path.read_text().replace("    sim-reflect: {input: 5.0, output: 10.0}\n", ""))
    result = run(tmp_path, "tune", "--estimate")
    assert result.exit_code == 0, result.output
    assert "unknown (no price for sim-reflect)" in result.stdout and "$0" not in result.stdout
    data = json.loads(run(tmp_path, "tune", "--estimate", "--json").stdout)["route"]
    assert data["cost_usd"] is None and data["unpriced"] == ["sim-reflect"]


def test_a_budget_too_small_to_start_says_so_and_a_time_limit_is_named(tmp_path: Path) -> None:
    make_workspace(tmp_path, instances=[{**row, "split": split} for row, split in
                                        zip(INSTANCES, ("train", "val", "test", "train"), strict=True)])
    path = tmp_path / "gepa.yaml"
    path.write_text(path.read_text() + "    budget: {max_metric_calls: 300, max_minutes: 5}\n")
    result = run(tmp_path, "tune", "--estimate")
    assert result.exit_code == 0 and "the run also ends after 5 minutes" in result.stdout, result.output
    small = run(tmp_path, "tune", "--estimate", "--budget", "2")
    assert small.exit_code == 0 and "below the" in small.stdout and "it stops before spending anything" in small.stdout
    assert small.stdout.splitlines()[1].split()[1:4] == ["0", "0", "0"]


def test_an_empty_split_is_named_and_nothing_is_estimated(tmp_path: Path) -> None:
    make_workspace(tmp_path)  # four instances: the default split leaves train empty
    path = tmp_path / "gepa.yaml"
    path.write_text(path.read_text() + "    split: {train: 0, val: 0.5, test: 0.5}\n")
    result = run(tmp_path, "tune", "--estimate")
    assert result.exit_code == 0 and "the train split is empty" in result.stdout, result.output
    assert result.stdout.splitlines()[1].split()[1:4] == ["0", "0", "0"]


def test_a_pipeline_with_a_judge_counts_every_step_and_the_judge(tmp_path: Path) -> None:
    rows = [{**row, "split": split} for row, split in zip(INSTANCES, ("train", "val", "test", "train"), strict=True)]
    config = with_steps("""
        - {name: one, user: prompts/user.j2, output: facts}
        - {name: two, system: prompts/system.j2, user: prompts/two.j2}
        """).replace("metric: {type: exact, ignore_case: true}",
                     "metric: {type: llm_judge, rubric: names the right team, model: judge-m}")
    priced = config.replace("  concurrency: 4\n", "  concurrency: 4\n  prices: {test-model: {input: 1, output: 2}}\n")
    make_workspace(tmp_path, {"prompts/two.j2": "Facts: {{ facts }}"}, config=priced, instances=rows)
    unpriced = json.loads(run(tmp_path, "tune", "--estimate", "--json").stdout)["triage"]
    assert unpriced["cost_usd"] is None and unpriced["unpriced"] == ["judge-m"]
    (tmp_path / "gepa.yaml").write_text(priced.replace("{input: 1, output: 2}}",
                                                       "{input: 1, output: 2}, judge-m: {input: 1, output: 2}}"))
    data = json.loads(run(tmp_path, "tune", "--estimate", "--json").stdout)["triage"]
    # the cheapest run: seed on val (1) and test (1); each call two task answers and one judge answer
    assert data["metric_calls"]["low"] == 1 and data["test_calls"]["low"] == 1
    assert data["output_tokens"]["low"] == 2 * (2 + 1)
    assert data["cost_usd"]["low"] > 0 and data["unpriced"] == []


def test_estimate_refuses_resume_in_one_line(tmp_path: Path) -> None:
    make_workspace(tmp_path)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "tune", "--estimate", "--resume", "x"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "--estimate" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(("cost", "where", "problem"), [
    ("{calls_per_month: 0}", "cost.calls_per_month", "e.g. 100000"),
    ("{calls_per_month: " + "9" * 500 + "}", "cost.calls_per_month", "500 digits"),
    ("{calls_per_month: lots}", "cost.calls_per_month", ""),
    ("{calls_per_month: 1.5}", "cost.calls_per_month", ""),
    ("{calls_per_monht: 5}", "calls_per_monht", "calls_per_month"),
    ("5", "cost", ""),
    ("{calls_per_month: .nan}", "cost.calls_per_month", ""),
])
@pytest.mark.parametrize("level", ["top", "task"])
def test_invalid_cost_config_is_one_line_naming_the_key(tmp_path: Path, cost: str, where: str, problem: str,
                                                        level: str) -> None:
    rule_task.write_workspace(tmp_path, "http://127.0.0.1:9/v1")
    with_cost(tmp_path, **{level: cost})
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "check"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "gepa.yaml" in lines[0] and where in lines[0] and problem in lines[0], lines
    assert "Traceback" not in result.output


def test_pr_body_shows_the_prompts_own_cost_and_says_when_it_grew(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=150, per_rule=5)
    with_cost(tmp_path, top="{calls_per_month: 1000}", task="{calls_per_month: 2000000}")  # the task's wins
    tuned = run(tmp_path, "tune", "--json")
    assert tuned.exit_code == 0, tuned.output
    run_id = json.loads(tuned.stdout)["run_id"]
    report = load(tmp_path / ".gepa/runs" / run_id / "report.json")
    task = report.tasks[0]
    cost = task.prompt_cost
    assert cost is not None and cost.calls_per_month == 2_000_000 and cost.instances == task.split_sizes["test"]
    assert cost.best_tokens > 2 * cost.seed_tokens  # the evolved prompt carries the rules the seed lacked
    # sim-task costs $1 per million input tokens: the monthly difference is the token difference times 2
    assert cost.monthly_usd_delta == pytest.approx((cost.best_tokens - cost.seed_tokens) * 2, rel=1e-6)
    body = render_pr_body(report, applied=["route"], threshold="any").text
    assert f"**Prompt cost:** {cost.seed_tokens:,.0f} → {cost.best_tokens:,.0f} input tokens per call" in body
    assert f"**The evolved prompt is {cost.ratio:.1f}× longer than the committed prompt**" in body
    assert f"At 2,000,000 calls a month of sim-task: ${cost.monthly_usd_delta:,.2f} more a month" in body


def test_the_action_job_summary_shows_the_estimate_before_tuning(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    summary = tmp_path / "step_summary"
    summary.write_text("")
    seen_at_first_call: list[str] = []
    answer = rule_task.responder()

    def responder(body: dict) -> Reply:
        if not seen_at_first_call:
            seen_at_first_call.append(summary.read_text())
        return answer(body)

    with FakeOpenAI(responder=responder) as server:
        source = rule_task.write_workspace(tmp_path / "src", server.url, budget=120)
        _bare, clone = make_origin(tmp_path, source=source)
        env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": "",
               "GITHUB_TOKEN": "", "GITHUB_REPOSITORY": "", "OPENAI_API_KEY": API_KEY}
        result = CliRunner().invoke(main, ["-C", str(clone), "action", "--dry-run"], env=env,
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    before = seen_at_first_call[0]
    assert before.startswith("## gepa-tune: estimate before tuning")
    assert re.search(r"^\| route \| ≈120 \(\d+–120\) \|", before, re.M)
    assert "bounded by max\\_metric\\_calls 120" in before
    final = summary.read_text()
    assert final.startswith(before) and "## gepa-tune run" in final[len(before):]
