"""Every fault kind a flaky model endpoint shows, injected on 20% of the calls of a whole `tune` run.

For each kind, a fresh workspace (fresh cache) runs `gepa-tune tune --json --seed 5` as a fresh process
against a loopback server that plays the simulated rule task and fails every 5th attempt in that way.
Printed per kind: exit code, retries by kind (from report.json), metric calls against the budget, wall
time, and whether the scores and the best templates are identical to the fault-free run's. `echo` is a
server that answers normally but appends the request's Authorization header to every answer: the row
says whether the key reached anything under `.gepa/` or the output.

    .venv/bin/python bench/faults.py [--budget 150] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fakes import rule_task  # noqa: E402
from fakes.openai_server import FakeOpenAI, Reply  # noqa: E402

CLI = str(Path(sys.executable).with_name("gepa-tune"))
KEY = "sk-bench-EchoMe-0123456789abcdef"
HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"
STALL = 1.5  # seconds, against a 1 s client timeout

FAULTS: dict[str, Reply | None] = {
    "none": None,
    "http_429": Reply(status=429, headers={"retry-after-ms": "50"}),
    "http_500": Reply(status=500),
    "http_503": Reply(status=503),
    "html_200": Reply(body=HTML, content_type="text/html"),
    "garbled_200": Reply(body={"garbled": True}),
    "empty_choices_200": Reply(body={"choices": []}),
    "stall": Reply(delay=STALL),  # answered too late: the client's timeout fires first
    "echo": None,
}


def faulty(kind: str, every: int) -> Any:
    inner = rule_task.responder()
    lock = threading.Lock()
    count = 0

    def answer(body: dict[str, Any]) -> Reply:
        nonlocal count
        with lock:
            count += 1
            hit = count % every == 0
        fault = FAULTS[kind]
        if hit and fault is not None:
            if kind == "stall":  # the right answer, too late
                return Reply(text=inner(body).text, delay=STALL)
            return fault
        return inner(body)

    return answer


def run(kind: str, budget: int, every: int, root: Path) -> dict[str, Any]:
    with FakeOpenAI(responder=faulty(kind, every)) as server:
        if kind == "echo":
            server.echo_headers("authorization")
        rule_task.write_workspace(root, server.url, budget=budget)
        config = root / "gepa.yaml"
        text = config.read_text().replace("max_retries: 2", "max_retries: 6").replace("timeout: 30", "timeout: 1")
        config.write_text(text.replace("lm:\n", "lm:\n  api_key_env: BENCH_KEY\n", 1))
        env = {**os.environ, "BENCH_KEY": KEY}
        start = time.perf_counter()
        proc = subprocess.run([CLI, "-C", str(root), "tune", "--json", "--seed", "5"], env=env,
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        attempts = server.attempts
    report = json.loads(proc.stdout) if proc.stdout.strip() else {"tasks": []}
    task = report["tasks"][0] if report["tasks"] else {}
    leaked = KEY in proc.stdout or KEY in proc.stderr or any(
        KEY.encode() in p.read_bytes() for p in (root / ".gepa").rglob("*") if p.is_file())
    return {"exit": proc.returncode, "wall": wall, "attempts": attempts, "task": task, "leaked": leaked,
            "stderr": proc.stderr.strip().splitlines()[-1:] if proc.returncode else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--every", type=int, default=5, help="fail every N-th attempt (5 = 20%%)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gepa-faults-") as tmp:
        results = {kind: run(kind, args.budget, args.every, Path(tmp) / kind) for kind in FAULTS}
    reference = results["none"]["task"]
    print(f"{'fault':<18} {'exit':>4} {'attempts':>8} {'calls':>9} {'wall':>7}  identical  leaked  retries by kind")
    for kind, r in results.items():
        task = r["task"]
        usage = task.get("usage", {})
        same = bool(task) and all(task.get(k) == reference.get(k) for k in ("scores", "best"))
        calls = f"{usage.get('metric_calls', '?')}/{args.budget}"
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(usage.get("retries_by_kind", {}).items())) or "-"
        # An echoing server changes every answer (the redacted header is appended), so its result differs
        # by design; what matters there is the `leaked` column.
        verdict = "n/a" if kind == "echo" else "yes" if same else "NO"
        print(f"{kind:<18} {r['exit']:>4} {r['attempts']:>8} {calls:>9} {r['wall']:>6.1f}s  "
              f"{verdict:<9}  {'YES' if r['leaked'] else 'no':<6}  {kinds}")
        for line in r["stderr"]:
            print(f"{'':<18} {line}")


if __name__ == "__main__":
    main()
