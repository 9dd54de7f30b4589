"""Benchmark: `gepa-tune eval` on 200 instances against a loopback server answering each call in 100 ms.

Prints the figures the README quotes: wall time of a cold run (concurrency 16; the floor is
200 x 0.1 s / 16 = 1.25 s) and of a warm-cache re-run (which must send 0 requests).
The wall time is the whole command, interpreter start-up included, as a user would see it.

    .venv/bin/python bench/eval_speed.py [--instances 200] [--delay 0.1] [--concurrency 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes.openai_server import FakeOpenAI  # noqa: E402

CONFIG = """\
lm:
  base_url: {url}
  task_model: bench-model
  max_tokens: 16
  concurrency: {concurrency}
  prices:
    bench-model: {{input: 0.15, output: 0.60}}
tasks:
  - name: bench
    prompt:
      system: prompts/system.j2
      user: prompts/user.j2
    eval: {{path: evals/set.jsonl, version: "1"}}
    metric: {{type: exact, ignore_case: true}}
"""

LABELS = ["bug", "billing", "account", "feature_request", "how_to"]


def write_workspace(root: Path, url: str, instances: int, concurrency: int) -> None:
    (root / "prompts").mkdir()
    (root / "evals").mkdir()
    (root / "gepa.yaml").write_text(CONFIG.format(url=url, concurrency=concurrency))
    (root / "prompts/system.j2").write_text("Classify the support ticket. Answer with one label.")
    (root / "prompts/user.j2").write_text("Ticket {{ ticket_id }}: {{ text }}")
    with (root / "evals/set.jsonl").open("w") as out:
        for n in range(instances):
            row = {"id": f"b{n:04d}", "inputs": {"ticket_id": n, "text": f"ticket number {n} about things"},
                   "expected": LABELS[n % len(LABELS)]}
            out.write(json.dumps(row) + "\n")


def run_eval(root: Path) -> tuple[float, dict]:
    exe = Path(sys.executable).parent / "gepa-tune"
    start = time.perf_counter()
    proc = subprocess.run([str(exe), "-C", str(root), "eval", "--split", "all", "--json"],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"gepa-tune eval failed ({proc.returncode}): {proc.stderr.strip()}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    def responder(body: dict) -> str:
        return LABELS[sum(map(ord, body["messages"][-1]["content"])) % len(LABELS)]

    cold_walls, warm_walls, cold_requests, warm_requests, peak = [], [], [], [], 0
    with FakeOpenAI(responder=responder, delay=args.delay) as server:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                write_workspace(root, server.url, args.instances, args.concurrency)
                before = server.attempts
                wall, _ = run_eval(root)
                cold_walls.append(wall)
                cold_requests.append(server.attempts - before)
                peak = max(peak, server.max_in_flight)
                before = server.attempts
                wall, report = run_eval(root)
                warm_walls.append(wall)
                warm_requests.append(server.attempts - before)
                assert report["usage"]["cached"] == args.instances, report["usage"]

    floor = args.instances * args.delay / args.concurrency
    print(f"gepa-tune eval: {args.instances} instances, {args.delay * 1000:.0f} ms per call, "
          f"concurrency {args.concurrency} (floor {floor:.2f} s), {args.repeat} runs each")
    print(f"{'run':<12}{'requests':>10}{'wall median':>14}{'wall max':>11}")
    print(f"{'cold cache':<12}{statistics.median(cold_requests):>10.0f}{statistics.median(cold_walls):>13.2f}s"
          f"{max(cold_walls):>10.2f}s")
    print(f"{'warm cache':<12}{statistics.median(warm_requests):>10.0f}{statistics.median(warm_walls):>13.2f}s"
          f"{max(warm_walls):>10.2f}s")
    print(f"peak requests in flight at the server: {peak}")


if __name__ == "__main__":
    main()
