"""The audit log's records, typed: what the engine tells events.jsonl, one class per kind.

The engine builds these; `to_json` turns one into the flat dict that the run writes, with the `event`
name first and optional facts left out when they do not apply. Keys are part of the documented log
format (README, "Runs, checkpoints, resume"), so they only grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .reasons import Stop


@dataclass
class Event:
    kind: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                data[f.name] = value
        return data


@dataclass
class ValScored(Event):
    """A candidate joined the pool, scored on all of val."""

    kind: ClassVar[str] = "val"
    candidate: int
    origin: str
    val_score: float
    metric_calls: int
    parents: list[int] | None = None
    best_val: float | None = None


@dataclass
class ProposalEvent(Event):
    """One reflective proposal and what became of it (accepted or why not)."""

    kind: ClassVar[str] = "proposal"
    iteration: int
    parent: int
    module: str
    minibatch: list[str]
    scores_before: list[float]
    rationale: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    accepted: bool = False
    reason: str | None = None
    scores_after: list[float] | None = None
    child: int | None = None
    template: str | None = None
    chained: bool | None = None  # made from a child not yet in the pool (chained on train, see --chain)


@dataclass
class Skipped(Event):
    kind: ClassVar[str] = "skip"
    iteration: int
    parent: int
    module: str
    reason: str
    minibatch: list[str] | None = None
    scores_before: list[float] | None = None


@dataclass
class ValStopped(Event):
    """A child accepted on the minibatch whose val scoring stopped part-way (it fell behind its parent)."""

    kind: ClassVar[str] = "val_stopped"
    iteration: int
    parent: int
    module: str
    scored: int
    val_size: int
    child_score: float
    parent_score: float
    reason: str


@dataclass
class MergeEvent(Event):
    kind: ClassVar[str] = "merge"
    iteration: int
    parents: list[int]
    ancestor: int
    subsample: list[str]
    scores: dict[str, float]
    accepted: bool
    reason: str | None = None
    child: int | None = None
    val_score: float | None = None


@dataclass
class ErrorEvent(Event):
    kind: ClassVar[str] = "error"
    stage: str
    message: str
    parent: int | None = None
    module: str | None = None


@dataclass
class StopEvent(Event):
    kind: ClassVar[str] = "stop"
    stop: Stop = field(repr=False)
    metric_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "reason": self.stop.describe(), "code": self.stop.reason.value,
                "metric_calls": self.metric_calls}


@dataclass
class TestScored(Event):
    kind: ClassVar[str] = "test"
    best: int
    test_calls: int


@dataclass
class Logged(Event):
    """An entry built earlier and completed now: a proposal whose verdict waited for its val race."""

    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)
