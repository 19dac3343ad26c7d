"""`Runtime`: the public entry point that runs tenant functions for the gateway and the CLI.

Core modules run on the caller's event loop thread, each on a fiber of its own (see `ffi`),
scheduled fairly between namespaces in short slices (see `scheduler`), so the loop keeps serving
everything else and invocations interleave. Components, and core modules that could take a long
uninterruptible step (bulk memory instructions with a memory cap above `LOOP_BULK_MEMORY_MB`), run on
a few guest threads shared fairly between namespaces (see `executor`, `threads`). Compiles run in
bounded child processes (see `compiler`), a few at a time shared fairly between namespaces. Either
way, sends issued by the guest are delivered on the caller's event loop concurrently with it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from .cache import DEFAULT_MAX_DISK_BYTES, CacheStats, ModuleCache
from .compiler import CompileLimits
from .component import CompiledComponent, ComponentCache, is_component
from .context import Sender, SendLimiter
from .engine import EngineHost, engine_host
from .executor import Executor, LoopExecutor, ThreadExecutor
from .hostfuncs import CoreContext
from .limits import Limits
from .module import CompiledModule, InvalidModule, module_key
from .result import InvocationError, InvocationResult
from .slots import FairSlots, namespace_lock
from .threads import DEFAULT_GUEST_THREADS

__all__ = ["DEFAULT_COMPILE_SLOTS", "DEFAULT_MAX_CONCURRENT", "LOOP_BULK_MEMORY_MB", "MAX_INPUT_BYTES", "Runtime"]

#: Default bound on core invocations running at once on the loop (see ``max_concurrent``).
DEFAULT_MAX_CONCURRENT = 32
#: Default compiles running at once (each in its own bounded process, on one core), one per namespace.
DEFAULT_COMPILE_SLOTS = 2

#: Largest memory cap with which a module that may use bulk memory instructions runs on the loop: one
#: ``memory.fill`` over all of a fresh memory this size stays within a few milliseconds.
LOOP_BULK_MEMORY_MB = 4

#: Largest invocation input (it is copied into the guest on request, and must fit an i32 length).
MAX_INPUT_BYTES = 16 << 20

_DEFAULT_LIMITS = Limits()


class Runtime:
    """Compiles, caches and runs guest modules for any number of namespaces."""

    def __init__(
        self,
        sender: Sender,
        *,
        cache_dir: Path | None = None,
        cache_key: bytes | None = None,
        send_limiter: SendLimiter | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        guest_threads: int = DEFAULT_GUEST_THREADS,
        executor: Literal["auto", "threads"] = "auto",
        compile_limits: CompileLimits | None = None,
        cache_max_bytes: int = DEFAULT_MAX_DISK_BYTES,
        compile_slots: int = DEFAULT_COMPILE_SLOTS,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if executor not in ("auto", "threads"):
            raise ValueError("executor must be 'auto' or 'threads'")
        self.sender = sender
        self.send_limiter = send_limiter
        self._host: EngineHost = engine_host()
        self.compile_limits = compile_limits or CompileLimits()
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = ModuleCache(
            self._host, cache_dir, cache_key, limits=self.compile_limits, max_disk_bytes=cache_max_bytes
        )
        self._components = ComponentCache(
            self._host, cache_dir, cache_key, limits=self.compile_limits, max_disk_bytes=cache_max_bytes
        )
        #: Compiles in progress at once, shared fairly between namespaces (see `slots`).
        self.compile_slots = FairSlots(compile_slots, per_namespace=1)
        #: Where guests run (see `executor`): on the loop when they can, else on the guest threads.
        self._loop: LoopExecutor | None = None
        if self._host.on_loop and executor == "auto":
            self._loop = LoopExecutor(max_concurrent)
        self._threads = ThreadExecutor(guest_threads)
        self._running = 0  # invocations in progress, awaited by `aclose`
        self._idle: asyncio.Event | None = None
        self._host.acquire()
        self._closed = False

    @property
    def cache_stats(self) -> CacheStats:
        """Counters of the module cache (memory hits, disk hits, compiles, rejected artifacts)."""
        return self._cache.stats

    @property
    def component_cache_stats(self) -> CacheStats:
        """Counters of the component cache (components are cached apart from core modules)."""
        return self._components.stats

    def compile(self, source: bytes | str, *, namespace: str) -> CompiledModule | CompiledComponent:
        """Compile for ``namespace`` (or fetch its artifact from the cache); raise `InvalidModule` with a reason.

        The one compile path: the contract is checked before compiling, the compile runs in a bounded
        child process (see `compiler`), artifacts and refusals are cached per namespace (see `cache`).
        The binary itself says what it is: a component (WIT world ``wasmhost:guest``) or a core module.
        Blocks while compiling: async callers use `compile_async`.
        """
        source = self._source(source)
        if isinstance(source, bytes) and is_component(source):
            return self._components.get(namespace, source)
        return self._cache.get(namespace, source)

    async def compile_async(self, source: bytes | str, *, namespace: str) -> CompiledModule | CompiledComponent:
        """`compile` off the event loop, in one of the compile slots shared fairly between namespaces."""
        source = self._source(source)
        cache: ModuleCache | ComponentCache = self._cache
        if isinstance(source, bytes) and is_component(source):
            cache = self._components
        sha = module_key(source)  # the same sha256 for both kinds
        hit = cache.cached(namespace, sha)
        if hit is not None:
            return hit
        hit = await asyncio.to_thread(cache.lookup, namespace, sha)
        if hit is not None:
            return hit
        # A module that breaks its contract is refused now, not after the namespace's other compiles.
        await asyncio.to_thread(cache.precheck, namespace, source)  # type: ignore[arg-type]
        # One compile per namespace at a time in every process sharing the state folder, then a slot here.
        async with namespace_lock(self._cache_dir, namespace), self.compile_slots.hold(namespace):
            return await asyncio.to_thread(self.compile, source, namespace=namespace)

    def cached(self, namespace: str, sha256: str) -> CompiledModule | CompiledComponent | None:
        """The namespace's compiled module or component for these bytes, if it is in memory."""
        return self._cache.cached(namespace, sha256) or self._components.cached(namespace, sha256)

    def forget(self, namespace: str, sha256: str) -> None:
        """Delete the namespace's compiled artifacts of these bytes, in memory and on disk."""
        self._cache.forget(namespace, sha256)
        self._components.forget(namespace, sha256)

    @staticmethod
    def _source(source: bytes | str) -> bytes | str:
        return source if isinstance(source, str) else bytes(source)

    async def invoke(
        self,
        namespace: str,
        module: CompiledModule | CompiledComponent | bytes | str,
        input: bytes = b"",
        limits: Limits | None = None,
    ) -> InvocationResult:
        """Run ``handle`` once for ``namespace`` (bound here; the guest cannot change it).

        Guest failures are in the result; a ``ValueError`` means the caller's arguments are wrong
        (empty namespace, limits over the platform maxima, input too large).
        """
        if self._closed:
            raise RuntimeError("runtime is closed")
        if not namespace:
            raise ValueError("namespace must not be empty")
        limits = _DEFAULT_LIMITS if limits is None else limits.validated()
        input = bytes(input)
        if len(input) > MAX_INPUT_BYTES:
            raise ValueError(f"input is {len(input)} bytes; the limit is {MAX_INPUT_BYTES}")
        self._running += 1  # from here, compile included: `aclose` waits for it
        try:
            return await self._invoke(namespace, module, input, limits)
        finally:
            self._running -= 1
            if not self._running and self._idle is not None:
                self._idle.set()

    async def _invoke(
        self, namespace: str, module: CompiledModule | CompiledComponent | bytes | str, input: bytes, limits: Limits
    ) -> InvocationResult:
        loop = asyncio.get_running_loop()
        error: InvocationError | None = None
        if not isinstance(module, (CompiledModule, CompiledComponent)):
            try:
                module = await self.compile_async(module, namespace=namespace)
            except InvalidModule as exc:
                error = InvocationError("invalid_module", str(exc))
        executor = self._executor_for(module, limits)
        ctx = CoreContext(namespace, input, limits, loop=loop, sender=self.sender, send_limiter=self.send_limiter,
                          on_loop=executor.on_loop)
        if error is not None:
            ctx.start_clock()
            return ctx.result(None, error, 0)
        assert isinstance(module, (CompiledModule, CompiledComponent))
        try:
            code, error, fuel = await executor.run(module, ctx)
        except asyncio.CancelledError:
            ctx.abandon()  # the guest has stopped; sends it was told were accepted still go out
            raise
        if ctx.sends:
            await ctx.drain()
        return ctx.result(code, error, fuel)

    def _executor_for(self, module: object, limits: Limits) -> Executor:
        """The loop for core modules, unless one could take a long uninterruptible step there: a
        module that may use bulk memory instructions with a memory cap above `LOOP_BULK_MEMORY_MB`."""
        if self._loop is None or not isinstance(module, CompiledModule):
            return self._threads
        if module.bulk_ops and limits.memory_mb > LOOP_BULK_MEMORY_MB:
            return self._threads
        return self._loop

    async def aclose(self) -> None:
        """Refuse new invocations, let those in progress finish (each is bounded by its deadline), stop
        the guest threads and release the epoch ticker."""
        if self._closed:
            return
        self._closed = True
        if self._running:
            self._idle = asyncio.Event()
            await self._idle.wait()
        await self._threads.aclose()
        self._host.release()
