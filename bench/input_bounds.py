"""Benchmark: what the input hardening costs where it runs on every call.

Prints
* the time of one render of a typical prompt template in the bounded sandbox (size checks, watchdog)
  next to Jinja's plain `SandboxedEnvironment` on the same template;
* `load_workspace` (what `check` and `eval` do first, now rendering every template for every instance)
  for an eval set of N instances;
* how long the attacks take to be refused: four nested loops (time limit), `'A' * 400000000` (size cap),
  and the catastrophic regex (match time limit).

    .venv/bin/python bench/input_bounds.py [--renders 20000] [--instances 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gepa_action.errors import InputError  # noqa: E402
from gepa_action.evals import Instance  # noqa: E402
from gepa_action.metrics.text import RegexMetric  # noqa: E402
from gepa_action.templates import TemplateRenderError, render  # noqa: E402
from gepa_action.workspace import find_config, load_workspace  # noqa: E402

TEMPLATE = """You triage support tickets for {{ product }}.
{% for label in labels %}- {{ label }}: {{ descriptions[label] }}
{% endfor %}
Ticket from {{ customer|default('a customer') }}:
{{ text|trim }}
Answer with one label."""
VARIABLES = {
    "product": "Ledgerly", "labels": ["bug", "billing", "account", "feature_request", "how_to"],
    "descriptions": {k: f"tickets about {k.replace('_', ' ')}" for k in
                     ["bug", "billing", "account", "feature_request", "how_to"]},
    "customer": "Ann", "text": "  The export button crashes the app since the last update.  ",
}


def per_render_us(fn, n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def timed(fn) -> float:
    start = time.perf_counter()
    with contextlib.suppress(TemplateRenderError, InputError):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=20000)
    parser.add_argument("--instances", type=int, default=2000)
    args = parser.parse_args()

    plain = SandboxedEnvironment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    plain_template = plain.from_string(TEMPLATE)
    assert plain_template.render(**VARIABLES).strip() == render(TEMPLATE, VARIABLES)
    bounded = per_render_us(lambda: render(TEMPLATE, VARIABLES), args.renders)
    unbounded = per_render_us(lambda: plain_template.render(**VARIABLES), args.renders)
    print(f"render, Jinja sandbox:   {unbounded:7.1f} us")
    print(f"render, bounded sandbox: {bounded:7.1f} us  (+{bounded - unbounded:.1f} us per render)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "prompts").mkdir()
        (root / "evals").mkdir()
        (root / "prompts/system.j2").write_text("Classify the ticket.", encoding="utf-8")
        (root / "prompts/user.j2").write_text("Ticket: {{ text }}", encoding="utf-8")
        rows = [{"id": f"t{i}", "inputs": {"text": f"ticket number {i} " * 5}, "expected": "bug"}
                for i in range(args.instances)]
        (root / "evals/set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (root / "gepa.yaml").write_text(
            "tasks:\n  - name: t\n    prompt: {system: prompts/system.j2, user: prompts/user.j2}\n"
            "    eval: {path: evals/set.jsonl, version: '1'}\n    metric: exact\n", encoding="utf-8")
        start = time.perf_counter()
        load_workspace(find_config(root))
        print(f"load_workspace, {args.instances} instances x 2 templates: {time.perf_counter() - start:.3f} s")

    loops = "{% for a in s %}{% for b in s %}{% for c in s %}{% for d in s %}{% endfor %}{% endfor %}" \
            "{% endfor %}{% endfor %}"
    print(f"refused: four nested loops over 300 chars: {timed(lambda: render(loops, {'s': 'x' * 300})):.2f} s")
    bomb = "{{ 'A' * 400000000 }}"
    print(f"refused: 'A' * 400000000:                  {timed(lambda: render(bomb, {})):.4f} s")
    metric = RegexMetric(pattern=r"^(\w|\s|.)*\d$", where=("gepa.yaml", 1, "metric.pattern"))
    instance = Instance(id="x", inputs={}, expected="y")
    print(f"refused: regex ^(\\w|\\s|.)*\\d$ on 40 chars:  "
          f"{timed(lambda: asyncio.run(metric.score('a' * 40 + '!', instance))):.2f} s")


if __name__ == "__main__":
    main()
