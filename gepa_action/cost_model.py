"""The typed figures of a cost estimate and of a prompt's own cost, with nothing else in sight.

They are part of report.json (see report/model.py), which the Action, the hooks and `gepa-tune report`
read without loading a workspace; keeping the types apart from the code that computes them
(`estimate.py`, which renders templates and builds reflection prompts) keeps that reading cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """From `low` to `high`; `high` None means nothing in the budget bounds it. `likely` is the figure
    of the likely run inside the range (None when it cannot be told)."""

    low: float
    high: float | None
    likely: float | None = None

    def contains(self, value: float) -> bool:
        return self.low <= value and (self.high is None or value <= self.high)

    @property
    def midpoint(self) -> float | None:
        return None if self.high is None else (self.low + self.high) / 2


@dataclass(frozen=True)
class TaskEstimate:
    """One task's estimate, as report.json records it beside the actual figures.

    `metric_calls` are the calls the budget counts (val, minibatches); `test_calls` the held-out test
    scoring at the end; `input_tokens`, `output_tokens` and `cost_usd` cover every model call of the
    run (task, judge and reflection models). `cost_usd` is None when a model has no price (`unpriced`).
    `bound` says what ends the run at the latest; `notes` the assumptions a reader should know."""

    metric_calls: Range
    test_calls: Range
    reflection_calls: Range
    input_tokens: Range
    output_tokens: Range
    cost_usd: Range | None
    unpriced: list[str]
    bound: str
    seed_tokens_per_call: float
    notes: list[str]


@dataclass(frozen=True)
class PromptCost:
    """The prompt's own cost: mean input tokens of one task call with the seed and with the evolved
    templates, over the test instances' rendered prompts, and (with `cost.calls_per_month` and a price
    for the task model) what the difference comes to in dollars a month."""

    model: str
    instances: int
    seed_tokens: float
    best_tokens: float
    calls_per_month: int | None
    monthly_usd_delta: float | None

    @property
    def ratio(self) -> float:
        return self.best_tokens / self.seed_tokens if self.seed_tokens else math.inf
