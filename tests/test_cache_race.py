"""The response cache opened by several real processes at the same instant, on a fresh file.

Before creation was serialised, switching a fresh file to WAL answered "database is locked" at once to
whichever process lost the race (the busy timeout does not apply to that switch).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from gepa_action.cache import ResponseCache

PROCESSES = 6
TRIALS = 25


def _open_and_write(path: str, barrier: multiprocessing.synchronize.Barrier, index: int, errors) -> None:
    barrier.wait()
    try:
        with ResponseCache(Path(path)) as cache:
            cache.put(f"key-{index}", {"index": index})
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts there were none
        errors.put(f"{type(exc).__name__}: {exc}")


def test_processes_racing_to_create_the_cache_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # children start with everything imported: a tight race
    errors = ctx.Queue()
    for trial in range(TRIALS):
        path = tmp_path / f"t{trial}" / "cache.sqlite3"
        barrier = ctx.Barrier(PROCESSES)
        procs = [ctx.Process(target=_open_and_write, args=(str(path), barrier, i, errors))
                 for i in range(PROCESSES)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        with ResponseCache(path) as cache:
            assert len(cache) == PROCESSES, f"trial {trial}: every process's answer is stored"
    time.sleep(0.05)  # let the queue's feeder threads flush
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found


def test_an_opener_waits_for_the_creation_lock_instead_of_failing(tmp_path: Path) -> None:
    """Another process holding the creation lock (mid-setup) delays an opener; it does not fail it."""
    import fcntl
    import subprocess
    import sys

    path = tmp_path / "cache.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"h = open({str(path) + '.lock'!r}, 'a'); fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(0.8)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with ResponseCache(path) as cache:
        waited = time.monotonic() - started
        cache.put("k", {"v": 1})
    holder.wait(10)
    assert waited >= 0.3, "the opener must wait for the process that holds the creation lock"
    assert fcntl  # imported for the holder's sake; POSIX only
