"""Simulated task families for the tuning suite (bench/suite.py): worlds with different dynamics.

Every family is a world of hidden keyword rules (a ticket that mentions "refund" is billing, ...) served
over the OpenAI protocol by tests/fakes/openai_server.py. A task model labels a ticket right only when its
prompt states the rule for the ticket's keyword; a reflection model reads the rules off the notes that
the `exact` metric appends to the feedback of wrong answers. What differs between families is what
makes tuning hard, so a tuner that wins only one kind of world shows up in the table:

* `rule_task` — tests/fakes/rule_task.py as it is: 12 rules, a reflection that learns every rule it is shown
  but rewrites from scratch one time in four.
* `zipf_capacity` — 16 rules with Zipf frequencies; the task model reads only the first 10 rules of a
  prompt and the reflection inserts what it learns at the top, so a prompt has to choose which rules to
  keep. The reflection is noisy as in the world of issue 10 (finds a shown rule with p = 0.4, sometimes
  drops a present rule or writes a wrong one); splits 60/40/140.
* `noisy_reflection` — 12 equally frequent rules, no capacity limit, a reflection that finds a shown
  rule with p = 0.5, drops a present rule with p = 0.25 and invents a wrong one with p = 0.25.
* `noisy_task` — 12 rules, a reliable reflection, but the task model slips (a wrong label although the
  rule is there) with p = 0.25 and guesses right without the rule with p = 0.15, so a minibatch of three
  often ranks a parent and its child the wrong way round.
* `pipeline` — two steps: the first either settles the team (when its template states the ticket's
  rule) or passes the ticket's subject on; the second routes a subject by the rules its template states.
  Half of the rules belong in each step (the notes say which), so two modules improve separately and
  combining lineages pays (merge matters).
* `large_val` — 12 rules, 520 val instances (train 60, test 200), budget 1500: scoring a child on the
  whole of val costs a third of the budget.

Randomness (which rule the reflection finds, which answer slips) is a hash of the request, so the
server is deterministic: the same prompt always gets the same answer, whoever sends it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes import rule_task  # noqa: E402
from fakes.openai_server import Reply  # noqa: E402

TASK_MODEL = rule_task.TASK_MODEL
REFLECTION_MODEL = rule_task.REFLECTION_MODEL
SEED_INSTRUCTION = rule_task.SEED_INSTRUCTION

RULES: list[tuple[str, str]] = [*rule_task.RULES, ("webhook", "how_to"), ("slow dashboard", "bug"),
                                ("api key", "account"), ("bulk discount", "billing")]
LABELS = sorted({label for _, label in RULES})

RULE_LINE = rule_task.RULE_LINE
NOTE_RULE = rule_task.NOTE_RULE
TOPIC = rule_task.TOPIC
FENCE = rule_task.FENCE
# The pipeline: which step a rule belongs in (notes), and what the first step hands to the second.
NOTE_STEP = re.compile(r'Rule for step (extract|route): tickets that mention "([^"]+)" are ([a-z_]+)', re.IGNORECASE)
SUMMARY = re.compile(r"^Summary: (team|about): (.*)$", re.MULTILINE)
EXTRACT_SEED = "Summarize the support ticket for the routing step.\nTicket: {{ text }}"
ROUTE_SEED = "Route the summarized ticket to the team that handles it."


def chance(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by `parts`: the server's only source of randomness."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def prompt_of(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])


@dataclass(frozen=True)
class World:
    """The knobs of one family."""

    name: str
    rules: int = 12
    zipf: bool = False
    sizes: tuple[int, int, int] = (60, 40, 140)  # train, val, test
    budget: int = 300
    capacity: int | None = None  # the task model reads only the first `capacity` rules
    insert_top: bool = False  # the reflection puts new rules above the old ones
    p_find: float = 1.0  # the reflection learns a rule shown in a failing example
    p_drop: float = 0.0  # ... drops one present rule
    p_wrong: float = 0.0  # ... writes a rule with a wrong label
    p_slip: float = 0.0  # the task model answers wrong although its prompt states the rule
    p_guess: float = 0.0  # ... answers right without the rule
    pipeline: bool = False
    legacy: bool = False  # tests/fakes/rule_task.py as it is (its own instances, split and reflection)

    # -- instances -----------------------------------------------------------------------------------

    def rule_set(self) -> list[tuple[str, str]]:
        return RULES[: self.rules]

    def step_of(self, keyword: str) -> str:
        """Pipeline: the step whose template must state this keyword's rule (alternating by rule)."""
        return ("extract", "route")[[k for k, _ in RULES].index(keyword) % 2]

    def note(self, keyword: str, label: str) -> str:
        if self.pipeline:
            return f'Rule for step {self.step_of(keyword)}: tickets that mention "{keyword}" are {label}.'
        return f'Rule: tickets that mention "{keyword}" are {label}.'

    def instances(self, seed: int) -> list[dict[str, Any]]:
        """Tickets with a fixed split, drawn for this seed (each seed is a fresh sample of the world)."""
        rng = random.Random(f"{self.name}:{seed}")
        rules = self.rule_set()
        weights = [1 / (k + 1) for k in range(len(rules))] if self.zipf else [1.0] * len(rules)
        total = sum(self.sizes)
        if self.zipf:
            picks = rng.choices(range(len(rules)), weights=weights, k=total)
        else:
            picks = [k % len(rules) for k in range(total)]
            rng.shuffle(picks)
        rows = []
        for n, k in enumerate(picks):
            keyword, label = rules[k]
            text = (f"{rng.choice(rule_task.FILLERS)} Something about {keyword} came up (case {n}). "
                    f"{rng.choice(rule_task.FILLERS)}")
            split = "train" if n < self.sizes[0] else "val" if n < self.sizes[0] + self.sizes[1] else "test"
            rows.append({"id": f"t{n:04d}", "inputs": {"text": text}, "expected": label,
                         "notes": self.note(keyword, label), "split": split})
        return rows

    # -- the workspace ---------------------------------------------------------------------------------

    def write_workspace(self, root: Path, base_url: str, seed: int, budget: int) -> Path:
        if self.legacy:
            rule_task.write_workspace(root, base_url, budget=budget, concurrency=10)
            return root
        if self.pipeline:
            shape = ("    steps:\n"
                     "      - {name: extract, user: prompts/extract.j2, output: topic}\n"
                     "      - {name: route, system: prompts/route.j2, user: prompts/route_user.j2}\n"
                     "    optimize: [prompts/extract.j2, prompts/route.j2]\n")
            prompts = {"extract.j2": EXTRACT_SEED, "route.j2": ROUTE_SEED, "route_user.j2": "Summary: {{ topic }}"}
        else:
            shape = ("    prompt:\n      system: prompts/system.j2\n      user: prompts/user.j2\n"
                     "    optimize: [prompts/system.j2]\n")
            prompts = {"system.j2": SEED_INSTRUCTION, "user.j2": rule_task.USER_TEMPLATE}
        config = rule_task.gepa_yaml(base_url, budget=budget, concurrency=10)
        start, end = config.index("    prompt:\n"), config.index("    eval:\n")
        config = config[:start] + shape + config[end:]
        rows = "".join(json.dumps(r) + "\n" for r in self.instances(seed))
        files = {"gepa.yaml": config, "evals/tickets.jsonl": rows,
                 **{f"prompts/{name}": text + "\n" for name, text in prompts.items()}}
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    # -- the models ------------------------------------------------------------------------------------

    def responder(self, task_delay: float, reflection_delay: float) -> Callable[[dict[str, Any]], Reply]:
        if self.legacy:
            return rule_task.responder(task_delay=task_delay, reflection_delay=reflection_delay)

        def answer(body: dict[str, Any]) -> Reply:
            if body.get("model") == REFLECTION_MODEL:
                return Reply(self.reflect(prompt_of(body)), delay=reflection_delay)
            return Reply(self.task_answer(prompt_of(body)), delay=task_delay)

        return answer

    def task_answer(self, prompt: str) -> str:
        summary = SUMMARY.search(prompt) if self.pipeline else None
        if summary is not None:  # the pipeline's second step
            kind, value = summary.group(1), summary.group(2).strip()
            if kind == "team":
                return value
            return next((label for k, label in RULE_LINE.findall(prompt) if k.lower() == value.lower()), "other")
        topic = TOPIC.search(prompt)
        if topic is None:
            return "other"
        keyword = topic.group(1).lower()
        stated = RULE_LINE.findall(prompt)[: self.capacity]
        answer = next((label for k, label in stated if k.lower() == keyword), None)
        if self.pipeline:
            return f"team: {answer}" if answer else f"about: {keyword}"
        truth = dict(self.rule_set()).get(keyword, "other")
        if answer is not None and answer == truth and chance("slip", prompt) < self.p_slip:
            return next(label for label in LABELS if label != truth)
        if answer is None and chance("guess", prompt) < self.p_guess:
            return truth
        return answer or "other"

    def reflect(self, prompt: str) -> str:
        """Learn rules from the notes of the failing examples shown; keep, drop or garble as the world says."""
        blocks = FENCE.findall(prompt)
        current = blocks[0].strip() if blocks else SEED_INSTRUCTION
        lines = current.splitlines()
        step = "extract" if "{{ text }}" in current else "route"
        pattern = RULE_LINE

        def present() -> set[str]:
            return {m[0].lower() for m in pattern.findall("\n".join(lines))}

        new: list[str] = []
        seen: set[str] = set()
        for n, (keyword, label) in enumerate(self._notes(prompt, step)):
            key = keyword.lower()
            if key in present() or key in seen:
                continue
            seen.add(key)
            if chance("find", prompt, n) < self.p_find:
                new.append(rule_task.rule_line(keyword, label))
        if chance("wrong", prompt) < self.p_wrong:
            keyword, label = self.rule_set()[int(chance("which", prompt) * self.rules)]
            wrong = LABELS[(LABELS.index(label) + 1 + int(chance("label", prompt) * (len(LABELS) - 1))) % len(LABELS)]
            new.append(rule_task.rule_line(keyword, wrong))
        rule_rows = [i for i, line in enumerate(lines) if pattern.search(line)]
        if rule_rows and chance("drop", prompt) < self.p_drop:
            del lines[rule_rows[int(chance("drop-which", prompt) * len(rule_rows))]]
            rule_rows = [i for i, line in enumerate(lines) if pattern.search(line)]
        at = rule_rows[0] if self.insert_top and rule_rows else len(lines)
        lines[at:at] = new
        return ("The assistant lacks the rules behind these failures; adding the ones the feedback states.\n"
                f"```\n{chr(10).join(lines)}\n```")

    def _notes(self, prompt: str, step: str) -> list[tuple[str, str]]:
        """The rules this module needs, one per failing example shown (repeats included)."""
        if not self.pipeline:
            return NOTE_RULE.findall(prompt)
        return [(k, label) for where, k, label in NOTE_STEP.findall(prompt) if where.lower() == step]


FAMILIES: dict[str, World] = {w.name: w for w in [
    World("rule_task", legacy=True),
    World("zipf_capacity", rules=16, zipf=True, capacity=10, insert_top=True, p_find=0.4, p_drop=0.15, p_wrong=0.15),
    World("noisy_reflection", p_find=0.5, p_drop=0.25, p_wrong=0.25),
    World("noisy_task", p_slip=0.25, p_guess=0.15),
    World("pipeline", rules=10, pipeline=True, p_find=0.7),
    World("large_val", sizes=(60, 520, 200), budget=1500, p_find=0.7),
]}
