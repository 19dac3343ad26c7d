"""Compile slots shared fairly between namespaces.

At most ``total`` compiles run at once, and one namespace holds at most ``per_namespace`` of them,
so a tenant deploying a slow module (or many) never holds every slot: another tenant's compile
starts at once while a slot is free, and when none is, freed slots go to the waiting namespaces in
turn (round robin), not in arrival order. `namespace_lock` extends "one compile per namespace at a
time" to every gateway process sharing the state folder.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .cache import namespace_dir

__all__ = ["FairSlots", "namespace_lock"]

#: How often a compile waiting for its namespace's lock (held by another process) tries again.
LOCK_POLL_SECONDS = 0.05


class FairSlots:
    def __init__(self, total: int, per_namespace: int = 1) -> None:
        if total < 1 or per_namespace < 1:
            raise ValueError("compile slots must be at least 1")
        self.total = total
        self.per_namespace = min(per_namespace, total)
        self._running: dict[str, int] = {}
        self._in_use = 0
        #: Waiting namespaces in turn order, each with its waiters in arrival order.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    def running(self, namespace: str) -> int:
        return self._running.get(namespace, 0)

    @property
    def in_use(self) -> int:
        return self._in_use

    @asynccontextmanager
    async def hold(self, namespace: str) -> AsyncIterator[None]:
        await self._acquire(namespace)
        try:
            yield
        finally:
            self._release(namespace)

    def _free_for(self, namespace: str) -> bool:
        return self._in_use < self.total and self._running.get(namespace, 0) < self.per_namespace

    def _take(self, namespace: str) -> None:
        self._in_use += 1
        self._running[namespace] = self._running.get(namespace, 0) + 1

    async def _acquire(self, namespace: str) -> None:
        if namespace not in self._waiting and self._free_for(namespace):
            self._take(namespace)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(namespace, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(namespace)  # granted, then cancelled: hand the slot on
            else:
                queue = self._waiting.get(namespace)
                if queue is not None and fut in queue:
                    queue.remove(fut)
                    if not queue:
                        del self._waiting[namespace]
            raise

    def _release(self, namespace: str) -> None:
        self._in_use -= 1
        left = self._running[namespace] - 1
        if left:
            self._running[namespace] = left
        else:
            del self._running[namespace]
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to waiting namespaces in turn."""
        progressed = True
        while progressed and self._in_use < self.total:
            progressed = False
            for namespace in list(self._waiting):
                if not self._free_for(namespace):
                    continue
                queue = self._waiting.pop(namespace)
                while queue and queue[0].done():  # cancelled, its task not yet told
                    queue.popleft()
                if not queue:
                    progressed = True
                    break
                fut = queue.popleft()
                if queue:
                    self._waiting[namespace] = queue  # to the back of the turn order
                self._take(namespace)
                fut.set_result(None)
                progressed = True
                break


@asynccontextmanager
async def namespace_lock(folder: Path | None, namespace: str) -> AsyncIterator[None]:
    """Hold the namespace's compile lock across every process sharing ``folder`` (nothing without one).

    An advisory ``flock`` on ``<folder>/.locks/<namespace folder>.lock``, tried without blocking and
    polled, so a cancelled wait gives up at once and no thread is held; the kernel releases the lock
    if its holder dies.
    """
    if folder is None:
        yield
        return
    locks = folder / ".locks"
    locks.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(locks / f"{namespace_dir(namespace)}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LOCK_POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # releases the lock
