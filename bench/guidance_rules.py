"""Benchmark: what reviewer guidance costs where it runs on every metric call and every reflection.

Prints
* the time of the rule checks per output (5 checkable items) on a one-word label and on a 20,000-character
  answer, next to the output's metric alone (exact match) as a yardstick;
* a slow pattern written into gepa.guidance.yaml by hand, on a 200,000-character output (bounded by the
  checked length and the time limit of each check);
* how long reading a comment takes to refuse catastrophic patterns (shape check, then timed probes), and
  to accept a plain one;
* the size of the reflection prompt's guidance part at the caps (20 items of 1,000 characters).

    .venv/bin/python bench/guidance_rules.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gepa_action.guidance.commands import parse_command  # noqa: E402
from gepa_action.guidance.items import MAX_ITEMS, MAX_TEXT, Item, Rule, Source  # noqa: E402
from gepa_action.guidance.prompt import prompt_section  # noqa: E402
from gepa_action.guidance.rules import apply, check  # noqa: E402

RULES = [("forbid", r"refund"), ("forbid", r"\bguarantee\w*"), ("require", r"^[a-z_]+$"),
         ("forbid", r"https?://\S+"), ("forbid", r"(?i)as an ai( language)? model")]


def item(n: int, rule: Rule | None = None, text: str = "x") -> Item:
    return Item(f"c{n}", text, "alice", "https://example.invalid", Source("comment"), "2026-01-01T00:00:00Z", rule)


def per_call(fn, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    items = [item(n, Rule(kind, pattern)) for n, (kind, pattern) in enumerate(RULES)]
    label, essay = "billing", ("The customer asks about an invoice total. " * 500)[:20_000]
    for name, output in (("label (7 chars)", label), ("answer (20,000 chars)", essay)):
        rules_s = per_call(lambda o=output: apply(items, o, 1.0, "correct"), args.repeat)
        exact_s = per_call(lambda o=output: o.strip().lower() == "billing", args.repeat)
        print(f"5 rules on a {name}: {rules_s * 1e6:,.1f} µs per output (exact match alone {exact_s * 1e6:,.2f} µs)")

    slow = item(99, Rule("forbid", r"\s*\s*\s*\S"))  # refused from a comment; possible in a hand-edited file
    started = time.perf_counter()
    verdict = check(slow, " " * 200_000)
    print(f"a slow rule written into the file by hand, /\\s*\\s*\\s*\\S/ on 200,000 spaces: "
          f"{time.perf_counter() - started:.3f} s ({'not counted: time limit' if verdict.unchecked else 'checked'})")

    for pattern in (r"(a+)+$", r"^(\w|\s|.)*\d$", r"(x*)*y", r"((ab)*c)*d", r"\s*\s*\s*\S", r"refund"):
        started = time.perf_counter()
        command = parse_command(f"/gepa-tune forbid /{pattern}/")
        took = time.perf_counter() - started
        kind = command.kind if command else "?"
        print(f"refusing /{pattern}/ when the comment is read: {took * 1e6:,.0f} µs ({kind})")

    section = prompt_section([item(n, None, "y" * MAX_TEXT) for n in range(MAX_ITEMS)])
    print(f"guidance part of a reflection prompt at the caps ({MAX_ITEMS} items x {MAX_TEXT:,} chars): "
          f"{len(section):,} chars")


if __name__ == "__main__":
    main()
