"""A few threads for guests that cannot run on the event loop, shared fairly between namespaces.

Components (wasmtime-py's component API has no async path) and core modules that could hold a
thread in one uninterruptible step (see `bulk`) run here. wasmtime-py releases the GIL while wasm
runs, so a guest on one of these threads does not stop the loop. Fairness: one namespace holds at
most `share` of the threads at once (its further invocations wait), and a freed thread goes to the
waiting namespace that has used the least thread time while it was busy, so one tenant's spinning
components cannot queue every other tenant's behind them.

A thread is released only when its job has really ended: a caller that stops waiting (cancelled)
does not free the thread early (wasm cannot be interrupted from outside; the job ends at its epoch
deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from .worker import Worker

__all__ = ["DEFAULT_GUEST_THREADS", "GuestThreads"]

T = TypeVar("T")

#: Threads per process for guests off the loop (each namespace may hold half of them).
DEFAULT_GUEST_THREADS = 4
#: How much lower the guest threads' CPU priority is than the event loop's: when spinning guests
#: and the loops of every process want the same cores, the loops (HTTP, guests on the loop) win.
GUEST_THREAD_NICE = 10


class GuestThreads:
    """``await threads.run(namespace, fn, *args)`` runs ``fn`` on one of ``size`` threads."""

    def __init__(self, size: int = DEFAULT_GUEST_THREADS, share: int | None = None, name: str = "wasmhost-guest"):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.share = max(1, min(size, share if share is not None else size // 2))
        self._name = name
        self._workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._busy: dict[str, int] = {}
        #: Thread seconds per namespace that has invocations running or waiting.
        self._used: dict[str, float] = {}
        self._waiting: dict[str, deque[asyncio.Future[Worker]]] = {}
        self._closed = False

    def busy(self) -> dict[str, int]:
        """Threads held per namespace (for tests and metrics)."""
        return dict(self._busy)

    async def run(self, namespace: str, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("guest threads are closed")
        worker = self._take(namespace)
        if worker is None:
            waiter: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(namespace, deque()).append(waiter)
            try:
                worker = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed a thread just as we were cancelled
                    self._release(namespace, waiter.result(), 0.0)
                self._forget_if_idle(namespace)
                raise
        start = time.monotonic()
        job = worker.run(fn, *args)
        job.add_done_callback(lambda _: self._release(namespace, worker, time.monotonic() - start))
        return await asyncio.shield(job)

    def _take(self, namespace: str) -> Worker | None:
        """A thread for ``namespace`` now, or None if it must wait (none free, or it holds its share)."""
        if self._busy.get(namespace, 0) >= self.share or self._waiting.get(namespace):
            return None
        if self._idle:
            worker = self._idle.pop()
        elif len(self._workers) < self.size:
            worker = Worker(f"{self._name}-{len(self._workers)}", nice=GUEST_THREAD_NICE)
            self._workers.append(worker)
        else:
            return None
        self._hold(namespace)
        return worker

    def _hold(self, namespace: str) -> None:
        if namespace not in self._used:
            self._used[namespace] = min(self._used.values(), default=0.0)
        self._busy[namespace] = self._busy.get(namespace, 0) + 1

    def _release(self, namespace: str, worker: Worker, spent: float) -> None:
        self._used[namespace] = self._used.get(namespace, 0.0) + spent
        n = self._busy[namespace] - 1
        if n:
            self._busy[namespace] = n
        else:
            del self._busy[namespace]
        self._forget_if_idle(namespace)
        self._hand_over(worker)

    def _hand_over(self, worker: Worker) -> None:
        """Give ``worker`` to the least-served waiting namespace below its share, or keep it idle."""
        while True:
            eligible = [ns for ns, q in self._waiting.items() if q and self._busy.get(ns, 0) < self.share]
            if not eligible:
                self._idle.append(worker)
                return
            namespace = min(eligible, key=lambda ns: self._used.get(ns, 0.0))
            queue = self._waiting[namespace]
            waiter = queue.popleft()
            if not queue:
                del self._waiting[namespace]
            if waiter.done():  # cancelled while waiting
                continue
            self._hold(namespace)
            waiter.set_result(worker)
            return

    def _forget_if_idle(self, namespace: str) -> None:
        if not self._busy.get(namespace) and not self._waiting.get(namespace):
            self._waiting.pop(namespace, None)
            self._used.pop(namespace, None)

    def close(self, wait: bool = True) -> None:
        """Stop every thread after the jobs queued on it (with ``wait``, block until they have exited)."""
        self._closed = True
        for worker in self._workers:
            worker.close(wait=False)
        if wait:
            for worker in self._workers:
                worker.close(wait=True)
