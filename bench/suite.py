"""Bench suite: `gepa-tune tune` against the reference `gepa` package (0.1.4) on every family of
bench/families.py, several seeds each, on one loopback server per family.

Per family and seed: a fresh workspace (the family's world drawn for that seed), then

1. reference: bench/reference_adapter.py in bench/.venv-ref runs `gepa.optimize` with the same seed
   templates, instances, splits, models, feedback wording and concurrency, `max_metric_calls` = the
   family's budget and gepa's defaults otherwise. It checks its budget only between iterations, so it
   may use more calls than that; its results are cached in bench/.cache/ (the server is
   deterministic, so a re-run would give the same figures).
2. ours: `gepa-tune tune --budget B' --seed S --json`, where B' is what the reference actually used
   when that is more than the family's budget (compared at equal calls, the reference's overshoot
   counts against it), else the budget itself.

Printed per family: mean test score of each side, the paired difference (ours - reference) with its
standard error, the most calls either side used, the mean search wall time (gepa-tune: the engine's
search, without process start-up or test scoring; the reference: `gepa.optimize` alone) and three
checks: mean test >= reference + 0.05, calls <= the budget given in every run, search wall <= 0.5x.

    .venv/bin/python bench/suite.py [--families a,b] [--seeds 0-4] [--json] [--tune-arg=--parallel=2]
        [--fresh-reference]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fakes.openai_server import FakeOpenAI  # noqa: E402
from families import FAMILIES, World  # noqa: E402
from tune_vs_reference import REF_PYTHON, REF_RUNNER, ensure_reference_venv, parse_seeds  # noqa: E402

from gepa_action.workspace import load_workspace  # noqa: E402

GEPA_TUNE = Path(sys.executable).parent / "gepa-tune"
CACHE = Path(os.environ.get("GEPA_BENCH_CACHE", HERE / ".cache"))
TASK_DELAY, REFLECTION_DELAY = 0.1, 0.3


def reference_spec(root: Path, *, budget: int, seed: int) -> dict[str, Any]:
    """What the reference adapter needs, from gepa-tune's own loading of the workspace (a pipeline spec:
    per step its messages as [role, module]; the tuned modules are the candidate, the rest fixed)."""
    workspace = load_workspace(root / "gepa.yaml")
    task = workspace.tasks[0]
    lm = workspace.lm
    texts = task.seed_candidate()
    splits = {split: [{"id": i.id, "inputs": i.inputs, "expected": i.expected, "notes": i.notes}
                      for i in task.eval_set.by_split(split)] for split in ("train", "val", "test")}
    return {
        "base_url": lm.base_url, "task_model": task.model, "reflection_model": lm.reflection_model,
        "max_tokens": lm.max_tokens, "reflection_max_tokens": lm.reflection_max_tokens,
        "temperature": lm.temperature, "concurrency": lm.concurrency, "timeout": lm.timeout,
        "retries": lm.max_retries, "budget": budget, "seed": seed,
        "seed_candidate": {m: texts[m].strip() for m in task.optimize},
        "fixed": {m: t.strip() for m, t in texts.items() if m not in task.optimize},
        "steps": [{"messages": [list(pair) for pair in step.messages], "output": step.output} for step in task.steps],
        "ignore_case": True, "ignore_whitespace": True, "ignore_punctuation": False,
        "splits": splits,
    }


def run_reference(spec: dict[str, Any], workdir: Path, key: str) -> dict[str, Any]:
    CACHE.mkdir(exist_ok=True)
    cached = CACHE / f"reference-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    spec_file = workdir / "reference-spec.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    log_file = workdir / "reference.log"
    with log_file.open("w") as log:
        proc = subprocess.run([str(REF_PYTHON), str(REF_RUNNER), str(spec_file)], stdout=subprocess.PIPE,
                              stderr=log, text=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"the reference runner failed (exit {proc.returncode}):\n{log_file.read_text()[-3000:]}")
    result = json.loads(proc.stdout)
    result.pop("best_candidate", None)
    cached.write_text(json.dumps(result), encoding="utf-8")
    return result


def run_ours(root: Path, budget: int, seed: int, extra: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run([str(GEPA_TUNE), "-C", str(root), "tune", "--budget", str(budget), "--seed", str(seed),
                           "--json", *extra], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"gepa-tune tune failed (exit {proc.returncode}) in {root}:\n"
                         f"{proc.stderr.strip()}\n{proc.stdout.strip()[:2000]}")
    (task,) = json.loads(proc.stdout)["tasks"]
    usage = task["usage"]
    return {"test_score": task["scores"]["test"]["best"], "seed_test_score": task["scores"]["test"]["seed"],
            "val_score": task["scores"]["val"]["best"], "calls_used": usage["metric_calls"], "budget": budget,
            "search_wall_s": usage.get("search_wall_s", usage["wall_s"]), "process_wall_s": round(wall, 3),
            "stop_reason": task.get("stop_reason"), "candidates": len(task.get("candidates") or []),
            "val_scoring": task.get("val_scoring")}


def bench_family(world: World, seeds: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    budget = args.budget or world.budget
    with FakeOpenAI(responder=world.responder(TASK_DELAY, REFLECTION_DELAY)) as server:
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix=f"suite-{world.name}-{seed}-") as tmp:
                root = Path(tmp) / "ws"
                world.write_workspace(root, server.url, seed, budget)
                spec = reference_spec(root, budget=budget, seed=seed)
                identity = json.dumps({**spec, "base_url": None, "world": asdict(world),
                                       "delays": [TASK_DELAY, REFLECTION_DELAY]}, sort_keys=True)
                key = f"{world.name}-{seed}-{budget}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
                if args.fresh_reference:
                    (CACHE / f"reference-{key}.json").unlink(missing_ok=True)
                ref = run_reference(spec, Path(tmp), key)
                ours = run_ours(root, max(budget, ref["calls_used"]), seed, args.tune_arg)
            if server.errors:
                raise SystemExit(f"the fake server's responder raised: {server.errors[0]!r}")
            rows.append({"seed": seed, "ours": ours, "reference": {
                "test_score": ref["test_score"], "seed_test_score": ref["seed_test_score"],
                "val_score": ref["val_score"], "calls_used": ref["calls_used"], "search_wall_s": ref["tune_s"]}})
            print(f"{world.name} seed {seed}: ours {ours['test_score']:.3f} ({ours['calls_used']} calls, "
                  f"{ours['search_wall_s']:.1f} s) reference {ref['test_score']:.3f} ({ref['calls_used']} calls, "
                  f"{ref['tune_s']:.1f} s)", file=sys.stderr, flush=True)
    return rows


def summarize(name: str, rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    diffs = [r["ours"]["test_score"] - r["reference"]["test_score"] for r in rows]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")

    def mean(side: str, key: str) -> float:
        return statistics.fmean(r[side][key] for r in rows)

    summary = {
        "family": name, "seeds": len(rows), "budget": budget,
        "ours_test": mean("ours", "test_score"), "reference_test": mean("reference", "test_score"),
        "diff": statistics.fmean(diffs), "diff_se": se, "ahead": sum(d > 0 for d in diffs),
        "ours_calls_max": max(r["ours"]["calls_used"] for r in rows),
        "reference_calls_max": max(r["reference"]["calls_used"] for r in rows),
        "ours_wall": mean("ours", "search_wall_s"), "reference_wall": mean("reference", "search_wall_s"),
    }
    summary["checks"] = {
        "test >= ref + 0.05": summary["diff"] >= 0.05,
        "calls <= budget": all(r["ours"]["calls_used"] <= r["ours"]["budget"] for r in rows),
        "wall <= 0.5x ref": summary["ours_wall"] <= 0.5 * summary["reference_wall"],
    }
    return summary


def print_table(summaries: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"gepa-tune vs gepa 0.1.4, seeds {args.seeds}, task model {TASK_DELAY * 1000:.0f} ms, "
          f"reflection {REFLECTION_DELAY * 1000:.0f} ms, concurrency 10"
          + (f", gepa-tune {' '.join(args.tune_arg)}" if args.tune_arg else ""))
    print("| family | budget | test ours | test ref | paired diff (SE) | ahead | calls max ours / ref "
          "| search wall ours / ref | checks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        checks = ", ".join(("pass " if ok else "FAIL ") + name for name, ok in s["checks"].items())
        print(f"| {s['family']} | {s['budget']} | {s['ours_test']:.3f} | {s['reference_test']:.3f} "
              f"| {s['diff']:+.3f} ({s['diff_se']:.3f}) | {s['ahead']}/{s['seeds']} "
              f"| {s['ours_calls_max']} / {s['reference_calls_max']} "
              f"| {s['ours_wall']:.1f} s / {s['reference_wall']:.1f} s | {checks} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="0-4", help="seeds: 0-4, 0,3,7 ... (default 0-4)")
    parser.add_argument("--budget", type=int, help="override every family's budget")
    parser.add_argument("--tune-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `gepa-tune tune`, repeatable")
    parser.add_argument("--fresh-reference", action="store_true", help="ignore the reference cache")
    parser.add_argument("--json", action="store_true", help="print every run and the summaries as JSON")
    args = parser.parse_args()
    ensure_reference_venv()
    seeds = parse_seeds(args.seeds)
    runs, summaries = {}, []
    for name in args.families.split(","):
        world = FAMILIES[name.strip()]
        runs[world.name] = bench_family(world, seeds, args)
        summaries.append(summarize(world.name, runs[world.name], args.budget or world.budget))
    if args.json:
        print(json.dumps({"seeds": seeds, "tune_args": args.tune_arg, "summaries": summaries, "runs": runs}, indent=2))
    else:
        print_table(summaries, args)


if __name__ == "__main__":
    main()
