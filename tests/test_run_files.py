"""Run folders under attack and bad luck: two processes on one run, damaged or edited run files, a
read-only `.gepa/`, a disk that fills up mid-run. Each ends in one line and a documented exit code, and
nothing a resume needs is lost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes import rule_task
from fakes.mounts import read_only
from fakes.openai_server import FakeOpenAI

from gepa_action import runs
from gepa_action.cli import main
from gepa_action.runs import RunDir, RunWriteError, write_atomic

CLI = [sys.executable, "-c", "from gepa_action.cli import entry; entry()"]


def cli(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(root), *args], catch_exceptions=False)


def one_error_line(result: Result | subprocess.CompletedProcess[str], needle: str) -> None:
    err = result.stderr
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and needle in lines[0], err


@pytest.fixture
def sim() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=rule_task.responder()) as server:
        yield server


def finished_run(root: Path, url: str, budget: int = 40) -> str:
    rule_task.write_workspace(root, url, budget=budget)
    result = cli(root, "tune", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_id"]


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def iteration(run_dir: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((run_dir / "state/route.json").read_text())["iteration"]
    return -1


# -- two processes on one run ---------------------------------------------------------------------------


def test_a_second_resume_of_a_running_run_is_refused_and_no_event_is_written_twice(tmp_path: Path) -> None:
    # Slow enough that the first run is still going when the second process has started and been refused.
    with FakeOpenAI(responder=rule_task.responder(task_delay=0.05, reflection_delay=0.4)) as server:
        rule_task.write_workspace(tmp_path, server.url, budget=150, concurrency=4)
        first = subprocess.Popen([*CLI, "tune"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for(lambda: any(iteration(p) >= 1 for p in (tmp_path / ".gepa/runs").glob("*")))
        run_id = next((tmp_path / ".gepa/runs").iterdir()).name
        second = subprocess.run([*CLI, "tune", "--resume", run_id], cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 2
        one_error_line(second, f"run {run_id} is in use by PID {first.pid}")
        first.send_signal(signal.SIGTERM)  # interrupted: now a resume may take over
        _, err = first.communicate(timeout=60)
        # 130 as a rule; on a slow machine the run may just have ended (0), or be past its handler (-15).
        assert first.returncode in (130, 0, -signal.SIGTERM), err
        resumed = subprocess.run([*CLI, "tune", "--resume", run_id], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=120)
        assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in (tmp_path / ".gepa/runs" / run_id / "events.jsonl").read_text().splitlines()]
    vals = [e["candidate"] for e in events if e["event"] == "val"]
    assert len(vals) == len(set(vals)), "a candidate's val event was written twice"
    assert [e["event"] for e in events].count("test") == 1


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    code = ("import sys; from pathlib import Path; from gepa_action.runs import write_atomic\n"
            "for i in range(300): write_atomic(Path(sys.argv[1]), sys.argv[2] * 2000)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), c], stderr=subprocess.PIPE, text=True)
             for c in "ab"]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert target.read_text() in ("a" * 2000, "b" * 2000)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary is left behind"


# -- damaged or edited run files ------------------------------------------------------------------------


@pytest.mark.parametrize(("meta", "needle"), [
    ([], "the run record must be a JSON object, not list"),
    ({"run_id": "x", "tasks": "route", "options": {}, "fingerprints": {}}, "'tasks' must be a list"),
    ("options-edited", "options.parallel: 'many' is not a valid value"),
    ("options-unknown", "'options' is not what gepa-tune writes"),
    ("no-fingerprint", "no fingerprint for task 'route'"),
], ids=["list", "tasks-string", "options-type", "options-unknown", "no-fingerprint"])
def test_a_damaged_run_record_on_resume_is_one_line_exit_2(tmp_path: Path, sim: FakeOpenAI, meta: Any,
                                                            needle: str) -> None:
    run_id = finished_run(tmp_path, sim.url)
    path = tmp_path / ".gepa/runs" / run_id / "run.json"
    real = json.loads(path.read_text())
    if meta == "options-edited":
        meta = {**real, "options": {**real["options"], "parallel": "many"}}
    elif meta == "options-unknown":
        meta = {**real, "options": {**real["options"], "__class__": 1}}
    elif meta == "no-fingerprint":
        meta = {**real, "fingerprints": {}}
    path.write_text(json.dumps(meta))
    result = cli(tmp_path, "tune", "--resume", run_id)
    assert result.exit_code == 2
    one_error_line(result, "run.json")
    assert needle in result.stderr


def test_a_tampered_checkpoint_never_writes_outside_the_workspace(tmp_path: Path, sim: FakeOpenAI) -> None:
    root = tmp_path / "repo" / "ws"
    root.mkdir(parents=True)
    run_id = finished_run(root, sim.url)
    state_file = root / ".gepa/runs" / run_id / "state/route.json"
    state = json.loads(state_file.read_text())
    for candidate in state["candidates"]:
        text = candidate["texts"].pop("prompts/system.j2")
        candidate["texts"]["../../outside-written.txt"] = text + ("pwned" if candidate["id"] else "")
    state_file.write_text(json.dumps(state))
    result = cli(root, "report", run_id, "--write")
    assert result.exit_code == 2
    one_error_line(result, "state/route.json")
    assert "'../../outside-written.txt'" in result.stderr
    assert not (tmp_path / "outside-written.txt").exists()


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda s: s.update(task="other"), "the checkpoint is of task 'other'"),
    (lambda s: s["candidates"][0].update(val={"x": "NaN"}), "'val' must map instance ids to finite scores"),
    (lambda s: s["candidates"][-1].update(parents=[99]), "'parents' must name earlier candidates"),
    (lambda s: s.update(final={**s["final"], "best": 999}), "'final.best' must name a candidate"),
    (lambda s: s.update(usage={"m": {"requests": 1, "__init__": 2}}), "'usage.m' is damaged"),
    (lambda s: s.update(candidates=[{"id": 0}]), "cannot read the checkpoint"),
], ids=["task", "nan", "parents", "final-best", "usage", "shape"])
def test_a_damaged_checkpoint_is_one_line_exit_2(tmp_path: Path, sim: FakeOpenAI, edit: Any, needle: str) -> None:
    run_id = finished_run(tmp_path, sim.url)
    state_file = tmp_path / ".gepa/runs" / run_id / "state/route.json"
    state = json.loads(state_file.read_text())
    edit(state)
    state_file.write_text(json.dumps(state))
    result = cli(tmp_path, "report", run_id)
    assert result.exit_code == 2
    one_error_line(result, needle)


# -- read-only and full disks ---------------------------------------------------------------------------


def test_a_read_only_gepa_folder_is_one_line_naming_it(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=40)
    (tmp_path / ".gepa").mkdir()
    with read_only(tmp_path / ".gepa"):
        result = cli(tmp_path, "tune")
    assert result.exit_code == 2
    one_error_line(result, ".gepa/runs: cannot create the run folder: Read-only file system")
    assert sim.attempts == 0, "nothing is paid for when the run cannot be recorded"


def test_eval_with_a_read_only_gepa_folder_names_it_and_the_way_out(tmp_path: Path, sim: FakeOpenAI) -> None:
    rule_task.write_workspace(tmp_path, sim.url, budget=40)
    (tmp_path / ".gepa").mkdir()
    with read_only(tmp_path / ".gepa"):
        result = cli(tmp_path, "eval")
        assert result.exit_code == 1
        one_error_line(result, "Read-only file system")
        assert f"make {tmp_path / '.gepa'} writable or run with --no-cache" in result.stderr
        assert cli(tmp_path, "eval", "--no-cache").exit_code == 0, "the way out works"


def test_a_read_only_workspace_is_one_line_naming_the_folder(tmp_path: Path, sim: FakeOpenAI) -> None:
    root = tmp_path / "ws"
    rule_task.write_workspace(root, sim.url, budget=40)
    with read_only(root):
        result = cli(root, "tune")
    assert result.exit_code == 2
    one_error_line(result, ".gepa/runs: cannot create the run folder: Read-only file system")


def test_a_gepa_folder_the_user_may_not_write_is_one_line(sim: FakeOpenAI) -> None:
    """As a non-root user (`setpriv` to nobody), a `.gepa/` owned by someone else (mode 755)."""
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as another user")
    root = Path(tempfile.mkdtemp(prefix="gepa-ro-"))  # not under pytest's 0700 tmp root: nobody must read it
    try:
        root.chmod(0o755)
        rule_task.write_workspace(root, sim.url, budget=40)
        (root / ".gepa").mkdir(mode=0o755)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CLI, "-C", str(root), "tune"]
        result = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/"})
        if "Permission denied" in result.stderr and "python" in result.stderr.split(":")[0]:
            pytest.skip(f"nobody cannot run this interpreter: {result.stderr.strip()[:200]}")
        assert result.returncode == 2, result.stderr
        one_error_line(result, ".gepa/runs: cannot create the run folder: Permission denied")
        assert "make .gepa/ writable" in result.stderr and sim.attempts == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _states(run_dir: Path) -> dict[str, Any]:
    state = json.loads((run_dir / "state/route.json").read_text())
    for volatile in ("wall_s", "search_wall_s", "usage"):
        state.pop(volatile)
    return state


def test_a_full_disk_mid_run_is_one_line_and_a_resume_ends_identical(tmp_path: Path) -> None:
    """A real full disk: `.gepa/` on a small tmpfs that a filler file fills while the run goes on."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (the injected-ENOSPC test covers the logic)")
    whole, full = tmp_path / "whole", tmp_path / "full"
    with FakeOpenAI(responder=rule_task.responder(task_delay=0.01, reflection_delay=0.15)) as server:
        for root in (whole, full):
            rule_task.write_workspace(root, server.url, budget=150, concurrency=4)
        reference = cli(whole, "tune", "--seed", "5", "--json")
        assert reference.exit_code == 0, reference.output
        gepa = full / ".gepa"
        gepa.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(gepa)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
        try:
            proc = subprocess.Popen([*CLI, "tune", "--seed", "5", "--json"], cwd=full, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            wait_for(lambda: any(iteration(p) >= 2 for p in (gepa / "runs").glob("*")))
            filler = gepa / "filler"
            # The suppression also covers opening the filler: once seen on a loaded CI host, the disk was
            # already full at that moment (the run then meets the full disk by itself, which is the point).
            with contextlib.suppress(OSError), open(filler, "wb") as handle:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 1, err
            run_id = next((gepa / "runs").iterdir()).name
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert "Traceback" not in err and len(lines) == 1, err
            assert "No space left on device" in lines[0] or "disk is full" in lines[0], lines
            assert str(gepa) in lines[0] and f"--resume {run_id}" in lines[0]
            printed = json.loads(out)  # --json still prints the report, from memory
            assert printed["run_id"] == run_id
            filler.unlink(missing_ok=True)
            resumed = cli(full, "tune", "--resume", run_id, "--json")
            assert resumed.exit_code == 0, resumed.output
            ref_dir = whole / ".gepa/runs" / json.loads(reference.stdout)["run_id"]
            assert _states(gepa / "runs" / run_id) == _states(ref_dir)
            scores = json.loads(reference.stdout)["tasks"][0]["scores"]
            assert json.loads(resumed.stdout)["tasks"][0]["scores"] == scores
        finally:
            subprocess.run(["umount", "-l", str(gepa)], check=False)


def test_an_injected_enospc_on_a_checkpoint_is_one_line_and_resume_ends_identical(
        tmp_path: Path, sim: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: the third checkpoint and every later write fail with ENOSPC, as on a full disk."""
    whole, full = tmp_path / "whole", tmp_path / "full"
    for root in (whole, full):
        rule_task.write_workspace(root, sim.url, budget=150)
    reference = cli(whole, "tune", "--seed", "5", "--json")
    assert reference.exit_code == 0

    saves = 0
    real_save, real_write = RunDir.save, runs.write_atomic

    def failing_save(self: RunDir, state: Any, events: Any, **kwargs: Any) -> None:
        nonlocal saves
        saves += 1
        if saves >= 3:
            raise runs.write_failure(self.state_file(state.task), OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real_save(self, state, events, **kwargs)

    def failing_write(path: Path, text: str) -> None:
        if saves >= 3:
            raise runs.write_failure(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real_write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "save", failing_save)
        patch.setattr(runs, "write_atomic", failing_write)
        patch.setattr(RunDir, "append_events", lambda self, events: failing_write(self.events_file, ""))
        result = cli(full, "tune", "--seed", "5", "--json")
    assert result.exit_code == 1
    run_id = json.loads(result.stdout)["run_id"]
    one_error_line(result, "No space left on device; free some space")
    assert f"--resume {run_id}" in result.stderr
    resumed = cli(full, "tune", "--resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    ref_dir = whole / ".gepa/runs" / json.loads(reference.stdout)["run_id"]
    assert _states(full / ".gepa/runs" / run_id) == _states(ref_dir)


def test_write_failures_name_the_folder_and_say_what_to_do(tmp_path: Path) -> None:
    error = runs.write_failure(tmp_path / "run.json", OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert str(error) == f"cannot write in {tmp_path}: Read-only file system; make it writable " \
                         "(or run from a writable copy of the repository)"
    with pytest.raises(RunWriteError, match="cannot write in"):
        write_atomic(tmp_path / "file-as-folder" / "x.json", "{}") if (tmp_path / "file-as-folder").write_text("") \
            is None else write_atomic(tmp_path / "file-as-folder" / "x.json", "{}")


@pytest.mark.parametrize("link", ["events.jsonl", "state", "run-folder"])
def test_a_symlink_in_a_run_folder_is_refused_and_nothing_is_written_through_it(
        tmp_path: Path, sim: FakeOpenAI, link: str) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    run_id = finished_run(root, sim.url)
    run_dir = root / ".gepa/runs" / run_id
    outside = tmp_path / "outside"
    if link == "run-folder":
        run_dir.rename(outside)
        run_dir.symlink_to(outside, target_is_directory=True)
    elif link == "state":
        (run_dir / "state").rename(outside)
        (run_dir / "state").symlink_to(outside, target_is_directory=True)
    else:
        (run_dir / "events.jsonl").rename(outside)
        (run_dir / "events.jsonl").symlink_to(outside)
    before = {p: p.stat().st_mtime_ns for p in ([outside, *outside.rglob("*")] if outside.is_dir() else [outside])}
    result = cli(root, "tune", "--resume", run_id)
    assert result.exit_code == 2
    one_error_line(result, "is a symbolic link")
    after = {p: p.stat().st_mtime_ns for p in ([outside, *outside.rglob("*")] if outside.is_dir() else [outside])}
    assert after == before, "nothing outside the workspace was touched"
