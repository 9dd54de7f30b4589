"""A simulated tuning problem with a known answer, for engine tests and the bench.

The world: support tickets whose label follows hidden keyword rules (a ticket that mentions "refund"
is billing, ...). Two fake models answer over the OpenAI protocol (served by `FakeOpenAI`):

* the **task model** (`TASK_MODEL`) knows nothing by itself. It labels a ticket correctly only when
  its messages carry the rule for the keyword the ticket is about, written as
  `If the ticket mentions "<keyword>", answer <label>.`; otherwise it answers `other`.
* the **reflection model** (`REFLECTION_MODEL`) reads the whole prompt it is given, takes the first
  fenced block as the current instruction, finds the rules stated in the feedback (each instance's
  `notes` say `Rule: tickets that mention "<keyword>" are <label>.`, and metrics append notes to the
  feedback of wrong answers) and answers with the instruction plus those rules in a fenced block.
  Like a real model it is not always careful: for about one prompt in `SLOPPY_RATE` (decided by a
  hash of the prompt, so deterministic) it rewrites the instruction from scratch, keeping only the
  rules it just saw. That is what makes Pareto selection matter: a sloppy child can beat its parent
  on the minibatch and still lose on val.

So a tuning run can raise the score only by showing the reflection model the feedback of failing
examples, and how far it gets within a budget measures how well it spends calls. The reflection model
parses any prompt that shows the current instruction in the first fenced block, so the reference
`gepa` package can be run against the same server in the bench.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from fakes.openai_server import Reply

TASK_MODEL = "sim-task"
REFLECTION_MODEL = "sim-reflect"
SEED_INSTRUCTION = "Read the support ticket and reply with the team that should handle it."
USER_TEMPLATE = "Ticket: {{ text }}"
SLOPPY_RATE = 4  # one reflection in this many rewrites from scratch

RULES: list[tuple[str, str]] = [
    ("refund", "billing"), ("invoice total", "billing"),
    ("password", "account"), ("two-factor", "account"),
    ("crash", "bug"), ("error 500", "bug"),
    ("dark mode", "feature_request"), ("calendar sync", "feature_request"),
    ("export", "how_to"), ("recurring", "how_to"),
    ("vat number", "billing"), ("team seat", "account"),
]
FILLERS = [
    "Hello, quick question from our finance team.",
    "We have used the product for two years.",
    "This is urgent for our month-end close.",
    "Thanks in advance for any help.",
    "Our accountant asked me to write to you.",
    "I could not find anything in the help center.",
]

RULE_LINE = re.compile(r'mentions "([^"]+)", answer ([a-z_]+)', re.IGNORECASE)
NOTE_RULE = re.compile(r'tickets that mention "([^"]+)" are ([a-z_]+)', re.IGNORECASE)
TOPIC = re.compile(r"Something about (.+?) came up")
FENCE = re.compile(r"```[a-zA-Z0-9_-]*\n(.*?)\n```", re.DOTALL)


def rule_line(keyword: str, label: str) -> str:
    return f'- If the ticket mentions "{keyword}", answer {label}.'


def instances(per_rule: int = 4, rules: list[tuple[str, str]] | None = None, seed: int = 0) -> list[dict]:
    """`per_rule` tickets for each rule, each with the rule in its notes, shuffled deterministically."""
    rng = random.Random(seed)
    rows = []
    for r, (keyword, label) in enumerate(rules or RULES):
        for k in range(per_rule):
            text = f"{rng.choice(FILLERS)} Something about {keyword} came up (case {r}-{k}). {rng.choice(FILLERS)}"
            rows.append({"id": f"r{r:02d}-{k}", "inputs": {"text": text}, "expected": label,
                         "notes": f'Rule: tickets that mention "{keyword}" are {label}.'})
    rng.shuffle(rows)
    return rows


def task_answer(body: dict[str, Any]) -> str:
    """Rules may sit in any message (a system prompt or a user template); the ticket's keyword is the
    phrase the generated text wraps in "Something about ... came up"."""
    messages = body.get("messages") or []
    prompt = "\n".join(str(m.get("content", "")) for m in messages)
    topic = TOPIC.search(prompt)
    if topic is None:
        return "other"
    for keyword, label in RULE_LINE.findall(prompt):
        if keyword.lower() == topic.group(1).lower():
            return label
    return "other"


def reflection_answer(body: dict[str, Any]) -> str:
    prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
    blocks = FENCE.findall(prompt)
    current = blocks[0].strip() if blocks else SEED_INSTRUCTION
    seen: list[tuple[str, str]] = []
    for keyword, label in NOTE_RULE.findall(prompt):
        if (keyword, label) not in seen:
            seen.append((keyword, label))
    sloppy = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % SLOPPY_RATE == 0
    lines = [SEED_INSTRUCTION] if sloppy else current.splitlines()
    known = {k.lower() for k, _ in RULE_LINE.findall("\n".join(lines))}
    lines += [rule_line(k, lab) for k, lab in seen if k.lower() not in known]
    new = "\n".join(lines)
    return f"The assistant does not know the routing rules; adding the ones the feedback states.\n```\n{new}\n```"


def responder(task_delay: float = 0.0, reflection_delay: float = 0.0):
    """A FakeOpenAI responder playing both models, with a per-model latency."""

    def answer(body: dict[str, Any]) -> Reply:
        if body.get("model") == REFLECTION_MODEL:
            return Reply(reflection_answer(body), delay=reflection_delay)
        return Reply(task_answer(body), delay=task_delay)

    return answer


def gepa_yaml(base_url: str, *, budget: int = 300, split_seed: int = 7, concurrency: int = 16,
              extra_task: str = "") -> str:
    return f"""\
lm:
  base_url: {base_url}
  task_model: {TASK_MODEL}
  reflection_model: {REFLECTION_MODEL}
  max_tokens: 400
  concurrency: {concurrency}
  timeout: 30
  max_retries: 2
  prices:
    {TASK_MODEL}: {{input: 1.0, output: 2.0}}
    {REFLECTION_MODEL}: {{input: 5.0, output: 10.0}}
tasks:
  - name: route
    description: Route a support ticket to the team that handles it; answer with one label.
    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
    optimize: [prompts/system.j2]
    eval:
      path: evals/tickets.jsonl
      version: "1"
    metric: {{type: exact, ignore_case: true}}
    split: {{train: 0.34, val: 0.33, test: 0.33, seed: {split_seed}}}
    budget: {{max_metric_calls: {budget}}}
{extra_task}"""


def write_workspace(root: Path, base_url: str, *, per_rule: int = 4, budget: int = 300, **yaml_options: Any) -> Path:
    """A complete workspace for the simulated task under `root`."""
    files = {
        "gepa.yaml": gepa_yaml(base_url, budget=budget, **yaml_options),
        "prompts/system.j2": SEED_INSTRUCTION + "\n",
        "prompts/user.j2": USER_TEMPLATE + "\n",
        "evals/tickets.jsonl": "".join(json.dumps(r) + "\n" for r in instances(per_rule)),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
