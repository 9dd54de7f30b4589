"""`gepa_action.runs` on its own: run ids, finding a run to resume, the run lock, checkpoints and the
event log across a crash, and run files that are damaged or written by two processes.

The same guarantees seen through the CLI (a second `--resume` refused, damaged files as one line, full
and read-only disks mid-run) are in test_run_files.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gepa_action import runs
from gepa_action.engine.state import Candidate, EngineState
from gepa_action.errors import InputError
from gepa_action.runs import RUNS_DIR, RunDir, RunInUse, new_run_id


def make_run(root: Path, **meta: object) -> RunDir:
    return RunDir.create(root, {"tasks": ["route"], "options": {}, "fingerprints": {"route": {}}, **meta})


def seed_state(task: str = "route") -> EngineState:
    state = EngineState.new(task, seed=0)
    state.candidates.append(Candidate(id=0, texts={"prompts/system.j2": "Route it."}, parents=[], origin="seed",
                                      val={"a1": 1.0, "a2": 0.0}))
    return state


def events_of(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in run.events_file.read_text(encoding="utf-8").splitlines()]


# -- run ids and finding a run -------------------------------------------------------------------------------


def test_a_run_id_is_its_start_time_to_the_millisecond_and_a_random_digit() -> None:
    run_id = new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id), run_id
    ids = [new_run_id() for _ in range(200)]
    assert all(int(i[16:19], 16) < 1000 for i in ids)
    assert [i[:19] for i in ids] == sorted(i[:19] for i in ids), "ids drawn later sort later"
    assert len({i[19] for i in ids}) > 8, "the last digit is random (RunDir.create draws again on a collision)"


def test_create_writes_the_record_and_locks_the_folder(tmp_path: Path) -> None:
    run = make_run(tmp_path, note="x")
    try:
        meta = run.read_meta()
        assert meta["run_id"] == run.run_id and meta["status"] == "running" and meta["note"] == "x"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["started_at"])
        assert run.path == tmp_path / RUNS_DIR / run.run_id
        assert (run.path / ".lock").read_text().strip() == str(os.getpid())
    finally:
        run.unlock()
    assert (run.path / ".lock").read_text() == "", "no stale pid is left for the next reader"


def test_two_runs_drawing_the_same_id_get_two_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["20260101-000000-aaaa", "20260101-000000-aaaa", "20260101-000000-bbbb"])
    monkeypatch.setattr(runs, "new_run_id", lambda: next(drawn))
    first, second = make_run(tmp_path), make_run(tmp_path)
    assert (first.run_id, second.run_id) == ("20260101-000000-aaaa", "20260101-000000-bbbb")
    assert first.read_meta()["run_id"] != second.read_meta()["run_id"]


def _create_run(root: str, barrier: Any, ids: Any) -> None:
    barrier.wait()
    run = make_run(Path(root))
    ids.put(run.run_id)
    run.unlock()


def test_processes_starting_runs_at_the_same_instant_get_a_folder_each(tmp_path: Path) -> None:
    """Several jobs on one checkout start in the same second: same time prefix, and each must still get a
    run of its own, with its own record (mkdir is the arbiter, not a check-then-create)."""
    ctx = multiprocessing.get_context("fork")
    barrier, ids = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_create_run, args=(str(tmp_path), barrier, ids)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    created = sorted(ids.get(timeout=5) for _ in procs)
    assert len(set(created)) == 6
    assert sorted(p.name for p in (tmp_path / RUNS_DIR).iterdir()) == created
    for run_id in created:
        assert RunDir.open(tmp_path, run_id).read_meta()["run_id"] == run_id


def test_open_finds_the_latest_run_or_the_one_named(tmp_path: Path) -> None:
    for run_id in ("20260101-000000-aaaa", "20260301-000000-0000", "20260201-000000-ffff"):
        (tmp_path / RUNS_DIR / run_id).mkdir(parents=True)
        (tmp_path / RUNS_DIR / run_id / "run.json").write_text(json.dumps({"run_id": run_id}))
    (tmp_path / RUNS_DIR / "20991231-000000-zzzz").mkdir()  # no run.json: a crash before the record, or junk
    assert RunDir.open(tmp_path, None).run_id == "20260301-000000-0000"
    assert RunDir.open(tmp_path, "latest").run_id == "20260301-000000-0000"
    assert RunDir.open(tmp_path, "20260101-000000-aaaa").run_id == "20260101-000000-aaaa"


@pytest.mark.parametrize("asked", ["20250101-000000-dead", "../../etc", "/etc", "20991231-000000-zzzz", ""])
def test_open_refuses_a_run_that_is_not_there_and_lists_recent_ones(tmp_path: Path, asked: str) -> None:
    make_run(tmp_path).unlock()
    (tmp_path / RUNS_DIR / "20991231-000000-zzzz").mkdir()
    with pytest.raises(InputError) as caught:
        RunDir.open(tmp_path, asked)
    message = str(caught.value)
    assert f"no run '{asked}'" in message and "recent runs: 2" in message and "\n" not in message


def test_open_with_no_runs_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="there are no runs yet.*gepa-tune tune"):
        RunDir.open(tmp_path, None)


# -- the run lock --------------------------------------------------------------------------------------------


def test_a_locked_run_is_refused_to_a_second_opener_until_it_is_unlocked(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    second = RunDir.open(tmp_path, run.run_id)
    with pytest.raises(RunInUse, match=f"run {run.run_id} is in use by PID {os.getpid()}"):
        second.lock()
    run.unlock()
    second.lock()
    second.unlock()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The lock is the kernel's: a run killed with SIGKILL, which runs no cleanup, frees it anyway."""
    run = make_run(tmp_path)
    run_id = run.run_id
    run.unlock()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom gepa_action.runs import RunDir\n"
         "run = RunDir.open(Path(sys.argv[1]), sys.argv[2]); run.lock(); print('locked', flush=True); time.sleep(60)",
         str(tmp_path), run_id], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=f"PID {holder.pid}"):
            RunDir.open(tmp_path, run_id).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    again = RunDir.open(tmp_path, run_id)
    again.lock()  # the pid the dead process left in the file does not matter
    again.unlock()


# -- checkpoints and the event log ---------------------------------------------------------------------------


def test_a_checkpoint_and_its_events_round_trip(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert run.load_state("route") is None  # before the first round
    state = seed_state()
    run.save(state, [{"event": "val", "task": "route", "candidate": 0}])
    run.unlock()
    reopened = RunDir.open(tmp_path, run.run_id)
    loaded = reopened.load_state("route", ["prompts/system.j2"])
    assert loaded is not None and loaded.to_json() == state.to_json()
    assert events_of(reopened) == [{"event": "val", "task": "route", "candidate": 0, "seq": 0}]


def test_a_resume_drops_the_interrupted_rounds_events_and_keeps_errors(tmp_path: Path) -> None:
    """A kill between a round's events and its checkpoint: the resume replays that round, so its events
    must not be in the log twice; an error event is kept (it happened, whatever is replayed)."""
    run = make_run(tmp_path)
    run.load_state("route")
    state = seed_state()
    run.save(state, [{"event": "val", "task": "route", "candidate": 0}])
    run.number_events("route", interrupted := [{"event": "proposal", "task": "route"},
                                                {"event": "error", "task": "route", "message": "timeout"}])
    run.append_events(interrupted)  # ...and the process dies before the checkpoint
    run.unlock()

    resumed = RunDir.open(tmp_path, run.run_id)
    resumed.load_state("route")
    resumed.drop_replayed_events("route")
    assert [e["event"] for e in events_of(resumed)] == ["val", "error"]
    resumed.save(state, [{"event": "proposal", "task": "route"}])
    assert [(e["event"], e.get("seq")) for e in events_of(resumed)] == [("val", 0), ("error", None), ("proposal", 1)]


def test_half_a_line_from_a_kill_mid_append_is_dropped_on_resume(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.load_state("route")
    run.save(seed_state(), [{"event": "val", "task": "route", "candidate": 0}])
    with run.events_file.open("a", encoding="utf-8") as handle:
        handle.write('{"event": "proposal", "task": "rou')  # the kill came mid-write
    run.unlock()
    resumed = RunDir.open(tmp_path, run.run_id)
    resumed.load_state("route")
    resumed.drop_replayed_events("route")
    resumed.save(seed_state(), [{"event": "proposal", "task": "route"}])
    assert [e["event"] for e in events_of(resumed)] == ["val", "proposal"]


def test_a_last_line_that_lost_only_its_newline_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    """A kill (or a full disk) can cut an append exactly before its newline: the line is whole JSON and is
    kept, and the resume's first event must start a line of its own, not be glued to it."""
    run = make_run(tmp_path)
    run.load_state("route")
    run.save(seed_state(), [{"event": "val", "task": "route", "candidate": 0}])
    with run.events_file.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": "error", "task": "route", "message": "disk full"}))  # no newline
    run.unlock()
    resumed = RunDir.open(tmp_path, run.run_id)
    resumed.load_state("route")
    resumed.drop_replayed_events("route")
    resumed.save(seed_state(), [{"event": "proposal", "task": "route"}])
    assert [e["event"] for e in events_of(resumed)] == ["val", "error", "proposal"]


def test_a_checkpoint_saved_for_a_failed_round_does_not_cover_its_events(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.load_state("route")
    state = seed_state()
    run.save(state, [{"event": "val", "task": "route", "candidate": 0}])
    run.save(state, [{"event": "proposal", "task": "route"}], covered=False)
    data = json.loads(run.state_file("route").read_text())
    assert data["events_written"] == 1, "the failed round's event is logged but left for the replay to redo"


# -- run files as untrusted input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "cannot read the run record"),
        ("{\"run_id\": ", "cannot read the run record"),
        ("[" * 100_000 + "]" * 100_000, "cannot read the run record"),  # nested past the parser's depth
        ("NaN", "the run record must be a JSON object, not float"),
        ('{"run_id": 7}', "'run_id' must be a str, not int"),
        ('{"tasks": ["route", 3]}', "'tasks' must be a list of task names"),
        ('{"tasks": ["route"], "fingerprints": {"route": []}}', "'fingerprints.route' must be an object"),
        ('{"status": 1}', "'status' must be a string"),
        ('{"task_status": []}', "'task_status' must be an object"),
    ],
)
def test_a_damaged_run_record_is_one_line_naming_run_json(tmp_path: Path, content: str, needle: str) -> None:
    run = make_run(tmp_path)
    run.unlock()
    run.meta_file.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        RunDir.open(tmp_path, run.run_id).read_meta()
    message = str(caught.value)
    assert message.startswith(str(run.meta_file)) and needle in message and "\n" not in message


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.update(events_written=-1), "'events_written' must be a count"),
        (lambda s: s.update(events_written=True), "'events_written' must be a count"),
        (lambda s: s["candidates"][0].update(id=5), "candidate 0 has id 5"),
        (lambda s: s["candidates"][0]["texts"].update({"prompts/other.j2": "x"}), "lacks some"),
        (lambda s: s["candidates"][0].update(val={"a1": float("inf")}), "finite scores"),
        (lambda s: s.update(metric_calls="many"), "'metric_calls' and 'usage' are damaged"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path: Path, edit, needle: str) -> None:  # noqa: ANN001
    run = make_run(tmp_path)
    run.load_state("route")
    run.save(seed_state(), [])
    data = json.loads(run.state_file("route").read_text())
    edit(data)
    run.state_file("route").write_text(json.dumps(data))  # json writes inf as Infinity, which it reads back
    run.unlock()
    with pytest.raises(InputError) as caught:
        RunDir.open(tmp_path, run.run_id).load_state("route", ["prompts/system.j2"])
    message = str(caught.value)
    assert message.startswith(str(run.state_file("route"))) and needle in message and "\n" not in message


def test_a_run_folder_reached_through_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "ws"
    (root / ".gepa").mkdir(parents=True)
    (root / RUNS_DIR).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="is a symbolic link"):
        make_run(root)
    assert not (elsewhere / ".lock").exists() and not list(elsewhere.rglob("run.json")), "nothing written there"


@pytest.mark.parametrize("raced", [False, True], ids=["link-in-place", "link-swapped-in-after-the-check"])
def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raced: bool) -> None:
    """Taking the lock truncates `.lock` and writes a pid into it: through a link in a copied or edited run
    folder, a resume would have emptied whatever file the link names."""
    root = tmp_path / "ws"
    run = make_run(root)
    run.unlock()
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n", encoding="utf-8")
    (run.path / ".lock").unlink()
    (run.path / ".lock").symlink_to(victim)
    reopened = RunDir.open(root, run.run_id)
    if raced:  # the link appears between the check and the open: O_NOFOLLOW still refuses it
        real_check, checks = reopened.check_links, []

        def check_too_early(*files: Path) -> None:
            checks.append(files)
            if len(checks) > 1:
                real_check(*files)

        monkeypatch.setattr(reopened, "check_links", check_too_early)
    with pytest.raises(InputError) as caught:
        reopened.lock()
    message = str(caught.value)
    assert message.startswith(str(run.path / ".lock")) and "is a symbolic link" in message and "\n" not in message
    assert victim.read_text(encoding="utf-8") == "precious\n"


# -- atomic writes --------------------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.json"
    runs.write_json(target, {"v": 1})

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", no_space)
    with pytest.raises(runs.RunWriteError, match=f"cannot write in {re.escape(str(tmp_path))}: No space left"):
        runs.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_latest_is_the_last_run_started_even_within_one_second(tmp_path: Path) -> None:
    """Runs started back to back (a script, a retry) share their second: "latest" must still be the last
    one, not whichever drew the larger random suffix."""
    started = []
    for _ in range(12):
        run = make_run(tmp_path)
        run.unlock()
        started.append(run.run_id)
        time.sleep(0.002)
    assert len({r[:15] for r in started}) < len(started)  # the point of the test: some share their second
    assert sorted(started) == started
    assert RunDir.open(tmp_path, "latest").run_id == started[-1]
