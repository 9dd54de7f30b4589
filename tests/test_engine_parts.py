"""Unit tests of the engine's parts: Pareto front, selection, merge planning, proposal validation, budget."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from fakes.workspace_factory import make_workspace, with_steps

from gepa_action.config import LMConfig, Price
from gepa_action.engine.budget import BudgetGuard, Limits, StepCost
from gepa_action.engine.merge import merge_subsample, merged_texts, plan_merge
from gepa_action.engine.pareto import dominates, instance_leaders, pareto_front, select_best, select_pareto
from gepa_action.engine.reflect import Example, build_messages, check_template, fenced_blocks, parse_reply
from gepa_action.engine.state import Candidate, EngineState, Rejection, TraceRecord
from gepa_action.workspace import find_config, load_workspace

# -- Pareto front --------------------------------------------------------------------------------------


def test_leaders_include_ties_and_skip_instances_nobody_solves() -> None:
    scores = {0: {"a": 1, "b": 0, "c": 0.5, "d": 0}, 1: {"a": 1, "b": 1, "c": 0, "d": 0},
              2: {"a": 0, "b": 0, "c": 0.5, "d": 0}}
    assert instance_leaders(scores) == {"a": {0, 1}, "b": {1}, "c": {0, 2}}
    assert pareto_front({0: {"a": 0}, 1: {"a": 0}}) == {0: 1}  # nothing solved: the oldest best mean


def test_front_drops_strictly_dominated_leaders() -> None:
    # 2 leads "c" (tied with 0) but 0 is at least as good everywhere and better on "a": 2 is dominated.
    scores = {0: {"a": 1, "b": 0, "c": 1}, 1: {"a": 0, "b": 1, "c": 0}, 2: {"a": 0, "b": 0, "c": 1},
              3: {"a": 0, "b": 0, "c": 0}}
    assert pareto_front(scores) == {0: 2, 1: 1}


def test_val_twins_share_one_place_held_by_the_better_train_evidence() -> None:
    twins = {0: {"a": 1, "b": 0}, 1: {"a": 1, "b": 0}, 2: {"a": 0, "b": 1}}
    assert pareto_front(twins) == {0: 1, 2: 1}  # no evidence: the oldest twin
    assert pareto_front(twins, {0: (0.0, 0.9), 1: (1.0, 0.5)}) == {1: 1, 2: 1}  # the descendant
    assert pareto_front(twins, {0: (1.0, 0.9), 1: (1.0, 0.5)}) == {0: 1, 2: 1}  # same depth: train scores
    rng = random.Random(0)
    assert {select_pareto(rng, twins, {1: (1.0, 0.5)}) for _ in range(50)} == {1, 2}
    assert select_best(rng, twins, {1: (1.0, 0.5)}) == 1


def test_best_candidate_ties_go_to_the_descendant() -> None:
    state = _pool()
    state.candidates[3].val = dict(state.candidates[2].val)  # 3 (two ancestors) ties 2 (one ancestor)
    assert state.best().id == 3


def test_best_candidate_ties_on_val_go_to_the_shorter_prompt_before_train_evidence() -> None:
    state = _pool()
    state.candidates[3].val = dict(state.candidates[2].val)  # 3 (the descendant) ties 2 on val
    state.candidates[3].texts = {"A": "a3 and a much longer instruction", "B": "b0"}
    assert state.best().id == 2  # shorter wins over the longer ancestry
    state.candidates[2].texts = {"A": "a0", "B": "b2 plus an even longer instruction than three"}
    assert state.best().id == 3
    state.candidates[3].val = {"x": 1, "y": 1, "z": 1}  # a better val mean beats any length
    assert state.best().id == 3
    state.candidates[2].texts = state.candidates[3].texts = {"A": "same", "B": "size"}
    state.candidates[3].val = dict(state.candidates[2].val)
    assert state.best().id == 3  # equal length: the existing order (the descendant) decides


def test_dominance_needs_strictly_better_somewhere() -> None:
    assert dominates({"a": 1, "b": 1}, {"a": 1, "b": 0})
    assert not dominates({"a": 1, "b": 0}, {"a": 1, "b": 0})
    assert not dominates({"a": 1, "b": 0}, {"a": 0, "b": 1})


def test_pareto_sampling_is_proportional_to_instances_led() -> None:
    scores = {0: {"a": 1, "b": 1, "c": 1, "d": 0}, 1: {"a": 0, "b": 0, "c": 0, "d": 1},
              2: {"a": 0, "b": 0, "c": 0, "d": 0}}
    rng = random.Random(3)
    counts = Counter(select_pareto(rng, scores) for _ in range(4000))
    assert counts[2] == 0
    assert 0.70 < counts[0] / 4000 < 0.80  # leads 3 of 4 instances


def test_best_strategy_takes_the_top_mean_and_the_oldest_on_ties() -> None:
    scores = {0: {"a": 1, "b": 0}, 1: {"a": 0, "b": 1}, 2: {"a": 0, "b": 0}}
    assert select_best(random.Random(0), scores) == 0


# -- merge ---------------------------------------------------------------------------------------------


def _pool() -> EngineState:
    """seed 0; 1 changed module A from 0; 2 changed module B from 0; 3 changed A again from 1."""
    state = EngineState.new("t", 0)
    base = {"A": "a0", "B": "b0"}

    def add(cid: int, texts: dict[str, str], parents: list[int], val: dict[str, float]) -> None:
        state.candidates.append(Candidate(id=cid, texts=texts, parents=parents, origin="reflection", val=val))

    add(0, base, [], {"x": 0, "y": 0, "z": 0})
    add(1, {"A": "a1", "B": "b0"}, [0], {"x": 1, "y": 0, "z": 0})
    add(2, {"A": "a0", "B": "b2"}, [0], {"x": 0, "y": 1, "z": 1})
    add(3, {"A": "a3", "B": "b0"}, [1], {"x": 1, "y": 0, "z": 1})
    return state


def test_merged_texts_take_each_sides_change_and_the_better_side_on_conflict() -> None:
    state = _pool()
    c = state.candidates
    assert merged_texts(c[2], c[1], c[0], ["A", "B"]) == {"A": "a1", "B": "b2"}
    both = Candidate(id=9, texts={"A": "aX", "B": "bX"}, parents=[0], origin="reflection")
    assert merged_texts(c[2], both, c[0], ["A", "B"]) == {"A": "aX", "B": "b2"}  # A only changed in `both`
    assert merged_texts(both, c[2], c[0], ["A", "B"]) == {"A": "aX", "B": "bX"}  # B changed on both: first wins


def test_plan_merge_pairs_different_lineages_only_once() -> None:
    state = _pool()
    plan = plan_merge(state, [1, 2, 3], ["A", "B"], random.Random(0))
    assert plan is not None and {plan.first, plan.second} in ({1, 2}, {2, 3})
    assert plan.ancestor == 0 and plan.texts["B"] == "b2"
    # 1 and 3 are one lineage; once both cross pairs were tried there is nothing left.
    state.merge_pairs_tried = [[1, 2], [2, 3]]
    assert plan_merge(state, [1, 2, 3], ["A", "B"], random.Random(0)) is None


def test_merge_subsample_prefers_instances_where_parents_disagree() -> None:
    first = Candidate(id=1, texts={}, parents=[], origin="x", val={"a": 1, "b": 1, "c": 0, "d": 0, "e": 1})
    second = Candidate(id=2, texts={}, parents=[], origin="x", val={"a": 0, "b": 1, "c": 1, "d": 0, "e": 1})
    chosen = merge_subsample(first, second, 2, random.Random(0))
    assert sorted(chosen) == ["a", "c"]
    assert len(merge_subsample(first, second, 4, random.Random(0))) == 4


# -- proposals -----------------------------------------------------------------------------------------


def test_fenced_blocks_find_complete_blocks_and_notice_an_open_one() -> None:
    blocks, left_open = fenced_blocks("why\n```jinja\nA {{ x }}\n```\nand\n````\nB\n```\nstill B\n````")
    assert [b[2] for b in blocks] == ["A {{ x }}", "B\n```\nstill B"] and not left_open
    assert fenced_blocks("x\n```\nnever closed")[1]


@pytest.mark.parametrize(("reply", "truncated", "reason"), [
    ("Diagnosis.\n```jinja\nNew text\n```", True, "cut off"),
    ("Diagnosis only, no block.", False, "no fenced block"),
    ("Diagnosis.\n```jinja\nNew text that never", False, "no fenced block"),
    ("Diagnosis.\n```\n\n```", False, "empty template"),
])
def test_parse_reply_rejections(reply: str, truncated: bool, reason: str) -> None:
    proposal = parse_reply(reply, truncated=truncated)
    assert proposal.text is None and proposal.reason is not None and proposal.reason.startswith(reason)


def test_parse_reply_takes_the_last_block_and_the_rationale_before_it() -> None:
    reply = "The old one was:\n```\nold\n```\nIt misses X.\n```jinja\nnew {{ text }}\n```"
    proposal = parse_reply(reply, truncated=False)
    assert proposal.text == "new {{ text }}" and proposal.reason is None
    assert "It misses X." in proposal.rationale


def test_a_block_opened_after_prose_or_closed_after_text_is_still_read() -> None:
    """Small local models write "Here is the template: ```jinja" and end the template's last line with the
    fence; the proposal must not be lost to layout (seen with Qwen2.5-Coder-1.5B: 7 of 19 replies)."""
    reply = "Labels were missing. The new template in a fenced block: ```jinja\nAnswer with one label.\n{{ x }}```"
    proposal = parse_reply(reply, truncated=False)
    assert proposal.text == "Answer with one label.\n{{ x }}" and proposal.reason is None
    assert proposal.rationale == "Labels were missing. The new template in a fenced block:"
    assert fenced_blocks("Use ```jinja\nA\n```")[0][0][2] == "A"
    assert fenced_blocks("intro ```\nstill open")[1]


def _task(tmp_path: Path, **files: str):
    make_workspace(tmp_path, files)
    return load_workspace(find_config(tmp_path)).tasks[0]


def _example(task, trace_outputs: list[str] | None = None) -> Example:
    inst = task.eval_set.instances[0]
    record = TraceRecord(0.0, "expected bug, got other", "other", trace_outputs or ["other"])
    return Example(inst, record, tuple(s.name for s in task.steps))


@pytest.mark.parametrize(("text", "reason"), [
    ("Ticket: {{ text ", "not valid Jinja"),
    ("Ticket: {{ text }} from {{ customer }}", "changes variables: adds customer"),
    ("Ticket without the variable", "changes variables: drops text"),
    ("Ticket: {{ text.upper.__globals__ }}", "not valid Jinja: the attribute '__globals__' is blocked"),
    ("Ticket: {{ text|attr('__class__') }}", "does not render"),
    ("Ticket: {{ text }}{{ 'A' * 400000000 }}", "does not render"),
])
def test_check_template_rejections(tmp_path: Path, text: str, reason: str) -> None:
    task = _task(tmp_path)
    result = check_template(task, "prompts/user.j2", text, [_example(task)])
    assert result is not None and result.startswith(reason), result


def test_check_template_accepts_a_valid_rewrite_and_renders_later_steps_with_earlier_outputs(tmp_path: Path) -> None:
    config = with_steps("""\
        - name: extract
          user: prompts/extract.j2
          output: facts
        - name: answer
          system: prompts/system.j2
          user: prompts/answer.j2
        """)
    task = _task(tmp_path, **{"gepa.yaml": config, "prompts/extract.j2": "Facts of {{ text }}",
                              "prompts/answer.j2": "Answer from {{ facts }}"})
    example = _example(task, ["the facts", "bug"])
    assert check_template(task, "prompts/answer.j2", "Label these facts: {{ facts }}", [example]) is None
    assert check_template(task, "prompts/answer.j2", "{{ facts | int(strict) }}", [example]) is not None


def test_reflection_prompt_shows_template_examples_feedback_and_rejections(tmp_path: Path) -> None:
    task = _task(tmp_path)
    texts = {"prompts/system.j2": "Classify the ticket.", "prompts/user.j2": "Ticket: {{ text }}"}
    messages = build_messages(task, "prompts/system.j2", texts, [_example(task)],
                              [Rejection("Always answer bug.", "not better on the minibatch: 0 vs 0")])
    user = messages[1]["content"]
    assert user.index("Classify the ticket.") < user.index("Ticket: {{ text }}") < user.index("Example 1")
    assert "prompts/user.j2 (user message of step main)" in user
    assert "expected bug, got other" in user and "The app crashes on start" in user
    assert "Always answer bug." in user and "not better on the minibatch" in user
    assert "no variables" in user


# -- budget --------------------------------------------------------------------------------------------


def test_budget_guard_refuses_steps_that_do_not_fit(tmp_path: Path) -> None:
    task = _task(tmp_path)
    config = LMConfig(task_model=task.model, prices={task.model: Price(1.0, 2.0)})
    guard = BudgetGuard(Limits(100, 0.01, None, tmp_path / "STOP"), task, config, task.model)
    # Before any answer, the estimate is a bound from the price table: 2000 prompt + max_tokens output.
    assert "cost budget" in guard.refusal(StepCost(100), calls_used=0, cost_used=0, wall_used=0)
    assert "metric-call budget" in guard.refusal(StepCost(11), calls_used=90, cost_used=0, wall_used=0)
    guard.learn(metric_cost=0.0001, metric_calls=10, reflection_cost=0, reflections=0)  # $0.00001 a call
    assert guard.refusal(StepCost(10), calls_used=0, cost_used=0.0, wall_used=0) is None
    assert "cost budget" in guard.refusal(StepCost(10), calls_used=0, cost_used=0.0099, wall_used=0)
    (tmp_path / "STOP").write_text("")
    assert "stop file" in guard.refusal(StepCost(1), calls_used=0, cost_used=0, wall_used=0)


def test_state_round_trips_through_json_with_the_rng() -> None:
    state = _pool()
    rng = state.load_rng()
    rng.random()
    state.save_rng(rng)
    state.train_memo["0"] = {"x": TraceRecord(1.0, "ok", "bug", ["bug"])}
    state.add_rejection(0, "A", "text", "why")
    again = EngineState.from_json(state.to_json())
    assert again == state
    assert again.load_rng().random() == rng.random()


# -- request slots ------------------------------------------------------------------------------------


def test_a_freed_slot_goes_to_the_step_before_waiting_val_scoring() -> None:
    """Two slots, both taken; val scoring queues first, then a reflection: the reflection gets the next
    free slot, and the val runs follow in the order they came. A cancelled waiter gives its turn away."""
    import asyncio

    from gepa_action.engine.slots import Priority, SlotGate, current_priority

    async def scenario() -> list[str]:
        gate, order = SlotGate(2), []
        release = asyncio.Event()

        async def hold(name: str) -> None:
            async with gate.slot():
                order.append(name)
                await release.wait()

        async def request(name: str, priority: Priority) -> None:
            current_priority.set(priority)
            async with gate.slot():
                order.append(name)

        holders = [asyncio.ensure_future(hold(n)) for n in ("a", "b")]
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(request("val-1", Priority.FILL)),
                   asyncio.ensure_future(request("cancelled", Priority.CHAIN)),
                   asyncio.ensure_future(request("val-2", Priority.FILL)),
                   asyncio.ensure_future(request("reflection", Priority.CHAIN))]
        await asyncio.sleep(0)
        waiting[1].cancel()
        release.set()
        await asyncio.gather(*holders, *waiting, return_exceptions=True)
        assert gate.in_flight == 0
        return order

    assert asyncio.run(scenario()) == ["a", "b", "reflection", "val-1", "val-2"]
