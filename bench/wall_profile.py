"""Where a tuning run's wall time goes: one family and seed of the suite, every request timed at the server.

The suite (bench/suite.py) says how long a search took; this says why. It runs `gepa-tune tune` on one
family of bench/families.py against a loopback server that notes when each request arrived and how
long its answer was held (100 ms task model, 300 ms reflection model), and prints:

* the search's span at the server, its task calls, and how busy the task slots were (calls x 100 ms
  over span x concurrency): 100% would be every slot running a task call the whole time;
* every reflection call with the number of task calls running beside it on average: 0 means the
  reflection sat on the critical path alone, which is the time a pipelined engine tries to hide;
* a strip of the whole run in 100 ms steps: the task calls in flight (0-9, 9 meaning 9 or more) and
  `R` while a reflection is out; the test scoring (after the search) is the tail of full waves.

    .venv/bin/python bench/wall_profile.py FAMILY [--seed 0] [--budget N] [--tune-arg=--parallel=2 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from fakes.openai_server import FakeOpenAI, Reply  # noqa: E402
from families import FAMILIES  # noqa: E402

GEPA_TUNE = Path(sys.executable).parent / "gepa-tune"
TASK_DELAY, REFLECTION_DELAY, CONCURRENCY = 0.1, 0.3, 10


def profile(family: str, seed: int, budget: int | None, extra: list[str]) -> None:
    world = FAMILIES[family]
    budget = budget or world.budget
    inner = world.responder(TASK_DELAY, REFLECTION_DELAY)
    log: list[tuple[float, float, bool]] = []  # start, end (seconds since the first request), reflection?
    lock = threading.Lock()

    def timed(body: dict[str, Any]) -> Reply:
        reply = inner(body)
        now = time.monotonic()
        with lock:
            log.append((now, now + (reply.delay or 0.0), reply.delay == REFLECTION_DELAY))
        return reply

    with FakeOpenAI(responder=timed) as server, tempfile.TemporaryDirectory(prefix="wall-profile-") as tmp:
        root = Path(tmp) / "ws"
        world.write_workspace(root, server.url, seed, budget)
        proc = subprocess.run([str(GEPA_TUNE), "-C", str(root), "tune", "--budget", str(budget), "--seed", str(seed),
                               "--json", *extra], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"gepa-tune tune failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
        (task,) = json.loads(proc.stdout)["tasks"]
    usage = task["usage"]
    t0 = min(start for start, _, _ in log)
    calls = [(s - t0, e - t0) for s, e, reflection in log if not reflection]
    reflections = [(s - t0, e - t0) for s, e, reflection in log if reflection]
    # The search is everything before the test scoring: the first `metric_calls` task calls in time order.
    search = sorted(calls)[: usage["metric_calls"]]
    end = max([e for _, e in search] + [e for _, e in reflections])
    busy = sum(e - s for s, e in search) / (end * CONCURRENCY)
    print(f"{family} seed {seed}, budget {budget}: test {task['scores']['test']['best']:.3f}, "
          f"{usage['metric_calls']} calls, {len(reflections)} reflections, search_wall_s {usage.get('search_wall_s')}")
    print(f"search span at the server {end:.2f} s; task slots busy {busy:.0%} "
          f"(the calls alone need {len(search) * TASK_DELAY / CONCURRENCY:.2f} s)")
    exposed = 0.0
    for s, e in reflections:
        beside = sum(max(0.0, min(e, ce) - max(s, cs)) for cs, ce in calls) / (e - s)
        exposed += (e - s) if beside < 0.5 else 0.0
        print(f"  reflection {s:5.2f}-{e:5.2f} s: {beside:4.1f} task calls beside it")
    print(f"reflection time with (almost) nothing beside it: {exposed:.1f} s; stop: {task.get('stop_reason')}")
    last = max(e for _, e in calls + reflections)
    strip = []
    for step in range(int(last / 0.1) + 1):
        a, z = step * 0.1, (step + 1) * 0.1
        running = sum(max(0.0, min(z, e) - max(a, s)) for s, e in calls) / 0.1
        out = any(s < z and e > a for s, e in reflections)
        strip.append(f"{min(9, round(running))}{'R' if out else ''}")
    print(" ".join(strip))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, help="default: the family's budget")
    parser.add_argument("--tune-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `gepa-tune tune`, repeatable")
    args = parser.parse_args()
    profile(args.family, args.seed, args.budget, args.tune_arg)


if __name__ == "__main__":
    main()
