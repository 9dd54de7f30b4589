"""The GEPA iteration for one task: select a parent, reflect on a minibatch, accept or reject, score
on val, merge; all under a budget that is checked before anything is spent.

One iteration (a "round") proposes `parallel` children at once, each from a parent drawn from the
Pareto front, on its own minibatch; their evaluations run concurrently through the LM client, and
their outcomes are applied in proposal order, so a run is the same however the answers interleave.
With `parallel=1` this is the algorithm of the GEPA paper. A merge, when one is due, is a round of its
own. After every round the state is handed to `checkpoint`, which writes it with the round's events.

Calls are saved where the algorithm allows it without changing what it computes: a parent's traces on
train instances are kept (`train_memo`), so re-running it on a minibatch it has already seen costs
nothing; a proposal identical to a rejected one or to a pool member is not evaluated again; a merge's
val subsample is not scored twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError, RunError
from ..lm import Completion, LMClient, LMError, ModelUsage, Usage
from ..task import TaskRunner, Trace, gather_all
from ..workspace import CONFIG_NAME, Task
from . import merge as merging
from .budget import BudgetGuard, Limits, StepCost
from .pareto import STRATEGIES, pareto_front
from .reflect import (
    Example,
    build_messages,
    check_template,
    drop_repeated_paragraphs,
    parse_reply,
    repair_request,
    repairable,
    strip_scaffolding,
    with_new_instruction,
)
from .state import Candidate, EngineState, TraceRecord

PERFECT = 1.0


#: Temperature of a repair turn (when the config's is lower). Cached like any answer (sample 0).
REPAIR_TEMPERATURE = 0.7


@dataclass(frozen=True)
class EngineOptions:
    strategy: str = "pareto"
    minibatch: int = 3
    parallel: int = 1
    max_merges: int = 5
    merge_subsample: int = 5
    #: Rounds in a row whose proposals were all rejected unevaluated before the run gives up: a reflection
    #: model that never writes a valid template would otherwise be paid forever for nothing.
    max_invalid_rounds: int = 12
    #: Rounds in a row that evaluate nothing (parents perfect on the minibatch, proposals that repeat
    #: earlier ones) before the run gives up, in epochs over the train split: such rounds cost no metric
    #: call, but a solved train set would otherwise loop forever.
    max_perfect_epochs: int = 5
    #: Follow-up turns per proposal when the reply is unusable in a way the model can fix (a copy of the
    #: template, a variable added or dropped, no fenced block, broken Jinja): the reason goes back to the
    #: reflection model in the same conversation. Small models often get it right on the second try
    #: (measured on the bundled 1.5B), and a repair costs a reflection call, never a metric call.
    repairs: int = 1


class ReflectionFailed(RunError):
    """The reflection model could not be reached or kept failing; the run stops with a report."""


class MeteredLM:
    """The shared LM client, seen through one task: every answer is also counted in the task's usage,
    so a task's cost budget covers its own task-model, judge and reflection calls.

    `nominal` counts the tokens of every answer, cached or not, per purpose and model, as integers.
    Budget decisions price these counts, so they depend neither on what happened to be in the cache (a
    resumed run replays its interrupted round from the cache; a warm re-run replays everything) nor on
    the order concurrent answers arrived in: the same run decides the same way every time. `usage`
    keeps the real spend for the report.
    """

    def __init__(self, lm: LMClient, usage: Usage, nominal: dict[str, list[int]]) -> None:
        self.lm = lm
        self.usage = usage
        self.config = lm.config
        self.nominal = nominal

    async def complete(self, model: str, messages: list[dict[str, Any]], *, purpose: str = "metric",
                       **options: Any) -> Completion:
        completion = await self.lm.complete(model, messages, **options)
        for kind in completion.retries:  # the flakiness of the endpoint shows in this task's report
            self.usage.record_retry(model, kind)
        if completion.cached:
            self.usage.record_cached(model)
        else:
            self.usage.record_answer(model, completion.prompt_tokens, completion.completion_tokens)
        counts = self.nominal.setdefault(f"{purpose}|{model}", [0, 0])
        counts[0] += completion.prompt_tokens
        counts[1] += completion.completion_tokens
        return completion

    def nominal_cost(self, purpose: str | None = None) -> float:
        total = 0.0
        for key, (prompt, completion) in sorted(self.nominal.items()):
            kind, model = key.split("|", 1)
            price = self.usage.prices.get(model)
            if price is not None and (purpose is None or kind == purpose):
                total += (prompt * price.input + completion * price.output) / 1e6
        return total


def record_of(trace: Trace) -> TraceRecord:
    return TraceRecord(trace.score, trace.feedback, trace.output, [s.output for s in trace.steps], trace.truncated)


@dataclass
class Plan:
    """One proposal to make this round: which parent, which module, which train instances."""

    parent: int
    module: str
    minibatch: list[str]


@dataclass
class Outcome:
    plan: Plan
    parent_scores: list[float]
    kind: str  # "skipped", "invalid", "evaluated"
    text: str | None = None
    rationale: str = ""
    reason: str | None = None
    child_records: list[TraceRecord] | None = None
    reflection_tokens: tuple[int, int] = (0, 0)
    reflection_cost: float = 0.0


Emit = Callable[[dict[str, Any]], None]


class Engine:
    """Runs GEPA on one task until the budget, the clock or a stop file ends it."""

    def __init__(self, task: Task, lm: LMClient, state: EngineState, options: EngineOptions, limits: Limits, *,
                 emit: Emit, checkpoint: Callable[[EngineState], None],
                 progress: Callable[[EngineState], None] | None = None,
                 reserve_test: bool = True) -> None:
        self.task = task
        self.state = state
        self.options = options
        self.emit = emit
        self.checkpoint_cb = checkpoint
        self.progress = progress
        self.usage = Usage(lm.config.prices)
        for model, counters in state.usage.items():
            self.usage.models[model] = ModelUsage(**counters)
        self.lm = MeteredLM(lm, self.usage, state.nominal_tokens)
        self.runner = TaskRunner(task, self.lm)  # type: ignore[arg-type]  # MeteredLM quacks like LMClient
        self.reflection_model = lm.config.reflection_model or task.model
        self.guard = BudgetGuard(limits, task, lm.config, self.reflection_model)
        self._learn_costs()
        self.select = STRATEGIES[options.strategy]
        self.by_id = {inst.id: inst for inst in task.eval_set.instances}
        self.train = [i.id for i in task.eval_set.by_split("train")]
        self.val = [i.id for i in task.eval_set.by_split("val")]
        self.test = [i.id for i in task.eval_set.by_split("test")]
        self.optimize = list(task.optimize)
        self.step_names = tuple(s.name for s in task.steps)
        self._inflight: dict[tuple[int, str], asyncio.Future[TraceRecord]] = {}
        self._started = time.monotonic()
        self._wall_base = state.wall_s
        self._snapshot = state.to_json()  # the last checkpoint, to return to when a round is cancelled

    # -- accounting --------------------------------------------------------------------------------------

    @property
    def wall_used(self) -> float:
        return self._wall_base + time.monotonic() - self._started

    @property
    def cost_used(self) -> float:
        """Cost as the budget sees it: every answer priced, cached or not (see `MeteredLM`)."""
        return self.lm.nominal_cost()

    def _learn_costs(self) -> None:
        self.guard.learn(metric_cost=self.lm.nominal_cost("metric"), metric_calls=self.state.metric_calls,
                         reflection_cost=self.lm.nominal_cost("reflection"), reflections=self.state.reflection_calls)

    def _test_reserve(self) -> StepCost:
        return StepCost(2 * len(self.test))

    def refusal(self, step: StepCost) -> str | None:
        return self.guard.refusal(step, calls_used=self.state.metric_calls, cost_used=self.cost_used,
                                  wall_used=self.wall_used, reserve=self._test_reserve())

    def minimum_budget(self) -> int:
        """Calls needed to score the seed, make one proposal and score an accepted child."""
        return 2 * len(self.val) + 2 * min(self.options.minibatch, len(self.train))

    # -- running instances -------------------------------------------------------------------------------

    async def _run(self, texts: dict[str, str], ids: Sequence[str], *, count: bool = True) -> list[TraceRecord]:
        """Run `texts` on the instances concurrently; every run is one metric call, counted as it ends
        (`count=False` for the held-out test scoring, which the search budget does not cover)."""
        async def one(iid: str) -> TraceRecord:
            trace = await self.runner.run(texts, self.by_id[iid])
            if count:
                self.state.metric_calls += 1
            return record_of(trace)

        records = await gather_all(one(i) for i in ids)
        return records

    async def _parent_trace(self, cid: int, iid: str) -> TraceRecord:
        """A pool member's trace on a train instance: from the memo, from a run in flight, or run now."""
        memo = self.state.train_memo.setdefault(str(cid), {})
        if iid in memo:
            return memo[iid]
        key = (cid, iid)
        if key not in self._inflight:
            async def fetch() -> TraceRecord:
                record = (await self._run(self.state.candidate(cid).texts, [iid]))[0]
                memo[iid] = record
                return record

            self._inflight[key] = asyncio.ensure_future(fetch())
        try:
            return await self._inflight[key]
        finally:
            self._inflight.pop(key, None)

    # -- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> EngineState:
        if not self.state.candidates:
            await self._score_seed()
        while not self.state.finished:
            if self.state.best().val_mean >= PERFECT:
                self._finish("the best candidate is perfect on every val instance")
                self.checkpoint()
                break
            left = self.guard.seconds_left(self.wall_used)
            try:
                await asyncio.wait_for(self._round(), timeout=None if left == math.inf else max(left, 0.0))
            except asyncio.TimeoutError:
                self._stop_at_deadline()
        return self.state

    async def _round(self) -> None:
        """One merge or proposal round, then the checkpoint."""
        state = self.state
        rng = state.load_rng()
        calls_before, proposals_before = state.metric_calls, state.stats["proposals"]
        done = False
        if state.merges_due > 0 and len(state.merge_pairs_tried) < self.options.max_merges:
            done = await self._merge_round(rng)
        if not done:
            reason = await self._proposal_round(rng)
            if reason is not None:
                self._finish(reason)
        self._count_idle(state.metric_calls > calls_before, state.stats["proposals"] > proposals_before)
        state.iteration += 1
        state.save_rng(rng)
        self.checkpoint()

    def _stop_at_deadline(self) -> None:
        """The time budget ran out during a round: the round is cancelled (its answers are cached) and
        the run ends at the last checkpoint, keeping the count of the calls the round did make."""
        calls, nominal = self.state.metric_calls, self.state.nominal_tokens
        self.state = EngineState.from_json(self._snapshot)
        self.state.metric_calls = calls
        self.state.nominal_tokens = nominal
        minutes = self.guard.limits.max_minutes
        self._finish(f"time budget: {minutes:g} minutes reached during a round, which was cancelled")
        self.checkpoint()

    def _count_idle(self, spent: bool, proposed: bool) -> None:
        """Stop a run that has stopped learning: streaks live in the state, so a resume counts on."""
        stats = self.state.stats
        stats["idle_streak"] = 0 if spent else stats.get("idle_streak", 0) + 1
        stats["invalid_streak"] = 0 if spent else stats.get("invalid_streak", 0) + int(proposed)
        perfect_limit = self.options.max_perfect_epochs * -(-len(self.train) // self.options.minibatch)
        if self.state.finished:
            return
        if stats["invalid_streak"] >= self.options.max_invalid_rounds:
            evaluated = stats["accepted"] + stats["rejected_not_better"]
            self._finish("every proposal was rejected before evaluation" if not evaluated else
                         f"the last {stats['invalid_streak']} rounds of proposals were all rejected before evaluation")
        elif stats["idle_streak"] >= max(perfect_limit, 10):
            self._finish(f"{stats['idle_streak']} rounds in a row found nothing to evaluate: the parents were "
                         "perfect on their minibatches or the proposals repeated earlier ones")

    def _finish(self, reason: str) -> None:
        self.state.finished = True
        self.state.stop_reason = reason
        self.emit({"event": "stop", "reason": reason, "metric_calls": self.state.metric_calls})

    def checkpoint(self) -> None:
        state = self.state
        state.usage = {model: asdict(counters) for model, counters in self.usage.models.items()}
        self._learn_costs()
        state.wall_s = self.wall_used
        self._wall_base, self._started = state.wall_s, time.monotonic()
        self._snapshot = state.to_json()
        self.checkpoint_cb(state)
        if self.progress is not None:
            self.progress(state)

    async def _score_seed(self) -> None:
        if not self.train or not self.val:
            empty = "train" if not self.train else "val"
            raise InputError(CONFIG_NAME, f"task '{self.task.name}': the {empty} split has no instances",
                             key="split", hint=f"raise split.{empty} or add instances to the eval set")
        limit = self.guard.limits.max_metric_calls
        reason = self.refusal(StepCost(len(self.val)))
        if reason is None and limit is not None and limit < self.minimum_budget():
            reason = f"the budget is {limit} metric calls"
        if reason is not None:
            raise BudgetTooSmall(self.task.name, len(self.val), self.minimum_budget(), reason)
        texts = self.task.seed_candidate()
        records = await self._run(texts, self.val)
        seed = Candidate(id=0, texts=texts, parents=[], origin="seed")
        self._set_val(seed, dict(zip(self.val, records, strict=True)))
        self.state.candidates.append(seed)
        self._record_history()
        self.emit({"event": "val", "candidate": 0, "origin": "seed", "val_score": seed.val_mean,
                   "metric_calls": self.state.metric_calls})
        self.checkpoint()

    def _set_val(self, candidate: Candidate, records: dict[str, TraceRecord]) -> None:
        candidate.val = {iid: records[iid].score for iid in self.val}
        candidate.val_outputs = {iid: records[iid].output for iid in self.val}
        candidate.metric_calls = self.state.metric_calls

    def _record_history(self) -> None:
        self.state.history.append({"metric_calls": self.state.metric_calls, "best_val": self.state.best().val_mean})

    # -- reflective proposals ----------------------------------------------------------------------------

    def _next_minibatch(self, rng: Any, parent: int) -> list[str]:
        """The next train ids of a shuffled pass over the train split, passing over the instances the
        parent is already known to solve (its traces are kept). A minibatch of known successes can
        teach the reflection model nothing and would be skipped anyway; this way each proposal sees
        as many failures as there are. Empty when the parent is known to solve every train instance."""
        state, size = self.state, min(self.options.minibatch, len(self.train))
        memo = state.train_memo.get(str(parent), {})
        batch: list[str] = []
        for _ in range(len(self.train)):
            if state.epoch_pos >= len(state.epoch):
                state.epoch = list(self.train)
                rng.shuffle(state.epoch)
                state.epoch_pos = 0
            iid = state.epoch[state.epoch_pos]
            state.epoch_pos += 1
            known = memo.get(iid)
            if iid not in batch and (known is None or known.score < PERFECT):
                batch.append(iid)
                if len(batch) == size:
                    break
        return batch

    def _solves_train(self, cid: int) -> bool:
        memo = self.state.train_memo.get(str(cid), {})
        return all(i in memo and memo[i].score >= PERFECT for i in self.train)

    def _plan(self, rng: Any) -> tuple[list[Plan], str | None]:
        """Choose this round's proposals, each fitting the budget along with those before it."""
        scores, evidence = self.state.val_scores(), self.state.evidence()
        front = pareto_front(scores, evidence) if self.options.strategy == "pareto" else {}
        if front and all(self._solves_train(c) for c in front):
            return [], "every candidate on the Pareto front solves every train instance: nothing left to learn"
        plans: list[Plan] = []
        reserved = 0
        for _ in range(self.options.parallel):
            parent = self.state.candidate(self.select(rng, scores, evidence))
            module = self.optimize[parent.next_module % len(self.optimize)]
            parent.next_module = (parent.next_module + 1) % len(self.optimize)
            batch = self._next_minibatch(rng, parent.id)
            if not batch:
                self.state.stats["skipped_perfect"] += 1
                self.emit({"event": "skip", "iteration": self.state.iteration, "parent": parent.id, "module": module,
                           "reason": "the parent is known to solve every train instance"})
                continue
            memo = self.state.train_memo.get(str(parent.id), {})
            need = sum(1 for i in batch if i not in memo) + len(batch) + len(self.val)
            reason = self.refusal(StepCost(reserved + need, (len(plans) + 1) * self._reflections_per_step))
            if reason is not None:
                # Near the end of the budget, instances the parent is known to fail cost nothing to
                # show again: a step on those may still fit where one with unseen instances does not.
                known = [i for i in self.state.epoch if i in memo and memo[i].score < PERFECT][: len(batch)]
                cheaper = len(known) + len(self.val)
                if known and self.refusal(StepCost(reserved + cheaper,
                                                   (len(plans) + 1) * self._reflections_per_step)) is None:
                    batch, need, reason = known, cheaper, None
            if reason is not None:
                return plans, reason if not plans else None
            plans.append(Plan(parent.id, module, batch))
            reserved += need
        return plans, None

    async def _proposal_round(self, rng: Any) -> str | None:
        """One round of proposals; returns why the run must stop, or None."""
        plans, reason = self._plan(rng)
        if not plans:
            return reason
        outcomes = await gather_all(self._propose(plan) for plan in plans)
        accepted: list[tuple[Candidate, list[TraceRecord]]] = []
        for outcome in outcomes:
            child = self._apply(outcome)
            if child is not None:
                accepted.append(child)
        if accepted:
            results = await gather_all(self._run(c.texts, self.val) for c, _ in accepted)
            for (child, records), val_records in zip(accepted, results, strict=True):
                self._admit(child, records, dict(zip(self.val, val_records, strict=True)))
        return reason

    async def _propose(self, plan: Plan) -> Outcome:
        parent = self.state.candidate(plan.parent)
        records = await gather_all(self._parent_trace(parent.id, i) for i in plan.minibatch)
        parent_scores = [r.score for r in records]
        if all(s >= PERFECT for s in parent_scores):
            return Outcome(plan, parent_scores, "skipped")
        examples = [Example(self.by_id[i], r, self.step_names) for i, r in zip(plan.minibatch, records, strict=True)]
        messages = build_messages(self.task, plan.module, parent.texts, examples,
                                  self.state.rejections(parent.id, plan.module))
        tokens, cost = (0, 0), 0.0
        rationale = ""  # the first diagnosis written; a repair turn's bare block does not erase it
        for turn in range(1 + self.options.repairs):
            # A repair turn samples (temperature REPAIR_TEMPERATURE at least): at temperature 0 a small model
            # told "you repeated yourself" tends to repeat itself again, word for word.
            temperature = None if turn == 0 else max(self.lm.config.temperature, REPAIR_TEMPERATURE)
            reply = await self._reflect(parent.id, plan.module, messages, temperature)
            price = self.usage.prices.get(self.reflection_model)
            if not reply.cached:
                tokens = (tokens[0] + reply.prompt_tokens, tokens[1] + reply.completion_tokens)
                if price is not None:
                    cost += (reply.prompt_tokens * price.input + reply.completion_tokens * price.output) / 1e6
            proposal = with_new_instruction(parse_reply(reply.text, truncated=reply.truncated), reply.text,
                                            parent.texts[plan.module])
            if proposal.text is not None:
                original = self.task.templates[plan.module].source
                proposal = strip_scaffolding(proposal, original)
                proposal = dataclasses.replace(proposal, text=drop_repeated_paragraphs(proposal.text, original))
            rationale = rationale or proposal.rationale
            reason = proposal.reason
            if reason is None:
                assert proposal.text is not None
                reason = (check_template(self.task, plan.module, proposal.text, examples)
                          or self._repeat(plan, proposal.text))
            if reason is None or turn == self.options.repairs or not repairable(reason):
                break
            messages = [*messages, {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": repair_request(reason)}]
        base = {"plan": plan, "parent_scores": parent_scores, "rationale": proposal.rationale or rationale,
                "reflection_tokens": tokens, "reflection_cost": cost}
        if reason is not None:
            return Outcome(kind="invalid", text=proposal.text or reply.text, reason=reason, **base)
        texts = {**parent.texts, plan.module: proposal.text}
        child_records = await self._run(texts, plan.minibatch)
        return Outcome(kind="evaluated", text=proposal.text, child_records=child_records, **base)

    @property
    def _reflections_per_step(self) -> int:
        return 1 + self.options.repairs

    async def _reflect(self, parent: int, module: str, messages: list[dict[str, str]],
                       temperature: float | None = None) -> Any:
        """One reflection call; an unreachable reflection model ends the run (ReflectionFailed)."""
        try:
            reply = await self.lm.complete(self.reflection_model, messages, purpose="reflection",
                                           max_tokens=self.lm.config.reflection_max_tokens, temperature=temperature)
        except LMError as exc:
            message = f"reflection model {self.reflection_model}: {exc}"
            self.emit({"event": "error", "stage": "reflection", "parent": parent, "module": module,
                       "message": message})
            raise ReflectionFailed(message) from None
        self.state.reflection_calls += 1
        return reply

    def _repeat(self, plan: Plan, text: str) -> str | None:
        parent = self.state.candidate(plan.parent)
        if text.strip() == parent.texts[plan.module].strip():
            return "unchanged: the proposal is the parent's template"
        if any(r.text.strip() == text.strip() for r in self.state.rejections(parent.id, plan.module)):
            return "repeat: the same text was already rejected for this parent and module"
        twin = self.state.find_texts({**parent.texts, plan.module: text})
        if twin is not None:
            return f"repeat: identical to candidate {twin.id}"
        return None

    def _apply(self, outcome: Outcome) -> tuple[Candidate, list[TraceRecord]] | None:
        """Record a proposal's outcome; an accepted child is returned for val scoring (not yet pooled)."""
        state, plan = self.state, outcome.plan
        event: dict[str, Any] = {
            "event": "proposal", "iteration": state.iteration, "parent": plan.parent, "module": plan.module,
            "minibatch": plan.minibatch, "scores_before": outcome.parent_scores,
        }
        if outcome.kind == "skipped":
            state.stats["skipped_perfect"] += 1
            self.emit({**event, "event": "skip", "reason": "the parent is perfect on the whole minibatch"})
            return None
        state.stats["proposals"] += 1
        event.update({"rationale": outcome.rationale, "prompt_tokens": outcome.reflection_tokens[0],
                      "completion_tokens": outcome.reflection_tokens[1], "cost_usd": outcome.reflection_cost})
        if outcome.kind == "invalid":
            assert outcome.reason is not None
            if outcome.reason.startswith("repeat"):
                state.stats["repeats"] += 1
            else:
                state.count_invalid(outcome.reason)
            state.add_rejection(plan.parent, plan.module, outcome.text or "", outcome.reason)
            self.emit({**event, "accepted": False, "reason": outcome.reason, "template": outcome.text})
            return None
        assert outcome.child_records is not None and outcome.text is not None
        after = [r.score for r in outcome.child_records]
        parent = state.candidate(plan.parent)
        texts = {**parent.texts, plan.module: outcome.text}
        twin = state.find_texts(texts)
        if sum(after) <= sum(outcome.parent_scores) or twin is not None:
            reason = (f"repeat: identical to candidate {twin.id}" if twin is not None else
                      f"not better on the minibatch: {sum(after):g} vs the parent's {sum(outcome.parent_scores):g}")
            state.stats["rejected_not_better" if twin is None else "repeats"] += 1
            state.add_rejection(plan.parent, plan.module, outcome.text, reason)
            self.emit({**event, "scores_after": after, "accepted": False, "reason": reason, "template": outcome.text})
            return None
        state.stats["accepted"] += 1
        child = Candidate(
            id=len(state.candidates), texts=texts, parents=[parent.id], origin="reflection", module=plan.module,
            iteration=state.iteration, rationale=outcome.rationale, minibatch_ids=list(plan.minibatch),
            minibatch_before=list(outcome.parent_scores), minibatch_after=after, next_module=parent.next_module,
        )
        state.candidates.append(child)  # ids stay dense; val scores are filled in by _admit
        self.emit({**event, "scores_after": after, "accepted": True, "child": child.id, "template": outcome.text})
        return child, outcome.child_records

    def _admit(self, child: Candidate, minibatch_records: list[TraceRecord],
               val_records: dict[str, TraceRecord]) -> None:
        self._set_val(child, val_records)
        self.state.train_memo[str(child.id)] = dict(zip(child.minibatch_ids, minibatch_records, strict=True))
        if len(self.optimize) >= 2 and self.options.max_merges > 0:
            self.state.merges_due += 1
        self._record_history()
        self.emit({"event": "val", "candidate": child.id, "origin": child.origin, "parents": child.parents,
                   "val_score": child.val_mean, "best_val": self.state.best().val_mean,
                   "metric_calls": self.state.metric_calls})

    # -- the held-out test ------------------------------------------------------------------------------

    async def score_test(self) -> None:
        """Score the seed and the best candidate on the test split, once, after the search is over.

        The test split never influenced any choice above; these numbers are the honest ones."""
        state = self.state
        if state.final is not None:
            return
        best = state.best()
        seed_records = await self._run(state.candidate(0).texts, self.test, count=False)
        best_records = seed_records if best.id == 0 else await self._run(best.texts, self.test, count=False)
        state.final = {
            "best": best.id,
            "test_calls": len(self.test) * (1 if best.id == 0 else 2),
            "seed": {i: [r.score, r.output] for i, r in zip(self.test, seed_records, strict=True)},
            "best_scores": {i: [r.score, r.output] for i, r in zip(self.test, best_records, strict=True)},
        }
        self.emit({"event": "test", "best": best.id, "test_calls": state.final["test_calls"]})
        self.checkpoint()

    # -- merges ------------------------------------------------------------------------------------------

    async def _merge_round(self, rng: Any) -> bool:
        """Try one merge; False when no pair qualifies or it does not fit (a proposal round follows)."""
        state = self.state
        front = list(pareto_front(state.val_scores(), state.evidence()))
        plan = merging.plan_merge(state, front, self.optimize, rng)
        if plan is None:
            state.merges_due = 0
            return False
        if self.refusal(StepCost(len(self.val))) is not None:
            state.merges_due = 0
            return False
        state.merges_due -= 1
        state.merge_pairs_tried.append(sorted([plan.first, plan.second]))
        first, second = state.candidate(plan.first), state.candidate(plan.second)
        subsample = merging.merge_subsample(first, second, self.options.merge_subsample, rng)
        sub_records = await self._run(plan.texts, subsample)
        merged_sum = sum(r.score for r in sub_records)
        first_sum = sum(first.val[i] for i in subsample)
        second_sum = sum(second.val[i] for i in subsample)
        event = {"event": "merge", "iteration": state.iteration, "parents": [plan.first, plan.second],
                 "ancestor": plan.ancestor, "subsample": subsample,
                 "scores": {"merged": merged_sum, "first": first_sum, "second": second_sum}}
        if merged_sum < max(first_sum, second_sum):
            best_parent = max(first_sum, second_sum)
            self.emit({**event, "accepted": False,
                       "reason": f"worse than a parent on the subsample: {merged_sum:g} vs {best_parent:g}"})
            return True
        rest = [i for i in self.val if i not in subsample]
        rest_records = await self._run(plan.texts, rest)
        child = Candidate(id=len(state.candidates), texts=plan.texts, parents=[plan.first, plan.second],
                          origin="merge", iteration=state.iteration,
                          rationale=f"merge of candidates {plan.first} and {plan.second} "
                                    f"(common ancestor {plan.ancestor})",
                          next_module=first.next_module)
        state.candidates.append(child)
        state.stats["merges_accepted"] += 1
        records = dict(zip(subsample, sub_records, strict=True)) | dict(zip(rest, rest_records, strict=True))
        self._set_val(child, records)
        self._record_history()
        self.emit({**event, "accepted": True, "child": child.id, "val_score": child.val_mean})
        return True


class BudgetTooSmall(RunError):
    """The budget cannot even score the seed on val: nothing would be learned, so nothing is spent."""

    exit_code = 2

    def __init__(self, task: str, val_size: int, minimum: int, reason: str) -> None:
        super().__init__(
            f"task '{task}': {reason}; scoring the seed on the val split takes {val_size} calls and a useful run "
            f"needs at least {minimum} (seed on val, one proposal, and val for an accepted child); "
            f"raise budget.max_metric_calls (or --budget) to {minimum} or more")
        self.minimum = minimum

