"""`Runtime`: the public entry point that runs tenant functions for the gateway and the CLI.

All wasm runs on one worker thread (wasmtime-py releases the GIL while wasm runs, so the event
loop stays responsive; more threads only add GIL convoys, and host-function exceptions are routed
through a process global). ``await runtime.invoke(...)`` hops to it; sends issued by the guest are
delivered on the caller's event loop concurrently with the guest.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .cache import CacheStats, ModuleCache
from .component import CompiledComponent, ComponentCache, is_component, run_component
from .context import Sender, SendLimiter
from .engine import EngineHost, engine_host
from .hostfuncs import CoreContext
from .invocation import run_core
from .limits import Limits
from .module import CompiledModule, InvalidModule
from .result import InvocationError, InvocationResult
from .worker import Worker

__all__ = ["MAX_INPUT_BYTES", "Runtime"]

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
    ) -> None:
        self.sender = sender
        self.send_limiter = send_limiter
        self._host: EngineHost = engine_host()
        self._cache = ModuleCache(self._host, cache_dir, cache_key)
        self._components = ComponentCache(self._host, cache_dir, cache_key)
        self._worker = Worker("wasmhost-wasm")
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

    def compile(self, source: bytes | str) -> CompiledModule | CompiledComponent:
        """Compile (or fetch from the cache) and validate; raise `InvalidModule` with a reason.

        The binary itself says what it is: a component (WIT world ``wasmhost:guest``) or a core module.
        """
        if not isinstance(source, str) and is_component(source):
            return self._components.get(bytes(source))
        return self._cache.get(source)

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
        loop = asyncio.get_running_loop()
        ctx = CoreContext(namespace, input, limits, loop=loop, sender=self.sender, send_limiter=self.send_limiter)
        code, error, fuel = await self._worker.run(self._run, module, ctx)
        if ctx.sends:
            await ctx.drain()
        return ctx.result(code, error, fuel)

    def _run(
        self, module: CompiledModule | CompiledComponent | bytes | str, ctx: CoreContext
    ) -> tuple[int | None, InvocationError | None, int]:
        if not isinstance(module, (CompiledModule, CompiledComponent)):
            try:
                module = self.compile(module)
            except InvalidModule as exc:
                ctx.start_clock()
                return None, InvocationError("invalid_module", str(exc)), 0
        if isinstance(module, CompiledComponent):
            return run_component(module, ctx)
        return run_core(module, ctx)

    async def aclose(self) -> None:
        """Stop the worker (after the invocation in progress) and release the epoch ticker."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._worker.close, True)
        self._host.release()
