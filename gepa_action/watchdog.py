"""A deadline for synchronous Python code that cannot be asked to stop: a template render.

Jinja compiles a template to Python code and runs it synchronously, so four nested loops over long
strings cannot be interrupted cooperatively, and `max_minutes` is never checked while they run. The
interpreter can raise an exception *asynchronously* in a thread between two bytecodes; one daemon thread
does that for every watched block whose deadline passes, at no cost to blocks that finish in time.
Long operations inside C (one huge allocation) are not interrupted: the size limits of `sandbox.py`
keep those short.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time


class Watchdog:
    """Raises `DeadlinePassed` in a thread whose watched block outlives its deadline.

    `start` before the block, `stop` after it in a `finally`: `stop` says whether the deadline fired and
    withdraws an exception not yet delivered, so none can surface after the block has ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._deadlines: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread id)
        self._fired: set[int] = set()
        self._tokens = 0
        self._thread: threading.Thread | None = None
        self._next_wake = math.inf

    def start(self, seconds: float) -> int:
        with self._lock:
            self._tokens += 1
            token = self._tokens
            deadline = time.monotonic() + seconds
            self._deadlines[token] = (deadline, threading.get_ident())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="gepa-render-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._next_wake:  # only wake the thread when it would otherwise sleep past this one
                self._next_wake = deadline
                self._wake.notify()
            return token

    def stop(self, token: int) -> bool:
        """End a render's watch; True when the deadline fired (any pending exception is withdrawn)."""
        with self._lock:
            self._deadlines.pop(token, None)
            fired = token in self._fired
            self._fired.discard(token)
            if fired:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
            return fired

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for token, (deadline, thread_id) in list(self._deadlines.items()):
                    if deadline <= now and token not in self._fired:
                        self._fired.add(token)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                                   ctypes.py_object(DeadlinePassed))
                pending = [d for t, (d, _) in self._deadlines.items() if t not in self._fired]
                self._next_wake = min(pending) if pending else math.inf
                self._wake.wait(max(0.0, self._next_wake - now) + 0.005 if pending else None)


class DeadlinePassed(BaseException):  # noqa: N818 - a BaseException so no `except Exception` in Jinja eats it
    """Raised asynchronously into a render that passed its deadline."""


WATCHDOG = Watchdog()


