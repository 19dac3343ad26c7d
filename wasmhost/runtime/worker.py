"""The one thread that runs all wasm, and the cheapest hand-off to it from an event loop.

Why not ``loop.run_in_executor``: it chains a `concurrent.futures.Future` (with its own condition
and callback list) to an asyncio future and asks the pool whether to grow on every call, which costs
more per round trip than a `queue.SimpleQueue` put plus one ``call_soon_threadsafe`` back (numbers in
bench/README.md, "Runtime").
The lifecycle matches the executor's: ``close`` lets the job in progress and every queued one
finish, and at interpreter exit the thread is joined the same way `concurrent.futures` joins its
workers, so a guest is never torn down mid-call.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_LIVE: weakref.WeakSet[Worker] = weakref.WeakSet()


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():  # the caller gave up; the job still ran to the end (wasm cannot be interrupted)
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


def _serve(jobs: queue.SimpleQueue[_Job | None], nice: int) -> None:
    # Holds only the queue, never the Worker, so an unclosed Worker can still be collected.
    if nice:
        try:  # Linux: a thread's id is a process id for setpriority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
        except (AttributeError, OSError):
            pass
    while True:
        job = jobs.get()
        if job is None:
            return
        loop, fut, fn, args = job
        del job
        exc: BaseException | None = None
        result = None
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting caller, as run_in_executor does
            exc = e
        try:
            loop.call_soon_threadsafe(_settle, fut, result, exc)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            pass
        del loop, fut, fn, args, result, exc


class Worker:
    """A single daemon thread fed by a queue; ``await worker.run(fn, *args)`` runs ``fn`` on it."""

    def __init__(self, name: str, nice: int = 0) -> None:
        """``nice``: how much lower than the process the thread's CPU priority is (Linux)."""
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=_serve, args=(self._jobs, nice), name=name, daemon=True)
        self._thread.start()
        self._closed = False
        # A Worker dropped without close() still lets its thread exit.
        weakref.finalize(self, self._jobs.put, None)
        _LIVE.add(self)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; the returned future (of the running loop) gets its result or exception."""
        if self._closed:
            raise RuntimeError("worker is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def close(self, wait: bool = True) -> None:
        """Stop after the queued jobs; with ``wait``, block until the thread has exited."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def thread(self) -> threading.Thread:
        return self._thread


def _join_all() -> None:
    for worker in list(_LIVE):
        worker.close(wait=True)


# Joined before non-daemon threads are, exactly like concurrent.futures' workers (private hook, 3.9+).
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_join_all)
