"""The engine's one seam to the models: a Protocol for "something that completes chat messages", and
`MeteredLM`, which sees the shared client through one task and counts what that task spent.

Engine pieces (the runner of instances, the proposer, the merge) take a `CompletionSource`, never the
client class, so a test can hand them anything with the same `complete` and `config`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..config import LMConfig
from ..lm.client import Completion, LMClient, Usage
from .slots import SlotGate


class CompletionSource(Protocol):
    config: LMConfig

    async def complete(self, model: str, messages: list[dict[str, Any]], **options: Any) -> Completion: ...


class MeteredLM:
    """The shared LM client, seen through one task: every answer is also counted in the task's usage,
    so a task's cost budget covers its own task-model, judge and reflection calls.

    `nominal` counts the tokens of every answer, cached or not, per purpose and model, as integers.
    Budget decisions price these counts, so they depend neither on what happened to be in the cache (a
    resumed run replays its interrupted round from the cache; a warm re-run replays everything) nor on
    the order concurrent answers arrived in: the same run decides the same way every time. `usage`
    keeps the real spend for the report.

    Every request waits for one of the engine's own slots first (`slots.SlotGate`, as many as the
    client's concurrency), so the calls a step waits for go before val scoring that only fills time.
    """

    def __init__(self, lm: LMClient | CompletionSource, usage: Usage, nominal: dict[str, list[int]]) -> None:
        self.lm = lm
        self.usage = usage
        self.config = lm.config
        self.nominal = nominal
        self.gate = SlotGate(lm.config.concurrency)

    async def complete(self, model: str, messages: list[dict[str, Any]], *, purpose: str = "metric",
                       **options: Any) -> Completion:
        async with self.gate.slot():
            completion = await self.lm.complete(model, messages, **options)
        for kind in completion.retries:  # the flakiness of the endpoint shows in this task's report
            self.usage.record_retry(model, kind)
        if completion.cached:
            self.usage.record_cached(model)
        else:
            self.usage.record_answer(model, completion.prompt_tokens, completion.completion_tokens)
        counts = self.nominal.setdefault(f"{purpose}|{model}", [0, 0])
        counts[0] += completion.prompt_tokens
        counts[1] += completion.completion_tokens
        return completion

    def nominal_cost(self, purpose: str | None = None) -> float:
        total = 0.0
        for key, (prompt, completion) in sorted(self.nominal.items()):
            kind, model = key.split("|", 1)
            price = self.usage.prices.get(model)
            if price is not None and (purpose is None or kind == purpose):
                total += (prompt * price.input + completion * price.output) / 1e6
        return total
