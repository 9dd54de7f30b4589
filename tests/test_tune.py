"""End-to-end tuning runs against the simulated rule task on a loopback OpenAI-protocol server.

The task model only answers right when the prompt carries rules the reflection model can read off the
feedback, so a rising test score proves the whole loop: traces, feedback, reflection, validation,
acceptance, val scoring and the held-out test scoring.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes import rule_task
from fakes.openai_server import FakeOpenAI, Reply

from gepa_action.cli import main
from gepa_action.errors import GepaError
from gepa_action.tune import TuneOptions, run_tune
from gepa_action.workspace import find_config, load_workspace


@pytest.fixture
def sim() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=rule_task.responder()) as server:
        yield server


def tune(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(root), "tune", *args], catch_exceptions=False)


def report_of(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def task_requests(server: FakeOpenAI) -> int:
    return sum(1 for r in server.requests if r["model"] == rule_task.TASK_MODEL)


def test_tune_raises_the_held_out_test_score(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=200, per_rule=6)
    data = report_of(tune(tmp_path, "--json"))
    task = data["tasks"][0]
    test, val = task["scores"]["test"], task["scores"]["val"]
    assert test["seed"] == 0.0 and test["best"] >= 0.5, test
    assert test["ci95"]["low"] > 0, "a gain this large must be distinguishable from zero"
    assert val["best"] > val["seed"]
    assert task["eval_set"]["sha256"] and task["eval_set"]["version"] == "1"
    usage = task["usage"]
    assert usage["metric_calls"] <= 200 and usage["test_calls"] == 2 * task["split_sizes"]["test"]
    assert usage["reflection_calls"] >= 1 and usage["cost_usd"] > 0
    # The lineage explains the winner: each accepted step has its rationale and minibatch scores.
    steps = task["lineage"][1:]
    assert steps and all(s["rationale"] and sum(s["minibatch_after"]) > sum(s["minibatch_before"]) for s in steps
                         if s["origin"] == "reflection")
    assert 'If the ticket mentions "' in task["best"]["templates"]["prompts/system.j2"]
    assert task["best"]["diff"].startswith("--- a/prompts/system.j2")
    rows = [r for r in task["instances"] if r["split"] == "test"]
    assert len(rows) == task["split_sizes"]["test"] and any(r["delta"] == 1.0 for r in rows)
    # The workspace keeps its templates until asked; the run folder holds the evidence.
    assert (tmp_path / "prompts/system.j2").read_text() == rule_task.SEED_INSTRUCTION + "\n"
    run_dir = tmp_path / ".gepa/runs" / data["run_id"]
    for name in ("run.json", "events.jsonl", "report.json", "report.md", "state/route.json"):
        assert (run_dir / name).is_file(), name
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    proposals = [e for e in events if e["event"] == "proposal"]
    keys = {"parent", "module", "minibatch", "scores_before", "accepted"}
    assert proposals and all(keys <= set(e) for e in proposals)
    assert any(e["event"] == "val" for e in events) and events[-1]["event"] == "test"


def test_report_command_rerenders_and_write_applies_the_best_templates(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=120)
    first = report_of(tune(tmp_path, "--json"))
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "report", "--write"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"gepa-tune run {first['run_id']}" in result.stdout and "## route" in result.stdout
    assert "wrote prompts/system.j2" in result.stderr
    assert (tmp_path / "prompts/system.j2").read_text().rstrip("\n") == \
        first["tasks"][0]["best"]["templates"]["prompts/system.j2"]


def test_text_output_shows_summary_diff_deltas_and_where_the_report_is(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=120)
    result = tune(tmp_path, "--write")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "route" in out and "--- a/prompts/system.j2" in out and "report: .gepa/runs/" in out
    assert "test r" in out  # per-instance test deltas
    assert "wrote prompts/system.j2" in result.stderr


@pytest.mark.parametrize("seed", range(5))
def test_budget_is_never_exceeded(tmp_path: Path, sim: FakeOpenAI, seed: int) -> None:
    """A sweep of seeds and odd budgets: calls used never exceed the budget, and little is left unused."""
    budget = 45 + 17 * seed
    rule_task.write_workspace(tmp_path, sim.url, budget=budget)
    data = report_of(tune(tmp_path, "--json", "--seed", str(seed), "--parallel", str(1 + seed % 3)))
    task = data["tasks"][0]
    used = task["usage"]["metric_calls"]
    val = task["split_sizes"]["val"]
    assert used <= budget
    if task["stop_reason"].startswith("metric-call budget"):
        assert budget - used < val + 3 * 2 * (1 + seed % 3), (used, budget)


def test_parallel_proposals_keep_the_budget_and_still_improve(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=200)
    task = report_of(tune(tmp_path, "--json", "--parallel", "4"))["tasks"][0]
    assert task["usage"]["metric_calls"] <= 200
    assert task["scores"]["test"]["best"] >= 0.25  # the seed scores 0; 0.278 here since repair turns


def test_same_seed_again_is_served_from_the_cache(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=120)
    first = report_of(tune(tmp_path, "--json", "--seed", "3"))["tasks"][0]
    before = len(sim.requests)
    second = report_of(tune(tmp_path, "--json", "--seed", "3"))["tasks"][0]
    assert len(sim.requests) == before, "a repeated run must not send a single request"
    assert second["scores"] == first["scores"] and second["best"] == first["best"]
    assert second["usage"]["cost_usd"] == 0


def _states(run_dir: Path) -> dict[str, Any]:
    state = json.loads((run_dir / "state/route.json").read_text())
    for volatile in ("wall_s", "search_wall_s", "usage"):
        state.pop(volatile)
    return state


def test_a_resumed_run_ends_identical_to_an_uninterrupted_one(tmp_path: Path, sim: FakeOpenAI) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    for root in (whole, split):
        rule_task.write_workspace(root, sim.url, budget=150)
    options = TuneOptions(seed=5, parallel=2)
    reference = run_tune(load_workspace(find_config(whole)), load_workspace(find_config(whole)).tasks, options)

    rounds = 0

    def crash_after_three(name: str, state: Any, budget: Any) -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            raise KeyboardInterrupt

    workspace = load_workspace(find_config(split))
    with pytest.raises(GepaError) as interrupted:
        run_tune(workspace, workspace.tasks, options, progress=crash_after_three)
    assert interrupted.value.exit_code == 130 and "--resume" in str(interrupted.value)
    run_id = str(interrupted.value).split("run ", 1)[1].split(" ", 1)[0]
    meta = json.loads((split / ".gepa/runs" / run_id / "run.json").read_text())
    assert meta["status"] == "interrupted"
    resumed = run_tune(workspace, [], TuneOptions(), resume=run_id)
    assert resumed.run.run_id == run_id
    assert _states(resumed.run.path) == _states(reference.run.path)
    assert resumed.report.tasks[0].scores == reference.report.tasks[0].scores


def test_resume_refuses_when_the_inputs_changed(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=60)
    run_id = report_of(tune(tmp_path, "--json"))["run_id"]
    (tmp_path / "prompts/system.j2").write_text("Something else entirely.\n")
    result = tune(tmp_path, "--resume", run_id)
    assert result.exit_code == 2
    assert "prompts/system.j2 changed since run" in result.stderr


def test_ctrl_c_in_a_real_process_saves_state_and_resume_finishes(tmp_path: Path) -> None:
    with FakeOpenAI(responder=rule_task.responder(task_delay=0.05, reflection_delay=0.05)) as server:
        rule_task.write_workspace(tmp_path, server.url, budget=150, concurrency=4)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-c", "from gepa_action.cli import entry; entry()", "tune"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 30
        runs = tmp_path / ".gepa/runs"
        while time.monotonic() < deadline and not list(runs.glob("*/state/route.json")):
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        run_id = next(runs.iterdir()).name
        assert f"gepa-tune tune --resume {run_id}" in err and "Traceback" not in err
        assert json.loads((runs / run_id / "run.json").read_text())["status"] == "interrupted"
        assert (runs / run_id / "report.json").is_file()
        result = tune(tmp_path, "--resume", run_id, "--json")
        task = report_of(result)["tasks"][0]
        assert task["usage"]["metric_calls"] <= 150 and task["scores"]["test"] is not None


# -- bad input and faults --------------------------------------------------------------------------------


def test_unknown_task_is_bad_input(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url)
    result = tune(tmp_path, "nope")
    assert result.exit_code == 2 and "no task named 'nope'" in result.stderr


def test_a_budget_too_small_for_the_seed_says_how_much_is_needed(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url)
    result = tune(tmp_path, "--budget", "10")
    assert result.exit_code == 2, result.output
    assert "needs at least" in result.stderr and "Traceback" not in result.output
    assert len(sim.requests) == 0, "nothing is spent when the budget cannot buy a result"


def test_an_unreachable_reflection_model_fails_with_a_report(tmp_path: Path, sim: FakeOpenAI) -> None:
    base = rule_task.responder()

    def down(body: dict[str, Any]) -> Reply:
        if body["model"] == rule_task.REFLECTION_MODEL:
            return Reply("the reflection backend is down", status=503)
        return base(body)

    sim.responder = down
    rule_task.write_workspace(tmp_path, sim.url, budget=100)
    result = tune(tmp_path)
    assert result.exit_code == 1, result.output
    assert "reflection model sim-reflect" in result.stderr and "503" in result.stderr
    data = json.loads(next((tmp_path / ".gepa/runs").glob("*/report.json")).read_text())
    assert data["status"].startswith("failed") and data["tasks"][0]["errors"]
    assert data["tasks"][0]["scores"]["val"]["seed"] == 0.0  # what was done is reported


def test_every_proposal_rejected_ends_with_a_clear_message(tmp_path: Path, sim: FakeOpenAI) -> None:
    base = rule_task.responder()

    def chatty(body: dict[str, Any]) -> str | Reply:
        if body["model"] == rule_task.REFLECTION_MODEL:
            return f"I would add some rules, but I will not write a template. ({len(body['messages'][1]['content'])})"
        return base(body)

    sim.responder = chatty
    rule_task.write_workspace(tmp_path, sim.url, budget=300)
    result = tune(tmp_path)
    assert result.exit_code == 1, result.output
    assert "every proposal was rejected before evaluation" in result.stderr
    data = json.loads(next((tmp_path / ".gepa/runs").glob("*/report.json")).read_text())
    assert data["tasks"][0]["proposals"]["rejected_invalid"].get("no fenced block", 0) >= 1


def test_a_copied_template_gets_one_repair_turn_that_can_save_the_proposal(tmp_path: Path, sim: FakeOpenAI) -> None:
    """A small model often copies the template while describing its fix in prose. The engine says why the
    reply was rejected, once, in the same conversation; a fixed reply is evaluated like any other."""
    base = rule_task.responder()
    turns: list[int] = []

    def copier(body: dict[str, Any]) -> str | Reply:
        if body["model"] != rule_task.REFLECTION_MODEL:
            return base(body)
        messages = body["messages"]
        turns.append(len(messages))
        if len(messages) == 2:  # first turn: the current instruction, unchanged
            current = messages[1]["content"].split("```jinja\n", 1)[1].split("\n```", 1)[0]
            return f"Adding the rules would help.\n```jinja\n{current}\n```"
        assert "That template was rejected: unchanged" in messages[-1]["content"]
        assert messages[-2]["role"] == "assistant"
        return base({**body, "messages": messages[:2]})  # the repair: the rules written down

    sim.responder = copier
    rule_task.write_workspace(tmp_path, sim.url, budget=200, per_rule=6)
    data = report_of(tune(tmp_path, "--json"))
    task = data["tasks"][0]
    assert task["scores"]["test"]["best"] > task["scores"]["test"]["seed"]
    assert 4 in turns and task["usage"]["reflection_calls"] == 2 * task["proposals"]["total"]
    assert task["usage"]["metric_calls"] <= 200


def _two_module_workspace(root: Path, url: str) -> Path:
    rule_task.write_workspace(root, url, budget=300, per_rule=6)
    config = (root / "gepa.yaml").read_text()
    (root / "gepa.yaml").write_text(config.replace("optimize: [prompts/system.j2]",
                                                   "optimize: [prompts/system.j2, prompts/user.j2]"))
    return root


def test_two_modules_round_robin_per_lineage_and_merge(tmp_path: Path, sim: FakeOpenAI) -> None:
    """Merges need two lineages that each changed a different template since a common ancestor, which
    depends on the run's draws: seeds are tried until one merges. Lookahead (proposing from a child while
    it is raced on val) grows one lineage through both templates, which leaves nothing to merge here, so
    it is off, and the minibatch is the small one these seeds were chosen with: this test is about the merge
    itself."""
    dropped_variable = 0
    found: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
    for seed in range(10):
        root = _two_module_workspace(tmp_path / str(seed), sim.url)
        task = report_of(tune(root, "--json", "--seed", str(seed), "--no-lookahead", "--minibatch", "3"))["tasks"][0]
        assert task["usage"]["metric_calls"] <= 300
        dropped_variable += task["proposals"]["rejected_invalid"].get("changes variables", 0)
        events = [json.loads(line) for line in next(root.glob(".gepa/runs/*/events.jsonl")).read_text().splitlines()]
        proposals = [e for e in events if e["event"] in ("proposal", "skip")]
        # Round-robin: a lineage's turns alternate between the modules; a child continues its parent's turn.
        # A round may make two proposals from one parent (a spare one when no child waits for its race),
        # and a child that goes on to val is logged after its race, so the log is read round by round:
        # after each round, a parent has had each module's turn equally often, give or take one.
        by_parent: dict[int, list[str]] = {}
        rounds: dict[int, dict[int, list[str]]] = {}
        for event in sorted(proposals, key=lambda e: e.get("iteration", 0)):
            by_parent.setdefault(event["parent"], []).append(event["module"])
            rounds.setdefault(event["parent"], {}).setdefault(event.get("iteration", 0), []).append(event["module"])
        for parent_rounds in rounds.values():
            turns: list[str] = []
            for iteration in sorted(parent_rounds):
                turns += parent_rounds[iteration]
                counts = [turns.count(m) for m in ("prompts/system.j2", "prompts/user.j2")]
                assert max(counts) - min(counts) <= 1, parent_rounds
        for event in proposals:
            if event.get("accepted") and event["child"] in by_parent:
                assert by_parent[event["child"]][0] != event["module"]
        merges = [e for e in events if e["event"] == "merge"]
        assert task["proposals"]["merges"]["tried"] == len(merges)
        accepted = [m for m in merges if m["accepted"]]
        if accepted and found is None:
            found = task, accepted
        if found is not None and dropped_variable:
            break
    else:
        pytest.fail("no seed produced an accepted merge" if found is None else
                    "no careless rewrite of the user template dropped {{ text }}")
    task, accepted = found
    merged = task["candidates"][accepted[0]["child"]]
    assert merged["origin"] == "merge" and sorted(merged["parents"]) == sorted(accepted[0]["parents"])
    parents = [task["candidates"][p] for p in accepted[0]["parents"]]
    assert all(p["origin"] != "seed" for p in parents)
    assert dropped_variable >= 1  # careless rewrites of the user template lost {{ text }} and were refused


def test_no_api_key_fails_before_a_run_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes.workspace_factory import make_workspace

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    make_workspace(tmp_path)
    result = tune(tmp_path)
    assert result.exit_code == 2 and "no API key" in result.stderr
    assert not (tmp_path / ".gepa/runs").exists()


def test_several_tasks_tune_concurrently_each_within_its_own_budget(tmp_path: Path, sim: FakeOpenAI) -> None:
    second = """\
  - name: route-strict
    description: The same routing, scored on a smaller budget.
    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
    eval:
      path: evals/tickets.jsonl
      version: "1"
    metric: {type: exact}
    split: {train: 0.34, val: 0.33, test: 0.33, seed: 7}
    budget: {max_metric_calls: 40}
"""
    rule_task.write_workspace(tmp_path, sim.url, budget=120, extra_task=second)
    data = report_of(tune(tmp_path, "--json"))
    by_name = {t["task"]: t for t in data["tasks"]}
    assert set(by_name) == {"route", "route-strict"}
    assert by_name["route"]["usage"]["metric_calls"] <= 120
    assert by_name["route-strict"]["usage"]["metric_calls"] <= 40
    assert by_name["route-strict"]["usage"]["budget"] == 40
    assert all(t["status"] == "finished" for t in data["tasks"])
    assert (tmp_path / ".gepa/runs" / data["run_id"] / "state/route-strict.json").is_file()


def test_the_time_budget_cancels_the_round_under_way(tmp_path: Path) -> None:
    with FakeOpenAI(responder=rule_task.responder(reflection_delay=3.0)) as server:
        rule_task.write_workspace(tmp_path, server.url, budget=300)
        config = (tmp_path / "gepa.yaml").read_text()
        (tmp_path / "gepa.yaml").write_text(config.replace("{max_metric_calls: 300}",
                                                           "{max_metric_calls: 300, max_minutes: 0.02}"))
        started = time.monotonic()
        task = report_of(tune(tmp_path, "--json"))["tasks"][0]
        assert time.monotonic() - started < 2.8, "the 3 s reflection must not be waited for"
    assert task["stop_reason"].startswith("time budget: 0.02 minutes")
    minibatch = min(10, task["split_sizes"]["train"])  # the default minibatch (10) or all of train
    assert task["usage"]["metric_calls"] == task["split_sizes"]["val"] + minibatch  # the cancelled round ran its parent
    assert [c["origin"] for c in task["candidates"]] == ["seed"]  # the round's half-done work is dropped
    assert task["scores"]["test"] is not None


def test_a_pipeline_is_tuned_with_every_steps_output_shown_to_the_reflection_model(tmp_path: Path) -> None:
    """Step one copies the ticket's topic into `facts`; step two answers from the facts and the rules."""

    def responder(body: dict[str, Any]) -> Reply | str:
        user = body["messages"][-1]["content"]
        if body["model"] == rule_task.TASK_MODEL and user.startswith("Extract the topic:"):
            return user.removeprefix("Extract the topic:").strip()
        return rule_task.responder()(body)

    with FakeOpenAI(responder=responder) as server:
        rule_task.write_workspace(tmp_path, server.url, budget=200)
        config = (tmp_path / "gepa.yaml").read_text().replace("""    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
""", """    steps:
      - {name: extract, user: prompts/extract.j2, output: facts}
      - {name: answer, system: prompts/system.j2, user: prompts/answer.j2}
""")
        (tmp_path / "gepa.yaml").write_text(config)
        (tmp_path / "prompts/extract.j2").write_text("Extract the topic: {{ text }}\n")
        (tmp_path / "prompts/answer.j2").write_text("Facts: {{ facts }}\n")
        task = report_of(tune(tmp_path, "--json"))["tasks"][0]
        reflections = [r for r in server.requests if r["model"] == rule_task.REFLECTION_MODEL]
    assert task["scores"]["test"]["best"] > task["scores"]["test"]["seed"] + 0.3
    assert task["best"]["changed_modules"] == ["prompts/system.j2"]
    prompt = reflections[0]["messages"][1]["content"]
    assert "Output of step extract:" in prompt and "Output of step answer:" in prompt
    assert "prompts/extract.j2 (user message of step extract)" in prompt


def test_the_best_strategy_runs_for_comparison(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=150)
    data = report_of(tune(tmp_path, "--json", "--strategy", "best"))
    task = data["tasks"][0]
    assert data["options"]["strategy"] == "best"
    assert task["usage"]["metric_calls"] <= 150 and task["scores"]["test"]["best"] > 0.3


def test_a_killed_run_resumes_and_pays_again_only_for_answers_it_never_received(tmp_path: Path) -> None:
    with FakeOpenAI(responder=rule_task.responder(task_delay=0.03, reflection_delay=0.05)) as server:
        rule_task.write_workspace(tmp_path, server.url, budget=150, concurrency=4)
        proc = subprocess.Popen([sys.executable, "-c", "from gepa_action.cli import entry; entry()", "tune"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        states = tmp_path / ".gepa/runs"
        while time.monotonic() < deadline:
            found = list(states.glob("*/state/route.json"))
            if found and json.loads(found[0].read_text())["iteration"] >= 2:
                break
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed
        proc.wait(timeout=10)
        run_id = next(states.iterdir()).name
        task = report_of(tune(tmp_path, "--resume", run_id, "--json"))["tasks"][0]
        sent = [json.dumps(r, sort_keys=True) for r in server.requests]
    assert task["status"] == "finished" and task["usage"]["metric_calls"] <= 150
    again = len(sent) - len(set(sent))
    assert again <= 4, f"{again} requests were paid for twice (at most the 4 in flight at the kill may be)"


def test_the_pr_bodys_reproduce_command_reruns_the_same_search(tmp_path: Path, sim: FakeOpenAI) -> None:
    """A run with every path-deciding option away from its default: the command in the PR body's footer,
    run again, records the same options and finds the same winner (a flag left out would change both)."""
    from fakes.report_factory import report_from_json

    from gepa_action.render.pr_body import render_pr_body

    rule_task.write_workspace(tmp_path, sim.url, budget=150)
    flags = ("--seed", "4", "--strategy", "best", "--minibatch", "2", "--parallel", "2", "--max-merges", "0",
             "--no-race", "--no-lookahead", "--chain", "always", "--max-minutes", "30")
    first = report_of(tune(tmp_path, "--json", *flags))
    text = render_pr_body(report_from_json(first), applied=("route",), threshold="any gain").text
    (command,) = re.findall(r"```sh\n(gepa-tune tune .*)\n```", text)
    words = shlex.split(command)
    assert words[:3] == ["gepa-tune", "tune", "route"] and sorted(words[3:]) == sorted(flags)
    second = report_of(tune(tmp_path, "--json", *words[2:]))
    assert second["options"] == first["options"]
    assert second["tasks"][0]["best"] == first["tasks"][0]["best"]
