"""What a drift watch costs, against what the cache would have hidden.

One workspace with N labelled instances (val and test) on the fake OpenAI server on 127.0.0.1, with a
per-request latency standing in for a remote model. Each step runs as a fresh `gepa-tune` process:

1. `eval --update-baseline` records gepa.lock (and fills the cache);
2. the model changes its answers for a fraction of the instances (a silent update);
3. `eval --split all` on the warm cache: what a watch that trusted the cache would see (0 requests, the
   old scores: the update is invisible);
4. `watch` (fresh): the requests it pays for, its wall time, and whether it saw the drift;
5. `eval --split all` again: the cache now holds the fresh answers (0 requests, the new scores).

    .venv/bin/python bench/watch_cost.py [--instances 200] [--latency 0.02] [--changed 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fakes.openai_server import FakeOpenAI  # noqa: E402
from fakes.workspace_factory import GEPA_YAML, jsonl, make_workspace  # noqa: E402

CLI = str(Path(sys.executable).with_name("gepa-tune"))
LABELS = ("bug", "billing", "feature_request", "how_to")


def rows(n: int) -> list[dict]:
    return [{"id": f"t{i:04d}", "inputs": {"text": f"ticket {i} about {LABELS[i % 4]}"}, "expected": LABELS[i % 4],
             "split": "val" if i % 2 else "test"} for i in range(n)]


def responder(changed: float, n: int) -> object:
    """Answers the label named in the ticket, except for the first `changed` share of tickets."""
    state = {"updated": False}
    cutoff = int(n * changed)

    def answer(body: dict) -> str:
        text = body["messages"][-1]["content"]
        number = int(text.split("ticket ", 1)[1].split()[0])
        label = text.rsplit("about ", 1)[1].strip()
        return "other" if state["updated"] and number < cutoff else label

    answer.state = state  # type: ignore[attr-defined]
    return answer


def run(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request at the fake server")
    parser.add_argument("--changed", type=float, default=0.3, help="share of tickets the update answers wrongly")
    args = parser.parse_args()
    answer = responder(args.changed, args.instances)
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(responder=answer, delay=args.latency) as server:
        root = make_workspace(Path(tmp), config=GEPA_YAML.replace("concurrency: 4", "concurrency: 8"),
                              instances=rows(args.instances))
        (root / "evals/set.jsonl").write_text(jsonl(rows(args.instances)))
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": server.url, "GITHUB_ACTIONS": ""}
        common = ["-C", str(root)]

        def step(label: str, cli_args: list[str]) -> dict:
            before = len(server.requests)
            seconds, proc = run(common + cli_args, env)
            if proc.returncode != 0:
                sys.exit(f"{label} failed: {proc.stderr.strip()[-500:]}")
            return {"label": label, "seconds": seconds, "requests": len(server.requests) - before, "out": proc.stdout}

        record = step("eval --update-baseline (records gepa.lock)", ["eval", "--update-baseline", "--json"])
        answer.state["updated"] = True  # type: ignore[attr-defined]
        cached = step("eval on the warm cache after the update", ["eval", "--split", "all", "--json"])
        watch = step("watch (fresh answers)", ["watch", "--json"])
        after = step("eval on the cache after the watch", ["eval", "--split", "all", "--json"])

    def means(out: str) -> str:
        data = json.loads(out)
        return ", ".join(f"{t['split']} {t['mean_score']:.3f}" for t in data["tasks"] if t["split"] != "train")

    findings = json.loads(watch["out"])["tasks"][0]
    print(f"{args.instances} instances (val+test), {args.latency * 1000:.0f} ms per request, "
          f"{args.changed:.0%} of tickets answered differently after the update")
    print(f"{'step':<45} {'requests':>8} {'wall s':>7}  scores")
    print(f"{record['label']:<45} {record['requests']:>8} {record['seconds']:>7.2f}  {means(record['out'])}")
    print(f"{cached['label']:<45} {cached['requests']:>8} {cached['seconds']:>7.2f}  {means(cached['out'])}")
    watch_scores = ", ".join(f"{s['split']} {s['before']:.3f} -> {s['now']:.3f}" for s in findings["splits"])
    print(f"{watch['label']:<45} {watch['requests']:>8} {watch['seconds']:>7.2f}  {watch_scores}; "
          f"{findings['status']}, {len(findings['regressions'])} regressed instances")
    print(f"{after['label']:<45} {after['requests']:>8} {after['seconds']:>7.2f}  {means(after['out'])}")


if __name__ == "__main__":
    main()
