"""Run directories: `.gepa/runs/<run-id>/` holds everything one tuning run produced.

    run.json            what was asked (tasks, options, budget) and a fingerprint of the inputs
    state/<task>.json   the engine state after the last finished round (the checkpoint)
    events.jsonl        the audit log: every proposal, val evaluation, merge, error and stop
    report.json/.md     the results, written when the run ends (also after an interruption)

Every file is written atomically (a temporary file, fsync, rename), so a crash or a kill leaves the
previous version intact, never half a file. Events of a round are appended just before the state that
includes them, so the log never lags the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from .engine.state import EngineState
from .errors import InputError

RUNS_DIR = Path(".gepa") / "runs"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """Sortable by start time, unique enough for one repository: 20261125-101500-3f2a."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunDir:
    """One run's folder. Create with `RunDir.create`, reopen with `RunDir.open` (for resume, report)."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.path = root / RUNS_DIR / run_id

    @classmethod
    def create(cls, root: Path, meta: dict[str, Any]) -> RunDir:
        run = cls(root, new_run_id())
        while run.path.exists():  # two runs started in the same second
            run = cls(root, new_run_id())
        run.path.mkdir(parents=True)
        run.write_meta({"run_id": run.run_id, "started_at": utc_now(), "status": "running", **meta})
        return run

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
        return cls(root, run_id)

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
        try:
            return json.loads(self.meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(str(self.meta_file), f"cannot read the run record: {exc}",
                             hint="the run folder is damaged; start a new run") from None

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.meta_file, meta)

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.read_meta()
        meta.update(changes)
        self.write_meta(meta)
        return meta

    def load_state(self, task: str) -> EngineState | None:
        path = self.state_file(task)
        if not path.is_file():
            return None
        try:
            return EngineState.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(str(path), f"cannot read the checkpoint: {exc}",
                             hint="the run folder is damaged; start a new run") from None

    def append_events(self, events: list[dict[str, Any]]) -> None:
        if events:
            with self.events_file.open("a", encoding="utf-8") as handle:
                for event in events:
                    handle.write(json.dumps(event, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

    def save(self, state: EngineState, events: list[dict[str, Any]]) -> None:
        """Append the round's events, then replace the checkpoint."""
        self.append_events(events)
        write_json(self.state_file(state.task), state.to_json())

