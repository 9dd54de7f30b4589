"""The drift watch's findings as typed data: what `gepa-tune watch --json` prints and `drift.json` holds.

A watch compares the committed prompts' scores now with their record in gepa.lock. Its result is a
separate model from the run report (`model.py`): nothing was tuned, there is no seed or best candidate,
only "then" (the lock) and "now" per split, and the instances that got worse. The renderers (the issue
body, the job summary, the terminal) read these objects; `to_dict` is the JSON, and `schema_version`
says which shape a file has, as in report.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .model import EvalSetRef, Models

SCHEMA_VERSION = 1

#: The states of a task in a watch.
DRIFTED, STEADY, SKIPPED = "drifted", "steady", "skipped"


@dataclass(frozen=True)
class SplitScore:
    """One split's mean in gepa.lock (`before`) and now, over `count` instances; None when not measured."""

    split: str
    before: float | None
    now: float | None
    count: int

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.now is None else self.now - self.before


@dataclass(frozen=True)
class Regression:
    """An instance that scores lower now than its recorded score; `output` and `feedback` are untrusted."""

    split: str
    id: str
    before: float
    now: float
    output: str
    feedback: str


@dataclass(frozen=True)
class TaskDrift:
    """One task's verdict. `note` says why a task was skipped, or what is missing from its record."""

    task: str
    status: str  # DRIFTED, STEADY or SKIPPED
    tolerance: float
    splits: tuple[SplitScore, ...] = ()
    regressions: tuple[Regression, ...] = ()
    models: Models | None = None
    eval_set: EvalSetRef | None = None
    lock_written_at: str = ""
    lock_written_by: str = ""
    note: str = ""

    @property
    def drifted(self) -> bool:
        return self.status == DRIFTED

    def split(self, name: str) -> SplitScore | None:
        return next((s for s in self.splits if s.split == name), None)


@dataclass(frozen=True)
class DriftReport:
    """A whole watch: when it ran, every task's verdict, and what the eval calls cost."""

    checked_at: str
    tasks: tuple[TaskDrift, ...]
    usage: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    @property
    def drifted(self) -> tuple[TaskDrift, ...]:
        return tuple(t for t in self.tasks if t.drifted)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
