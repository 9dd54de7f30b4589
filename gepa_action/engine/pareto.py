"""Parent selection: the per-instance Pareto front of the pool, and the greedy `best` rule to compare.

Why Pareto: a candidate that is worse on average may be the only one that solves some instances. If
we always mutated the top candidate, the strategy behind those wins would be lost. Sampling parents in
proportion to how many val instances they lead keeps every winning strategy alive while favouring the
broadly good ones.

Ties. Candidates with identical val scores on every instance are one point of the front: val cannot
tell them apart, so they share one place, held by the twin with the best *train evidence*. First the
longer ancestry: every accepted step beat its parent on a train minibatch, so a descendant that ties
its ancestor on val has shown more on train. Then the scores on the train instances it has been run on
(smoothed). Without this, a pool full of val-equal twins spends its proposals on the twin that knows
least. When the run picks its best candidate, a tie of the val mean goes to the shorter prompt first
(`EngineState.best`), then to the same evidence.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping

#: candidate id -> instance id -> score on val
Scores = Mapping[int, Mapping[str, float]]
#: candidate id -> train evidence, compared as a tuple (higher is better); missing means none
Evidence = Mapping[int, tuple[float, ...]]
#: (rng, scores, evidence, excluded ids) -> the parent's id, or None when every candidate it would pick from
#: is excluded
Selector = Callable[[random.Random, Scores, Evidence, Collection[int]], int | None]


def evidence_score(train_scores: list[float]) -> float:
    """Smoothed mean of a candidate's train scores: (sum + 0.5) / (n + 1), 0.5 with no evidence."""
    return (sum(train_scores) + 0.5) / (len(train_scores) + 1)


def rank_key(cid: int, scores: Scores, evidence: Evidence) -> tuple[float, tuple[float, ...], int]:
    """Best val mean first, then the best train evidence, then the oldest."""
    per = scores[cid]
    return (sum(per.values()) / len(per) if per else 0.0, tuple(evidence.get(cid, ())), -cid)


def collapse_twins(scores: Scores, evidence: Evidence) -> dict[int, Mapping[str, float]]:
    """One representative per distinct val score vector (the twin ranked best by `rank_key`)."""
    chosen: dict[tuple[tuple[str, float], ...], int] = {}
    for cid in sorted(scores):
        vector = tuple(sorted(scores[cid].items()))
        holder = chosen.get(vector)
        if holder is None or rank_key(cid, scores, evidence) > rank_key(holder, scores, evidence):
            chosen[vector] = cid
    return {cid: scores[cid] for cid in sorted(chosen.values())}


def instance_leaders(scores: Scores) -> dict[str, set[int]]:
    """For each val instance some candidate scores on, the candidates with the best score (ties included).

    An instance no candidate scores on at all says nothing about which strategy works, so it leads
    no one (otherwise every candidate, however bad, would "lead" every unsolved instance)."""
    instances = sorted({iid for per in scores.values() for iid in per})
    leaders: dict[str, set[int]] = {}
    for iid in instances:
        best = max(per.get(iid, 0.0) for per in scores.values())
        if best > 0:
            leaders[iid] = {cid for cid, per in scores.items() if per.get(iid, 0.0) == best}
    return leaders


def dominates(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """True when `a` is at least as good as `b` everywhere and strictly better somewhere."""
    keys = set(a) | set(b)
    at_least = all(a.get(k, 0.0) >= b.get(k, 0.0) for k in keys)
    return at_least and any(a.get(k, 0.0) > b.get(k, 0.0) for k in keys)


def pareto_front(scores: Scores, evidence: Evidence | None = None) -> dict[int, int]:
    """Candidates that lead at least one instance and are not strictly dominated by another leader,
    mapped to how many instances each leads; val-equal twins count once (see the module docstring).
    Removing a dominated leader never leaves an instance without a leader: whoever dominates it
    scores at least as well there."""
    evidence = evidence or {}
    distinct = collapse_twins(scores, evidence)
    leaders = instance_leaders(distinct)
    if not leaders:  # nothing solved anywhere yet: the best-ranked candidate (the seed, early on) is the front
        return {max(scores, key=lambda c: rank_key(c, scores, evidence)): 1}
    front = sorted({cid for group in leaders.values() for cid in group})
    kept = [c for c in front if not any(dominates(distinct[o], distinct[c]) for o in front if o != c)]
    return {c: sum(1 for group in leaders.values() if c in group) for c in kept}


def select_pareto(rng: random.Random, scores: Scores, evidence: Evidence | None = None,
                  exclude: Collection[int] = ()) -> int | None:
    """Sample a front member with probability proportional to the number of instances it leads. The
    front is that of the whole pool: an excluded member (see `EngineOptions.max_stale`) is skipped, not
    replaced by a candidate it dominates. None when every front member is excluded."""
    front = pareto_front(scores, evidence)
    ids = sorted(c for c in front if c not in exclude)
    if not ids:
        return None
    if len(ids) == 1:
        return ids[0]
    return rng.choices(ids, weights=[front[c] for c in ids], k=1)[0]


def select_best(rng: random.Random, scores: Scores, evidence: Evidence | None = None,
                exclude: Collection[int] = ()) -> int | None:
    """Always the best-ranked candidate (`rank_key`) that is not excluded: the greedy baseline."""
    evidence = evidence or {}
    ids = [cid for cid in scores if cid not in exclude]
    return max(ids, key=lambda cid: rank_key(cid, scores, evidence)) if ids else None


STRATEGIES: dict[str, Selector] = {"pareto": select_pareto, "best": select_best}
