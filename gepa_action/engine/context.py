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
from ..runner import TaskRunner, Trace, gather_all
from ..workspace import Task
from .budget import StepCost
from .events import Event, ValScored
from .metered import MeteredLM
from .options import EngineOptions
from .reasons import Stop
from .slots import Priority, current_priority
from .state import Candidate, EngineState, TraceRecord

PERFECT = 1.0


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
