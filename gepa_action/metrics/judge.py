"""llm_judge: a model grades the output against a rubric; its reasoning becomes the feedback."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RunError
from ..evals import Instance
from ..yamlsrc import Section

if TYPE_CHECKING:
    from ..lm.client import LMClient
from .base import BuildContext, Metric, MetricResult, _fmt, _show

# -------------------------------------------------------------------------------------- llm_judge


JUDGE_SYSTEM = (
    "You grade the output of an AI system against a rubric. Be strict and concrete: say exactly what "
    "the output gets right and what it gets wrong with respect to the rubric. Reply with only a JSON "
    'object: {"reasoning": "<your assessment>", "score": <a number from 0 to 1>}.'
)


def _judge_prompt(rubric: str, instance: Instance, output: str) -> str:
    inputs = "\n".join(
        f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in instance.inputs.items()
    ) or "(none)"
    parts = [f"## Rubric\n{rubric}", f"## Inputs given to the system\n{inputs}"]
    if instance.expected is not None:
        expected = instance.expected
        if not isinstance(expected, str):
            expected = json.dumps(expected, ensure_ascii=False, default=str)
        parts.append(f"## Expected answer (reference)\n{expected}")
    parts.append(f"## Output to grade\n<output>\n{output}\n</output>")
    parts.append('Grade the output against the rubric. Reply with JSON only: '
                 '{"reasoning": "...", "score": <number from 0 to 1>}')
    return "\n\n".join(parts)


_SCORE_LINE = re.compile(r"(?im)^[^\n]*?\bscore\b\**\s*[:=]\s*\**\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))[^\n]*$")


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and 0 <= value <= 1:
        return float(value)
    return None


def parse_judge_reply(text: str) -> tuple[float | None, str]:
    """(score, reasoning) from a judge's reply; score None when no score in [0, 1] can be found.

    Accepts a JSON object with "score" anywhere in the reply (in fences or prose), else a
    "score: x" line. Scores outside [0, 1] (say 8 on a 0-10 scale) count as unparseable.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "score" in value:
            score = _as_score(value["score"])
            if score is None:
                return None, ""
            reasoning = next((value[k] for k in ("reasoning", "explanation", "feedback", "reason")
                              if isinstance(value.get(k), str) and value[k].strip()), "")
            return score, reasoning.strip() or "(the judge gave no reasoning)"
    match = _SCORE_LINE.search(text)
    if match:
        score = _as_score(match.group(1))
        if score is None:
            return None, ""
        reasoning = (text[: match.start()] + text[match.end():]).strip()
        return score, reasoning or "(the judge gave no reasoning)"
    return None, ""


@dataclass(frozen=True)
class LlmJudgeMetric(Metric):
    """A judge model grades the output against a rubric (temperature 0) and explains its grade.

    The judge sees the rubric, the instance's inputs, its `expected` answer if any, and the output,
    and replies {"reasoning", "score"}; the feedback is its reasoning. A reply without a usable
    score in [0, 1] scores 0.
    """

    name = "llm_judge"
    uses_lm = True
    needs_expected = False
    required = ("rubric",)
    options = {
        "rubric": "string, required: what a good output looks like; the judge grades against it",
        "model": "string, default: lm.judge_model (else lm.task_model): the model that grades",
        "max_tokens": "integer, default 400: limit for the judge's reply",
        "pass_threshold": "number in [0, 1], optional: if set, the score becomes 1 when the judge's "
                          "score reaches it, else 0",
    }

    rubric: str = ""
    model: str = ""
    max_tokens: int = 400
    pass_threshold: float | None = None

    @classmethod
    def from_config(cls, section: Section, ctx: BuildContext) -> Metric:
        rubric = section.get("rubric", str, required=True)
        if not rubric.strip():
            raise section.error("rubric", "the rubric is empty", hint="describe what a good output looks like")
        model = section.get("model", str) or ctx.default_judge_model
        if not model:
            raise section.error(None, "no judge model is configured for the llm_judge metric",
                                hint="add 'model: <name>' here, or set judge_model in the lm section")
        return cls(rubric=rubric.strip(), model=model,
                   max_tokens=section.number("max_tokens", 400, minimum=1, integer=True),
                   pass_threshold=section.number("pass_threshold", None, minimum=0, maximum=1))

    def messages(self, output: str, instance: Instance) -> list[dict[str, str]]:
        return [{"role": "system", "content": JUDGE_SYSTEM},
                {"role": "user", "content": _judge_prompt(self.rubric, instance, output)}]

    async def evaluate(self, output: str, instance: Instance, lm: LMClient | None) -> MetricResult:
        if lm is None:
            raise RunError(f"the llm_judge metric needs a model client to score instance '{instance.id}'")
        completion = await lm.complete(self.model, self.messages(output, instance),
                                       temperature=0, max_tokens=self.max_tokens)
        score, reasoning = parse_judge_reply(completion.text)
        if score is None:
            feedback = f"the judge's reply could not be parsed as a score from 0 to 1: {_show(completion.text, 160)}"
            if completion.truncated:
                feedback += f" (the reply was cut off at max_tokens={self.max_tokens}; raise max_tokens)"
            return MetricResult(0.0, feedback)
        if len(reasoning) > 2000:
            reasoning = reasoning[:2000] + "..."
        if self.pass_threshold is None:
            return MetricResult(score, f"judge score {_fmt(score)}: {reasoning}")
        passed = score >= self.pass_threshold
        verdict = "passed" if passed else "failed"
        return MetricResult(1.0 if passed else 0.0, f"judge score {_fmt(score)} ({verdict}, pass threshold "
                                                    f"{_fmt(self.pass_threshold)}): {reasoning}")
