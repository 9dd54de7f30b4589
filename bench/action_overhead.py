"""What `gepa-tune action` adds to a tuning run, and how big its PR body gets.

Both commands run as fresh processes against the same warm response cache (so the tuning itself costs
the same and sends no requests): `gepa-tune tune` alone, then `gepa-tune action`, which also runs its
pre-flight, compares branches, and either finds the open pull request already proposing this result
(`unchanged`: nothing pushed, nothing edited) or, with a new title each time, builds and pushes a commit
with real git to a bare `origin` and updates the pull request with PyGithub over HTTP on a fake GitHub
REST API on 127.0.0.1. The difference of the medians is the Action's own time. It also reports the PR
body's length for an eval set of N instances.

    .venv/bin/python bench/action_overhead.py [--runs 5] [--instances 300] [--write-example docs/example-pr.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fakes import rule_task  # noqa: E402
from fakes.git_repos import ENV, make_origin  # noqa: E402
from fakes.github_server import FakeGitHub  # noqa: E402
from fakes.openai_server import FakeOpenAI  # noqa: E402

TOKEN = "ghs_bench_token"
CLI = str(Path(sys.executable).with_name("gepa-tune"))


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=300, help="eval set size (a multiple of 12)")
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--write-example", type=Path, help="also save the PR body here (e.g. docs/example-pr.md)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gepa-action-bench-") as tmp_dir, \
            FakeOpenAI(responder=rule_task.responder()) as server, FakeGitHub(token=TOKEN) as github:
        tmp = Path(tmp_dir)
        per_rule = max(1, args.instances // len(rule_task.RULES))
        source = rule_task.write_workspace(tmp / "src", server.url, budget=args.budget, per_rule=per_rule)
        bare, clone = make_origin(tmp, source=source)
        github.add_repo("bench/prompts", bare)
        env = {**os.environ, **ENV, "GITHUB_REPOSITORY": "bench/prompts", "GITHUB_TOKEN": TOKEN,
               "GITHUB_API_URL": github.url, "GITHUB_RUN_ID": "1", "GITHUB_ACTIONS": "true",
               "GITHUB_OUTPUT": str(tmp / "out"), "GITHUB_STEP_SUMMARY": str(tmp / "summary")}
        tune = [CLI, "-C", str(clone), "tune", "--seed", "0"]
        act = [CLI, "-C", str(clone), "action", "--seed", "0", "--label", "prompts"]
        cold = timed(act, env)  # creates the PR and fills the cache: later runs send no model request
        first_body = github.pulls("bench/prompts")[0]["body"]
        sent = len(server.requests)
        tune_s = [timed(tune, env) for _ in range(args.runs)]
        github.reset_requests()
        action_s = [timed(act, env) for _ in range(args.runs)]  # the same result: `unchanged`
        unchanged_writes = len([r for r in github.requests if r.method != "GET"])
        github.reset_requests()
        update_s = [timed([*act, "--title", f"bench run {i}"], env) for i in range(args.runs)]
        assert len(server.requests) == sent, "the timed runs must be served from the cache"
        [pr] = github.pulls("bench/prompts")
        body = pr["body"]  # the same text as the first body, but for usage (a warm run pays nothing)
        writes = len([r for r in github.requests if r.method != "GET"])

        print(f"eval set: {per_rule * len(rule_task.RULES)} instances; first (cold) action run {cold:.2f} s")
        print(f"gepa-tune tune   (warm cache): median {statistics.median(tune_s):.2f} s  {_spread(tune_s)}")
        tuned = statistics.median(tune_s)
        print(f"gepa-tune action, same result (unchanged): median {statistics.median(action_s):.2f} s  "
              f"{_spread(action_s)}; own time {statistics.median(action_s) - tuned:.2f} s, "
              f"{unchanged_writes / args.runs:.1f} GitHub writes per run")
        print(f"gepa-tune action, new title (updated):     median {statistics.median(update_s):.2f} s  "
              f"{_spread(update_s)}; own time {statistics.median(update_s) - tuned:.2f} s, "
              f"{writes / args.runs:.1f} GitHub writes per run")
        print(f"PR body: {len(body):,} characters of GitHub's 65,536; "
              f"{'cut' if 'Shortened to fit' in body else 'not cut'}")
        if args.write_example:
            args.write_example.write_text(first_body, encoding="utf-8")
            print(f"wrote {args.write_example}")


def _spread(values: list[float]) -> str:
    return f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


if __name__ == "__main__":
    main()
