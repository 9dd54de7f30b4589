"""`tune --chain` and stale parents: what a user sees in the report and the log.

`--chain always` takes a child that beat its parent further on train before it is scored on val, on a val
set of any size; a parent whose proposals keep coming back with nothing new is left alone, and a run
whose whole Pareto front is such parents ends instead of paying the reflection model to repeat itself.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakes import rule_task
from fakes.openai_server import FakeOpenAI, Reply

from gepa_action.cli import main
from gepa_action.engine.pareto import select_best, select_pareto


@pytest.fixture
def sim() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=rule_task.responder()) as server:
        yield server


def tune(root: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["-C", str(root), "tune", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def events_of(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in next(root.glob(".gepa/runs/*/events.jsonl")).read_text().splitlines()]


def test_chain_always_scores_only_the_tips_of_chains_on_a_small_val_set(tmp_path: Path, sim: FakeOpenAI) -> None:
    never, always = tmp_path / "never", tmp_path / "always"
    for root in (never, always):
        rule_task.write_workspace(root, sim.url, budget=300)
    plain = tune(never, "--seed", "1", "--minibatch", "3", "--chain", "never")["tasks"][0]
    chained = tune(always, "--seed", "1", "--minibatch", "3", "--chain", "always")["tasks"][0]
    assert chained["split_sizes"]["val"] < 8 * 2 * 3  # "auto" would not chain here
    superseded = [e for e in events_of(always)
                  if e["event"] == "proposal" and "superseded" in (e.get("reason") or "")]
    assert superseded and not any("superseded" in (e.get("reason") or "") for e in events_of(never))
    # Every pool member is still scored on all of val, and the run stays within its budget.
    assert all(c["val_instances"] == chained["split_sizes"]["val"] for c in chained["candidates"])
    assert chained["usage"]["metric_calls"] <= 300
    assert chained["scores"]["test"]["best"] > chained["scores"]["test"]["seed"]
    assert plain["scores"]["test"]["best"] > plain["scores"]["test"]["seed"]


def test_a_bad_chain_value_is_one_line_and_exit_2(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=300)
    result = CliRunner().invoke(main, ["-C", str(tmp_path), "tune", "--chain", "sometimes"])
    assert result.exit_code == 2 and "--chain" in result.output and "always" in result.output


def capped_reflection(rules: int):
    """The rule task's reflection model, but it never knows more than `rules` rules: once the template
    holds that many, it hands the template back unchanged, whatever it is shown."""
    base = rule_task.responder()

    def answer(body: dict[str, Any]) -> str | Reply:
        if body["model"] != rule_task.REFLECTION_MODEL:
            return base(body)
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        current = rule_task.FENCE.findall(prompt)[0].strip()
        if len(rule_task.RULE_LINE.findall(current)) >= rules:
            return f"Nothing to change.\n```\n{current}\n```"
        return base(body)

    return answer


def test_a_front_of_stale_parents_ends_the_run_before_the_budget(tmp_path: Path, sim: FakeOpenAI) -> None:
    sim.responder = capped_reflection(3)
    rule_task.write_workspace(tmp_path, sim.url, budget=2000)
    task = tune(tmp_path, "--seed", "2")["tasks"][0]
    assert "nothing left to change" in task["stop_reason"] and "3 proposals" in task["stop_reason"]
    assert task["usage"]["metric_calls"] < 2000
    unchanged: dict[int, int] = {}
    for e in events_of(tmp_path):
        if e["event"] == "proposal" and (e.get("reason") or "").startswith("unchanged"):
            unchanged[e["parent"]] = unchanged.get(e["parent"], 0) + 1
    # No parent is asked again after its third proposal in a row came back unchanged (each proposal is a
    # reflection and its repair turn).
    assert unchanged and max(unchanged.values()) <= 3
    assert task["usage"]["reflection_calls"] <= 2 * (task["proposals"]["total"] + 1)
    assert task["scores"]["test"]["best"] > task["scores"]["test"]["seed"]


def test_a_stale_front_member_is_skipped_not_replaced_by_what_it_dominates() -> None:
    scores = {0: {"a": 0.0, "b": 0.0}, 1: {"a": 1.0, "b": 0.0}, 2: {"a": 0.0, "b": 1.0}}
    rng = random.Random(0)
    assert {select_pareto(rng, scores, {}, {1}) for _ in range(30)} == {2}
    assert select_pareto(rng, scores, {}, {1, 2}) is None  # the seed (dominated) is not chosen instead
    assert select_best(rng, scores, {}, {1}) == 2 and select_best(rng, scores, {}, {0, 1, 2}) is None


def test_a_chained_tip_the_budget_cannot_race_is_logged_under_its_pool_parent() -> None:
    """End of a chained round: the pending child a step was made from is superseded (no longer pending)
    and its own child beat it, but the budget left cannot score that child on val. The drop is logged
    under the pool parent, and no rejection is filed under the provisional id, which the next pending
    child reuses. (This round used to end in "coroutine raised StopIteration".)"""
    from types import SimpleNamespace

    from gepa_action.engine.proposal import Outcome, Plan
    from gepa_action.engine.reasons import Stop, StopReason
    from gepa_action.engine.rounds import Rounds
    from gepa_action.engine.state import Candidate, EngineState, TraceRecord

    state = EngineState.new("route", 0)
    state.candidates.append(Candidate(id=0, texts={"m": "seed"}, parents=[], origin="seed", val={"v": 0.0}))
    superseded = Candidate(id=-1, texts={"m": "step one"}, parents=[0], origin="reflection", module="m")
    emitted: list[Any] = []
    ctx = SimpleNamespace(state=state, val=["v"], emit=emitted.append,
                          refuse=lambda step: Stop(StopReason.CALL_BUDGET, {"need": 1, "left": 0, "limit": 1}))
    record = TraceRecord(score=1.0, feedback="", output="billing", step_outputs=["billing"])
    outcome = Outcome(Plan(parent=-1, module="m", minibatch=["t1"]), parent_scores=[0.0], kind="evaluated",
                      text="step two", child_records=[record])
    rounds = Rounds(ctx, proposer=None, select=select_pareto)  # type: ignore[arg-type]
    rounds._queue_for_race([(outcome, superseded)])
    (skip,) = emitted
    assert skip.parent == 0 and "cannot score another child on val" in skip.reason
    assert state.rejected == {} and state.pending == [] and state.stats.discarded == 1
