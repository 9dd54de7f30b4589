"""Benchmark: `gepa-tune tune` against the reference `gepa` package (0.1.4) on the same simulated task.

The task is tests/fakes/rule_task.py: support tickets routed by 12 hidden keyword rules (48 instances, split
train/val/test by gepa-tune's hash split), served by tests/fakes/openai_server.py on 127.0.0.1 with a task model
that answers in 100 ms and a reflection model that answers in 300 ms. A prompt scores only as well as
the rules it states, and the rules are learned only from the feedback on failing examples, so the
score reached within a budget of metric calls measures how well a tuner spends them.

For each seed (one server for the whole bench, a fresh workspace per seed):

1. ours: `gepa-tune tune --budget B --seed S --json` in the workspace, as a subprocess. From its
   report: test score of the best candidate, val score, metric calls used; plus the wall time of the
   whole command, interpreter start-up included, measured here.
2. reference: bench/reference_adapter.py inside bench/.venv-ref runs `gepa.optimize` with the same
   seed prompt, instances, splits (handed over as JSON from gepa-tune's own loader), models,
   request parameters, feedback wording and concurrency (its adapter evaluates a batch on a thread
   pool as wide as gepa-tune's `lm.concurrency`), budget `max_metric_calls=B`, `seed=S`, gepa's
   defaults otherwise. Calls used are counted in the adapter (one per instance evaluated); the best
   candidate is scored on the test split outside the budget. Wall time is the subprocess's.
3. warm re-run: the gepa-tune command again in the same workspace; the task-model requests that reach
   the server are counted (its response cache should answer all of them: the target is 0).

Checks printed at the end: mean test score ours >= reference + 0.05; ours never over budget; mean wall
time ours <= 1/3 of the reference's; every warm re-run sends 0 task-model requests.

    .venv/bin/python bench/tune_vs_reference.py [--seeds 0-4] [--budget 300] [--json]
        [--only ours|reference] [--tune-arg=--parallel=4 ...] [--keep-prompts]

Besides the checks it prints, per side, how many of the rules revealed by the train split the best
prompt states, against the ceiling (the test score of a prompt stating all of them): val ties between
candidates are common here, and which tied candidate is kept decides the test score.

bench/.venv-ref (gepa from bench/requirements-reference.txt) is created on first use; the table the script
prints gives each seed's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fakes import rule_task  # noqa: E402
from fakes.openai_server import FakeOpenAI  # noqa: E402

from gepa_action.templates import render  # noqa: E402
from gepa_action.workspace import load_workspace  # noqa: E402

REF_VENV = HERE / ".venv-ref"
REF_PYTHON = REF_VENV / "bin" / "python"
REF_RUNNER = HERE / "reference_adapter.py"
REF_REQUIREMENTS = HERE / "requirements-reference.txt"
GEPA_TUNE = Path(sys.executable).parent / "gepa-tune"


# ------------------------------------------------------------------------------------------ helpers


def parse_seeds(text: str) -> list[int]:
    """`0-4`, `0,2,5` or a mix: `0-2,7`."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            seeds.extend(range(int(low), int(high) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def ensure_reference_venv() -> None:
    """Create bench/.venv-ref with the reference package unless it already imports there."""
    if REF_PYTHON.exists():
        probe = subprocess.run([str(REF_PYTHON), "-c", "import gepa"], capture_output=True, check=False)
        if probe.returncode == 0:
            return
    print(f"creating {REF_VENV.relative_to(REPO)} ...", file=sys.stderr)
    subprocess.run(["python3", "-m", "venv", str(REF_VENV)], check=True)
    subprocess.run([str(REF_VENV / "bin" / "pip"), "install", "-q", "-r", str(REF_REQUIREMENTS)], check=True)


def request_counts(server: FakeOpenAI) -> dict[str, int]:
    counts: dict[str, int] = {}
    for body in list(server.requests):
        model = str(body.get("model"))
        counts[model] = counts.get(model, 0) + 1
    return counts


def requests_since(server: FakeOpenAI, before: dict[str, int]) -> dict[str, int]:
    now = request_counts(server)
    return {m: n - before.get(m, 0) for m, n in now.items() if n - before.get(m, 0)}


def reference_spec(root: Path, *, budget: int, seed: int) -> dict[str, Any]:
    """What the reference runner needs, taken from gepa-tune's own loading of the workspace."""
    workspace = load_workspace(root / "gepa.yaml")
    task = workspace.tasks[0]
    lm = workspace.lm
    (step,) = task.steps
    roles = dict(step.messages)
    if task.optimize != (roles["system"],):
        raise SystemExit(f"the bench expects the system template alone to be tuned, got {task.optimize}")
    seed_candidate = task.seed_candidate()
    user_template = seed_candidate[roles["user"]]
    metric = task.metric
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "val", "test"):
        splits[split] = [{"id": i.id, "inputs": i.inputs, "expected": i.expected, "notes": i.notes,
                          "user": render(user_template, dict(i.inputs))}
                         for i in task.eval_set.by_split(split)]
    return {
        "base_url": lm.base_url, "task_model": task.model, "reflection_model": lm.reflection_model,
        "max_tokens": lm.max_tokens, "reflection_max_tokens": lm.reflection_max_tokens,
        "temperature": lm.temperature, "concurrency": lm.concurrency, "timeout": lm.timeout,
        "retries": lm.max_retries, "budget": budget, "seed": seed,
        "system_seed": render(seed_candidate[roles["system"]], {}),
        "ignore_case": getattr(metric, "ignore_case", True),
        "ignore_whitespace": getattr(metric, "ignore_whitespace", True),
        "ignore_punctuation": getattr(metric, "ignore_punctuation", False),
        "splits": splits,
    }


def train_rule_ceiling(spec: dict[str, Any]) -> dict[str, float]:
    """The best val/test score a prompt can reach with the rules that the train split's feedback reveals
    (the reflection model sees feedback of train instances only; a rule absent there cannot be learned)."""
    def rule(instance: dict[str, Any]) -> str:
        return str(instance.get("notes") or "").lower()

    taught = {rule(i) for i in spec["splits"]["train"]}
    return {split: sum(rule(i) in taught for i in spec["splits"][split]) / len(spec["splits"][split])
            for split in ("val", "test") if spec["splits"][split]}


def taught_rules(spec: dict[str, Any]) -> set[str]:
    """Keywords of the rules that the train split's notes state."""
    return {k.lower() for i in spec["splits"]["train"] for k, _ in rule_task.NOTE_RULE.findall(i.get("notes") or "")}


def rules_stated(prompt: str, taught: set[str]) -> int:
    """How many of the taught rules a prompt states (in the form the task model obeys)."""
    return len(taught & {k.lower() for k, _ in rule_task.RULE_LINE.findall(prompt)})


def run_ours(root: Path, budget: int, seed: int, extra: list[str]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    proc = subprocess.run([str(GEPA_TUNE), "-C", str(root), "tune", "--budget", str(budget), "--seed", str(seed),
                           "--json", *extra], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"gepa-tune tune failed (exit {proc.returncode}) in {root}:\n"
                         f"{proc.stderr.strip()}\n{proc.stdout.strip()[:2000]}")
    return wall, json.loads(proc.stdout)


def run_reference(spec: dict[str, Any], workdir: Path) -> tuple[float, dict[str, Any]]:
    seed = spec["seed"]
    spec_file = workdir / f"reference-spec-{seed}.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    log_file = workdir / f"reference-{seed}.log"
    start = time.perf_counter()
    with log_file.open("w") as log:
        proc = subprocess.run([str(REF_PYTHON), str(REF_RUNNER), str(spec_file)], stdout=subprocess.PIPE,
                              stderr=log, text=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise SystemExit(f"the reference runner failed (exit {proc.returncode}):\n{tail}")
    return wall, json.loads(proc.stdout)


# ---------------------------------------------------------------------------------------------- main


def bench_seed(server: FakeOpenAI, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory(prefix=f"tune-bench-{seed}-") as tmp:
        root = Path(tmp) / "ws"
        work = Path(tmp) / "bench"
        work.mkdir()
        rule_task.write_workspace(root, server.url, per_rule=args.per_rule, budget=args.budget)
        spec = reference_spec(root, budget=args.budget, seed=seed)
        row["ceiling"] = train_rule_ceiling(spec)
        taught = taught_rules(spec)
        row["ceiling"]["train_rules"] = len(taught)

        if args.only in (None, "ours"):
            before = request_counts(server)
            wall, report = run_ours(root, args.budget, seed, args.tune_arg)
            (task,) = report["tasks"]
            row["ours"] = {
                "test_score": task["scores"]["test"]["best"], "seed_test_score": task["scores"]["test"]["seed"],
                "val_score": task["scores"]["val"]["best"], "calls_used": task["usage"]["metric_calls"],
                "wall_s": round(wall, 3), "reported_wall_s": task["usage"]["wall_s"],
                "requests": requests_since(server, before), "status": task["status"],
                "stop_reason": task.get("stop_reason"), "candidates": len(task.get("candidates") or []),
            }
            best = (task.get("best") or {}).get("templates") or {}
            row["ours"]["train_rules_in_best"] = rules_stated("\n".join(best.values()), taught)
            if args.keep_prompts:
                row["ours"]["best_candidate"] = best

        if args.only in (None, "reference"):
            before = request_counts(server)
            wall, result = run_reference(spec, work)
            result["train_rules_in_best"] = rules_stated(result["best_candidate"], taught)
            if not args.keep_prompts:
                result.pop("best_candidate", None)
            row["reference"] = {**result, "runner_wall_s": result["wall_s"], "wall_s": round(wall, 3),
                                "server_requests": requests_since(server, before)}

        if args.only in (None, "ours"):
            before = request_counts(server)
            wall, report = run_ours(root, args.budget, seed, args.tune_arg)
            sent = requests_since(server, before)
            (task,) = report["tasks"]
            row["warm"] = {"task_requests": sent.get(rule_task.TASK_MODEL, 0), "requests": sent,
                           "wall_s": round(wall, 3), "test_score": task["scores"]["test"]["best"]}
    return row


def _mean(rows: list[dict[str, Any]], side: str, key: str) -> float | None:
    values = [r[side][key] for r in rows if side in r and r[side].get(key) is not None]
    return statistics.fmean(values) if values else None


def summarize(rows: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    means = {side: {k: _mean(rows, side, k) for k in ("test_score", "val_score", "calls_used", "wall_s")}
             for side in ("ours", "reference") if any(side in r for r in rows)}
    checks: dict[str, bool] = {}
    if "ours" in means and "reference" in means:
        checks["test_ours_ge_ref_plus_0.05"] = means["ours"]["test_score"] >= means["reference"]["test_score"] + 0.05
        checks["wall_ours_le_third_of_ref"] = means["ours"]["wall_s"] <= means["reference"]["wall_s"] / 3
    if "ours" in means:
        checks["ours_calls_within_budget"] = all(r["ours"]["calls_used"] <= budget for r in rows)
        checks["warm_rerun_0_task_requests"] = all(r["warm"]["task_requests"] == 0 for r in rows)
    return {"means": means, "checks": checks,
            "reference_over_budget_runs": sum(1 for r in rows if "reference" in r
                                              and r["reference"]["calls_used"] > budget)}


def _cell(row: dict[str, Any], side: str, key: str, fmt: str) -> str:
    value = row.get(side, {}).get(key)
    return "-" if value is None else format(value, fmt)


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"gepa-tune tune vs gepa {args.reference_version}: rule task ({12 * args.per_rule} instances), "
          f"budget {args.budget} metric calls, task model {args.task_delay * 1000:.0f} ms, "
          f"reflection {args.reflection_delay * 1000:.0f} ms")
    if args.tune_arg:
        print(f"gepa-tune tune extra arguments: {' '.join(args.tune_arg)}")
    header = (f"{'seed':>4} | {'ours test':>9} {'calls':>5} {'wall s':>7} | {'ref test':>8} {'calls':>5} "
              f"{'wall s':>7} | {'warm task reqs':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['seed']:>4} | {_cell(r, 'ours', 'test_score', '.3f'):>9} {_cell(r, 'ours', 'calls_used', 'd'):>5} "
              f"{_cell(r, 'ours', 'wall_s', '.1f'):>7} | {_cell(r, 'reference', 'test_score', '.3f'):>8} "
              f"{_cell(r, 'reference', 'calls_used', 'd'):>5} {_cell(r, 'reference', 'wall_s', '.1f'):>7} | "
              f"{_cell(r, 'warm', 'task_requests', 'd'):>14}")
    print("-" * len(header))
    m = summary["means"]
    o, f = m.get("ours", {}), m.get("reference", {})

    def g(d: dict[str, Any], k: str, fmt: str) -> str:
        return "-" if d.get(k) is None else format(d[k], fmt)

    print(f"{'mean':>4} | {g(o, 'test_score', '.3f'):>9} {g(o, 'calls_used', '.0f'):>5} {g(o, 'wall_s', '.1f'):>7} | "
          f"{g(f, 'test_score', '.3f'):>8} {g(f, 'calls_used', '.0f'):>5} {g(f, 'wall_s', '.1f'):>7} |")
    if any("reference" in r for r in rows):
        reported = [r["reference"]["calls_reported"] for r in rows if "reference" in r]
        print(f"reference: calls as gepa reports them {reported}; over budget in "
              f"{summary['reference_over_budget_runs']} of {len(reported)} runs; seed test score "
              f"{_mean(rows, 'reference', 'seed_test_score'):.3f}")
    ceiling = statistics.fmean(r["ceiling"]["test"] for r in rows)
    print(f"ceiling: a prompt stating all {rows[0]['ceiling']['train_rules']} rules the train split reveals "
          f"scores {ceiling:.3f} on test (rules absent from train cannot be learned)")
    for side in ("ours", "reference"):
        if any(side in r for r in rows):
            counts = [r[side]["train_rules_in_best"] for r in rows if side in r]
            print(f"{side}: train rules stated by the best prompt, per seed: {counts}")
    for name, ok in summary["checks"].items():
        print(f"check {name}: {'PASS' if ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-4", help="seeds to run: 0-4, 0,3,7 ... (default 0-4)")
    parser.add_argument("--budget", type=int, default=300, help="max metric calls per run (default 300)")
    parser.add_argument("--per-rule", type=int, default=4, help="instances per rule (12 rules; default 4)")
    parser.add_argument("--task-delay", type=float, default=0.1, help="task model latency, s (default 0.1)")
    parser.add_argument("--reflection-delay", type=float, default=0.3, help="reflection latency, s (default 0.3)")
    parser.add_argument("--tune-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `gepa-tune tune`, repeatable (e.g. --tune-arg=--parallel=4)")
    parser.add_argument("--only", choices=("ours", "reference"), help="run one side only")
    parser.add_argument("--keep-prompts", action="store_true", help="keep the reference's best prompt in --json")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args()

    if args.only != "ours":
        ensure_reference_venv()
        args.reference_version = subprocess.run(
            [str(REF_PYTHON), "-c", "import importlib.metadata as m; print(m.version('gepa'))"],
            capture_output=True, text=True, check=True).stdout.strip()
    else:
        args.reference_version = "(not run)"

    rows = []
    responder = rule_task.responder(task_delay=args.task_delay, reflection_delay=args.reflection_delay)
    with FakeOpenAI(responder=responder) as server:
        for seed in parse_seeds(args.seeds):
            rows.append(bench_seed(server, seed, args))
            if not args.json:
                print(f"seed {seed} done", file=sys.stderr, flush=True)
        if server.errors:
            raise SystemExit(f"the fake server's responder raised: {server.errors[0]!r}")
    summary = summarize(rows, args.budget)
    if args.json:
        print(json.dumps({"budget": args.budget, "per_rule": args.per_rule, "task_delay": args.task_delay,
                          "reflection_delay": args.reflection_delay, "reference_version": args.reference_version,
                          "tune_args": args.tune_arg,
                          "runs": rows, **summary}, indent=2))
    else:
        print_table(rows, summary, args)


if __name__ == "__main__":
    main()
