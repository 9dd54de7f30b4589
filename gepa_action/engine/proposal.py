"""One reflective proposal: show the parent's minibatch to the reflection model, hold the conversation
(with a repair turn when the reply is unusable in a way the model can fix), check the proposal, and run
the child on the same minibatch. What happens to the child next (val, the pool) is the loop's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import RunError
from ..lm import Completion, LMError
from ..task import gather_all
from .context import PERFECT, Context
from .events import ErrorEvent
from .reasons import rejection_text
from .reflect import Example, build_messages, check_template, read_proposal, repair_request, repairable
from .state import TraceRecord

#: Temperature of a repair turn (when the config's is lower). Cached like any answer (sample 0).
REPAIR_TEMPERATURE = 0.7


class ReflectionFailed(RunError):
    """The reflection model could not be reached or kept failing; the run stops with a report."""


@dataclass
class Plan:
    """One proposal to make this round: which parent, which module, which train instances."""

    parent: int
    module: str
    minibatch: list[str]


@dataclass
class Outcome:
    plan: Plan
    parent_scores: list[float]
    kind: Literal["skipped", "invalid", "evaluated"]
    text: str | None = None
    rationale: str = ""
    reason: str | None = None
    child_records: list[TraceRecord] | None = None
    reflection_tokens: tuple[int, int] = (0, 0)
    reflection_cost: float = 0.0

    @property
    def improved(self) -> bool:
        """The child beat its parent on the minibatch (sum of scores)."""
        return self.child_records is not None and sum(r.score for r in self.child_records) > sum(self.parent_scores)


class Proposer:
    """Makes proposals for one task with one reflection model."""

    def __init__(self, ctx: Context, reflection_model: str) -> None:
        self.ctx = ctx
        self.reflection_model = reflection_model

    @property
    def reflections_per_step(self) -> int:
        return 1 + self.ctx.options.repairs

    async def propose(self, plan: Plan) -> Outcome:
        ctx = self.ctx
        parent = ctx.state.candidate(plan.parent)
        records = await gather_all(ctx.parent_trace(parent.id, i) for i in plan.minibatch)
        parent_scores = [r.score for r in records]
        if all(s >= PERFECT for s in parent_scores):
            return Outcome(plan, parent_scores, "skipped")
        examples = [Example(ctx.by_id[i], r, ctx.step_names) for i, r in zip(plan.minibatch, records, strict=True)]
        messages = build_messages(ctx.task, plan.module, parent.texts, examples,
                                  ctx.state.rejections(parent.id, plan.module))
        tokens, cost = (0, 0), 0.0
        rationale = ""  # the first diagnosis written; a repair turn's bare block does not erase it
        for turn in range(1 + ctx.options.repairs):
            # A repair turn samples (temperature REPAIR_TEMPERATURE at least): at temperature 0 a small model
            # told "you repeated yourself" tends to repeat itself again, word for word.
            temperature = None if turn == 0 else max(ctx.lm.config.temperature, REPAIR_TEMPERATURE)
            reply = await self._reflect(parent.id, plan.module, messages, temperature)
            price = ctx.lm.usage.prices.get(self.reflection_model)
            if not reply.cached:
                tokens = (tokens[0] + reply.prompt_tokens, tokens[1] + reply.completion_tokens)
                if price is not None:
                    cost += (reply.prompt_tokens * price.input + reply.completion_tokens * price.output) / 1e6
            proposal = read_proposal(reply.text, truncated=reply.truncated, parent_text=parent.texts[plan.module],
                                     original=ctx.task.templates[plan.module].source)
            rationale = rationale or proposal.rationale
            reason = proposal.reason
            if reason is None:
                assert proposal.text is not None
                reason = (check_template(ctx.task, plan.module, proposal.text, examples)
                          or self.repeat(plan, proposal.text))
            if reason is None or turn == ctx.options.repairs or not repairable(reason):
                break
            messages = [*messages, {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": repair_request(reason)}]
        base = {"plan": plan, "parent_scores": parent_scores, "rationale": proposal.rationale or rationale,
                "reflection_tokens": tokens, "reflection_cost": cost}
        if reason is not None:
            return Outcome(kind="invalid", text=proposal.text or reply.text, reason=reason, **base)
        texts = {**parent.texts, plan.module: proposal.text}
        child_records = await ctx.run(texts, plan.minibatch)
        return Outcome(kind="evaluated", text=proposal.text, child_records=child_records, **base)

    async def _reflect(self, parent: int, module: str, messages: list[dict[str, str]],
                       temperature: float | None = None) -> Completion:
        """One reflection call; an unreachable reflection model ends the run (ReflectionFailed)."""
        ctx = self.ctx
        try:
            reply = await ctx.lm.complete(self.reflection_model, messages, purpose="reflection",
                                          max_tokens=ctx.lm.config.reflection_max_tokens, temperature=temperature)
        except LMError as exc:
            message = f"reflection model {self.reflection_model}: {exc}"
            ctx.emit(ErrorEvent(stage="reflection", message=message, parent=parent, module=module))
            raise ReflectionFailed(message) from None
        ctx.state.reflection_calls += 1
        return reply

    def repeat(self, plan: Plan, text: str) -> str | None:
        """Why a proposal repeats something already known (None when it is new)."""
        state = self.ctx.state
        parent = state.candidate(plan.parent)
        if text.strip() == parent.texts[plan.module].strip():
            return rejection_text("unchanged")
        if any(r.text.strip() == text.strip() for r in state.rejections(parent.id, plan.module)):
            return rejection_text("repeat")
        twin = state.find_texts({**parent.texts, plan.module: text})
        if twin is not None:
            return rejection_text("repeat", twin=twin.id)
        return None
