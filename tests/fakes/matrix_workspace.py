"""A workspace of several rule-task tasks (`rule_task`), each with its own system template, for the matrix
tests and bench: one job per task, then one combine step.

Each task's seed instruction names its queue, so no two tasks send the same request (a shared response
cache would otherwise make one process tuning every task look faster than it is). A task may use its
own task model: the responder below fails every request for `BROKEN_MODEL`, a model the endpoint no
longer serves, which is how one matrix job fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakes import rule_task
from fakes.openai_server import Reply

BROKEN_MODEL = "sim-retired"


def task_yaml(name: str, *, budget: int, model: str | None = None) -> str:
    model_line = f"    model: {model}\n" if model else ""
    return f"""\
  - name: {name}
{model_line}    prompt:
      system: prompts/{name}.j2
      user: prompts/user.j2
    optimize: [prompts/{name}.j2]
    eval:
      path: evals/tickets.jsonl
      version: "1"
    metric: {{type: exact, ignore_case: true}}
    split: {{train: 0.34, val: 0.33, test: 0.33, seed: 7}}
    budget: {{max_metric_calls: {budget}}}
"""


def write(root: Path, base_url: str, names: list[str], *, budget: int, per_rule: int = 6,
          broken: tuple[str, ...] = ()) -> Path:
    """`rule_task`'s workspace with `names` as its tasks (the first replaces `route`); tasks in `broken`
    use `BROKEN_MODEL`."""
    rule_task.write_workspace(root, base_url, per_rule=per_rule, budget=budget)
    config = (root / "gepa.yaml").read_text()
    head = config[: config.index("tasks:\n") + len("tasks:\n")]
    body = "".join(task_yaml(n, budget=budget, model=BROKEN_MODEL if n in broken else None) for n in names)
    (root / "gepa.yaml").write_text(head + body)
    for name in names:
        (root / f"prompts/{name}.j2").write_text(f"{rule_task.SEED_INSTRUCTION} (Queue: {name}.)\n")
    (root / "prompts/system.j2").unlink()
    return root


def responder(task_delay: float = 0.0, reflection_delay: float = 0.0) -> Any:
    """`rule_task.responder`, except that `BROKEN_MODEL` answers 404 as a retired model does."""
    inner = rule_task.responder(task_delay, reflection_delay)

    def answer(body: dict[str, Any]) -> Reply | str:
        if body.get("model") == BROKEN_MODEL:
            return Reply(f"The model `{BROKEN_MODEL}` does not exist", status=404)
        return inner(body)

    return answer
