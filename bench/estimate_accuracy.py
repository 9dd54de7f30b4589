"""How close `gepa-tune tune --estimate` comes to what the run then spends, on the bench families.

Per family of bench/families.py and seed: a fresh workspace on one loopback server (no latency: only
the counts matter here), `gepa-tune tune --estimate --json` (which sends no request; checked), then
`gepa-tune tune --seed S --json` with the same settings, and the run's report.json figures set against
the estimate's ranges: metric calls, reflection calls, input and output tokens, dollars.

Printed: one row per run (actual, and where it falls in the range as a fraction from low 0 to high 1),
then per figure: in range in N of M runs, the mean relative error of the range's midpoint and of the
likely figure (and the likely figure's mean signed error, its bias), and the mean of actual / high (how
much of the worst case a run really spends).

The fake server counts a token per whitespace-separated word, the estimate a token per four characters:
the token figures therefore also measure that approximation against a word count, which runs lower
than a real tokenizer on English prose (about 1.3 tokens a word with OpenAI's).

    .venv/bin/python bench/estimate_accuracy.py [--families a,b] [--seeds 0-2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes.openai_server import FakeOpenAI  # noqa: E402
from families import FAMILIES  # noqa: E402
from tune_vs_reference import parse_seeds  # noqa: E402

GEPA_TUNE = Path(sys.executable).parent / "gepa-tune"
#: estimate key -> where the actual figure is in a task's report.json `usage`
FIGURES = {"metric_calls": "metric_calls", "reflection_calls": "reflection_calls",
           "input_tokens": "prompt_tokens", "output_tokens": "completion_tokens", "cost_usd": "cost_usd"}


def gepa_tune(root: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([str(GEPA_TUNE), "-C", str(root), "tune", *args, "--json"], capture_output=True,
                          text=True, check=False, env={"OPENAI_API_KEY": "sk-bench", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise SystemExit(f"gepa-tune tune {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def one_run(family: str, seed: int) -> dict[str, Any]:
    world = FAMILIES[family]
    with FakeOpenAI(responder=world.responder(0.0, 0.0)) as server, tempfile.TemporaryDirectory() as tmp:
        root = world.write_workspace(Path(tmp), server.url, seed, world.budget)
        estimates = gepa_tune(root, "--estimate")
        if server.requests:
            raise SystemExit(f"{family}: --estimate sent {len(server.requests)} requests")
        report = gepa_tune(root, "--seed", str(seed))
    task = report["tasks"][0]
    estimate = estimates[task["task"]]
    if task["estimate"] != estimate:
        raise SystemExit(f"{family}: report.json's estimate differs from the one --estimate printed")
    row: dict[str, Any] = {"family": family, "seed": seed, "stop": task["stop_code"]}
    for key, usage_key in FIGURES.items():
        span, actual = estimate[key], task["usage"][usage_key]
        row[key] = {"low": span["low"] if span else None, "high": span["high"] if span else None,
                    "likely": span["likely"] if span else None, "actual": actual}
    return row


def position(figure: dict[str, Any]) -> float | None:
    """Where the actual falls in the range: 0 at low, 1 at high (outside: below 0 or above 1)."""
    low, high, actual = figure["low"], figure["high"], figure["actual"]
    if low is None or high is None:
        return None
    return 0.0 if high == low else (actual - low) / (high - low)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in FIGURES:
        figures = [r[key] for r in rows if r[key]["high"] is not None]
        inside = sum(1 for f in figures if f["low"] <= f["actual"] <= f["high"])
        errors = [abs((f["low"] + f["high"]) / 2 - f["actual"]) / f["actual"] for f in figures if f["actual"]]
        likely = [(f["likely"] - f["actual"]) / f["actual"] for f in figures if f["actual"] and f["likely"] is not None]
        shares = [f["actual"] / f["high"] for f in figures if f["high"]]
        out[key] = {"runs": len(figures), "in_range": inside,
                    "midpoint_rel_error": statistics.mean(errors) if errors else None,
                    "likely_rel_error": statistics.mean(abs(e) for e in likely) if likely else None,
                    "likely_bias": statistics.mean(likely) if likely else None,
                    "actual_over_high": statistics.mean(shares) if shares else None}
    return out


def fmt(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) and value < 10 else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,3 (default: 0-2)")
    parser.add_argument("--json", action="store_true", help="print the rows and the summary as JSON")
    args = parser.parse_args()
    rows = [one_run(family, seed) for family in args.families.split(",") for seed in parse_seeds(args.seeds)]
    summary = summarize(rows)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=1))
        return
    print(f"{'family':<17} {'seed':>4}  " + "  ".join(f"{k + ' (pos)':>24}" for k in FIGURES))
    for row in rows:
        cells = []
        for key in FIGURES:
            pos = position(row[key])
            cells.append(f"{fmt(row[key]['actual']):>15} ({'n/a' if pos is None else f'{pos:.2f}':>6})")
        print(f"{row['family']:<17} {row['seed']:>4}  " + "  ".join(f"{c:>24}" for c in cells))
    print()
    print(f"{'figure':<17} {'in range':>9} {'midpoint rel. error':>20} {'likely rel. error':>18} "
          f"{'likely bias':>12} {'actual / high':>14}")

    def pct(value: float | None, signed: bool = False) -> str:
        return "n/a" if value is None else f"{value:+.0%}" if signed else f"{value:.0%}"

    for key, s in summary.items():
        print(f"{key:<17} {s['in_range']:>4} of {s['runs']:<2} {pct(s['midpoint_rel_error']):>20} "
              f"{pct(s['likely_rel_error']):>18} {pct(s['likely_bias'], True):>12} {pct(s['actual_over_high']):>14}")


if __name__ == "__main__":
    main()
