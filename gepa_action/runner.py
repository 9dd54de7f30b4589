"""Run one candidate (a text per prompt module) on one instance, producing a trace.

The trace keeps every rendered message and every step's output, because the reflection model needs
to see exactly what the task model saw and said to diagnose a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .evals import Instance
from .guidance import rules as guidance_rules
from .templates import TemplateRenderError, render

if TYPE_CHECKING:
    from .lm.client import LMClient
    from .workspace import Task

T = TypeVar("T")

TRUNCATION_NOTE = "The output was cut off at max_tokens before it finished."


@dataclass
class StepTrace:
    step: str
    messages: list[dict[str, str]]
    output: str
    finish_reason: str
    truncated: bool
    cached: bool


@dataclass
class Trace:
    """What happened when a candidate ran on one instance, and how the metric judged it."""

    instance_id: str
    split: str
    output: str
    score: float
    feedback: str
    truncated: bool = False
    steps: list[StepTrace] = field(default_factory=list)


class TaskRunner:
    """Runs a task's steps through the LM client and scores the final output with the task's metric."""

    def __init__(self, task: Task, lm: LMClient) -> None:
        self.task = task
        self.lm = lm

    def messages_for(self, candidate: Mapping[str, str], step_index: int, variables: dict[str, Any],
                     instance: Instance) -> list[dict[str, str]]:
        """Render one step's messages; a missing variable names the instance, the module and the variable."""
        step = self.task.steps[step_index]
        messages = []
        for role, module in step.messages:
            try:
                content = render(candidate[module], variables)
            except TemplateRenderError as exc:
                problem = f"missing variable '{exc.variable}'" if exc.kind == "missing" and exc.variable else str(exc)
                raise self.task.eval_set.error_at(instance, f"{module} cannot be rendered: {problem}",
                                                  hint=exc.hint) from None
            messages.append({"role": role, "content": content})
        return messages

    async def run(self, candidate: Mapping[str, str], instance: Instance, *, sample: int = 0) -> Trace:
        variables: dict[str, Any] = dict(instance.inputs)
        steps: list[StepTrace] = []
        output = ""
        for index, step in enumerate(self.task.steps):
            messages = self.messages_for(candidate, index, variables, instance)
            completion = await self.lm.complete(self.task.model, messages, sample=sample)
            output = completion.text
            steps.append(StepTrace(step.name, messages, output, completion.finish_reason,
                                   completion.truncated, completion.cached))
            if step.output:
                variables[step.output] = output
        result = await self.task.metric.score(output, instance, self.lm)
        score, feedback = result.score, result.feedback
        if self.task.guidance.rules:  # in a thread: a slow reviewer regex must not stall the other calls
            score, feedback = await asyncio.to_thread(guidance_rules.apply, self.task.guidance.items, output,
                                                      score, feedback)
        truncated = any(s.truncated for s in steps)
        feedback = f"{feedback} {TRUNCATION_NOTE}" if truncated else feedback
        return Trace(instance.id, instance.split, output, score, feedback, truncated, steps)

    async def run_many(self, candidate: Mapping[str, str], instances: Iterable[Instance],
                       progress: Callable[[int], None] | None = None) -> list[Trace]:
        """Run all instances concurrently (the LM client bounds the concurrency), in input order."""
        done = 0

        async def one(inst: Instance) -> Trace:
            nonlocal done
            trace = await self.run(candidate, inst)
            done += 1
            if progress is not None:
                progress(done)
            return trace

        return await gather_all(one(inst) for inst in instances)


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Like asyncio.gather, but when one fails the others are cancelled, not left running (and paying)."""
    jobs = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*jobs))
    except BaseException:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        raise


def mean(scores: Iterable[float]) -> float | None:
    values = list(scores)
    return sum(values) / len(values) if values else None
