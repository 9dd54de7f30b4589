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
from dataclasses import dataclass
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


def _reflection_tokens(task: Task, instances: Sequence[Instance], size: int, lm: LMConfig, case: str) -> int:
    """Input tokens of one reflection prompt, the largest over the optimizable modules, for `case`:

    * "low": the minibatch's shortest instances, empty answers and feedback, the seed templates;
    * "likely": instances of middling size answered with their expected answer, feedback that quotes
      the expected answer and the instance's notes (what the built-in metrics add), the seed templates;
    * "high": the longest instances, answers and feedback at their longest, every template grown to
      what the reflection model can write, and the rejected proposals the prompt shows."""
    ordered = sorted(instances, key=lambda i: len(str(i.inputs)), reverse=case == "high")
    if case == "likely":
        middle = max(0, len(ordered) // 2 - size // 2)
        ordered = ordered[middle:]
    examples = []
    for inst in ordered[:size]:
        if case == "high":
            answer, feedback = _standin(lm.max_tokens)[:SHOWN_CHARS], "x" * SHOWN_CHARS
        elif case == "likely":
            answer = "" if inst.expected is None else str(inst.expected)
            feedback = f"expected {answer!r}, got something else. {inst.notes or ''}"
        else:
            answer, feedback = "", ""
        trace = TraceRecord(score=0.0, feedback=feedback, output=answer, step_outputs=[answer] * len(task.steps))
        examples.append(Example(inst, trace, tuple(s.name for s in task.steps)))
    grown = _standin(lm.reflection_max_tokens)
    rejected = [Rejection(grown, "x" * 200)] * SHOWN_REJECTIONS if case == "high" else []
    texts = task.seed_candidate()
    if case == "high":  # every optimizable template as long as a reflection reply can make it
        texts = {**texts, **{m: grown for m in task.optimize}}
    return max((message_tokens(build_messages(task, module, texts, examples, rejected)) for module in task.optimize),
               default=0)


@dataclass(frozen=True)
class _Scenario:
    """One way the run may go: how many calls of each kind, and what one call of each kind sends and gets."""

    calls: float | None  # metric calls (search) plus test calls; None: unbounded
    reflections: float | None
    task_in: float
    task_out: float
    judge_in: float
    judge_out: float
    refl_in: float
    refl_out: float

    def tokens(self) -> tuple[float | None, float | None]:
        if self.calls is None or self.reflections is None:
            return None, None
        return (self.calls * (self.task_in + self.judge_in) + self.reflections * self.refl_in,
                self.calls * (self.task_out + self.judge_out) + self.reflections * self.refl_out)

    def dollars(self, task: Price, judge: Price | None, reflection: Price) -> float | None:
        if self.calls is None or self.reflections is None:
            return None
        spend = self.calls * _cost2(task, self.task_in, self.task_out)
        if judge is not None:
            spend += self.calls * _cost2(judge, self.judge_in, self.judge_out)
        return spend + self.reflections * _cost2(reflection, self.refl_in, self.refl_out)


# -- the estimate ---------------------------------------------------------------------------------------


def estimate_task(task: Task, lm: LMConfig, options: EngineOptions, *, max_metric_calls: int | None,
                  max_minutes: float | None) -> TaskEstimate:
    """The range of what tuning `task` with these options and limits may call and cost, and the likely
    figure inside it (a run that uses its budget, answers as long as the expected ones); calls no model."""
    train, val, test = (task.eval_set.by_split(s) for s in ("train", "val", "test"))
    instances = list(task.eval_set.instances)
    n_val, n_test = len(val), len(test)
    minibatch = max(1, min(options.minibatch, len(train)))
    seed = task.seed_candidate()
    steps = len(task.steps)
    reflection_model = lm.reflection_model or task.model
    judge_model = getattr(task.metric, "model", None) if getattr(task.metric, "uses_lm", False) else None
    judge_max = int(getattr(task.metric, "max_tokens", lm.max_tokens) or lm.max_tokens)
    notes = [f"tokens ~ characters/{CHARS_PER_TOKEN} + {MESSAGE_TOKENS} per message",
             "likely: the run uses its budget, answers are as long as the expected ones"]

    # what one task call sends: the seed's prompts at their shortest and on average; at the most, every
    # optimizable template grown by what the reflection model can write, earlier steps' answers at max_tokens
    seed_sizes = [call_tokens(task, seed, inst) for inst in instances]
    grown = {**seed, **{m: seed[m] + _standin(lm.reflection_max_tokens) for m in task.optimize}}
    call_high = max((call_tokens(task, grown, inst, earlier_output=_standin(lm.max_tokens)) for inst in instances),
                    default=0)
    expected = [count_tokens(str(i.expected)) for i in instances if i.expected is not None]
    answer_likely = min(lm.max_tokens, sum(expected) / len(expected)) if expected else lm.max_tokens / 2
    judge_sizes = _judge_tokens(task, instances, "x" * int(answer_likely * CHARS_PER_TOKEN))
    test_seed = [call_tokens(task, seed, inst) for inst in test]
    seed_per_call = sum(test_seed) / len(test_seed) if test_seed else (
        sum(seed_sizes) / len(seed_sizes) if seed_sizes else 0.0)
    pool = train or instances
    template_out = max((count_tokens(seed[m]) for m in task.optimize), default=1)

    prices = lm.prices
    models = [task.model, reflection_model, *([judge_model] if judge_model else [])]
    unpriced = sorted({m for m in models if m not in prices})
    judge_low = min(_judge_tokens(task, instances, ""), default=0)
    cheapest_call = _cost(prices, task.model, min(seed_sizes, default=0), steps) + (
        _cost(prices, judge_model, judge_low, 1) if judge_model else 0.0)

    bounds = []
    calls_high: float | None = max_metric_calls
    if max_metric_calls is not None:
        bounds.append(f"max_metric_calls {max_metric_calls}")
    if task.budget.max_cost_usd is not None:
        bounds.append(f"max_cost_usd {task.budget.max_cost_usd:g}")
        if not unpriced and cheapest_call > 0:
            by_cost = math.floor(task.budget.max_cost_usd / cheapest_call)
            calls_high = by_cost if calls_high is None else min(calls_high, by_cost)
    if max_minutes is not None:
        bounds.append(f"max_minutes {max_minutes:g}")
        notes.append(f"the run also ends after {max_minutes:g} minutes, which may come first")
    bound = ", ".join(bounds) or "nothing (stop rules only)"
    if not train or not val:
        notes.append(f"the {'train' if not train else 'val'} split is empty: the run stops with an error before "
                     "spending anything")
    elif max_metric_calls is not None and max_metric_calls < 2 * n_val + 2:
        notes.append(f"the budget of {max_metric_calls} metric calls is below the {2 * n_val + 2} a run needs: "
                     "it stops before spending anything")
    if not train or not val or max_metric_calls is not None and max_metric_calls < 2 * n_val + 2:
        zero = Range(0, 0, 0)
        return TaskEstimate(zero, zero, zero, zero, zero, None if unpriced else zero, unpriced, bound,
                            round(seed_per_call, 1), notes)
    if calls_high is None:
        notes.append("no max_metric_calls or max_cost_usd: nothing bounds the calls but the stop rules")
    else:
        calls_high = max(calls_high, n_val)

    repairs = 1 + options.repairs
    refl_high: float | None = None
    refl_likely: float | None = None
    if calls_high is not None:
        # every evaluated proposal runs its child on at least one minibatch; a stretch of proposals that never
        # reach evaluation is cut off by the invalid-round stop rule. Likely: a proposal costs the parent's and
        # the child's minibatch and, for a child that wins it, a race on val (half of val on average).
        evaluated = math.ceil((calls_high - n_val) / minibatch)
        refl_high = (evaluated + options.max_invalid_rounds * options.parallel) * repairs
        refl_likely = math.ceil((calls_high - n_val) / (2 * minibatch + n_val / 2))
        notes.append(f"reflections: at most {repairs} per proposal (one repair turn), and at most "
                     f"{options.max_invalid_rounds} rounds in a row of proposals that fail validation")
    # a pipeline's later steps read what the earlier ones answered: as long as an expected answer, likely
    likely_sizes = ([call_tokens(task, seed, inst, earlier_output=_standin(math.ceil(answer_likely)))
                     for inst in instances] if steps > 1 else seed_sizes)
    mean_call = sum(likely_sizes) / len(likely_sizes) if likely_sizes else 0.0
    low = _Scenario(calls=n_val + n_test, reflections=0, task_in=min(seed_sizes, default=0), task_out=steps,
                    judge_in=judge_low if judge_model else 0, judge_out=1 if judge_model else 0,
                    refl_in=0, refl_out=0)
    likely = _Scenario(
        calls=None if calls_high is None else calls_high + 2 * n_test, reflections=refl_likely, task_in=mean_call,
        task_out=steps * answer_likely, judge_in=sum(judge_sizes) / len(judge_sizes) if judge_sizes else 0,
        judge_out=min(judge_max, 100) if judge_model else 0,
        refl_in=_reflection_tokens(task, pool, minibatch, lm, "likely"), refl_out=template_out * 1.5 + 60)
    high = _Scenario(
        calls=None if calls_high is None else calls_high + 2 * n_test, reflections=refl_high, task_in=call_high,
        task_out=steps * lm.max_tokens,
        judge_in=max(_judge_tokens(task, instances, _standin(lm.max_tokens * steps)), default=0),
        judge_out=judge_max if judge_model else 0,
        refl_in=_reflection_tokens(task, pool, minibatch, lm, "high") + lm.reflection_max_tokens
        + REPAIR_REQUEST_TOKENS, refl_out=lm.reflection_max_tokens)

    (in_low, out_low), (in_likely, out_likely), (in_high, out_high) = low.tokens(), likely.tokens(), high.tokens()
    cost: Range | None = None
    if unpriced:
        notes.append(f"no price in lm.prices for {', '.join(unpriced)}: dollars unknown")
    else:
        judge_price = prices[judge_model] if judge_model else None
        usd = [s.dollars(prices[task.model], judge_price, prices[reflection_model]) for s in (low, likely, high)]
        if task.budget.max_cost_usd is not None:  # the budget guard stops the run before it would pass this
            usd = [task.budget.max_cost_usd if u is None else min(u, task.budget.max_cost_usd) for u in usd]
        cost = Range(usd[0] or 0.0, usd[2], usd[1])
    return TaskEstimate(
        metric_calls=Range(n_val, calls_high, calls_high),
        test_calls=Range(n_test, 2 * n_test, 2 * n_test),
        reflection_calls=Range(0, refl_high, refl_likely),
        input_tokens=Range(in_low or 0, in_high, in_likely),
        output_tokens=Range(out_low or 0, out_high, out_likely),
        cost_usd=cost, unpriced=unpriced, bound=bound, seed_tokens_per_call=round(seed_per_call, 1), notes=notes)


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
