"""The GEPA iteration for one task: select parents, propose, race accepted children on val, merge; all
under a budget that is checked before anything is spent.

One iteration (a "round") proposes `parallel` children at once, each from a parent drawn from the
Pareto front, on its own minibatch (`proposal`); the children that beat their parent there are scored
on val together, in stages that stop a child once it falls behind its parent (`evaluation`); the
survivors join the pool in proposal order, so a run is the same however the answers interleave. With
`parallel=1` and racing off this is the algorithm of the GEPA paper. A merge, when one is due, is a
round of its own (`merge`). After every round the state is handed to `checkpoint`, which writes it
with the round's events.

Calls are saved where the algorithm allows it without changing what it computes: a parent's traces on
train instances are kept (`train_memo`), so re-running it on a minibatch it has already seen costs
nothing; a proposal identical to a rejected one or to a pool member is not evaluated again; a merge's
val subsample is not scored twice.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..errors import InputError, RunError
from ..lm import LMClient, ModelUsage, Usage
from ..task import gather_all
from ..workspace import CONFIG_NAME, Task
from .budget import BudgetGuard, Limits, StepCost
from .context import PERFECT, Context, EngineOptions
from .evaluation import Entrant, score_on_val
from .events import Event, ProposalEvent, Skipped, StopEvent, TestScored, ValStopped
from .merge import merge_round
from .metered import CompletionSource, MeteredLM
from .pareto import STRATEGIES, pareto_front
from .proposal import Outcome, Plan, Proposer, ReflectionFailed
from .reasons import Stop, StopReason, rejection_text
from .sampling import known_failures, next_minibatch
from .state import Candidate, EngineState, Pending

__all__ = ["BudgetTooSmall", "Engine", "EngineOptions", "MeteredLM", "ReflectionFailed"]

Emit = Callable[[dict[str, Any]], None]

#: See `Engine._chaining`: chain steps on train when one val scoring costs this many proposals or more.
CHAIN_FACTOR = 8


class Engine:
    """Runs GEPA on one task until the budget, the clock or a stop file ends it."""

    def __init__(self, task: Task, lm: LMClient | CompletionSource, state: EngineState, options: EngineOptions,
                 limits: Limits, *, emit: Emit, checkpoint: Callable[[EngineState], None],
                 progress: Callable[[EngineState], None] | None = None) -> None:
        self.task = task
        self.options = options
        self._emit_json = emit
        self.checkpoint_cb = checkpoint
        self.progress = progress
        self.usage = Usage(lm.config.prices)
        for model, counters in state.usage.items():
            self.usage.models[model] = ModelUsage(**counters)
        self.lm = MeteredLM(lm, self.usage, state.nominal_tokens)
        self.reflection_model = lm.config.reflection_model or task.model
        self.guard = BudgetGuard(limits, task, lm.config, self.reflection_model)
        self.ctx = Context(task, state, options, self.lm, self.emit, self.refusal)
        self.proposer = Proposer(self.ctx, self.reflection_model)
        self._learn_costs()
        self.select = STRATEGIES[options.strategy]
        self._started = time.monotonic()
        self._wall_base = state.wall_s
        self._raw_lm = lm
        self._sdk_import_before = float(getattr(lm, "sdk_import_s", 0.0))
        self._snapshot = state.to_json()  # the last checkpoint, to return to when a round is cancelled

    @property
    def state(self) -> EngineState:
        return self.ctx.state

    def emit(self, event: Event) -> None:
        self._emit_json(event.to_json())

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

    def refusal(self, step: StepCost) -> Stop | None:
        """Why `step` may not start now (None when it fits); the test split's scoring stays reserved."""
        return self.guard.check(step, calls_used=self.state.metric_calls, cost_used=self.cost_used,
                                wall_used=self.wall_used, reserve=StepCost(2 * len(self.ctx.test)))

    def minimum_budget(self) -> int:
        """Calls needed to score the seed, make one proposal (on one instance, the smallest step the
        engine shrinks to at the end of a budget) and score an accepted child."""
        return 2 * len(self.ctx.val) + 2

    # -- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> EngineState:
        if not self.state.candidates:
            await self._score_seed()
        while not self.state.finished:
            if self.state.best().val_mean >= PERFECT:
                self._finish(Stop(StopReason.PERFECT_VAL))
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
        calls_before, proposals_before = state.metric_calls, state.stats.proposals
        done = False
        if state.merges_due > 0 and len(state.merge_pairs_tried) < self.options.max_merges:
            done = await merge_round(self.ctx, rng)
        if not done:
            stop = await (self._chain_round(rng) if self._chaining() else self._proposal_round(rng))
            if stop is not None:
                self._finish(stop)
        self._count_idle(state.metric_calls > calls_before, state.stats.proposals > proposals_before)
        state.iteration += 1
        state.save_rng(rng)
        self.checkpoint()

    def _stop_at_deadline(self) -> None:
        """The time budget ran out during a round: the round is cancelled (its answers are cached) and
        the run ends at the last checkpoint, keeping the count of the calls the round did make."""
        calls, nominal = self.state.metric_calls, self.state.nominal_tokens
        self.ctx.state = EngineState.from_json(self._snapshot)
        self.state.metric_calls = calls
        self.state.nominal_tokens = nominal
        self._finish(Stop(StopReason.DEADLINE_IN_ROUND, {"minutes": self.guard.limits.max_minutes or 0}))
        self.checkpoint()

    def _count_idle(self, spent: bool, proposed: bool) -> None:
        """Stop a run that has stopped learning: streaks live in the state, so a resume counts on."""
        stats = self.state.stats
        stats.idle_streak = 0 if spent else stats.idle_streak + 1
        stats.invalid_streak = 0 if spent else stats.invalid_streak + int(proposed)
        perfect_limit = self.options.max_perfect_epochs * -(-len(self.ctx.train) // self.options.minibatch)
        if self.state.finished or self.state.pending:
            return
        if stats.invalid_streak >= self.options.max_invalid_rounds:
            evaluated = stats.accepted + stats.rejected_not_better + stats.raced_out
            self._finish(Stop(StopReason.INVALID_STREAK, {"rounds": stats.invalid_streak}) if evaluated else
                         Stop(StopReason.NOTHING_EVALUATED))
        elif stats.idle_streak >= max(perfect_limit, self.options.max_invalid_rounds + 1):
            self._finish(Stop(StopReason.IDLE_STREAK, {"rounds": stats.idle_streak}))

    def _finish(self, stop: Stop) -> None:
        self.state.finished = True
        self.state.stop = stop
        # The one-time import of the openai SDK (about 1.5 s) is start-up, not search: it is left out here
        # (and stays in `wall_s`), as the reference's bench timing leaves out its own imports.
        imported = float(getattr(self._raw_lm, "sdk_import_s", 0.0)) - self._sdk_import_before
        self.state.search_wall_s = round(self.wall_used - imported, 3)
        self.emit(StopEvent(stop=stop, metric_calls=self.state.metric_calls))

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
        ctx = self.ctx
        if not ctx.train or not ctx.val:
            empty = "train" if not ctx.train else "val"
            raise InputError(CONFIG_NAME, f"task '{self.task.name}': the {empty} split has no instances",
                             key="split", hint=f"raise split.{empty} or add instances to the eval set")
        limit = self.guard.limits.max_metric_calls
        stop = self.refusal(StepCost(len(ctx.val)))
        reason = None if stop is None else stop.describe()
        if reason is None and limit is not None and limit < self.minimum_budget():
            reason = f"the budget is {limit} metric calls"
        if reason is not None:
            raise BudgetTooSmall(self.task.name, len(ctx.val), self.minimum_budget(), reason)
        texts = self.task.seed_candidate()
        records = await ctx.run(texts, ctx.val)
        seed = Candidate(id=0, texts=texts, parents=[], origin="seed")
        ctx.admit(seed, dict(zip(ctx.val, records, strict=True)))
        self.emit(ctx.val_event(seed))
        self.checkpoint()

    # -- proposal rounds ---------------------------------------------------------------------------------

    def _plan(self, rng: Any) -> tuple[list[Plan], Stop | None]:
        """Choose this round's proposals, each fitting the budget along with those before it (and the
        val races of the pending children). With lookahead, a pending child is the first parent."""
        ctx, state = self.ctx, self.state
        scores, evidence = state.val_scores(), state.evidence()
        front = pareto_front(scores, evidence) if self.options.strategy == "pareto" else {}
        if not state.pending and front and all(ctx.solves_train(c) for c in front):
            return [], Stop(StopReason.TRAIN_SOLVED)
        plans: list[Plan] = []
        reserved = len(state.pending) * len(ctx.val)
        per_step = self.proposer.reflections_per_step
        ahead = [p.candidate for p in state.pending] if self.options.lookahead else []
        chain = self._chaining()
        for slot in range(self.options.parallel):
            parent = ahead[slot] if slot < len(ahead) else state.candidate(self.select(rng, scores, evidence))
            module = ctx.optimize[parent.next_module % len(ctx.optimize)]
            parent.next_module = (parent.next_module + 1) % len(ctx.optimize)
            batch = next_minibatch(ctx, rng, parent.id)
            if not batch:
                state.stats.skipped_perfect += 1
                self.emit(Skipped(iteration=state.iteration, parent=parent.id, module=module,
                                  reason="the parent is known to solve every train instance"))
                continue
            memo = state.train_memo.get(str(parent.id), {})
            # A chained step from a pending child replaces that child's val scoring, already reserved.
            val_cost = 0 if chain and parent.id < 0 else len(ctx.val)
            need = sum(1 for i in batch if i not in memo) + len(batch) + val_cost
            stop = self.refusal(StepCost(reserved + need, (len(plans) + 1) * per_step))
            if stop is not None:
                # Spend what is left: a step on instances the parent is known to fail (free to show
                # again), or on fewer of them, may still fit where the full step does not.
                known = known_failures(ctx, parent.id, len(batch))
                for smaller in [known, *(batch[:size] for size in range(len(batch) - 1, 0, -1))]:
                    cheaper = sum(1 for i in smaller if i not in memo) + len(smaller) + val_cost
                    if smaller and self.refusal(StepCost(reserved + cheaper, (len(plans) + 1) * per_step)) is None:
                        batch, need, stop = smaller, cheaper, None
                        break
            if stop is not None:
                return plans, stop if not plans else None
            plans.append(Plan(parent.id, module, batch))
            reserved += need
        return plans, None

    def _chaining(self) -> bool:
        """Grow a child on train before racing it when scoring one candidate on val costs as much as
        CHAIN_FACTOR proposals: on a large val set the budget buys only a few full scorings, so each
        should go to a child that has already taken every step it can."""
        return len(self.ctx.val) >= CHAIN_FACTOR * 2 * self.options.minibatch

    async def _chain_round(self, rng: Any) -> Stop | None:
        """A round on a large val set: propose from each pending child first; a child whose proposal
        beat it on the minibatch is superseded by that proposal (never scored on val), the others are
        raced now. Returns why the run must stop, or None."""
        state = self.state
        pending = list(state.pending)
        plans, stop = self._plan(rng)
        halt = stop is not None and stop.reason in (StopReason.STOP_FILE, StopReason.TIME_BUDGET)
        if not plans and (not pending or halt):
            return stop
        outcomes = await gather_all(self.proposer.propose(plan) for plan in plans)
        tips: list[tuple[Outcome, Candidate]] = []
        for outcome in outcomes:
            parent = state.candidate(outcome.plan.parent)
            if self._settle(outcome):
                tips.append((outcome, parent))
        superseded = {parent.id for _, parent in tips if parent.id < 0}
        racing = [p for p in pending if p.candidate.id not in superseded]
        for p in pending:
            if p.candidate.id in superseded:
                state.stats.chained += 1
                self._emit_json({**p.event, "accepted": False,
                                 "reason": "superseded: its own child beat it on the minibatch before it was "
                                           "scored on val (the val set is large: steps are chained on train)"})
        entrants = [Entrant(p.candidate.texts, p.candidate.parents[0]) for p in racing]
        if entrants:
            await score_on_val(self.ctx, entrants)
        for p, entrant in zip(racing, entrants, strict=True):
            self._conclude(p, entrant)
        for p in pending:
            if p.candidate.id in superseded:
                self._drop_provisional(p.candidate.id)
        state.pending = []
        for outcome, parent in tips:
            self._make_pending(outcome, parent)
        return None if pending or tips else stop

    async def _proposal_round(self, rng: Any) -> Stop | None:
        """One round: the pending children are raced on val while this round's proposals are made (from
        them first, with lookahead); then the survivors join the pool, proposals from a child that was
        stopped are dropped, and the children that beat their parent become the next pending ones.
        Returns why the run must stop, or None."""
        state = self.state
        pending = list(state.pending)
        plans, stop = self._plan(rng)
        halt = stop is not None and stop.reason in (StopReason.STOP_FILE, StopReason.TIME_BUDGET)
        if not plans and (not pending or halt):
            return stop  # a stop file or the clock ends the run now; a spent budget still races the pending
        entrants = [Entrant(p.candidate.texts, p.candidate.parents[0]) for p in pending]
        # The parents' minibatch runs first: the reflection waits for them, the race does not wait for
        # anything, so giving them the client's slots first shortens the round (it would interleave).
        await gather_all(self.ctx.parent_trace(plan.parent, i) for plan in plans for i in plan.minibatch)
        _, outcomes = await gather_all([score_on_val(self.ctx, entrants),
                                        gather_all(self.proposer.propose(plan) for plan in plans)])
        grandparents = {p.candidate.id: p.candidate.parents[0] for p in pending}
        admitted = {p.candidate.id: self._conclude(p, e) for p, e in zip(pending, entrants, strict=True)}
        state.pending = []
        for outcome in outcomes:
            provisional = outcome.plan.parent
            if provisional < 0:
                real = admitted[provisional]
                if real is None:
                    state.stats.discarded += 1
                    grandparent = grandparents[provisional]
                    self.emit(Skipped(iteration=state.iteration, parent=grandparent, module=outcome.plan.module,
                                      minibatch=outcome.plan.minibatch, scores_before=outcome.parent_scores,
                                      reason=f"made from a child of candidate {grandparent} that was then "
                                             "stopped on val: dropped"))
                    continue
                outcome.plan.parent = real
            if self._settle(outcome):
                self._make_pending(outcome)
        return None if pending else stop

    def _proposal_event(self, outcome: Outcome) -> ProposalEvent:
        plan = outcome.plan
        return ProposalEvent(
            iteration=self.state.iteration, parent=plan.parent, module=plan.module, minibatch=plan.minibatch,
            scores_before=outcome.parent_scores, rationale=outcome.rationale,
            prompt_tokens=outcome.reflection_tokens[0], completion_tokens=outcome.reflection_tokens[1],
            cost_usd=outcome.reflection_cost, template=outcome.text,
            scores_after=[r.score for r in outcome.child_records] if outcome.child_records is not None else None)

    def _settle(self, outcome: Outcome) -> bool:
        """Record a proposal that ends here (skipped, invalid, not better); True when it goes on to val."""
        state, plan = self.state, outcome.plan
        if outcome.kind == "skipped":
            state.stats.skipped_perfect += 1
            self.emit(Skipped(iteration=state.iteration, parent=plan.parent, module=plan.module,
                              minibatch=plan.minibatch, scores_before=outcome.parent_scores,
                              reason="the parent is perfect on the whole minibatch"))
            return False
        state.stats.proposals += 1
        event = self._proposal_event(outcome)
        if outcome.kind == "invalid":
            assert outcome.reason is not None
            if outcome.reason.startswith("repeat"):
                state.stats.repeats += 1
            else:
                state.stats.count_invalid(outcome.reason)
            state.add_rejection(plan.parent, plan.module, outcome.text or "", outcome.reason)
            event.reason = outcome.reason
            self.emit(event)
            return False
        assert outcome.child_records is not None and outcome.text is not None
        twin = state.find_texts({**state.candidate(plan.parent).texts, plan.module: outcome.text})
        if twin is not None or not outcome.improved:
            after = sum(r.score for r in outcome.child_records)
            reason = (rejection_text("repeat", twin=twin.id) if twin is not None else
                      rejection_text("not_better", after=after, before=sum(outcome.parent_scores)))
            if twin is None:
                state.stats.rejected_not_better += 1
            else:
                state.stats.repeats += 1
            state.add_rejection(plan.parent, plan.module, outcome.text, reason)
            event.reason = reason
            self.emit(event)
            return False
        return True

    def _make_pending(self, outcome: Outcome, parent: Candidate | None = None) -> None:
        """A child that beat its parent on the minibatch waits for its val race, under a provisional id;
        its minibatch traces are kept, so a proposal from it does not pay for them again. A child of a
        pending child that it supersedes (a chain, see `_chain_round`) hangs off that one's pool parent
        and carries the chain's rationale."""
        state, plan = self.state, outcome.plan
        assert outcome.child_records is not None and outcome.text is not None
        parent = parent or state.candidate(plan.parent)
        rationale = outcome.rationale
        if parent.id < 0:
            rationale = f"{parent.rationale}\n\nThen, one step further on train: {rationale}".strip()
        child = Candidate(
            id=-1 - len(state.pending), texts={**parent.texts, plan.module: outcome.text},
            parents=list(parent.parents) if parent.id < 0 else [parent.id], origin="reflection", module=plan.module,
            iteration=state.iteration, rationale=rationale, minibatch_ids=list(plan.minibatch),
            minibatch_before=list(outcome.parent_scores), minibatch_after=[r.score for r in outcome.child_records],
            next_module=parent.next_module,
        )
        state.train_memo[str(child.id)] = dict(zip(plan.minibatch, outcome.child_records, strict=True))
        state.pending.append(Pending(child, list(outcome.child_records), self._proposal_event(outcome).to_json()))

    def _drop_provisional(self, provisional: int) -> None:
        self.state.train_memo.pop(str(provisional), None)
        for key in [k for k in self.state.rejected if k.split(":", 1)[0] == str(provisional)]:
            del self.state.rejected[key]

    def _conclude(self, pending: Pending, entrant: Entrant) -> int | None:
        """A pending child after its val race: into the pool (its id is returned) or stopped part-way.
        What was kept under its provisional id moves to its pool id, or is dropped."""
        state, ctx, child = self.state, self.ctx, pending.candidate
        provisional, plan_parent, module = child.id, child.parents[0], child.module or ""
        memo = state.train_memo.pop(str(provisional), {})
        rejected = {key: state.rejected.pop(key) for key in [k for k in state.rejected
                                                              if k.split(":", 1)[0] == str(provisional)]}
        event = dict(pending.event)
        if entrant.stopped_at is not None:
            size = len(ctx.val)
            reason = rejection_text("raced_out", child=entrant.child_sum, parent=entrant.parent_sum,
                                    scored=entrant.stopped_at, size=size)
            state.stats.count_stopped(entrant.stopped_at, size - entrant.stopped_at)
            state.add_rejection(plan_parent, module, child.texts[module], reason)
            self.emit(ValStopped(iteration=child.iteration, parent=plan_parent, module=module,
                                 scored=entrant.stopped_at, val_size=size, child_score=entrant.child_sum,
                                 parent_score=entrant.parent_sum, reason=reason))
            self._emit_json({**event, "accepted": False, "reason": reason})
            return None
        state.stats.accepted += 1
        child.id = len(state.candidates)
        ctx.admit(child, entrant.records)
        state.train_memo[str(child.id)] = memo
        for key, items in rejected.items():
            state.rejected[f"{child.id}:{key.split(':', 1)[1]}"] = items
        if len(ctx.optimize) >= 2 and self.options.max_merges > 0:
            state.merges_due += 1
        self._emit_json({**event, "accepted": True, "child": child.id})
        self.emit(ctx.val_event(child))
        return child.id

    # -- the held-out test ------------------------------------------------------------------------------

    async def score_test(self) -> None:
        """Score the seed and the best candidate on the test split, once, after the search is over.

        The test split never influenced any choice above; these numbers are the honest ones."""
        state, ctx = self.state, self.ctx
        if state.final is not None:
            return
        best = state.best()
        seed_records = await ctx.run(state.candidate(0).texts, ctx.test, count=False)
        best_records = seed_records if best.id == 0 else await ctx.run(best.texts, ctx.test, count=False)
        state.final = {
            "best": best.id,
            "test_calls": len(ctx.test) * (1 if best.id == 0 else 2),
            "seed": {i: [r.score, r.output] for i, r in zip(ctx.test, seed_records, strict=True)},
            "best_scores": {i: [r.score, r.output] for i, r in zip(ctx.test, best_records, strict=True)},
        }
        self.emit(TestScored(best=best.id, test_calls=state.final["test_calls"]))
        self.checkpoint()


class BudgetTooSmall(RunError):
    """The budget cannot even score the seed on val: nothing would be learned, so nothing is spent."""

    exit_code = 2

    def __init__(self, task: str, val_size: int, minimum: int, reason: str) -> None:
        super().__init__(
            f"task '{task}': {reason}; scoring the seed on the val split takes {val_size} calls and a useful run "
            f"needs at least {minimum} (seed on val, one proposal, and val for an accepted child); "
            f"raise budget.max_metric_calls (or --budget) to {minimum} or more")
        self.minimum = minimum
