"""Racing children on val, proposing from a child while it is raced, chaining steps on train and
leaving stale parents alone: what a user can check in the report and the log. The simulated reflection
model of tests/fakes/rule_task.py rewrites carelessly one time in four, which makes children that beat
their parent on a minibatch and lose on val: the race stops those.
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
from gepa_action.engine.evaluation import race_order, stage_ends
from gepa_action.engine.pareto import select_best, select_pareto
from gepa_action.engine.reasons import Stop, StopReason
from gepa_action.engine.state import Candidate, EngineState, Pending, TraceRecord
from gepa_action.render.pr_body import render_pr_body
from gepa_action.render.report_md import render_report
from gepa_action.report.model import Report


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


def test_stages_double_from_an_eighth_of_val_and_end_on_all_of_it() -> None:
    assert stage_ends(40) == [10, 20, 40]
    assert stage_ends(520) == [65, 130, 260, 520]
    assert stage_ends(12) == [10, 12]
    assert stage_ends(7) == [7]
    ids = [f"v{i}" for i in range(30)]
    order = race_order(ids, 3)
    assert sorted(order) == sorted(ids) and order == race_order(list(reversed(ids)), 3) and order != race_order(ids, 4)


def test_stopped_children_never_join_the_pool_and_the_report_says_how_much_of_val_was_scored(
        tmp_path: Path, sim: FakeOpenAI) -> None:
    """Seeds are tried until a run stops a child part-way (careless rewrites make one soon). Chaining is
    off: it takes most children further on train before any val, and this test is about the race."""
    for seed in range(40):  # the first that stops one is 19 today; the draws move with the prompts' wording
        root = tmp_path / str(seed)
        rule_task.write_workspace(root, sim.url, budget=300, per_rule=8)
        report = tune(root, "--seed", str(seed), "--minibatch", "4", "--chain", "never")
        task = report["tasks"][0]
        stopped = [e for e in events_of(root) if e["event"] == "val_stopped"]
        if stopped:
            break
    else:
        pytest.fail("no run stopped a child on val")
    val_size = task["split_sizes"]["val"]
    scoring = task["val_scoring"]
    # Every pool member, the winner included, was scored on all of val; a stopped child is not in the pool.
    assert all(c["val_instances"] == val_size for c in task["candidates"])
    assert scoring["winner_val_instances"] == val_size and scoring["pool_on_all_of_val"] == len(task["candidates"])
    assert sum(s["children"] for s in scoring["stopped"]) == len(stopped) == task["proposals"]["stopped_on_val"]
    assert scoring["calls_saved"] == sum(val_size - e["scored"] for e in stopped)
    for event in stopped:
        assert event["scored"] < val_size and event["child_score"] < event["parent_score"]
    # The proposal's own log entry says why it did not join, and it is not counted as accepted.
    proposals = [e for e in events_of(root) if e["event"] == "proposal"]
    assert sum(1 for e in proposals if e["accepted"]) == task["proposals"]["accepted"] == len(task["candidates"]) - 1
    assert any("not better on val so far" in (e.get("reason") or "") for e in proposals)
    # People read it in report.md and in the PR body, rendered from the typed report the run printed.
    typed = Report.from_json(report)
    for text in (render_report(typed), render_pr_body(typed, applied=[], threshold="0.01").text):
        assert f"scored on all {val_size} val instances" in text and "stopped after" in text
    assert task["usage"]["metric_calls"] <= 300


def test_without_racing_every_accepted_child_is_scored_on_all_of_val(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=200)
    task = tune(tmp_path, "--no-race", "--no-lookahead")["tasks"][0]
    assert task["val_scoring"]["stopped"] == [] and task["proposals"]["stopped_on_val"] == 0
    events = events_of(tmp_path)
    assert not [e for e in events if e["event"] == "val_stopped"]
    # In the GEPA paper's order: a proposal's child is scored on val before the next proposal is made.
    val_calls = [e["metric_calls"] for e in events if e["event"] == "val"]
    assert val_calls == sorted(val_calls)


def test_lookahead_proposes_from_a_child_before_it_joined_the_pool(tmp_path: Path, sim: FakeOpenAI) -> None:
    """With lookahead the next proposal's parent is the child being raced: the log shows its pool id
    once it joined, and a proposal made from a child that was then stopped is dropped, not scored."""
    rule_task.write_workspace(tmp_path, sim.url, budget=300, per_rule=6)
    task = tune(tmp_path, "--seed", "1")["tasks"][0]
    events = events_of(tmp_path)
    accepted = [e for e in events if e["event"] == "proposal" and e["accepted"]]
    children = {e["child"] for e in accepted}
    parents = [e["parent"] for e in events if e["event"] == "proposal"]
    assert all(p >= 0 for p in parents), "a logged parent is always a pool id"
    assert children & set(parents), "some child was a parent"
    dropped = [e for e in events if e["event"] == "skip" and "stopped on val" in e["reason"]]
    assert len(dropped) == task["proposals"]["dropped"]
    assert task["usage"]["metric_calls"] <= 300


def test_a_pending_child_survives_a_checkpoint_round_trip() -> None:
    state = EngineState.new("t", 0)
    state.candidates.append(Candidate(0, {"m": "seed"}, [], "seed", val={"v": 0.0}))
    child = Candidate(-1, {"m": "child"}, [0], "reflection", module="m", minibatch_ids=["a"])
    record = TraceRecord(1.0, "correct", "x", ["x"])
    state.pending.append(Pending(child, [record], {"event": "proposal", "parent": 0}, race_next=True, failed_steps=2))
    state.stop = Stop(StopReason.CALL_BUDGET, {"need": 46, "left": 24, "limit": 300})
    again = EngineState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.candidate(-1).texts == {"m": "child"} and again.pending[0].records == [record]
    assert again.pending[0].race_next and again.pending[0].failed_steps == 2
    assert again.stop == state.stop
    assert again.stop_reason == "metric-call budget: the next step needs 46 calls, 24 of 300 are left"


def test_a_checkpoint_from_before_stop_reasons_were_values_keeps_its_sentence() -> None:
    data = EngineState.new("t", 0).to_json()
    data.pop("stop")
    data["stop_reason"] = "every proposal was rejected before evaluation"
    state = EngineState.from_json(data)
    assert state.stop is not None and state.stop.reason is StopReason.LEGACY
    assert state.stop_reason == "every proposal was rejected before evaluation"


def test_on_a_large_val_set_steps_are_chained_on_train_before_a_child_is_scored_on_val(
        tmp_path: Path, sim: FakeOpenAI) -> None:
    """When one val scoring costs as much as many proposals (here val ~64 against a minibatch of 2), a
    child that beat its parent is first taken further on train; only the tip of the chain is raced."""
    rule_task.write_workspace(tmp_path, sim.url, budget=300, per_rule=16)
    task = tune(tmp_path, "--minibatch", "2", "--seed", "2")["tasks"][0]
    val_size = task["split_sizes"]["val"]
    assert val_size >= 8 * 2 * 2
    events = events_of(tmp_path)
    superseded = [e for e in events if e["event"] == "proposal" and "superseded" in (e.get("reason") or "")]
    assert superseded, "some child was taken further on train before any val"
    assert task["proposals"]["accepted"] >= 1 and task["scores"]["test"]["best"] > task["scores"]["test"]["seed"]
    val_events = [e for e in events if e["event"] == "val"]
    # Superseded children never cost val calls: the pool is the seed and the raced tips, all on all of val.
    assert len(val_events) == len(task["candidates"]) and all(
        c["val_instances"] == val_size for c in task["candidates"])
    assert any("one step further on train" in step["rationale"] for step in task["lineage"][1:])
    # The log names pool ids only: a proposal made from a child still waiting for val names that child's
    # own parent and says it was chained.
    logged = [e for e in events if e["event"] in ("proposal", "skip")]
    assert all(e["parent"] >= 0 for e in logged) and any(e.get("chained") for e in logged)
    assert task["usage"]["metric_calls"] <= 300


@pytest.mark.parametrize("extra", [(), ("--minibatch", "2")])  # lookahead; chaining on a large val set
def test_a_run_interrupted_with_children_waiting_for_val_resumes_to_the_same_end(
        tmp_path: Path, sim: FakeOpenAI, extra: tuple[str, ...]) -> None:
    """The checkpoint carries the children still waiting for their race (provisional ids, their traces,
    their log entries): a run stopped right after one was checkpointed ends as an uninterrupted one."""
    from gepa_action.errors import GepaError
    from gepa_action.tune import TuneOptions, run_tune
    from gepa_action.workspace import find_config, load_workspace

    minibatch = int(extra[1]) if extra else 10
    options = TuneOptions(seed=3, minibatch=minibatch)
    whole, split = tmp_path / "whole", tmp_path / "split"
    for root in (whole, split):
        rule_task.write_workspace(root, sim.url, budget=250, per_rule=16 if extra else 4)
    reference = run_tune(load_workspace(find_config(whole)), load_workspace(find_config(whole)).tasks, options)

    def crash_while_pending(name: str, state: Any, budget: Any) -> None:
        if state.pending:
            raise KeyboardInterrupt

    workspace = load_workspace(find_config(split))
    with pytest.raises(GepaError) as interrupted:
        run_tune(workspace, workspace.tasks, options, progress=crash_while_pending)
    run_id = str(interrupted.value).split("run ", 1)[1].split(" ", 1)[0]
    saved = json.loads((split / ".gepa/runs" / run_id / "state/route.json").read_text())
    assert saved["pending"] and saved["pending"][0]["candidate"]["id"] < 0
    resumed = run_tune(workspace, [], TuneOptions(), resume=run_id)

    def state_of(run_path: Path) -> dict[str, Any]:
        state = json.loads((run_path / "state/route.json").read_text())
        return {k: v for k, v in state.items() if k not in ("wall_s", "search_wall_s", "usage")}

    assert state_of(resumed.run.path) == state_of(reference.run.path)
    assert resumed.report.tasks[0].scores == reference.report.tasks[0].scores


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
    under the pool parent, and once the round drops the superseded child (as `chain_round` does after
    queueing), nothing is left under its provisional id. (This round used to end in "coroutine raised
    StopIteration".)"""
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
    rounds._drop_provisional(superseded.id)
    (skip,) = emitted
    assert skip.parent == 0 and "cannot score another child on val" in skip.reason
    assert state.rejected == {} and state.pending == [] and state.stats.discarded == 1


def patience_of(val: int, minibatch: int) -> int:
    """`Rounds.patience` for a task with `val` val instances and `minibatch`."""
    from types import SimpleNamespace

    from gepa_action.engine.rounds import Rounds

    ctx = SimpleNamespace(val=[f"v{i}" for i in range(val)], options=SimpleNamespace(minibatch=minibatch))
    return Rounds(ctx, proposer=None, select=select_pareto).patience()  # type: ignore[arg-type]


def test_a_tip_is_raced_after_one_failed_step_where_a_race_is_cheap_and_after_more_where_it_is_dear() -> None:
    assert patience_of(val=40, minibatch=10) == 1  # a race costs two steps
    assert patience_of(val=79, minibatch=10) == 1
    assert patience_of(val=100, minibatch=10) == 2  # two failed steps cost half a race
    assert patience_of(val=520, minibatch=10) == 3  # capped: a tip that failed three times is stuck
    assert patience_of(val=64, minibatch=2) == 3


def test_on_a_large_val_set_a_tip_gets_more_tries_before_its_race(tmp_path: Path, sim: FakeOpenAI) -> None:
    """Val ~62 against steps of 4 calls: a chained tip whose step failed stays on train for another step
    (its checkpoint says so) instead of being raced at once; every pool member is still scored on all of
    val, within the budget."""
    from gepa_action.tune import TuneOptions, run_tune
    from gepa_action.workspace import find_config, load_workspace

    rule_task.write_workspace(tmp_path, sim.url, budget=400, per_rule=16)
    kept: list[int] = []  # failed steps of tips still kept on train, at each checkpoint

    def watch(name: str, state: Any, budget: Any) -> None:
        kept.extend(p.failed_steps for p in state.pending if not p.race_next)

    workspace = load_workspace(find_config(tmp_path))
    result = run_tune(workspace, workspace.tasks, TuneOptions(seed=1, minibatch=2), progress=watch)
    task = result.report.tasks[0]
    assert max(kept) == 2, "a tip that failed twice was kept on train; none past the patience of 3"
    assert all(c.val_instances == task.split_sizes["val"] for c in task.candidates)
    assert task.usage.metric_calls <= 400


def test_a_provisional_id_names_one_child_for_the_whole_run(tmp_path: Path, sim: FakeOpenAI) -> None:
    """Chained runs supersede and drop children waiting for val: a later child never gets a dropped one's
    provisional id (what was kept under it could be taken for the new child's), and a resumed
    checkpoint goes on counting."""
    from gepa_action.tune import TuneOptions, run_tune
    from gepa_action.workspace import find_config, load_workspace

    rule_task.write_workspace(tmp_path, sim.url, budget=400, per_rule=16)
    texts: dict[int, set[str]] = {}

    def watch(name: str, state: Any, budget: Any) -> None:
        for p in state.pending:
            texts.setdefault(p.candidate.id, set()).add(json.dumps(p.candidate.texts, sort_keys=True))

    workspace = load_workspace(find_config(tmp_path))
    run_tune(workspace, workspace.tasks, TuneOptions(seed=1, minibatch=2), progress=watch)
    assert len(texts) >= 4 and all(len(seen) == 1 for seen in texts.values()), texts.keys()
    state = EngineState.new("t", 0)
    state.pending.append(Pending(Candidate(-3, {"m": "x"}, [0], "reflection"), [], {}))
    old = state.to_json()
    old.pop("provisional_ids")  # a checkpoint from before the counter
    assert EngineState.from_json(json.loads(json.dumps(old))).new_provisional_id() == -4
