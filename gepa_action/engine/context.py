"""What every piece of the engine works on: the task, the run state, the options and a few services.

The loop owns one `Context` and hands it to the pieces it calls (proposals, val scoring, merges). The
state is reached through the context, never kept aside, because a round cancelled at the deadline
puts the last checkpoint's state back in its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..evals import Instance
from ..task import TaskRunner, Trace, gather_all
from ..workspace import Task
from .budget import StepCost
from .events import Event, ValScored
from .metered import MeteredLM
from .reasons import Stop
from .slots import Priority, current_priority
from .state import Candidate, EngineState, TraceRecord

PERFECT = 1.0


@dataclass(frozen=True)
class EngineOptions:
    strategy: str = "pareto"
    minibatch: int = 10
    parallel: int = 1
    max_merges: int = 5
    merge_subsample: int = 5
    #: Rounds in a row whose proposals were all rejected unevaluated before the run gives up: a reflection
    #: model that never writes a valid template would otherwise be paid forever for nothing.
    max_invalid_rounds: int = 12
    #: Rounds in a row that evaluate nothing (parents perfect on the minibatch, proposals that repeat
    #: earlier ones) before the run gives up, in epochs over the train split: such rounds cost no metric
    #: call, but a solved train set would otherwise loop forever. At least `max_invalid_rounds` + 1 rounds,
    #: so a run whose proposals are all invalid ends with that (clearer) reason.
    max_perfect_epochs: int = 5
    #: Follow-up turns per proposal when the reply is unusable in a way the model can fix (a copy of the
    #: template, a variable added or dropped, no fenced block, broken Jinja): the reason goes back to the
    #: reflection model in the same conversation. Small models often get it right on the second try
    #: (measured on the bundled 1.5B), and a repair costs a reflection call, never a metric call.
    repairs: int = 1
    #: Score an accepted child on val in stages and stop when it falls behind its parent (see
    #: `evaluation`); False scores every accepted child on all of val at once.
    race: bool = True
    #: While a child is raced on val, already make the next proposal from it (see `loop`): a GEPA step is
    #: a chain of dependent calls, and this overlaps the longest two links. False waits for the race.
    lookahead: bool = True


def record_of(trace: Trace) -> TraceRecord:
    return TraceRecord(trace.score, trace.feedback, trace.output, [s.output for s in trace.steps], trace.truncated)


@dataclass
class Context:
    task: Task
    state: EngineState
    options: EngineOptions
    lm: MeteredLM
    emit: Callable[[Event], None]
    refuse: Callable[[StepCost], Stop | None]
    runner: TaskRunner = field(init=False)
    by_id: dict[str, Instance] = field(init=False)
    train: list[str] = field(init=False)
    val: list[str] = field(init=False)
    test: list[str] = field(init=False)
    optimize: list[str] = field(init=False)
    step_names: tuple[str, ...] = field(init=False)
    _inflight: dict[tuple[int, str], asyncio.Future[TraceRecord]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.runner = TaskRunner(self.task, self.lm)  # type: ignore[arg-type]  # a CompletionSource will do
        self.by_id = {inst.id: inst for inst in self.task.eval_set.instances}
        self.train = [i.id for i in self.task.eval_set.by_split("train")]
        self.val = [i.id for i in self.task.eval_set.by_split("val")]
        self.test = [i.id for i in self.task.eval_set.by_split("test")]
        self.optimize = list(self.task.optimize)
        self.step_names = tuple(s.name for s in self.task.steps)

    # -- running instances -------------------------------------------------------------------------------

    async def run(self, texts: dict[str, str], ids: Sequence[str], *, count: bool = True,
                  priority: Priority = Priority.CHAIN) -> list[TraceRecord]:
        """Run `texts` on the instances concurrently; every run is one metric call, counted as it ends
        (`count=False` for the held-out test scoring, which the search budget does not cover). `priority`
        says whether a step waits for these runs (see `slots`)."""
        async def one(iid: str) -> TraceRecord:
            current_priority.set(priority)  # each run is its own asyncio task: this stays local to it
            trace = await self.runner.run(texts, self.by_id[iid])
            if count:
                self.state.metric_calls += 1
            return record_of(trace)

        return await gather_all(one(i) for i in ids)

    async def parent_trace(self, cid: int, iid: str) -> TraceRecord:
        """A pool member's trace on a train instance: from the memo, from a run in flight, or run now."""
        memo = self.state.train_memo.setdefault(str(cid), {})
        if iid in memo:
            return memo[iid]
        key = (cid, iid)
        if key not in self._inflight:
            async def fetch() -> TraceRecord:
                record = (await self.run(self.state.candidate(cid).texts, [iid]))[0]
                memo[iid] = record
                return record

            self._inflight[key] = asyncio.ensure_future(fetch())
        try:
            return await self._inflight[key]
        finally:
            self._inflight.pop(key, None)

    # -- the pool ----------------------------------------------------------------------------------------

    def admit(self, candidate: Candidate, val_records: dict[str, TraceRecord]) -> None:
        """Put a candidate scored on all of val into the pool, and log it."""
        candidate.val = {iid: val_records[iid].score for iid in self.val}
        candidate.val_outputs = {iid: val_records[iid].output for iid in self.val}
        candidate.metric_calls = self.state.metric_calls
        if candidate.id == len(self.state.candidates):
            self.state.candidates.append(candidate)
        self.state.history.append({"metric_calls": self.state.metric_calls, "best_val": self.state.best().val_mean})

    def solves_train(self, cid: int) -> bool:
        memo = self.state.train_memo.get(str(cid), {})
        return all(i in memo and memo[i].score >= PERFECT for i in self.train)

    def val_event(self, candidate: Candidate) -> ValScored:
        return ValScored(candidate=candidate.id, origin=candidate.origin, val_score=candidate.val_mean,
                         metric_calls=self.state.metric_calls,
                         parents=candidate.parents if candidate.parents else None,
                         best_val=self.state.best().val_mean if candidate.parents else None)
