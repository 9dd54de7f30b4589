"""What a tuning run may spend, worked out before it spends anything (`gepa-tune tune --estimate`).

Why ranges and not one number: how far a run goes depends on answers nobody has seen yet. A seed that
is already perfect on val ends the run after scoring it; a run that keeps finding better prompts uses
its whole budget. So each figure is a range from the cheapest run the engine can make (the seed
scored on val and test, nothing proposed) to the dearest one the budget allows (every call it may
make, every prompt at its longest, every answer at max_tokens). A figure the budget does not bound
(no max_metric_calls and no max_cost_usd) has no upper end, and says so rather than guessing.

Tokens are counted as characters / 4 plus a few tokens per message (`CHARS_PER_TOKEN`,
`MESSAGE_TOKENS`): a stated approximation, close for English prose with OpenAI's tokenizers, that
needs no tokenizer download. Prompt sizes come from rendering the real templates on the eval set's
instances, so a long ticket in the data shows up in the estimate. A model with no entry in
`lm.prices` makes the dollar figure unknown (named), never $0.

The same module measures the prompt's own cost after a run (`prompt_cost`): input tokens per call of
the seed and the evolved templates on the test instances, and what the difference costs a month.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .config import CostConfig, LMConfig, Price
from .cost_model import PromptCost, Range, TaskEstimate
from .engine.options import EngineOptions
from .engine.reflect import SHOWN_CHARS, SHOWN_REJECTIONS, Example, build_messages
from .engine.state import Rejection, TraceRecord
from .evals import Instance
from .templates import TemplateRenderError, render
from .workspace import Task

#: The approximation every token count here uses: about four characters of English per token.
CHARS_PER_TOKEN = 4
#: Tokens a chat message costs beyond its text (role and separators), as OpenAI documents for its models.
MESSAGE_TOKENS = 4
#: A repair turn adds the model's reply and a short request to the conversation (see engine/proposal.py).
REPAIR_REQUEST_TOKENS = 200


def count_tokens(text: str) -> int:
    """Tokens of `text` by the stated approximation (characters / 4, rounded up)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """Prompt tokens of a chat request: every message's text plus its overhead."""
    return sum(count_tokens(m.get("content") or "") + MESSAGE_TOKENS for m in messages)


# -- per-call sizes ------------------------------------------------------------------------------------


def _standin(tokens: int) -> str:
    """A text of about `tokens` tokens, standing in for a model's answer that has not been seen."""
    return "x" * (tokens * CHARS_PER_TOKEN)


def call_tokens(task: Task, texts: Mapping[str, str], inst: Instance, *, earlier_output: str = "") -> int:
    """Input tokens of one metric call of `texts` on `inst`: every step's rendered messages, with
    `earlier_output` standing in for what an earlier step answered. A template that cannot render
    with the stand-in (it parses the earlier answer) counts only its overhead."""
    variables: dict[str, Any] = dict(inst.inputs)
    total = 0
    for step in task.steps:
        for _, module in step.messages:
            with contextlib.suppress(TemplateRenderError):
                total += count_tokens(render(texts[module], variables))
            total += MESSAGE_TOKENS
        if step.output:
            variables[step.output] = earlier_output
    return total


def _judge_tokens(task: Task, instances: Sequence[Instance], output: str) -> list[int]:
    messages = getattr(task.metric, "messages", None)
    if not getattr(task.metric, "uses_lm", False) or messages is None:
        return []
    return [message_tokens(messages(output, inst)) for inst in instances]


def _reflection_tokens(task: Task, instances: Sequence[Instance], size: int, *, high: bool,
                       lm: LMConfig) -> int:
    """Input tokens of the dearest (or cheapest) reflection prompt over the optimizable modules: the
    minibatch's longest (shortest) instances, answers and feedback at their longest (empty), and, for
    the high end, the template and the rejected proposals grown to the reflection's max_tokens."""
    by_size = sorted(instances, key=lambda i: len(str(i.inputs)), reverse=high)[:size]
    answer = _standin(lm.max_tokens)[:SHOWN_CHARS] if high else ""
    feedback = "x" * SHOWN_CHARS if high else ""
    trace = TraceRecord(score=0.0, feedback=feedback, output=answer, step_outputs=[answer] * len(task.steps))
    examples = [Example(inst, trace, tuple(s.name for s in task.steps)) for inst in by_size]
    grown = _standin(lm.reflection_max_tokens)
    rejected = [Rejection(grown, "x" * 200)] * SHOWN_REJECTIONS if high else []
    sizes = []
    for module in task.optimize:
        texts = task.seed_candidate()
        if high:
            texts = {**texts, module: grown}
        sizes.append(message_tokens(build_messages(task, module, texts, examples, rejected)))
    return max(sizes) if high else min(sizes)


# -- the estimate ---------------------------------------------------------------------------------------


def estimate_task(task: Task, lm: LMConfig, options: EngineOptions, *, max_metric_calls: int | None,
                  max_minutes: float | None) -> TaskEstimate:
    """The range of what tuning `task` with these options and limits may call and cost; calls no model."""
    train, val, test = (task.eval_set.by_split(s) for s in ("train", "val", "test"))
    n_val, n_test = len(val), len(test)
    minibatch = max(1, min(options.minibatch, len(train)))
    seed = task.seed_candidate()
    steps = len(task.steps)
    reflection_model = lm.reflection_model or task.model
    judge_model = getattr(task.metric, "model", None) if getattr(task.metric, "uses_lm", False) else None
    judge_max = int(getattr(task.metric, "max_tokens", lm.max_tokens) or lm.max_tokens)
    notes = [f"tokens ~ characters/{CHARS_PER_TOKEN} + {MESSAGE_TOKENS} per message"]

    instances = task.eval_set.instances
    seed_sizes = [call_tokens(task, seed, inst) for inst in instances]
    call_low = min(seed_sizes, default=0)
    # Proposals may grow every optimizable template up to what the reflection model can write.
    grown = {**seed, **{m: seed[m] + _standin(lm.reflection_max_tokens) for m in task.optimize}}
    call_high = max((call_tokens(task, grown, inst, earlier_output=_standin(lm.max_tokens)) for inst in instances),
                    default=0)
    judge_low = min(_judge_tokens(task, instances, ""), default=0)
    judge_high = max(_judge_tokens(task, instances, _standin(lm.max_tokens * steps)), default=0)
    test_seed = [call_tokens(task, seed, inst) for inst in test]
    seed_per_call = sum(test_seed) / len(test_seed) if test_seed else (
        sum(seed_sizes) / len(seed_sizes) if seed_sizes else 0.0)

    prices = lm.prices
    models = [task.model, reflection_model, *([judge_model] if judge_model else [])]
    unpriced = sorted({m for m in models if m not in prices})
    cheapest_call = _cost(prices, task.model, call_low, steps) + (
        _cost(prices, judge_model, judge_low, 1) if judge_model else 0.0)

    too_small = max_metric_calls is not None and max_metric_calls < 2 * n_val + 2
    bounds = []
    calls_high: float | None = None
    if max_metric_calls is not None:
        calls_high = max_metric_calls
        bounds.append(f"max_metric_calls {max_metric_calls}")
    if task.budget.max_cost_usd is not None:
        bounds.append(f"max_cost_usd {task.budget.max_cost_usd:g}")
        if not unpriced and cheapest_call > 0:
            by_cost = math.floor(task.budget.max_cost_usd / cheapest_call)
            calls_high = by_cost if calls_high is None else min(calls_high, by_cost)
    if max_minutes is not None:
        bounds.append(f"max_minutes {max_minutes:g}")
        notes.append(f"the run also ends after {max_minutes:g} minutes, which may come first")
    if too_small:
        notes.append(f"the budget of {max_metric_calls} metric calls is below the {2 * n_val + 2} a run needs: "
                     "it stops before spending anything")
        zero = Range(0, 0)
        return TaskEstimate(zero, zero, zero, zero, zero, None if unpriced else zero, unpriced,
                            bounds[0] if bounds else "nothing", seed_per_call, notes)
    if calls_high is None:
        notes.append("no max_metric_calls or max_cost_usd: nothing bounds the calls but the stop rules")
    else:
        calls_high = max(calls_high, n_val)

    metric = Range(n_val, calls_high)
    test_calls = Range(n_test, 2 * n_test)
    repairs = 1 + options.repairs
    if calls_high is None:
        reflections = Range(0, None)
    else:
        # every evaluated proposal runs its child on at least one minibatch; a stretch of proposals
        # that never reach evaluation is cut off by the invalid-round stop rule
        evaluated = math.ceil((calls_high - n_val) / minibatch)
        reflections = Range(0, (evaluated + options.max_invalid_rounds * options.parallel) * repairs)
        notes.append(f"reflections: up to {repairs} per proposal (one repair turn), and at most "
                     f"{options.max_invalid_rounds} rounds in a row of proposals that fail validation")
    refl_in_low = _reflection_tokens(task, train or list(instances), minibatch, high=False, lm=lm)
    refl_in_high = (_reflection_tokens(task, train or list(instances), minibatch, high=True, lm=lm)
                    + lm.reflection_max_tokens + REPAIR_REQUEST_TOKENS)
    refl_out_low = min((count_tokens(seed[m]) for m in task.optimize), default=1)

    def total(calls: float | None, per_call: int, per_judge: int, refl: float | None, per_refl: int) -> float | None:
        if calls is None or refl is None:
            return None
        judge = per_judge if judge_model else 0
        return calls * (per_call + judge) + refl * per_refl

    low_calls = metric.low + test_calls.low
    high_calls = None if metric.high is None else metric.high + (test_calls.high or 0)
    input_tokens = Range(total(low_calls, call_low, judge_low, reflections.low, refl_in_low) or 0,
                         total(high_calls, call_high, judge_high, reflections.high, refl_in_high))
    output_tokens = Range(total(low_calls, steps, 1, reflections.low, refl_out_low) or 0,
                          total(high_calls, steps * lm.max_tokens, judge_max, reflections.high,
                                lm.reflection_max_tokens))
    cost: Range | None = None
    if not unpriced:
        def dollars(calls: float | None, refl: float | None, high: bool) -> float | None:
            if calls is None or refl is None:
                return None
            task_in, task_out = (call_high, steps * lm.max_tokens) if high else (call_low, steps)
            spend = calls * _cost2(prices[task.model], task_in, task_out)
            if judge_model:
                judge_in, judge_out = (judge_high, judge_max) if high else (judge_low, 1)
                spend += calls * _cost2(prices[judge_model], judge_in, judge_out)
            refl_in, refl_out = (refl_in_high, lm.reflection_max_tokens) if high else (refl_in_low, refl_out_low)
            return spend + refl * _cost2(prices[reflection_model], refl_in, refl_out)

        low_usd = dollars(low_calls, reflections.low, False) or 0.0
        high_usd = dollars(high_calls, reflections.high, True)
        if task.budget.max_cost_usd is not None:
            high_usd = task.budget.max_cost_usd if high_usd is None else min(high_usd, task.budget.max_cost_usd)
            low_usd = min(low_usd, high_usd)
        cost = Range(low_usd, high_usd)
    else:
        notes.append(f"no price in lm.prices for {', '.join(unpriced)}: dollars unknown")
    return TaskEstimate(metric, test_calls, reflections, input_tokens, output_tokens, cost, unpriced,
                        ", ".join(bounds) or "nothing (stop rules only)", round(seed_per_call, 1), notes)


def _cost2(price: Price, prompt: float, completion: float) -> float:
    return (prompt * price.input + completion * price.output) / 1e6


def _cost(prices: Mapping[str, Price], model: str | None, prompt: float, completion: float) -> float:
    price = prices.get(model) if model else None
    return 0.0 if price is None else _cost2(price, prompt, completion)


# -- the prompt's own cost ----------------------------------------------------------------------------


def prompt_cost(task: Task, seed: Mapping[str, str], best: Mapping[str, str], prices: Mapping[str, Price],
                cost: CostConfig) -> PromptCost | None:
    """Mean input tokens per task call of `seed` and `best` over the test instances (val when there is no
    test split), and the monthly dollar difference at `cost.calls_per_month` with the task model's price."""
    instances = task.eval_set.by_split("test") or task.eval_set.by_split("val")
    if not instances:
        return None
    seed_tokens = sum(call_tokens(task, seed, i) for i in instances) / len(instances)
    best_tokens = sum(call_tokens(task, best, i) for i in instances) / len(instances)
    price = prices.get(task.model)
    monthly = None
    if cost.calls_per_month is not None and price is not None:
        monthly = (best_tokens - seed_tokens) * price.input / 1e6 * cost.calls_per_month
    return PromptCost(model=task.model, instances=len(instances), seed_tokens=round(seed_tokens, 1),
                      best_tokens=round(best_tokens, 1), calls_per_month=cost.calls_per_month,
                      monthly_usd_delta=None if monthly is None else round(monthly, 6))
