"""Why a run stopped and why a proposal was turned away, as values; the prose lives in `describe`.

Code decides on the enum (the CLI's exit code, the bench, the tests) and never on wording, so the
sentences a person reads can change without changing what the program does. The facts a sentence
needs (calls left, the limit, a streak length) travel with the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


class StopReason(str, Enum):
    CALL_BUDGET = "call_budget"
    COST_BUDGET = "cost_budget"
    TIME_BUDGET = "time_budget"
    DEADLINE_IN_ROUND = "deadline_in_round"
    STOP_FILE = "stop_file"
    PERFECT_VAL = "perfect_val"
    TRAIN_SOLVED = "train_solved"
    NOTHING_EVALUATED = "nothing_evaluated"  # every proposal of the run was rejected before evaluation
    INVALID_STREAK = "invalid_streak"
    IDLE_STREAK = "idle_streak"
    FRONT_STALE = "front_stale"  # every Pareto front member's last proposals came back with nothing new
    LEGACY = "legacy"  # a checkpoint written before stop reasons were values: its sentence is kept as is


Fact = int | float | str


@dataclass(frozen=True)
class Stop:
    """A stop reason with the facts its sentence needs."""

    reason: StopReason
    facts: Mapping[str, Fact] = field(default_factory=dict)

    def describe(self) -> str:
        return describe(self)

    def to_json(self) -> dict[str, object]:
        return {"reason": self.reason.value, "facts": dict(self.facts)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Stop:
        facts = data.get("facts") or {}
        assert isinstance(facts, dict)
        return cls(StopReason(str(data["reason"])), facts)


def describe(stop: Stop) -> str:
    """The sentence a report shows for `stop`."""
    f = stop.facts
    match stop.reason:
        case StopReason.CALL_BUDGET:
            return f"metric-call budget: the next step needs {f['need']} calls, {f['left']} of {f['limit']} are left"
        case StopReason.COST_BUDGET:
            return (f"cost budget: the next step may cost up to ${float(f['need']):.4f}, ${float(f['left']):.4f} of "
                    f"${float(f['limit']):g} is left after reserving ${float(f['reserve']):.4f} for the test split")
        case StopReason.TIME_BUDGET:
            return f"time budget: {float(f['minutes']):g} minutes used"
        case StopReason.DEADLINE_IN_ROUND:
            return f"time budget: {float(f['minutes']):g} minutes reached during a round, which was cancelled"
        case StopReason.STOP_FILE:
            return f"stop file {f['path']} found"
        case StopReason.PERFECT_VAL:
            return "the best candidate is perfect on every val instance"
        case StopReason.TRAIN_SOLVED:
            return "every candidate on the Pareto front solves every train instance: nothing left to learn"
        case StopReason.NOTHING_EVALUATED:
            return "every proposal was rejected before evaluation"
        case StopReason.INVALID_STREAK:
            return f"the last {f['rounds']} rounds of proposals were all rejected before evaluation"
        case StopReason.IDLE_STREAK:
            return (f"{f['rounds']} rounds in a row found nothing to evaluate: the parents were perfect on their "
                    "minibatches or the proposals repeated earlier ones")
        case StopReason.FRONT_STALE:
            return (f"the last {f['proposals']} proposals from every candidate on the Pareto front came back with "
                    "nothing new (their own template or an earlier text): the reflection model has nothing left "
                    "to change")
        case StopReason.LEGACY:
            return str(f.get("text", ""))


#: Why the engine itself turned a proposal away (the reflection module's parse and template checks
#: carry their own `kind: detail` reasons).
Rejection = Literal["unchanged", "repeat", "not_better", "raced_out"]


def rejection_text(kind: Rejection, **facts: Fact) -> str:
    """The sentence logged, reported and shown to the reflection model for an engine rejection."""
    match kind:
        case "unchanged":
            return "unchanged: the proposal is the parent's template"
        case "repeat":
            if "twin" in facts:
                return f"repeat: identical to candidate {facts['twin']}"
            return "repeat: the same text was already rejected for this parent and module"
        case "not_better":
            return f"not better on the minibatch: {facts['after']:g} vs the parent's {facts['before']:g}"
        case "raced_out":
            return (f"not better on val so far: {facts['child']:g} vs the parent's {facts['parent']:g} on the first "
                    f"{facts['scored']} of {facts['size']} val instances (scoring stopped there)")
