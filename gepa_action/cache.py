"""An on-disk cache of model answers, so a re-run with the same prompts costs nothing.

Tuning re-evaluates the same (prompt, instance) pairs again and again: across a resume, between
`gepa-tune eval` and `gepa-tune tune`, after a crash. Caching answers keyed by the exact request makes
those repeats free and makes a run against a deterministic server reproducible offline.

SQLite (stdlib) because the cache is shared by concurrent tasks of one run, by several threads and by
several processes (e.g. two CI jobs on one workspace): WAL mode lets readers and one writer proceed
together, a busy timeout waits out the writer instead of failing, and every statement is its own short
transaction so nobody holds the lock for long. `INSERT OR REPLACE` makes two writers of the same key
harmless: both wrote the same answer.

Creation is the one moment the busy timeout does not cover: switching a fresh file to WAL answers
"database is locked" at once, without waiting, when another process is switching it too (measured: 2
of 320 processes racing on fresh files). So opening takes an exclusive `flock` on a sidecar file
(`<cache>.lock`) around the pragmas and the schema; once the file is in WAL mode, that is all fast.

Neither keys nor values ever hold an API key; the key is a hash of the request only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunError

try:  # POSIX; elsewhere creation falls back to the retries in `_setup`
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""

#: How long a writer waits for another writer's lock before giving up, in milliseconds.
#: Generous, because a transaction here is one row and a wait means another process is busy, not stuck.
BUSY_TIMEOUT_MS = 30_000


def cache_key(
    *,
    base_url: str,
    model: str,
    messages: list[dict[str, Any]],
    temperature: float,
    max_tokens: int,
    sample: int,
    extra: dict[str, Any] | None = None,
) -> str:
    """Return the sha256 hex digest that identifies one request.

    Everything that can change the answer is part of the key: the endpoint (two servers may serve
    different weights under one model name), the model, the exact messages, temperature and max_tokens.
    `sample` tells apart repeated draws of the same request, but only when temperature > 0: at
    temperature 0 every draw is the same request, so they share one answer and one cost.
    The JSON is canonical (sorted keys, compact separators, UTF-8 kept as is) so the same request
    always hashes the same, across processes and Python versions.
    """
    payload: dict[str, Any] = {
        "base_url": base_url.rstrip("/"),
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    if temperature > 0:
        payload["sample"] = sample
    if extra:
        payload["extra"] = extra
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # "surrogatepass": a lone surrogate (from an eval file's "\ud800" or an earlier step's answer) still
    # hashes, to a key of its own; every other text encodes exactly as plain UTF-8 did.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CacheFull(RunError):
    """The disk under the cache is full: the run stops, and a resume after freeing space continues it."""


@contextlib.contextmanager
def _creation_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` so that only one process at a time sets the cache up."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class ResponseCache:
    """A key → JSON-object store in one SQLite file, safe across threads and processes.

    One connection guarded by a lock: sqlite3 connections must not be used by two threads at once,
    and the work per call is a single indexed row, so serialising it costs nothing measurable.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _creation_lock(self.path):
                self._conn = self._setup()
        except sqlite3.DatabaseError as exc:
            raise RunError(
                f"cannot open the response cache {self.path}: {exc}; delete the file or run with --no-cache"
            ) from None
        except OSError as exc:  # a read-only or full file system, a folder in the way, ...
            raise RunError(
                f"cannot open the response cache {self.path}: {exc.strerror or exc}; make {self.path.parent} "
                "writable or run with --no-cache"
            ) from None

    def _setup(self) -> sqlite3.Connection:
        """Connect, switch to WAL and create the table; a lock contention here is retried for a while."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            # isolation_level=None: autocommit, so each statement is its own short transaction.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable enough in WAL mode: a power cut may lose the last answers, never corrupt.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            except BaseException:
                conn.close()
                raise

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """A locked-for-too-long or broken cache is a run failure with a remedy, not a traceback."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in str(exc):
                raise CacheFull(f"cannot {action} the response cache in {self.path.parent}: {exc}; "
                                "free some space") from None
            raise RunError(
                f"cannot {action} the response cache {self.path}: {exc}; delete the file or run with --no-cache"
            ) from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RunError(f"the response cache {self.path} is closed")
        return self._conn

    def get(self, key: str) -> dict[str, Any] | None:
        """Return the stored object, or None on a miss (an unreadable row also counts as a miss)."""
        with self._lock, self._errors("read"):
            row = self._connection().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store `value` under `key`, replacing what was there (two writers of one key wrote the same)."""
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (a server sent "\ud800"): SQLite text must be UTF-8,
                text = json.dumps(value, sort_keys=True)  # and as a JSON escape it round-trips exactly
        with self._lock, self._errors("write"):
            self._connection().execute(
                "INSERT OR REPLACE INTO responses (key, value, created) VALUES (?, ?, ?)",
                (key, text, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
