"""A reflection model that proposes hostile templates cannot hang or bloat a tuning run.

The audit saw four nested loops over 300-character literals hang validation (max_minutes could not stop
it) and `{{ 'A'*400000000 }}` sent as a 400 MB prompt. Here the reflection model's first proposals (and
their repair turns) are such templates: each must be rejected by the bounded sandbox before any metric
call, and the run must then go on to finish within its budget, sending no prompt larger than the
sandbox's output limit.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fakes import rule_task
from fakes.openai_server import FakeOpenAI

from gepa_action.cli import main
from gepa_action.templates import MAX_OUTPUT_CHARS

LOOPS = "".join("{% for v" + str(i) + " in '" + "x" * 300 + "' %}" for i in range(4)) + "{% endfor %}" * 4
HOSTILE = [
    rule_task.SEED_INSTRUCTION + "\n" + LOOPS,
    rule_task.SEED_INSTRUCTION + "\n{{ 'A' * 400000000 }}",
    rule_task.SEED_INSTRUCTION + "\n{% for i in range(10**9) %}.{% endfor %}",
    rule_task.SEED_INSTRUCTION + "\n{{ ''.__class__.__mro__ }}",
    rule_task.SEED_INSTRUCTION + "\n{% include '/etc/passwd' %}",
]


def test_hostile_proposals_are_rejected_and_the_run_finishes(tmp_path: Path) -> None:
    base = rule_task.responder()
    served: list[str] = []
    lock = threading.Lock()

    def reflection(body: dict[str, Any]) -> Any:
        # Each new conversation gets the next attack and its repair turn the same attack again, whatever
        # order concurrent proposals (a round's spare one) arrive in.
        if body["model"] != rule_task.REFLECTION_MODEL:
            return base(body)
        earlier = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
        with lock:
            if earlier:
                attack = next((a for a in HOSTILE if a in earlier[-1]), None)
            elif len(served) < len(HOSTILE):
                attack = HOSTILE[len(served)]
                served.append(attack)
            else:
                attack = None
        return base(body) if attack is None else f"Try this.\n```jinja\n{attack}\n```"

    with FakeOpenAI(responder=reflection) as server:
        rule_task.write_workspace(tmp_path, server.url, budget=150)
        start = time.monotonic()
        result = CliRunner().invoke(main, ["-C", str(tmp_path), "tune", "--json"], catch_exceptions=False)
        elapsed = time.monotonic() - start
        largest = max(len(json.dumps(r["messages"])) for r in server.requests)

    assert result.exit_code == 0, result.output
    task = json.loads(result.stdout)["tasks"][0]
    assert task["usage"]["metric_calls"] <= 150
    rejected = task["proposals"]["rejected_invalid"]
    assert sum(rejected.values()) == len(HOSTILE), rejected
    assert task["scores"]["test"]["best"] >= task["scores"]["test"]["seed"]
    assert largest < MAX_OUTPUT_CHARS, "no prompt past the sandbox's output limit reached the server"
    assert elapsed < 120, f"the run took {elapsed:.0f} s"
    events = [json.loads(line) for line in
              (tmp_path / ".gepa/runs" / json.loads(result.stdout)["run_id"] / "events.jsonl").read_text().splitlines()]
    reasons = " ".join(str(e.get("reason", "")) for e in events if e["event"] == "proposal")
    assert "took longer than" in reasons and "400,000,000" in reasons, reasons[:2000]
