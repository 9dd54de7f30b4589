"""Build small workspaces on disk for tests: a gepa.yaml plus whatever files a test needs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

GEPA_YAML = """\
lm:
  task_model: test-model
  max_tokens: 64
  concurrency: 4
tasks:
  - name: triage
    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
    eval:
      path: evals/set.jsonl
      version: "1"
    metric: {type: exact, ignore_case: true}
"""

SINGLE_CALL = """\
    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
"""


def with_steps(steps: str, config: str = GEPA_YAML) -> str:
    """The default config with its single call replaced by a pipeline (`steps` is YAML at task level)."""
    return config.replace(SINGLE_CALL, "    steps:\n" + textwrap.indent(textwrap.dedent(steps), "      "))


INSTANCES = [
    {"id": "a1", "inputs": {"text": "The app crashes on start"}, "expected": "bug"},
    {"id": "a2", "inputs": {"text": "I was charged twice"}, "expected": "billing"},
    {"id": "a3", "inputs": {"text": "Please add dark mode"}, "expected": "feature_request"},
    {"id": "a4", "inputs": {"text": "How do I export invoices?"}, "expected": "how_to"},
]


# Four tickets with fixed splits, and a model stand-in that labels them by keyword: its answers to a1
# and a4 match, to a2 and a3 do not, so val and test both score 0.5 (the baseline and gate tests).
LABELLED_ROWS = [
    {"id": "a1", "inputs": {"text": "The app crashes on start"}, "expected": "bug", "split": "val"},
    {"id": "a2", "inputs": {"text": "I was charged twice"}, "expected": "billing", "split": "val"},
    {"id": "a3", "inputs": {"text": "Please add dark mode"}, "expected": "feature_request", "split": "test"},
    {"id": "a4", "inputs": {"text": "How do I export invoices?"}, "expected": "how_to", "split": "test"},
]
KEYWORD_LABELS = {"crashes": "bug", "charged": "Billing.", "dark mode": "feature request", "export": "how_to"}


def keyword_label(body: dict) -> str:
    """The label a keyword in the last message picks (a FakeOpenAI responder)."""
    text = body["messages"][-1]["content"]
    return next((label for word, label in KEYWORD_LABELS.items() if word in text), "unknown")


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_workspace(root: Path, files: dict[str, str] | None = None, *, config: str | None = None,
                   instances: list[dict] | None = None) -> Path:
    """Write a working workspace into `root`, with `files` overriding or adding any file."""
    defaults = {
        "gepa.yaml": config if config is not None else GEPA_YAML,
        "prompts/system.j2": "Classify the ticket.",
        "prompts/user.j2": "Ticket: {{ text }}",
        "evals/set.jsonl": jsonl(instances if instances is not None else INSTANCES),
    }
    defaults.update(files or {})
    for name, text in defaults.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text) if name.endswith((".yaml", ".yml")) else text, encoding="utf-8")
    return root
