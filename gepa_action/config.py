"""The plain config types of gepa.yaml and their defaults, with no YAML in sight.

Kept apart from the loader (`workspace.py`) so that the model client, the engine and the gate can
take a setting without importing the code that parses, loads templates and builds metrics; each
default is written here once, and the loader reads it from these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONFIG_NAME = "gepa.yaml"
#: What `lm.provider` may say: "openai" is any OpenAI-compatible endpoint, "local" the bundled models
#: (lm/session.py is the one place that acts on the difference).
PROVIDERS = ("openai", "local")


@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    input: float
    output: float


@dataclass(frozen=True)
class LMConfig:
    """How to reach the models. The API key itself is never stored here, only the variable's name."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    task_model: str = "gpt-4o-mini"
    reflection_model: str | None = None
    judge_model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    #: The reflection model writes a diagnosis plus a whole template: it needs far more room than a label.
    reflection_max_tokens: int = 2048
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 6
    prices: dict[str, Price] = field(default_factory=dict)
    #: One of PROVIDERS; "local" swaps in the bundled models (see lm/session.py).
    provider: str = "openai"


@dataclass(frozen=True)
class Step:
    """One model call of a task: its messages (role, module) and the variable its output feeds."""

    name: str
    messages: tuple[tuple[str, str], ...]
    output: str | None = None


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.34
    val: float = 0.33
    test: float = 0.33
    seed: int = 0

    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


@dataclass(frozen=True)
class BudgetConfig:
    """Hard limits for a tuning run; any left unset does not bound it."""

    max_metric_calls: int | None = 300
    max_cost_usd: float | None = None
    max_minutes: float | None = None


@dataclass(frozen=True)
class CostConfig:
    """`cost:` in gepa.yaml (top level, or per task to override it): how often the prompt runs in
    production, so the PR body can price a longer or shorter prompt by the month (None: not shown)."""

    calls_per_month: int | None = None


@dataclass(frozen=True)
class GateConfig:
    """The pre-push regression gate (`gepa-tune hook eval`): how far a val score may drop (None: default)."""

    tolerance: float | None = None


@dataclass(frozen=True)
class WatchConfig:
    """The drift watch (`gepa-tune watch`): how far a task's val or test mean may fall below its score in
    gepa.lock before the watch reports drift. Scores at temperature 0 still wobble a little when a
    provider reshuffles its serving, so the default leaves room for that rather than for a real change."""

    tolerance: float = 0.05
