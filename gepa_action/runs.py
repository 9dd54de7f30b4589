"""Run directories: `.gepa/runs/<run-id>/` holds everything one tuning run produced.

    run.json            what was asked (tasks, options, budget) and a fingerprint of the inputs
    state/<task>.json   the engine state after the last finished round (the checkpoint)
    events.jsonl        the audit log: every proposal, val evaluation, merge, error and stop
    report.json/.md     the results, written when the run ends (also after an interruption)

Every file is written atomically (a temporary file, fsync, rename), so a crash or a kill leaves the
previous version intact, never half a file. Events of a round are appended just before the state that
includes them, so the log never lags the checkpoint. It may lead it: a kill between the two leaves the
interrupted round's events in the log, and the resume replays that round. So every event of a task
carries `seq`, the checkpoint records how many it covers (`events_written`), and a resume first drops
the task's events from `events_written` on: the replayed round writes them again, once.

Temporary names are unique per writer (pid and a random part): two processes writing one file must not
rename each other's half-written temporary.

A process that runs a run holds an exclusive `flock` on `<run>/.lock` (with its pid in it) for as long
as it runs: a second `--resume` of the same run is refused instead of interleaving its events with the
first's. The kernel drops the lock when the process dies, however it dies, so a killed run is never
"stuck": `status: running` in run.json is only what the last writer said, never a lock.

Run files are read back as untrusted input (a run folder can be copied, edited or damaged): anything
that is not what this program writes is one `InputError` line naming the file, never a traceback,
and never a path outside the workspace. A symbolic link anywhere on the way (`.gepa`, `runs`, the run
folder, `state`, a run file) is refused: appending events or writing a checkpoint through one would
write wherever it points.

A failed write (a full disk, a read-only folder) is a `RunWriteError` naming the folder, so the error
path of a run can tell "the disk just failed" apart from the error it is reporting, and not trip on it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import math
import os
import secrets
from pathlib import Path
from typing import IO, Any

from .engine.state import EngineState
from .errors import InputError, RunError
from .lm.client import ModelUsage

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: runs are not locked there
    fcntl = None  # type: ignore[assignment]

RUNS_DIR = Path(".gepa") / "runs"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """Sortable by start time to the millisecond, so "latest" is the last run started even when two
    started in the same second: 20261125-101500-1f4a is 10:15:00, millisecond 0x1f4 (500), then one
    random hex digit (two runs in the same millisecond: `RunDir.create` draws again on a collision)."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03x}{secrets.randbelow(16):x}"


class RunWriteError(RunError):
    """A run file could not be written (disk full, read-only, ...): one line naming the folder."""


def write_failure(path: Path, exc: OSError) -> RunWriteError:
    """The one line for a failed write under `path`'s folder, with the remedy for the common causes."""
    folder = path.parent
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "make it writable (or run from a writable copy of the repository)"
    else:
        hint = "check the folder"
    return RunWriteError(f"cannot write in {folder}: {reason}; {hint}")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step; the temporary file is unique to this writer."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a half-written temporary must not fill the disk further
        raise write_failure(path, exc) from None


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunInUse(InputError):
    """Another live process runs this run (it holds the folder's lock)."""


class RunDir:
    """One run's folder. Create with `RunDir.create`, reopen with `RunDir.open` (for resume, report)."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.path = root / RUNS_DIR / run_id
        self._lock_handle: IO[str] | None = None
        self._seq: dict[str, int] = {}  # task -> events written with a checkpoint (see the module doc)

    @classmethod
    def create(cls, root: Path, meta: dict[str, Any]) -> RunDir:
        """A new run folder, locked by this process (see `lock`)."""
        runs = root / RUNS_DIR
        try:
            runs.mkdir(parents=True, exist_ok=True)
            while True:
                run = cls(root, new_run_id())
                try:
                    run.path.mkdir()
                    break
                except FileExistsError:  # two runs started in the same millisecond drew the same digit
                    continue
        except OSError as exc:
            raise InputError(str(runs), f"cannot create the run folder: {exc.strerror or exc}",
                             hint="make .gepa/ writable (or run from a writable copy of the repository)") from None
        run.check_links()
        run.lock()
        run.write_meta({"run_id": run.run_id, "started_at": utc_now(), "status": "running", **meta})
        return run

    def lock(self) -> None:
        """Hold `<run>/.lock` until `unlock` or the process ends; refuse if another process holds it."""
        if fcntl is None or self._lock_handle is not None:  # pragma: no cover - no flock on this platform
            return
        lock_file = self.path / ".lock"
        self.check_links(lock_file)  # the lock file is truncated below: through a link, that would be any file
        try:
            # O_NOFOLLOW: a link swapped in after the check is refused too (ELOOP), not followed.
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
            handle = open(fd, "a+", encoding="utf-8")  # noqa: SIM115 - held open on purpose
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the link swapped in after the check: the same one-line refusal
                self.check_links(lock_file)
            raise InputError(str(self.path), f"cannot lock the run folder: {exc.strerror or exc}",
                             hint="make .gepa/ writable (or run from a writable copy of the repository)") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read(32).strip()
            handle.close()
            who = f"PID {holder}" if holder.isdigit() else "another process"
            raise RunInUse(str(self.path), f"run {self.run_id} is in use by {who}",
                           hint="wait for it to end (or stop it), then resume") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def unlock(self) -> None:
        """Let another process run this run (closing the file drops the flock)."""
        handle, self._lock_handle = self._lock_handle, None
        if handle is not None:
            with contextlib.suppress(OSError):  # no stale pid for the next reader (best effort)
                handle.seek(0)
                handle.truncate()
            handle.close()

    @classmethod
    def open(cls, root: Path, run_id: str | None) -> RunDir:
        """An existing run; `None` or "latest" means the most recent one."""
        runs = sorted(p.name for p in (root / RUNS_DIR).glob("*") if (p / "run.json").is_file())
        if run_id in (None, "latest"):
            if not runs:
                raise InputError(str(RUNS_DIR), "there are no runs yet", hint="start one with `gepa-tune tune`")
            run_id = runs[-1]
        if run_id not in runs:
            known = ", ".join(runs[-5:]) or "(none)"
            raise InputError(str(RUNS_DIR), f"no run '{run_id}'", hint=f"recent runs: {known}")
        run = cls(root, run_id)
        run.check_links()
        return run

    def check_links(self, *files: Path) -> None:
        """Refuse a symbolic link on the way to this run's files (or at `files`): see the module docstring."""
        dot = self.root / RUNS_DIR.parts[0]
        for path in (dot, self.root / RUNS_DIR, self.path, self.path / "state", *files):
            if path.is_symlink():
                raise InputError(str(path), "is a symbolic link; gepa-tune reads and writes run files only inside "
                                            "the workspace", hint="replace the link by a folder (or file)")

    # -- files -------------------------------------------------------------------------------------------

    @property
    def meta_file(self) -> Path:
        return self.path / "run.json"

    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def stop_file(self) -> Path:
        """Create this file (e.g. `touch .gepa/runs/<id>/STOP`) to end the run after the current step."""
        return self.path / "STOP"

    def state_file(self, task: str) -> Path:
        return self.path / "state" / f"{task}.json"

    def read_meta(self) -> dict[str, Any]:
        self.check_links(self.meta_file)
        try:
            meta = json.loads(self.meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise InputError(str(self.meta_file), f"cannot read the run record: {exc}",
                             hint="the run folder is damaged; start a new run") from None
        check_meta(meta, self.meta_file)
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.meta_file, meta)

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.read_meta()
        meta.update(changes)
        self.write_meta(meta)
        return meta

    def load_state(self, task: str, modules: list[str] | None = None) -> EngineState | None:
        """The checkpoint of `task`, or None before its first round. With `modules` (the task's
        template paths), a checkpoint whose candidates hold other module names is refused: those names
        become file paths when the best templates are written."""
        path = self.state_file(task)
        self.check_links(path)
        if not path.is_file():
            self._seq[task] = 0
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            written = data.pop("events_written", None) if isinstance(data, dict) else None
            state = EngineState.from_json(data)
            if written is not None and (not isinstance(written, int) or isinstance(written, bool) or written < 0):
                raise ValueError(f"'events_written' must be a count, not {written!r}")
            self._seq[task] = written or 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise InputError(str(path), f"cannot read the checkpoint: {type(exc).__name__}: {exc}",
                             hint="the run folder is damaged; start a new run") from None
        check_state(state, task, modules, path)
        return state

    def number_events(self, task: str, events: list[dict[str, Any]]) -> None:
        """Give the task's events their `seq` (an error event gets none: it is kept whatever is replayed)."""
        count = self._seq.get(task, 0)
        for event in events:
            if event.get("event") != "error":
                event["seq"] = count
                count += 1
        self._seq[task] = count

    def drop_replayed_events(self, task: str) -> None:
        """Before a resume replays its interrupted round: drop that round's events of `task` from the log
        (those numbered from the checkpoint's `events_written` on), so none appears twice."""
        keep_below = self._seq.get(task, 0)
        self.check_links(self.events_file)
        try:
            lines = self.events_file.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise InputError(str(self.events_file), f"cannot read the event log: {exc.strerror or exc}") from None
        kept = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:  # half a line from a kill mid-append: the replay writes it again
                continue
            stale = (isinstance(event, dict) and event.get("task") == task and isinstance(event.get("seq"), int)
                     and event["seq"] >= keep_below)
            if not stale:
                kept.append(line if line.endswith("\n") else line + "\n")
        # A kill can also cut an append just before its newline: that last line is whole JSON and is kept,
        # but it must get its newline back, or the resume's first event would be glued onto it.
        if len(kept) != len(lines) or (lines and not lines[-1].endswith("\n")):
            write_atomic(self.events_file, "".join(kept))

    def append_events(self, events: list[dict[str, Any]]) -> None:
        self.check_links(self.events_file)
        if events:
            try:
                with self.events_file.open("a", encoding="utf-8") as handle:
                    for event in events:
                        handle.write(json.dumps(event, ensure_ascii=False) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                raise write_failure(self.events_file, exc) from None

    def save(self, state: EngineState, events: list[dict[str, Any]], *, covered: bool = True) -> None:
        """Append the round's events, then replace the checkpoint (which counts the events it covers).

        `covered=False` is for a failed round saved with the last finished state: its events are logged
        but not covered, so a resume that replays the round drops them first."""
        before = self._seq.get(state.task, 0)
        self.number_events(state.task, events)
        self.append_events(events)
        written = self._seq[state.task] if covered else before
        write_json(self.state_file(state.task), {**state.to_json(), "events_written": written})



# -- run files as untrusted input ----------------------------------------------------------------------


def _damaged(path: Path, what: str) -> InputError:
    return InputError(str(path), what, hint="the run folder is damaged or was edited; start a new run")


def check_meta(meta: Any, path: Path) -> None:
    """run.json must be what `RunDir.create` wrote: an object with the run id, task names and options."""
    if not isinstance(meta, dict):
        raise _damaged(path, f"the run record must be a JSON object, not {type(meta).__name__}")
    for key, kind in (("run_id", str), ("tasks", list), ("options", dict), ("fingerprints", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise _damaged(path, f"'{key}' must be a {kind.__name__}, not {type(meta[key]).__name__}")
    tasks = meta.get("tasks", [])
    if not all(isinstance(t, str) for t in tasks):
        raise _damaged(path, "'tasks' must be a list of task names")
    for name in tasks:
        if not isinstance(meta.get("fingerprints", {}).get(name, {}), dict):
            raise _damaged(path, f"'fingerprints.{name}' must be an object")
    for key in ("status", "started_at", "finished_at"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise _damaged(path, f"'{key}' must be a string")
    if not isinstance(meta.get("task_status", {}), dict):
        raise _damaged(path, "'task_status' must be an object")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_state(state: EngineState, task: str, modules: list[str] | None, path: Path) -> None:
    """A checkpoint must belong to `task` and hold candidates of its modules, with sane ids and scores."""
    if state.task != task:
        raise _damaged(path, f"the checkpoint is of task {state.task!r}, not {task!r}")
    count = len(state.candidates)
    for index, candidate in enumerate(state.candidates):
        where = f"candidate {index}"
        if candidate.id != index:
            raise _damaged(path, f"{where} has id {candidate.id!r}")
        if not isinstance(candidate.texts, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in candidate.texts.items()):
            raise _damaged(path, f"{where}: 'texts' must map template paths to text")
        if modules is not None and set(candidate.texts) != set(modules):
            odd = sorted(set(candidate.texts) ^ set(modules))
            raise _damaged(path, f"{where} has templates the task does not optimize or lacks some: "
                                 f"{', '.join(repr(m[:80]) for m in odd[:3])}")
        if not isinstance(candidate.parents, list) or not all(
                isinstance(p, int) and 0 <= p < index for p in candidate.parents):
            raise _damaged(path, f"{where}: 'parents' must name earlier candidates")
        if not isinstance(candidate.val, dict) or not all(_is_number(v) for v in candidate.val.values()):
            raise _damaged(path, f"{where}: 'val' must map instance ids to finite scores")
    final = state.final
    if final is not None:
        best = final.get("best") if isinstance(final, dict) else None
        if not isinstance(best, int) or isinstance(best, bool) or not 0 <= best < count:
            raise _damaged(path, "'final.best' must name a candidate")
        for key in ("seed", "best_scores"):
            rows = final.get(key)
            if not isinstance(rows, dict) or not all(
                    isinstance(r, list) and len(r) == 2 and _is_number(r[0]) and isinstance(r[1], str)
                    for r in rows.values()):
                raise _damaged(path, f"'final.{key}' must map test ids to [score, output]")
        if sorted(final["seed"]) != sorted(final["best_scores"]):
            raise _damaged(path, "'final.seed' and 'final.best_scores' must score the same instances")
        if not _is_number(final.get("test_calls", 0)):
            raise _damaged(path, "'final.test_calls' must be a number")
    if not _is_number(state.metric_calls) or not isinstance(state.usage, dict):
        raise _damaged(path, "'metric_calls' and 'usage' are damaged")
    fields = set(ModelUsage.__dataclass_fields__)
    for model, counters in state.usage.items():
        if not isinstance(counters, dict) or not set(counters) <= fields or not all(
                _is_number(v) for k, v in counters.items() if k != "retries_by_kind"):
            raise _damaged(path, f"'usage.{str(model)[:60]}' is damaged")
        kinds = counters.get("retries_by_kind", {})
        if not isinstance(kinds, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in kinds.items()):
            raise _damaged(path, f"'usage.{str(model)[:60]}.retries_by_kind' is damaged")
