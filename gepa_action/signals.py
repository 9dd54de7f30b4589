"""SIGTERM handled like Ctrl-C, so `finally` blocks run: a CI runner cancelling a job sends SIGTERM, and
both a tuning run (save, report, exit 130) and the local model servers (stop them) must unwind cleanly."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt; outside the main thread (a test runner's
    thread) no handler can be installed and the block runs as is."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
