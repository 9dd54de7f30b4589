"""How sure are we that the tuned prompt is better? A paired bootstrap on per-instance score deltas.

The seed and the best prompt are scored on the *same* test instances, so the honest question is about the
per-instance differences, not about two independent means: pairing removes the (large) variance between
easy and hard instances. The bootstrap makes no assumption about the shape of the scores, which are often
0/1 and far from normal. Pure Python and seeded, so a report re-rendered later shows the same interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile interval for the mean of `after - before`.

    `low > 0` means a gain that chance alone rarely produces at this confidence; `high < 0` a real loss;
    an interval that contains 0 means the data cannot tell the two prompts apart.
    """

    mean_delta: float
    low: float
    high: float
    n: int
    resamples: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely on one side of 0 (a gain or a loss, see `low`/`high`)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap_ci(before: Sequence[float], after: Sequence[float], *, resamples: int = 10000,
                        confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Bootstrap interval for the mean per-instance delta `after[i] - before[i]`.

    Each resample draws `n` deltas with replacement and takes their mean; the interval is the
    `(1 - confidence) / 2` and `(1 + confidence) / 2` percentiles of those means. A private
    `random.Random(seed)` makes the result a pure function of its arguments (the global RNG is untouched).

    Speed: one `rng.choices` call plus `sum` per resample keeps the inner loop in C; the cost grows with
    n * resamples. (Drawing from the n*n pair sums halves the draws but was no faster at n=300: the big
    list defeats the cache.)
    With a single instance, or when every delta is the same, there is nothing to resample and
    `low == high == mean_delta`.
    """
    if len(before) != len(after):
        raise ValueError(f"paired scores need equal lengths, got {len(before)} before and {len(after)} after")
    n = len(before)
    if n == 0:
        raise ValueError("no scores: a confidence interval needs at least one paired instance")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    deltas = [float(a) - float(b) for b, a in zip(before, after, strict=True)]
    if not all(math.isfinite(d) for d in deltas):
        raise ValueError("scores must be finite numbers (found NaN or infinity)")

    centre = math.fsum(deltas) / n
    if n == 1 or all(d == deltas[0] for d in deltas):
        return BootstrapCI(centre, centre, centre, n, resamples, confidence)

    draw = random.Random(seed).choices
    # Sorting sums and dividing only the two picked ones saves a division per resample.
    sums = sorted(sum(draw(deltas, k=n)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = _percentile(sums, tail) / n
    high = _percentile(sums, 1 - tail) / n
    return BootstrapCI(centre, low, high, n, resamples, confidence)


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the two nearest order statistics (numpy's default method)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    return ordered[below] + (ordered[above] - ordered[below]) * weight
