"""Who gets the next free request slot: the critical path of a step before work that only fills time.

A GEPA step is a chain of dependent calls (the parent on the minibatch, the reflection, the child on the
minibatch), while scoring a child on val (or the seed) depends on nothing the step waits for. Both share
the client's `concurrency` slots, and the client serves its waiters first come, first served: a val
race queued before a reflection holds the reflection back by whole waves of task calls, and the
reflection model's latency (the longest link of the chain) then adds to the round instead of hiding
behind the race. So the engine hands out its own slots, as many as the client has, and a request on the
chain (`Priority.CHAIN`) always goes before waiting background work (`Priority.FILL`); within one
priority, first come, first served.

Only timing depends on this: every result is consumed in a fixed order by the round that asked for it,
so a run ends the same however the answers interleave.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum


class Priority(IntEnum):
    CHAIN = 0  # a step waits for it: reflections, minibatch runs, merges
    FILL = 1  # nothing waits for it yet: val races, the seed's val scoring


#: The priority of the requests made by the current asyncio task (tasks inherit it from their creator).
current_priority: contextvars.ContextVar[Priority] = contextvars.ContextVar("gepa_priority", default=Priority.CHAIN)


class SlotGate:
    """At most `size` requests in flight; a freed slot goes to the oldest waiter of the best priority."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.in_flight = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: Priority | None = None) -> AsyncIterator[None]:
        await self._acquire(current_priority.get() if priority is None else priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: Priority) -> None:
        if self.in_flight < self.size and not self._waiters:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._order), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just before the cancel: pass it on
            else:
                self._waiters = [w for w in self._waiters if w[2] is not waiter]
                heapq.heapify(self._waiters)
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter: in_flight is unchanged
                return
        self.in_flight -= 1
