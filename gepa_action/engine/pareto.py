"""Parent selection: the per-instance Pareto front of the pool, and the greedy `best` rule to compare.

Why Pareto: a candidate that is worse on average may be the only one that solves some instances. If
we always mutated the top candidate, the strategy behind those wins would be lost. Sampling parents in
proportion to how many val instances they lead keeps every winning strategy alive while favouring the
broadly good ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

#: candidate id -> instance id -> score on val
Scores = Mapping[int, Mapping[str, float]]
Selector = Callable[[random.Random, Scores], int]


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


def pareto_front(scores: Scores) -> dict[int, int]:
    """Candidates that lead at least one instance and are not strictly dominated by another leader,
    mapped to how many instances each leads. Removing a dominated leader never leaves an instance
    without a leader: whoever dominates it scores at least as well there."""
    leaders = instance_leaders(scores)
    if not leaders:  # nothing solved anywhere yet: the best mean (the seed, early on) is the front
        return {select_best(random.Random(0), scores): 1}
    front = sorted({cid for group in leaders.values() for cid in group})
    kept = [c for c in front if not any(dominates(scores[o], scores[c]) for o in front if o != c)]
    return {c: sum(1 for group in leaders.values() if c in group) for c in kept}


def select_pareto(rng: random.Random, scores: Scores) -> int:
    """Sample a front member with probability proportional to the number of instances it leads."""
    front = pareto_front(scores)
    ids = sorted(front)
    if len(ids) == 1:
        return ids[0]
    return rng.choices(ids, weights=[front[c] for c in ids], k=1)[0]


def select_best(rng: random.Random, scores: Scores) -> int:
    """Always the candidate with the best mean (oldest on a tie): the greedy baseline."""
    def mean(cid: int) -> float:
        per = scores[cid]
        return sum(per.values()) / len(per) if per else 0.0

    return max(sorted(scores), key=lambda cid: (mean(cid), -cid))


STRATEGIES: dict[str, Selector] = {"pareto": select_pareto, "best": select_best}
