"""Proposal rounds: plan the round's proposals within the budget, make them, race the children that
beat their parent on val (overlapped with the next proposal: lookahead), and settle every outcome into
the pool, the rejections or the children still waiting for their race. A round with no child to race
makes a spare proposal, and the last steps of a budget are made side by side (`SPARE_PROPOSALS`,
`END_SPARE_PROPOSALS`). When a val scoring costs a step or more, a round chains steps on train instead
(see `chaining`). The loop (`loop.Engine`) decides when a round runs and when the run stops; this module
decides what a round does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..runner import gather_all
from .budget import StepCost
from .context import Context
from .evaluation import Entrant, score_on_val
from .events import Logged, ProposalEvent, Skipped, ValStopped
from .pareto import Selector, pareto_front
from .proposal import Outcome, Plan, Proposer
from .reasons import Stop, StopReason, rejection_text
from .sampling import known_failures, next_minibatch
from .state import Candidate, Pending

#: Proposals a round makes beyond `parallel` when no child waits for its race. Such a round has nothing
#: to run while the reflection model thinks (its longest link, 3 task calls' worth here), so a lone
#: proposal leaves the task slots idle; late in a run, when most proposals fail on the minibatch, whole
#: runs were made of such rounds. A second proposal costs its minibatch calls and no extra time.
SPARE_PROPOSALS = 1
#: Proposals a round may make beyond `parallel` once the budget left only fits shrunken steps (on the
#: parent's known failures, or fewer instances): each costs a few calls, and made one per round they
#: were most of the wall time at the end of a run, with the task slots idle.
END_SPARE_PROPOSALS = 3
#: See `Rounds.chaining`: chain steps on train when one val scoring costs this many proposals or more.
#: At 1, racing a child costs at least one more step on train, and skipping the race of a child that its
#: own child has already beaten buys that step. Measured on the bench suite (val 40, minibatch 10): the
#: test score rose on every family where it was not already at its ceiling (zipf_capacity +0.073 ->
#: +0.166 over the reference, pipeline +0.130 -> +0.387), at the price of a longer wall time (the chained
#: steps wait for each other: zipf_capacity 4.2 -> 7.1 s). It was 8, chaining on large val sets only.
CHAIN_FACTOR = 1
#: See `Rounds.patience`: the most chained steps in a row a pending tip may fail before it is raced.
TIP_PATIENCE = 3


def pool_id(candidate: Candidate) -> int:
    """The pool id a log entry names for `candidate`: its own, or for a child still waiting for its race
    (a provisional, negative id) its pool parent's."""
    return candidate.parents[0] if candidate.id < 0 else candidate.id


class Rounds:
    """Runs proposal rounds for one task (its context, its proposer, its parent selection)."""

    def __init__(self, ctx: Context, proposer: Proposer, select: Selector) -> None:
        self.ctx = ctx
        self.proposer = proposer
        self.select = select
        self._seed_job: tuple[asyncio.Future[None], list[Entrant]] | None = None

    def _plan(self, rng: Any, chain: bool) -> tuple[list[Plan], Stop | None]:
        """Choose this round's proposals, each fitting the budget along with those before it (and the
        val races of the pending children). With lookahead, a pending child is the first parent; in a
        chained round (`chain`), a step from it replaces its race, so it reserves no val of its own."""
        ctx, state = self.ctx, self.ctx.state
        scores, evidence = state.val_scores(), state.evidence()
        front = pareto_front(scores, evidence) if scores and self.ctx.options.strategy == "pareto" else {}
        if not state.pending and front and all(ctx.solves_train(c) for c in front):
            return [], Stop(StopReason.TRAIN_SOLVED)
        plans: list[Plan] = []
        reserved = len(state.pending) * len(ctx.val)
        per_step = self.proposer.reflections_per_step
        ahead = [p.candidate for p in state.pending] if self.ctx.options.lookahead else []
        limit, slot = self.ctx.options.parallel + (0 if state.pending else SPARE_PROPOSALS), -1
        final: Stop | None = None
        while slot + 1 < limit:
            slot += 1
            if slot >= len(ahead) and not scores:
                break  # the seed is still waiting for val (the first round): it is the only parent yet
            if slot < len(ahead):
                parent = ahead[slot]
            else:
                chosen = self.select(rng, scores, evidence, self._stale())
                if chosen is None:  # every front member is stale: nothing left to ask the reflection model
                    if plans or state.pending:
                        break
                    return [], self._stale_stop()
                parent = state.candidate(chosen)
            module = ctx.optimize[parent.next_module % len(ctx.optimize)]
            parent.next_module = (parent.next_module + 1) % len(ctx.optimize)
            batch = next_minibatch(ctx, rng, parent.id)
            if not batch:
                state.stats.skipped_perfect += 1
                self.ctx.emit(Skipped(iteration=state.iteration, parent=pool_id(parent), module=module,
                                  reason="the parent is known to solve every train instance"))
                continue
            memo = state.train_memo.get(str(parent.id), {})
            # A chained step from a pending child replaces that child's val scoring, already reserved
            # (the seed's never: it is scored whatever its child does).
            # A spare proposal reserves no val: its child races only if the budget still allows after
            # the round (see `_queue_for_race`).
            spare = slot >= self.ctx.options.parallel
            val_cost = 0 if spare or (chain and parent.id < 0 and parent.parents) else len(ctx.val)
            need = sum(1 for i in batch if i not in memo) + len(batch) + val_cost
            stop = self.ctx.refuse(StepCost(reserved + need, (len(plans) + 1) * per_step))
            if stop is not None:
                # Spend what is left: a step on instances the parent is known to fail (free to show
                # again), or on fewer of them, may still fit where the full step does not.
                known = known_failures(ctx, parent.id, len(batch))
                for smaller in [known, *(batch[:size] for size in range(len(batch) - 1, 0, -1))]:
                    cheaper = sum(1 for i in smaller if i not in memo) + len(smaller) + val_cost
                    if smaller and self.ctx.refuse(StepCost(reserved + cheaper, (len(plans) + 1) * per_step)) is None:
                        # The end of the budget: its last steps are tried side by side, once; the run
                        # stops after them unless a child came out of them (see `proposal_round`).
                        final = final or stop
                        limit = max(limit, self.ctx.options.parallel + END_SPARE_PROPOSALS)
                        batch, need, stop = smaller, cheaper, None
                        break
            if stop is not None:
                return plans, stop if not plans else final
            batch = self._distinct(plans, parent.id, module, batch)
            if batch is None:
                continue
            plans.append(Plan(parent.id, module, batch))
            reserved += sum(1 for i in batch if i not in memo) + len(batch) + val_cost
        return plans, final

    def _stale(self) -> set[int]:
        """Pool members no longer chosen as parents (see `EngineOptions.max_stale`)."""
        limit = self.ctx.options.max_stale
        return {c.id for c in self.ctx.state.candidates if limit > 0 and c.stale >= limit}

    def _stale_stop(self) -> Stop:
        """Why the run ends when every front member is stale: that, unless no proposal of the run was
        ever evaluated (then the clearer "every proposal was rejected", which fails the run)."""
        if self.ctx.state.stats.evaluated == 0:
            return Stop(StopReason.NOTHING_EVALUATED)
        return Stop(StopReason.FRONT_STALE, {"proposals": self.ctx.options.max_stale})

    @staticmethod
    def _distinct(plans: list[Plan], parent: int, module: str, batch: list[str]) -> list[str] | None:
        """`batch`, or when an earlier plan of the round has the same parent, module and minibatch (the
        known failures at the end of a budget), the first variant without one of its instances that no
        plan has: the same request twice would get the same answer twice. None when there is none."""
        taken = {tuple(p.minibatch) for p in plans if p.parent == parent and p.module == module}
        variants = [batch, *([b for j, b in enumerate(batch) if j != k] for k in range(len(batch)))]
        return next((v for v in variants if v and tuple(v) not in taken), None)

    async def round(self, rng: Any) -> Stop | None:
        """The next proposal round: a chained one, or a plain one (the pending children raced beside the
        next proposals) when chaining is off or a chained step left a pending child due for its race."""
        if self.chaining() and not any(p.race_next for p in self.ctx.state.pending):
            return await self.chain_round(rng)
        return await self.proposal_round(rng)

    def chaining(self) -> bool:
        """Grow a child on train before racing it (`EngineOptions.chain`). "auto" does it when scoring
        one candidate on val costs as much as CHAIN_FACTOR proposals: the budget buys fewer val scorings
        than steps, so each should go to a child that has already taken every step it can."""
        mode = self.ctx.options.chain
        if mode != "auto":
            return mode == "always"
        return len(self.ctx.val) >= CHAIN_FACTOR * 2 * self.ctx.options.minibatch

    async def chain_round(self, rng: Any) -> Stop | None:
        """A chained round: propose from each pending child first; a child whose proposal beat it on the
        minibatch is superseded by that proposal (never scored on val), the others are due for their race
        in the next round (`race_next`). Returns why the run must stop, or None."""
        state = self.ctx.state
        pending = list(state.pending)
        plans, stop = self._plan(rng, chain=True)
        halt = stop is not None and stop.reason in (StopReason.STOP_FILE, StopReason.TIME_BUDGET)
        if not plans and (not pending or halt):
            return stop
        seeds = [p for p in pending if not p.candidate.parents]
        pending = [p for p in pending if p.candidate.parents]
        outcomes = await self._propose_scoring_seed(plans, seeds)
        tips: list[tuple[Outcome, Candidate]] = []
        for outcome in outcomes:
            parent = state.candidate(outcome.plan.parent)
            if self._settle(outcome):
                tips.append((outcome, parent))
        superseded = {parent.id for _, parent in tips if parent.id < 0}
        for p in pending:
            if p.candidate.id in superseded:
                state.stats.chained += 1
                self.ctx.emit(Logged({**p.event, "accepted": False,
                                 "reason": "superseded: its own child beat it on the minibatch before it was "
                                           "scored on val (steps are chained on train, see --chain)"}))
        # The others (their step did not beat them, or there was none) are raced in the next round, which
        # overlaps the race with a new proposal from them (`proposal_round`, lookahead), unless they may
        # still take another step (`patience`).
        state.pending = [p for p in pending if p.candidate.id not in superseded]
        stepped = {outcome.plan.parent for outcome in outcomes}
        patience = self.patience()
        for p in state.pending:
            p.failed_steps += p.candidate.id in stepped
            p.race_next = p.candidate.id not in stepped or p.failed_steps >= patience
        self._queue_for_race(tips)
        for provisional in superseded:  # after the queue: what it filed under a superseded child goes too
            self._drop_provisional(provisional)
        return None if pending or seeds or state.pending else stop

    def patience(self) -> int:
        """How many chained steps in a row a pending tip may fail before it is raced.

        One where a race costs two steps or less (val is a few minibatches): a failed step is the sign the
        tip has got what it can from train, and the race is cheap. Where a race costs many steps (a large
        val set), one failed step on a minibatch says little, and racing a tip that was merely unlucky
        spends many steps' calls on a child that its next step would have beaten: the tip gets more
        tries, as long as they cost at most half a race together (and at most TIP_PATIENCE). Measured on
        the bench's large_val family (val 520, minibatch 10): test 0.891 -> 1.000 over 5 seeds; the
        other families (val 40) are unchanged. Also retrying a tip whose race is the last the budget
        allows (to spend the calls that race leaves unused) was measured and not kept: no family's score
        rose by more than 0.02, and every wall time grew by 0.3-1.2 s."""
        race, step = len(self.ctx.val), 2 * self.ctx.options.minibatch
        return max(1, min(TIP_PATIENCE, race // (2 * step)))

    async def _propose_scoring_seed(self, plans: list[Plan], seeds: list[Pending]) -> list[Outcome]:
        """Make the round's proposals while the seed (if it still waits) is scored on val; then the
        seed joins the pool, and the proposals made from it name its pool id.

        The seed's scoring is a job of its own that outlives a failed or cancelled round (the clock ran
        out, the reflection model is down): `score_seed_now` then waits for that same job, so the seed
        is scored once and counted once, and every run ends with the seed in its pool."""
        if seeds and self._seed_job is None:
            entrants = [Entrant(p.candidate.texts, None) for p in seeds]
            self._seed_job = (asyncio.ensure_future(score_on_val(self.ctx, entrants)), entrants)
        outcomes = await gather_all(self.proposer.propose(plan) for plan in plans)
        if not seeds:
            return outcomes
        assert self._seed_job is not None
        job, entrants = self._seed_job
        await asyncio.shield(job)
        self._seed_job = None
        for p, entrant in zip(seeds, entrants, strict=True):
            provisional = p.candidate.id
            real = self._conclude(p, entrant)
            for outcome in outcomes:
                if outcome.plan.parent == provisional:
                    outcome.plan.parent = real
        return outcomes

    async def score_seed_now(self) -> None:
        """Score a seed still waiting for val (a run stopped or failed before its first round ended):
        every run returns a pool with the seed in it, scored on all of val."""
        state = self.ctx.state
        seeds = [p for p in state.pending if not p.candidate.parents]
        await self._propose_scoring_seed([], seeds)
        state.pending = [p for p in state.pending if p.candidate.parents]

    async def proposal_round(self, rng: Any) -> Stop | None:
        """One round: the pending children are raced on val while this round's proposals are made (from
        them first, with lookahead); then the survivors join the pool, proposals from a child that was
        stopped are dropped, and the children that beat their parent become the next pending ones.
        Returns why the run must stop, or None."""
        state = self.ctx.state
        pending = list(state.pending)
        plans, stop = self._plan(rng, chain=False)
        halt = stop is not None and stop.reason in (StopReason.STOP_FILE, StopReason.TIME_BUDGET)
        if not plans and (not pending or halt):
            return stop  # a stop file or the clock ends the run now; a spent budget still races the pending
        seeds = [p for p in pending if not p.candidate.parents]
        pending = [p for p in pending if p.candidate.parents]
        entrants = [Entrant(p.candidate.texts, p.candidate.parents[0]) for p in pending]
        # The race and the proposals start together: the proposals' calls (the parents' minibatch, the
        # reflection, the child's minibatch) are on the round's critical path and go first (see
        # `slots`), the race fills the slots they leave free.
        _, outcomes = await gather_all([score_on_val(self.ctx, entrants), self._propose_scoring_seed(plans, seeds)])
        grandparents = {p.candidate.id: p.candidate.parents[0] for p in pending}
        admitted = {p.candidate.id: self._conclude(p, e) for p, e in zip(pending, entrants, strict=True)}
        state.pending = []
        winners: list[tuple[Outcome, Candidate]] = []
        for outcome in outcomes:
            provisional = outcome.plan.parent
            if provisional < 0:
                real = admitted[provisional]
                if real is None:
                    state.stats.discarded += 1
                    grandparent = grandparents[provisional]
                    self.ctx.emit(Skipped(iteration=state.iteration, parent=grandparent, module=outcome.plan.module,
                                      minibatch=outcome.plan.minibatch, scores_before=outcome.parent_scores,
                                      reason=f"made from a child of candidate {grandparent} that was then "
                                             "stopped on val: dropped"))
                    continue
                outcome.plan.parent = real
            if self._settle(outcome):
                winners.append((outcome, state.candidate(outcome.plan.parent)))
        self._queue_for_race(winners)
        return None if pending or seeds or state.pending else stop

    def _queue_for_race(self, winners: list[tuple[Outcome, Candidate]]) -> None:
        """The children that beat their parent on the minibatch wait for their val race, the biggest
        gain first (it gets the next round's lookahead), as long as the budget can still race them
        all; a child beyond that (a spare proposal's, late in a run) is dropped and logged."""
        state, ctx = self.ctx.state, self.ctx
        def gain(item: tuple[int, tuple[Outcome, Candidate]]) -> tuple[float, int]:
            outcome = item[1][0]
            assert outcome.child_records is not None
            return (sum(outcome.parent_scores) - sum(r.score for r in outcome.child_records), item[0])

        for _, (outcome, parent) in sorted(enumerate(winners), key=gain):
            if ctx.refuse(StepCost(len(ctx.val) * (len(state.pending) + 1))) is None:
                self._make_pending(outcome, parent)
                continue
            state.stats.discarded += 1
            plan = outcome.plan
            reason = "beat its parent on the minibatch, but the budget left cannot score another child on val"
            # The log names the pool parent, as for every proposal made from a pending child.
            state.add_rejection(plan.parent, plan.module, outcome.text or "", reason)
            ctx.emit(Skipped(iteration=state.iteration, parent=pool_id(parent), module=plan.module,
                             minibatch=plan.minibatch, scores_before=outcome.parent_scores,
                             reason=f"{reason}: dropped"))

    def _proposal_event(self, outcome: Outcome, parent: Candidate | None = None) -> ProposalEvent:
        """The proposal's log entry; `parent` when it is no longer reachable by id (a superseded child)."""
        plan = outcome.plan
        logged = pool_id(parent) if parent else self._logged_parent(plan.parent)
        return ProposalEvent(
            iteration=self.ctx.state.iteration, parent=logged,
            chained=True if plan.parent < 0 else None, module=plan.module, minibatch=plan.minibatch,
            scores_before=outcome.parent_scores, rationale=outcome.rationale,
            prompt_tokens=outcome.reflection_tokens[0], completion_tokens=outcome.reflection_tokens[1],
            cost_usd=outcome.reflection_cost, template=outcome.text,
            scores_after=[r.score for r in outcome.child_records] if outcome.child_records is not None else None)

    def _logged_parent(self, cid: int) -> int:
        """The pool id a log entry names: a child still waiting for its race (chained on train) has none
        yet, so its proposals name its own pool parent and say `chained`."""
        return pool_id(self.ctx.state.candidate(cid))

    def _settle(self, outcome: Outcome) -> bool:
        """Record a proposal that ends here (skipped, invalid, not better); True when it goes on to val."""
        state, plan = self.ctx.state, outcome.plan
        if outcome.kind == "skipped":
            state.stats.skipped_perfect += 1
            self.ctx.emit(Skipped(iteration=state.iteration, parent=self._logged_parent(plan.parent),
                                  module=plan.module, minibatch=plan.minibatch, scores_before=outcome.parent_scores,
                                  reason="the parent is perfect on the whole minibatch"))
            return False
        state.stats.proposals += 1
        event = self._proposal_event(outcome)
        self._count_stale(outcome)
        if outcome.kind == "invalid":
            assert outcome.reason is not None
            if outcome.reason.startswith("repeat"):
                state.stats.repeats += 1
            else:
                state.stats.count_invalid(outcome.reason)
            state.add_rejection(plan.parent, plan.module, outcome.text or "", outcome.reason)
            event.reason = outcome.reason
            self.ctx.emit(event)
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
            self.ctx.emit(event)
            return False
        return True

    def _count_stale(self, outcome: Outcome) -> None:
        """A proposal that came back with nothing new (a copy of its parent, a repeat) adds to the parent's
        streak; one that was evaluated ends it. A broken reply (no block, bad Jinja) says nothing about
        whether the parent can still be improved, so it leaves the streak as it is."""
        parent = self.ctx.state.candidate(outcome.plan.parent)
        if outcome.kind == "evaluated":
            parent.stale = 0
        elif (outcome.reason or "").startswith(("unchanged", "repeat")):
            parent.stale += 1

    def _make_pending(self, outcome: Outcome, parent: Candidate | None = None) -> None:
        """A child that beat its parent on the minibatch waits for its val race, under a provisional id;
        its minibatch traces are kept, so a proposal from it does not pay for them again. A child of a
        pending child that it supersedes (a chain, see `_chain_round`) hangs off that one's pool parent
        and carries the chain's rationale."""
        state, plan = self.ctx.state, outcome.plan
        assert outcome.child_records is not None and outcome.text is not None
        parent = parent or state.candidate(plan.parent)
        rationale = outcome.rationale
        if parent.id < 0:
            rationale = f"{parent.rationale}\n\nThen, one step further on train: {rationale}".strip()
        child = Candidate(
            id=state.new_provisional_id(),
            texts={**parent.texts, plan.module: outcome.text},
            parents=list(parent.parents) if parent.id < 0 else [parent.id], origin="reflection", module=plan.module,
            iteration=state.iteration, rationale=rationale, minibatch_ids=list(plan.minibatch),
            minibatch_before=list(outcome.parent_scores), minibatch_after=[r.score for r in outcome.child_records],
            # The module after the one that made it: the parent's own pointer may have moved on since
            # (two proposals from one parent in a round), and the turns of a lineage must still alternate.
            next_module=(self.ctx.optimize.index(plan.module) + 1) % len(self.ctx.optimize),
        )
        state.train_memo[str(child.id)] = dict(zip(plan.minibatch, outcome.child_records, strict=True))
        event = self._proposal_event(outcome, parent).to_json()
        state.pending.append(Pending(child, list(outcome.child_records), event))

    def _drop_provisional(self, provisional: int) -> None:
        self.ctx.state.train_memo.pop(str(provisional), None)
        for key in [k for k in self.ctx.state.rejected if k.split(":", 1)[0] == str(provisional)]:
            del self.ctx.state.rejected[key]

    def _conclude(self, pending: Pending, entrant: Entrant) -> int | None:
        """A pending child after its val race: into the pool (its id is returned) or stopped part-way.
        What was kept under its provisional id moves to its pool id, or is dropped."""
        state, ctx, child = self.ctx.state, self.ctx, pending.candidate
        provisional, module = child.id, child.module or ""
        plan_parent = child.parents[0] if child.parents else -1
        memo = state.train_memo.pop(str(provisional), {})
        rejected = {key: state.rejected.pop(key) for key in [k for k in state.rejected
                                                              if k.split(":", 1)[0] == str(provisional)]}
        event = dict(pending.event)
        if not child.parents:  # the seed, scored in the first round
            child.id = len(state.candidates)
            ctx.admit(child, entrant.records)
            state.train_memo[str(child.id)] = memo
            for key, items in rejected.items():
                state.rejected[f"{child.id}:{key.split(':', 1)[1]}"] = items
            self.ctx.emit(ctx.val_event(child))
            return child.id
        if entrant.stopped_at is not None:
            size = len(ctx.val)
            reason = rejection_text("raced_out", child=entrant.child_sum, parent=entrant.parent_sum,
                                    scored=entrant.stopped_at, size=size)
            state.stats.count_stopped(entrant.stopped_at, size - entrant.stopped_at)
            state.add_rejection(plan_parent, module, child.texts[module], reason)
            self.ctx.emit(ValStopped(iteration=child.iteration, parent=plan_parent, module=module,
                                 scored=entrant.stopped_at, val_size=size, child_score=entrant.child_sum,
                                 parent_score=entrant.parent_sum, reason=reason))
            self.ctx.emit(Logged({**event, "accepted": False, "reason": reason}))
            return None
        state.stats.accepted += 1
        child.id = len(state.candidates)
        ctx.admit(child, entrant.records)
        state.train_memo[str(child.id)] = memo
        for key, items in rejected.items():
            state.rejected[f"{child.id}:{key.split(':', 1)[1]}"] = items
        if len(ctx.optimize) >= 2 and self.ctx.options.max_merges > 0:
            state.merges_due += 1
        self.ctx.emit(Logged({**event, "accepted": True, "child": child.id}))
        self.ctx.emit(ctx.val_event(child))
        return child.id
