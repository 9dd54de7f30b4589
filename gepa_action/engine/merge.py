"""Merge: combine the modules two lineages improved separately into one candidate.

When a pipeline has several optimizable modules, one lineage may have fixed the extraction step while
another fixed the answer step. A merge takes, per module, whichever side changed it relative to their
common ancestor (the better lineage's text when both did). It is first scored on a small val subsample
where the two parents disagree (cheap), and only when it is not worse than either parent there is it
scored on the rest of val.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .budget import StepCost
from .context import Context
from .events import MergeEvent
from .pareto import pareto_front
from .state import Candidate, EngineState


@dataclass(frozen=True)
class MergePlan:
    first: int  # the parent with the better val mean
    second: int
    ancestor: int
    texts: dict[str, str]


def merged_texts(first: Candidate, second: Candidate, ancestor: Candidate, modules: Sequence[str]) -> dict[str, str]:
    """Per module: the side that changed it; when both did, `first` (the better lineage)."""
    texts = dict(first.texts)
    for module in modules:
        base = ancestor.texts[module]
        if first.texts[module] == base:
            texts[module] = second.texts[module]
    return texts


def _useful(first: Candidate, second: Candidate, ancestor: Candidate, modules: Sequence[str]) -> bool:
    """Worth trying only when each side brings a change the other lacks."""
    def changed(c: Candidate) -> set[str]:
        return {m for m in modules if c.texts[m] != ancestor.texts[m]}

    return bool(changed(first) - changed(second)) and bool(changed(second) - changed(first))


def plan_merge(state: EngineState, front: Sequence[int], modules: Sequence[str],
               rng: random.Random) -> MergePlan | None:
    """Pick two front members from different lineages with a common ancestor no better than either.

    Pairs already tried are skipped; among the rest one is drawn with `rng`. The ancestor is the most
    recent common one. Returns None when no pair qualifies.
    """
    tried = {tuple(sorted(p)) for p in state.merge_pairs_tried}
    options: list[MergePlan] = []
    ids = sorted(front)
    for i, a in enumerate(ids):
        anc_a = state.ancestors(a)
        for b in ids[i + 1:]:
            if (a, b) in tried:
                continue
            anc_b = state.ancestors(b)
            if a in anc_b or b in anc_a:
                continue
            ca, cb = state.candidate(a), state.candidate(b)
            common = [x for x in anc_a & anc_b
                      if state.candidate(x).val_mean <= min(ca.val_mean, cb.val_mean)]
            if not common:
                continue
            ancestor = state.candidate(max(common))
            first, second = (ca, cb) if (ca.val_mean, -ca.id) >= (cb.val_mean, -cb.id) else (cb, ca)
            if not _useful(first, second, ancestor, modules):
                continue
            texts = merged_texts(first, second, ancestor, modules)
            if state.find_texts(texts) is not None:
                continue
            options.append(MergePlan(first.id, second.id, ancestor.id, texts))
    return rng.choice(options) if options else None


def merge_subsample(first: Candidate, second: Candidate, size: int, rng: random.Random) -> list[str]:
    """Val ids where the parents disagree, alternating the side that wins, topped up with others."""
    ids = sorted(first.val)
    first_wins = [i for i in ids if first.val[i] > second.val.get(i, 0.0)]
    second_wins = [i for i in ids if second.val.get(i, 0.0) > first.val[i]]
    rest = [i for i in ids if i not in first_wins and i not in second_wins]
    for group in (first_wins, second_wins, rest):
        rng.shuffle(group)
    chosen: list[str] = []
    while len(chosen) < size and (first_wins or second_wins):
        for group in (first_wins, second_wins):
            if group and len(chosen) < size:
                chosen.append(group.pop())
    chosen += rest[: size - len(chosen)]
    return chosen


async def merge_round(ctx: Context, rng: random.Random) -> bool:
    """Try one merge; False when no pair qualifies or it does not fit (a proposal round follows)."""
    state = ctx.state
    front = list(pareto_front(state.val_scores(), state.evidence()))
    plan = plan_merge(state, front, ctx.optimize, rng)
    if plan is None or ctx.refuse(StepCost(len(ctx.val) * (1 + len(state.pending)))) is not None:
        state.merges_due = 0
        return False
    state.merges_due -= 1
    state.merge_pairs_tried.append(sorted([plan.first, plan.second]))
    first, second = state.candidate(plan.first), state.candidate(plan.second)
    subsample = merge_subsample(first, second, ctx.options.merge_subsample, rng)
    sub_records = await ctx.run(plan.texts, subsample)
    merged_sum = sum(r.score for r in sub_records)
    first_sum = sum(first.val[i] for i in subsample)
    second_sum = sum(second.val[i] for i in subsample)
    event = MergeEvent(iteration=state.iteration, parents=[plan.first, plan.second], ancestor=plan.ancestor,
                       subsample=subsample, scores={"merged": merged_sum, "first": first_sum, "second": second_sum},
                       accepted=False)
    if merged_sum < max(first_sum, second_sum):
        event.reason = f"worse than a parent on the subsample: {merged_sum:g} vs {max(first_sum, second_sum):g}"
        ctx.emit(event)
        return True
    rest = [i for i in ctx.val if i not in subsample]
    rest_records = await ctx.run(plan.texts, rest)
    child = Candidate(id=len(state.candidates), texts=plan.texts, parents=[plan.first, plan.second],
                      origin="merge", iteration=state.iteration,
                      rationale=f"merge of candidates {plan.first} and {plan.second} (common ancestor {plan.ancestor})",
                      next_module=first.next_module)
    state.stats.merges_accepted += 1
    ctx.admit(child, dict(zip(subsample, sub_records, strict=True)) | dict(zip(rest, rest_records, strict=True)))
    event.accepted, event.child, event.val_score = True, child.id, child.val_mean
    ctx.emit(event)
    return True
