"""The counters a run keeps about its proposals, as one typed record (checkpointed with the state).

Streaks live here too: a resumed run must count on from where the original stood, or it would stop
at a different round than an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class RunStats:
    proposals: int = 0
    accepted: int = 0  # beat the parent on the minibatch (then raced on val, see `raced_out`)
    rejected_invalid: dict[str, int] = field(default_factory=dict)  # parse/template reason kind -> count
    rejected_not_better: int = 0
    skipped_perfect: int = 0
    repeats: int = 0
    merges_accepted: int = 0
    raced_out: int = 0  # accepted on the minibatch, stopped part-way through val
    val_stopped_at: dict[str, int] = field(default_factory=dict)  # val instances scored -> children stopped there
    val_calls_saved: int = 0  # val calls that stopping children early did not spend
    chained: int = 0  # pending children superseded by their own child before any val (see --chain)
    discarded: int = 0  # made from a pending child then stopped on val, or beyond what the budget can race
    idle_streak: int = 0
    invalid_streak: int = 0

    @property
    def evaluated(self) -> int:
        """Proposals whose child was run on its minibatch (whatever came of it)."""
        return self.accepted + self.rejected_not_better + self.raced_out

    def count_invalid(self, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        self.rejected_invalid[kind] = self.rejected_invalid.get(kind, 0) + 1

    def count_stopped(self, scored: int, saved: int) -> None:
        self.raced_out += 1
        self.val_stopped_at[str(scored)] = self.val_stopped_at.get(str(scored), 0) + 1
        self.val_calls_saved += saved

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunStats:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
