"""Wall time of a matrix (one process per task, in parallel, then one combine step) against one process
tuning every task, for N tasks of the simulated routing problem (`tests/fakes/rule_task.py`).

Both sides run `gepa-tune` as fresh processes against the same fake OpenAI server on 127.0.0.1, whose
task and reflection models answer after a fixed delay (a model endpoint's latency), each with its own
empty response cache, so every request is paid for on both sides:

* single job: `gepa-tune action` in one clone, tuning all N tasks and proposing one pull request;
* matrix: N clones, `gepa-tune action --no-propose TASK` in each, all started at once (the matrix jobs),
  then `gepa-tune action --from-runs DIR` in a fresh clone (the combine job), which proposes one pull
  request; both push with real git to a bare origin and talk to the fake GitHub over HTTP.

On GitHub each matrix job has its own runner; here all N processes share this machine's cores, so the
matrix figure is pessimistic when the CPU is the bottleneck. So each job is also run alone, one after
the other, and "separate runners" estimates the matrix on GitHub as the slowest job run alone plus the
combine step. Printed: the wall time of each side, the combine step alone, and the metric calls both
sides spent (the same budget per task).

    .venv/bin/python bench/matrix_wall.py [--tasks 6] [--budget 120] [--delay 0.05] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fakes import matrix_workspace  # noqa: E402
from fakes.git_repos import ENV, git, make_origin  # noqa: E402
from fakes.github_server import FakeGitHub  # noqa: E402
from fakes.openai_server import FakeOpenAI  # noqa: E402

TOKEN = "ghs_bench_token"
REPOSITORY = "octo/prompts"
CLI = str(Path(sys.executable).with_name("gepa-tune"))


def environment(github: FakeGitHub, outdir: Path) -> dict[str, str]:
    return {**os.environ, **ENV, "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_TOKEN": TOKEN,
            "GITHUB_API_URL": github.url, "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_OUTPUT": str(outdir / "out"), "GITHUB_STEP_SUMMARY": str(outdir / "summary"),
            "GEPA_TUNE_API_KEY": ""}


def check(proc: subprocess.CompletedProcess[str] | subprocess.Popen[str], output: str, what: str) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{output[-3000:]}")


def metric_calls(folder: Path) -> int:
    return sum(t["usage"]["metric_calls"] + t["usage"]["test_calls"]
               for report in folder.glob(".gepa/runs/*/report.json")
               for t in json.loads(report.read_text())["tasks"])


def single(tmp: Path, bare: Path, github: FakeGitHub, names: list[str]) -> tuple[float, int]:
    clone = tmp / "single"
    git(tmp, "clone", "--quiet", str(bare), str(clone))
    env = environment(github, tmp)
    start = time.perf_counter()
    proc = subprocess.run([CLI, "-C", str(clone), "action", "--branch", "bench/single"], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    check(proc, proc.stdout + proc.stderr, "the single job")
    return wall, metric_calls(clone)


def alone(tmp: Path, bare: Path, github: FakeGitHub, names: list[str]) -> float:
    """The slowest matrix job when each runs by itself (as on its own runner)."""
    env = environment(github, tmp)
    walls = []
    for name in names:
        job = tmp / f"alone-{name}"
        start = time.perf_counter()
        git(tmp, "clone", "--quiet", str(bare), str(job))
        proc = subprocess.run([CLI, "-C", str(job), "action", "--no-propose", name], env=env, capture_output=True,
                              text=True, check=False)
        walls.append(time.perf_counter() - start)
        check(proc, proc.stdout + proc.stderr, f"job {name} alone")
    return max(walls)


def matrix(tmp: Path, bare: Path, github: FakeGitHub, names: list[str]) -> tuple[float, float, int]:
    env = environment(github, tmp)
    start = time.perf_counter()
    procs = {}
    for name in names:
        job = tmp / f"job-{name}"
        git(tmp, "clone", "--quiet", str(bare), str(job))  # a runner's checkout: part of each job's time
        procs[name] = subprocess.Popen([CLI, "-C", str(job), "action", "--no-propose", name], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, proc in procs.items():
        check(proc, proc.communicate()[0], f"matrix job {name}")
    artifacts = tmp / "artifacts"
    for name in names:  # upload-artifact + download-artifact, as a copy
        shutil.copytree(tmp / f"job-{name}/.gepa/runs", artifacts / f"gepa-tune-run-{name}-1")
    combine_start = time.perf_counter()
    clone = tmp / "combine"
    git(tmp, "clone", "--quiet", str(bare), str(clone))
    proc = subprocess.run([CLI, "-C", str(clone), "action", "--branch", "bench/matrix", "--from-runs",
                           str(artifacts)], env=env, capture_output=True, text=True, check=False)
    end = time.perf_counter()
    check(proc, proc.stdout + proc.stderr, "the combine job")
    calls = sum(metric_calls(tmp / f"job-{name}") for name in names)
    return end - start, end - combine_start, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--budget", type=int, default=120, help="metric calls per task")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each model answer takes")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    names = [f"queue{i + 1}" for i in range(args.tasks)]
    singles, matrices, combines, alones = [], [], [], []
    calls = (0, 0)
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="gepa-matrix-bench-") as name:
            tmp = Path(name)
            responder = matrix_workspace.responder(task_delay=args.delay, reflection_delay=args.delay * 4)
            with FakeOpenAI(responder=responder) as server, FakeGitHub(token=TOKEN) as github:
                source = matrix_workspace.write(tmp / "src", server.url, names, budget=args.budget, per_rule=4)
                bare, _ = make_origin(tmp, source=source)
                github.add_repo(REPOSITORY, bare)
                (tmp / "s").mkdir(), (tmp / "m").mkdir(), (tmp / "a").mkdir()
                wall, single_calls = single(tmp / "s", bare, github, names)
                singles.append(wall)
                total, combine, matrix_calls = matrix(tmp / "m", bare, github, names)
                matrices.append(total), combines.append(combine)
                alones.append(alone(tmp / "a", bare, github, names))
                calls = (single_calls, matrix_calls)
    print(f"{args.tasks} tasks, budget {args.budget} metric calls each, model delay {args.delay:g} s "
          f"(reflection {args.delay * 4:g} s), {os.cpu_count()} CPUs, {args.repeats} repeat(s), medians:")
    print(f"  single job (one process tunes all, then proposes): {statistics.median(singles):6.1f} s  "
          f"({calls[0]} metric calls incl. test)")
    print(f"  matrix ({args.tasks} processes at once + combine):       {statistics.median(matrices):6.1f} s  "
          f"({calls[1]} metric calls incl. test)")
    print(f"    of which the combine step (clone + --from-runs + push + PR): {statistics.median(combines):5.1f} s")
    print(f"  matrix / single: {statistics.median(matrices) / statistics.median(singles):.2f}")
    runners = statistics.median(alones) + statistics.median(combines)
    print(f"  matrix on separate runners (slowest job alone {statistics.median(alones):.1f} s + combine): "
          f"{runners:6.1f} s, {runners / statistics.median(singles):.2f} of the single job")


if __name__ == "__main__":
    main()
