"""Where a guest runs: the one seam between `Runtime` and the ways of running wasm.

* `LoopExecutor`: core modules on the calling event loop's thread, each on a fiber (`ffi`), every
  poll granted by the loop's `scheduler.GuestScheduler`. No thread is crossed, so this is the fast
  path, and the scheduler keeps any one guest's uninterruptible steps short.
* `ThreadExecutor`: guests on a few threads shared fairly between namespaces (`threads`):
  components (wasmtime-py's component API has no async path), core modules that could take one long
  uninterruptible step (bulk memory instructions with a large memory, see `bulk`), and every core
  module where fibers are not used (``WASMHOST_WASM_ON_LOOP=0``, CPython >= 3.14).

Both take a compiled guest and its `CoreContext` and return (handle's code, error, fuel used); the
runtime tests run against both (``tests/runtime/conftest.py``).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol

from .component import CompiledComponent, run_component
from .hostfuncs import CoreContext
from .invocation import run_core, run_core_async
from .module import CompiledModule
from .result import InvocationError
from .scheduler import GuestScheduler
from .threads import DEFAULT_GUEST_THREADS, GuestThreads

__all__ = ["Executor", "LoopExecutor", "Outcome", "ThreadExecutor"]

#: (handle's return code or None, the failure or None, fuel used)
Outcome = tuple[int | None, InvocationError | None, int]


class Executor(Protocol):
    #: Whether guests run on the caller's loop thread (their sends and waits stay on the loop).
    on_loop: bool

    async def run(self, guest: CompiledModule | CompiledComponent, ctx: CoreContext) -> Outcome: ...

    async def aclose(self) -> None: ...


class LoopExecutor:
    """Core modules as fibers on the calling loop; at most ``max_concurrent`` at once (each holds a
    Store, a pooled instance slot, a fiber stack and up to its memory cap; more wait their turn)."""

    on_loop = True

    def __init__(self, max_concurrent: int) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self._schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GuestScheduler] = (
            weakref.WeakKeyDictionary())

    def scheduler(self, loop: asyncio.AbstractEventLoop) -> GuestScheduler:
        scheduler = self._schedulers.get(loop)
        if scheduler is None:
            scheduler = self._schedulers[loop] = GuestScheduler(loop)
        return scheduler

    async def run(self, guest: CompiledModule | CompiledComponent, ctx: CoreContext) -> Outcome:
        if not isinstance(guest, CompiledModule):
            raise TypeError("only core modules run on the loop")
        async with self._slots:
            scheduler = self.scheduler(ctx.loop)
            scheduler.join(ctx.namespace)
            try:
                return await run_core_async(guest, ctx, scheduler.drive)
            finally:
                scheduler.leave(ctx.namespace)

    async def aclose(self) -> None:
        pass


def _run_on_thread(guest: CompiledModule | CompiledComponent, ctx: CoreContext) -> Outcome:
    if isinstance(guest, CompiledComponent):
        return run_component(guest, ctx)
    return run_core(guest, ctx)


class ThreadExecutor:
    """Guests on `GuestThreads`: ``threads`` threads, each namespace holding at most half of them."""

    on_loop = False

    def __init__(self, threads: int = DEFAULT_GUEST_THREADS) -> None:
        self.threads = GuestThreads(threads)

    async def run(self, guest: CompiledModule | CompiledComponent, ctx: CoreContext) -> Outcome:
        return await self.threads.run(ctx.namespace, _run_on_thread, guest, ctx)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.threads.close, True)
