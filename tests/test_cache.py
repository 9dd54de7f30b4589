"""`gepa_action.cache` on its own: what a hit is, what the key must cover, and what happens to a cache
that is damaged, full, read-only or shared by several processes.

The race of processes creating a fresh cache is in test_cache_race.py; the client's use of the cache
(cached answers cost nothing, secrets are redacted before they are stored) is in test_lm.py and
test_faults_lm.py.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes.mounts import read_only

from gepa_action.cache import CacheFull, ResponseCache, cache_key
from gepa_action.errors import RunError

REQUEST: dict[str, Any] = {
    "base_url": "http://127.0.0.1:8080/v1",
    "model": "task-model",
    "messages": [{"role": "system", "content": "Label it."}, {"role": "user", "content": "I was charged twice"}],
    "temperature": 0.0,
    "max_tokens": 64,
    "sample": 0,
}
ANSWER = {"text": "billing", "finish_reason": "stop", "prompt_tokens": 7, "completion_tokens": 1}


def key(**changes: Any) -> str:
    return cache_key(**{**REQUEST, **changes})


# -- hits and misses ---------------------------------------------------------------------------------------


def test_a_stored_answer_is_a_hit_after_reopening_and_anything_else_a_miss(tmp_path: Path) -> None:
    path = tmp_path / "deep" / ".gepa" / "cache.sqlite3"  # missing folders are created
    with ResponseCache(path) as cache:
        assert cache.get(key()) is None
        cache.put(key(), ANSWER)
        assert cache.get(key()) == ANSWER
        assert len(cache) == 1
    with ResponseCache(path) as cache:  # the next run, or another process
        assert cache.get(key()) == ANSWER
        assert cache.get(key(model="other-model")) is None


def test_a_second_put_of_a_key_replaces_the_first(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        cache.put(key(), {"text": "old"})
        cache.put(key(), {"text": "new"})
        assert cache.get(key()) == {"text": "new"} and len(cache) == 1


def test_answers_round_trip_exactly(tmp_path: Path) -> None:
    """Non-ASCII text, nested fields and odd numbers come back as they went in: a cached run must
    score exactly like the run that paid for the answers."""
    value = {"text": "Caf\u00e9 \u2014 \u0444\u0430\u043a\u0442\u0443\u0440\u0430 \U0001f9fe\n\ttab",
             "nested": {"list": [1, 2.5, None, True]}, "big": 10**20, "neg": -0.0}
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        cache.put(key(), value)
        assert cache.get(key()) == value


def test_a_lone_surrogate_in_an_answer_is_stored_and_comes_back_exactly(tmp_path: Path) -> None:
    """JSON may carry "\\ud800", which is not UTF-8: the store must not crash on it (a crash here lost the
    answer just paid for) nor change it."""
    value = {"text": "label \ud800 caf\u00e9", "finish_reason": "stop"}
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        cache.put(key(), value)
        assert cache.get(key()) == value


# -- the key -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "http://127.0.0.1:9090/v1"},  # another server may serve other weights under one name
        {"model": "task-model-2"},
        {"temperature": 0.7},
        {"max_tokens": 65},  # a longer limit can change a cut-off answer
        {"messages": [{"role": "system", "content": "Label it."}, {"role": "user", "content": "I was charged twice."}]},
        {"messages": [{"role": "user", "content": "Label it."}, {"role": "user", "content": "I was charged twice"}]},
        {"messages": list(reversed(REQUEST["messages"]))},
        {"messages": REQUEST["messages"][1:]},
        {"extra": {"seed": 1}},
    ],
)
def test_everything_that_can_change_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key(**change) != key()


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "http://127.0.0.1:8080/v1/"},  # the same endpoint, written with a trailing slash
        {"messages": [{"content": m["content"], "role": m["role"]} for m in REQUEST["messages"]]},  # key order
        {"sample": 3},  # at temperature 0 every draw is the same request
        {"extra": {}},
    ],
)
def test_what_cannot_change_the_answer_keeps_the_key(change: dict[str, Any]) -> None:
    assert key(**change) == key()


def test_the_key_format_is_pinned_so_an_upgrade_keeps_every_cache_warm() -> None:
    """The canonical JSON of the request, hashed: any change to it silently makes every user's cache cold."""
    import hashlib
    import json

    request = {**REQUEST, "messages": [{"role": "user", "content": "caf\u00e9 \u2603"}]}
    canonical = json.dumps({k: v for k, v in request.items() if k != "sample"}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    assert cache_key(**request) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_a_lone_surrogate_in_a_prompt_still_gets_a_key_of_its_own() -> None:
    """An eval file's "\\ud800" or an earlier step's odd answer reaches the messages; hashing it must
    not crash, and must not collide with the same prompt holding U+FFFD."""
    odd = key(messages=[{"role": "user", "content": "x \ud800"}])
    assert odd != key(messages=[{"role": "user", "content": "x \ufffd"}]) and odd != key()


def test_the_key_is_a_digest_so_no_prompt_text_is_stored_in_it(tmp_path: Path) -> None:
    secret_prompt = "internal escalation phone 555-0199"
    k = key(messages=[{"role": "user", "content": secret_prompt}])
    assert len(k) == 64 and set(k) <= set("0123456789abcdef")
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        cache.put(k, {"text": "ok"})
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret_prompt.encode() not in data


def test_the_key_is_stable_across_processes() -> None:
    """Python's str hash is randomised per process; the cache key must not be, or no re-run would hit."""
    code = ("from gepa_action.cache import cache_key; import json, sys; "
            "print(cache_key(**json.loads(sys.argv[1])))")
    import json
    import subprocess
    import sys

    outputs = {
        subprocess.run([sys.executable, "-c", code, json.dumps(REQUEST)], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {key()}


# -- damaged entries and files -------------------------------------------------------------------------------


@pytest.mark.parametrize("stored", ["{not json", "[1, 2]", "\"text\"", "null", ""])
def test_a_damaged_row_is_a_miss_and_the_next_answer_replaces_it(tmp_path: Path, stored: str) -> None:
    path = tmp_path / "c.sqlite3"
    with ResponseCache(path) as cache:
        cache.put(key(), ANSWER)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE responses SET value = ?", (stored,))
    with ResponseCache(path) as cache:
        assert cache.get(key()) is None
        cache.put(key(), ANSWER)
        assert cache.get(key()) == ANSWER


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_file_that_is_not_a_cache_is_one_line_with_the_way_out(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(content)
    with pytest.raises(RunError) as caught, ResponseCache(path) as cache:
        cache.get(key())
    message = str(caught.value)
    assert str(path) in message and "--no-cache" in message and "\n" not in message
    assert path.read_bytes() == content, "the user's file is left as it was"


def test_a_folder_where_the_cache_file_should_be_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cache.sqlite3").mkdir()
    with pytest.raises(RunError, match=r"cannot open the response cache .*cache\.sqlite3"):
        ResponseCache(tmp_path / "cache.sqlite3")


def test_a_closed_cache_says_so(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    cache.close()
    cache.close()  # twice is fine
    with pytest.raises(RunError, match="is closed"):
        cache.get(key())


# -- read-only and full disks --------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [True, False], ids=["existing-cache", "new-cache"])
def test_a_read_only_folder_is_one_line_naming_it_and_the_cache_is_kept(tmp_path: Path, existing: bool) -> None:
    """A read-only checkout (a locked-down runner, a mounted volume): the way out is --no-cache."""
    folder = tmp_path / ".gepa"
    folder.mkdir()
    if existing:
        with ResponseCache(folder / "cache.sqlite3") as cache:
            cache.put(key(), ANSWER)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with read_only(folder), pytest.raises(RunError) as caught:
        ResponseCache(folder / "cache.sqlite3")
    message = str(caught.value)
    assert f"make {folder} writable or run with --no-cache" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    if existing:
        with ResponseCache(folder / "cache.sqlite3") as cache:  # writable again: nothing was lost
            assert cache.get(key()) == ANSWER


def test_a_full_disk_is_cache_full_and_what_was_stored_survives(tmp_path: Path) -> None:
    """SQLite's page limit makes the database answer SQLITE_FULL exactly as a full disk does."""
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        cache.put(key(), ANSWER)
        conn = cache._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(CacheFull) as caught:
            for i in range(200):
                cache.put(key(sample=i, temperature=1.0), {"text": "x" * 4000})
        assert "free some space" in str(caught.value) and "\n" not in str(caught.value)
        assert cache.get(key()) == ANSWER
        conn.execute(f"PRAGMA max_page_count={pages * 1000}")  # space was freed: the resume goes on
        cache.put(key(model="after"), ANSWER)
        assert cache.get(key(model="after")) == ANSWER


# -- several writers -----------------------------------------------------------------------------------------


def test_threads_sharing_one_cache_lose_nothing(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with ResponseCache(tmp_path / "c.sqlite3") as cache:
        def work(worker: int) -> None:
            try:
                for i in range(50):
                    k = key(model=f"m{worker}", max_tokens=i)
                    cache.put(k, {"worker": worker, "i": i})
                    assert cache.get(k) == {"worker": worker, "i": i}
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(cache) == 8 * 50


def _write_many(path: str, worker: int, count: int, failures: Any) -> None:
    try:
        with ResponseCache(Path(path)) as cache:
            for i in range(count):
                cache.put(key(model=f"p{worker}", max_tokens=i), {"worker": worker, "i": i})
                cache.get(key(model=f"p{(worker + 1) % 4}", max_tokens=i))  # read the others' rows meanwhile
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        failures.put(f"{type(exc).__name__}: {exc}")


def test_processes_writing_one_cache_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    ResponseCache(path).close()  # an existing cache, as on a second CI job
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(str(path), w, 150, failures)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    found = []
    while not failures.empty():
        found.append(failures.get(timeout=1))
    assert not found, found
    with ResponseCache(path) as cache:
        assert len(cache) == 4 * 150
        assert cache.get(key(model="p3", max_tokens=149)) == {"worker": 3, "i": 149}


def test_a_writer_waits_for_another_process_holding_the_write_lock(tmp_path: Path) -> None:
    """A long write by another process delays this one's put; it does not fail it."""
    import subprocess
    import sys
    import time

    path = tmp_path / "c.sqlite3"
    ResponseCache(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE')\n"
         "print('held', flush=True); time.sleep(0.8); c.execute('COMMIT')", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with ResponseCache(path) as cache:
            cache.put(key(), ANSWER)
            waited = time.monotonic() - started
            assert cache.get(key()) == ANSWER
    finally:
        holder.wait(10)
    assert waited >= 0.3, "the put must have waited for the other process's write to end"
