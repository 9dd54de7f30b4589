"""The budget guard: before any step spends anything, it must fit in what is left.

Metric calls are exact: a step knows how many instances it will run, so the run ends with calls used
<= the limit, always. Cost cannot be known before the server answers, so a step's cost is estimated:
the average metric call and reflection call so far times a safety margin, or, before anything was
seen, a bound from the price table, a generous prompt size and max_tokens. Wall time is checked before
each step, and the stop file lets a person (or a CI step) end a run cleanly from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..config import LMConfig
from ..workspace import Task
from .reasons import Stop, StopReason

#: Estimates from what was seen are multiplied by this before comparing with what is left.
COST_MARGIN = 1.5
#: Prompt tokens assumed for one call before any answer told us better.
PRIOR_PROMPT_TOKENS = 2000
PRIOR_REFLECTION_PROMPT_TOKENS = 8000


@dataclass(frozen=True)
class Limits:
    max_metric_calls: int | None
    max_cost_usd: float | None
    max_minutes: float | None
    stop_file: Path | None = None


@dataclass(frozen=True)
class StepCost:
    """What a step may spend: metric calls (task runs) and reflection-model calls."""

    metric_calls: int
    reflections: int = 0


class BudgetGuard:
    """Answers "does this step fit?" from the limits and what the run has spent so far."""

    def __init__(self, limits: Limits, task: Task, lm_config: LMConfig, reflection_model: str) -> None:
        self.limits = limits
        prices = lm_config.prices
        task_price = prices.get(task.model)
        steps = len(task.steps)
        self.prior_call = (steps * (PRIOR_PROMPT_TOKENS * task_price.input + lm_config.max_tokens * task_price.output)
                           / 1e6 if task_price else 0.0)
        reflect_price = prices.get(reflection_model)
        self.prior_reflection = ((PRIOR_REFLECTION_PROMPT_TOKENS * reflect_price.input
                                  + lm_config.reflection_max_tokens * reflect_price.output) / 1e6
                                 if reflect_price else 0.0)
        self.per_call = self.prior_call
        self.per_reflection = self.prior_reflection

    def learn(self, *, metric_cost: float, metric_calls: int, reflection_cost: float, reflections: int) -> None:
        """Estimate the next calls from the average so far (with a margin) once there is an average.

        Totals, not per-batch measurements, so the estimate does not depend on how concurrent answers
        interleaved: the same run decides the same way every time."""
        if metric_calls > 0 and metric_cost > 0:
            self.per_call = metric_cost / metric_calls * COST_MARGIN
        if reflections > 0 and reflection_cost > 0:
            self.per_reflection = reflection_cost / reflections * COST_MARGIN

    def estimate(self, step: StepCost) -> float:
        return step.metric_calls * self.per_call + step.reflections * self.per_reflection

    def check(self, step: StepCost, *, calls_used: int, cost_used: float, wall_used: float,
              reserve: StepCost | None = None) -> Stop | None:
        """Why `step` may not start (None when it fits). `reserve` is spending promised for later
        (scoring the test split at the end) that the cost budget must still cover."""
        limits = self.limits
        if limits.stop_file is not None and limits.stop_file.exists():
            return Stop(StopReason.STOP_FILE, {"path": str(limits.stop_file)})
        if limits.max_metric_calls is not None:
            left = limits.max_metric_calls - calls_used
            if step.metric_calls > left:
                return Stop(StopReason.CALL_BUDGET,
                            {"need": step.metric_calls, "left": left, "limit": limits.max_metric_calls})
        if limits.max_cost_usd is not None:
            later = self.estimate(reserve) if reserve else 0.0
            need = self.estimate(step)
            left = limits.max_cost_usd - cost_used - later
            if need > left:
                return Stop(StopReason.COST_BUDGET, {"need": need, "left": max(left, 0.0),
                                                     "limit": limits.max_cost_usd, "reserve": later})
        if limits.max_minutes is not None and wall_used >= limits.max_minutes * 60:
            return Stop(StopReason.TIME_BUDGET, {"minutes": limits.max_minutes})
        return None

    def refusal(self, step: StepCost, *, calls_used: int, cost_used: float, wall_used: float,
                reserve: StepCost | None = None) -> str | None:
        """`check`, as the sentence a person reads."""
        stop = self.check(step, calls_used=calls_used, cost_used=cost_used, wall_used=wall_used, reserve=reserve)
        return None if stop is None else stop.describe()

    def seconds_left(self, wall_used: float) -> float:
        if self.limits.max_minutes is None:
            return math.inf
        return self.limits.max_minutes * 60 - wall_used

