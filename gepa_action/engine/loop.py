"""The GEPA loop for one task: enter the seed (scored on val in the background of the first round), run
rounds until the budget, the clock, a stop file or a stop rule ends the search, checkpoint after every
round, then score seed and best on the test split.

What a round does lives next door: `rounds` (plan proposals within the budget, race the children that
beat their parent on val, overlapped with the next proposal, and settle every outcome), `proposal` (one
reflective proposal and its repair turn), `evaluation` (the val race), `merge` (a merge round),
`sampling` (minibatches), `slots` (which call goes first). With `parallel=1`, racing, lookahead and
chaining off (`chain="never"`) and no spare proposals (`rounds.SPARE_PROPOSALS = 0`), a round is the
algorithm of the GEPA paper. Outcomes are applied in proposal order, so a run is the same however
the answers interleave, and everything a round decides is in the checkpoint (RNG and the children
still waiting for their race included), so a resumed run ends identical to an uninterrupted one.

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

from ..config import CONFIG_NAME
from ..errors import InputError, RunError
from ..lm.client import LMClient, ModelUsage, Usage
from ..workspace import Task
from .budget import BudgetGuard, Limits, StepCost
from .context import PERFECT, Context
from .events import Event, StopEvent, TestScored
from .merge import merge_round
from .metered import CompletionSource, MeteredLM
from .options import EngineOptions
from .pareto import STRATEGIES
from .proposal import Proposer, ReflectionFailed
from .reasons import Stop, StopReason
from .rounds import Rounds
from .state import Candidate, EngineState, Pending

__all__ = ["BudgetTooSmall", "Engine", "EngineOptions", "MeteredLM", "ReflectionFailed"]

Emit = Callable[[dict[str, Any]], None]



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
        self.rounds = Rounds(self.ctx, self.proposer, STRATEGIES[options.strategy])
        self._learn_costs()
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
        if not self.state.candidates and not self.state.pending:
            self._enter_seed()
        while not self.state.finished:
            if self.state.candidates and self.state.best().val_mean >= PERFECT:
                self._finish(Stop(StopReason.PERFECT_VAL))
                self.checkpoint()
                break
            left = self.guard.seconds_left(self.wall_used)
            try:
                await asyncio.wait_for(self._round(), timeout=None if left == math.inf else max(left, 0.0))
            except asyncio.TimeoutError:
                self._stop_at_deadline()
            except RunError:
                if not self.state.candidates:
                    await self._keep_seed_after_failure()
                raise
        if not self.state.candidates:  # the run ended before the first round scored the seed
            await self.rounds.score_seed_now()
            self.checkpoint()
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
            stop = await self.rounds.round(rng)
            if stop is not None:
                self._finish(stop)
        self._count_idle(state.metric_calls > calls_before, state.stats.proposals > proposals_before)
        state.iteration += 1
        state.save_rng(rng)
        self.checkpoint()

    def _stop_at_deadline(self) -> None:
        """The time budget ran out during a round: the round is cancelled (its answers are cached) and
        the run ends at the last checkpoint, keeping the count of the calls the round did make."""
        self._restore_snapshot()
        self._finish(Stop(StopReason.DEADLINE_IN_ROUND, {"minutes": self.guard.limits.max_minutes or 0}))
        self.checkpoint()

    def _restore_snapshot(self) -> None:
        """Back to the last checkpoint, keeping the count of the calls made since (they were paid for)."""
        calls, nominal = self.state.metric_calls, self.state.nominal_tokens
        self.ctx.state = EngineState.from_json(self._snapshot)
        self.state.metric_calls = calls
        self.state.nominal_tokens = nominal

    async def _keep_seed_after_failure(self) -> None:
        """The first round failed (the reflection model is down, say) while the seed was being scored:
        finish scoring it (its answers so far are cached) and checkpoint, so the failed run's report
        still shows the seed on val. If the task model fails too, the original error is what counts."""
        self._restore_snapshot()
        try:
            await self.rounds.score_seed_now()
        except RunError:
            self._restore_snapshot()
            return
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
            self._finish(Stop(StopReason.INVALID_STREAK, {"rounds": stats.invalid_streak}) if stats.evaluated else
                         Stop(StopReason.NOTHING_EVALUATED))
        elif stats.idle_streak >= max(perfect_limit, self.options.max_invalid_rounds + 1):
            self._finish(Stop(StopReason.IDLE_STREAK, {"rounds": stats.idle_streak}))

    def _finish(self, stop: Stop) -> None:
        self.state.finished = True
        self.state.stop = stop
        # The one-time import of the openai SDK (a large share of a short run) is start-up, not search: left out here
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

    def _enter_seed(self) -> None:
        """Check the budget, then let the seed wait for its val scoring like a child waits for its race:
        the first round scores it in the background while the first proposal (from the seed) is made,
        so the reflection model's first answer does not wait for all of val (see `rounds`)."""
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
        seed = Candidate(id=self.state.new_provisional_id(), texts=self.task.seed_candidate(), parents=[],
                         origin="seed")
        self.state.pending.append(Pending(seed, [], {}))
        self.checkpoint()

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
