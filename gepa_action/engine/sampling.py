"""Which train instances a proposal is shown: the next ones of a shuffled pass over the train split.

The pass order and position live in the state, so a resumed run continues the same pass.
"""

from __future__ import annotations

import random

from .context import PERFECT, Context


def next_minibatch(ctx: Context, rng: random.Random, parent: int) -> list[str]:
    """The next train ids of the pass, passing over the instances the parent is already known to solve
    (its traces are kept). A minibatch of known successes can teach the reflection model nothing and
    would be skipped anyway; this way each proposal sees as many failures as there are. Empty when the
    parent is known to solve every train instance."""
    state, size = ctx.state, min(ctx.options.minibatch, len(ctx.train))
    memo = state.train_memo.get(str(parent), {})
    batch: list[str] = []
    for _ in range(len(ctx.train)):
        if state.epoch_pos >= len(state.epoch):
            state.epoch = list(ctx.train)
            rng.shuffle(state.epoch)
            state.epoch_pos = 0
        iid = state.epoch[state.epoch_pos]
        state.epoch_pos += 1
        known = memo.get(iid)
        if iid not in batch and (known is None or known.score < PERFECT):
            batch.append(iid)
            if len(batch) == size:
                break
    return batch


def known_failures(ctx: Context, parent: int, size: int) -> list[str]:
    """Train instances the parent is known to fail, in pass order: they cost nothing to show again, so
    near the end of the budget a step on those may still fit where one with unseen instances does not."""
    memo = ctx.state.train_memo.get(str(parent), {})
    return [i for i in ctx.state.epoch if i in memo and memo[i].score < PERFECT][:size]
