"""How a child that beat its parent on the minibatch is scored on val: in stages, stopping a child
that has fallen behind its parent, so the budget goes to search rather than to re-scoring.

A minibatch of a few train instances lets many children through that are no better than their parent
on val (a careless rewrite that dropped a rule the minibatch did not test, a lucky draw of a noisy
model). Scoring each of them on all of val is what used to eat most of a run's calls. Instead val is
walked in a fixed order (a hash of the run seed and the instance id, so every child and every resume
sees the same order) in stages that double: 1/8 of val (at least 10 instances), 1/4, 1/2, all. After
each stage a child goes on only if, on the instances scored so far,

* it scores at least as well as its parent (whose val scores are all known), or
* it solves an instance that no pool member solves (it may still lead somewhere: the Pareto front).

A stopped child never joins the pool. So every candidate in the pool, and therefore the one the run
returns, is scored on all of val, and the final choice stays a full-val decision; the report says how
many children stopped after how many val instances. The test split plays no part in any of this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..runner import gather_all
from .context import Context
from .slots import Priority
from .state import TraceRecord

#: The first stage scores at least this many val instances (or all of val, when it is smaller).
MIN_FIRST_STAGE = 10


def race_order(val: list[str], seed: int) -> list[str]:
    """A fixed, seed-dependent order of the val ids, independent of the RNG's position."""
    return sorted(val, key=lambda iid: hashlib.sha256(f"{seed}:{iid}".encode()).hexdigest())


def stage_ends(size: int) -> list[int]:
    """How many val instances are scored after each stage: 1/8 (at least MIN_FIRST_STAGE), doubling."""
    end = max(MIN_FIRST_STAGE, -(-size // 8))
    ends = []
    while end < size:
        ends.append(end)
        end *= 2
    return [*ends, size]


@dataclass
class Entrant:
    """A child in the race: its texts, its parent, and what it has scored so far."""

    texts: dict[str, str]
    parent: int | None  # None for the seed, which has no parent to fall behind: it is scored on all of val
    records: dict[str, TraceRecord] = field(default_factory=dict)
    stopped_at: int | None = None  # val instances scored when it was stopped; None: scored on all of val
    child_sum: float = 0.0
    parent_sum: float = 0.0


def behind(ctx: Context, entrant: Entrant, scored: list[str]) -> bool:
    """True when the child should stop: below its parent on `scored` and solving nothing new there."""
    if entrant.parent is None:
        return False
    parent = ctx.state.candidate(entrant.parent)
    entrant.child_sum = sum(entrant.records[i].score for i in scored)
    entrant.parent_sum = sum(parent.val[i] for i in scored)
    if entrant.child_sum >= entrant.parent_sum:
        return False
    pool = ctx.state.candidates
    return not any(entrant.records[i].score > max(c.val[i] for c in pool) for i in scored)


async def score_on_val(ctx: Context, entrants: list[Entrant]) -> None:
    """Score the entrants on val together, stage by stage (all of val at once when racing is off)."""
    order = race_order(ctx.val, ctx.state.seed)
    ends = stage_ends(len(order)) if ctx.options.race else [len(order)]
    alive, start = list(entrants), 0
    for end in ends:
        ids = order[start:end]
        results = await gather_all(ctx.run(e.texts, ids, priority=Priority.FILL) for e in alive)
        for entrant, records in zip(alive, results, strict=True):
            entrant.records.update(zip(ids, records, strict=True))
        if end < len(order):
            for entrant in alive:
                if behind(ctx, entrant, order[:end]):
                    entrant.stopped_at = end
            alive = [e for e in alive if e.stopped_at is None]
        start = end
        if not alive:
            break
