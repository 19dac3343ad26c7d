"""The wasm runtime: runs tenant guest modules in a wasmtime sandbox with the ABI v1 host functions.

Public API::

    runtime = Runtime(sender, cache_dir=..., cache_key=..., send_limiter=..., max_concurrent=32)
    compiled = await runtime.compile_async(wasm_or_wat, namespace="acme")  # InvalidModule on a bad module
    result = await runtime.invoke("acme", compiled, b'{"user": "alice"}', Limits(timeout_ms=2000))
    result.to_dict()  # {"ok", "code", "error", "output", "logs", "sends", "fuel_used", "duration_ms"}
    await runtime.aclose()

Layout: ``abi`` (names, codes), ``limits`` (sandbox limits and maxima), ``result`` (the result
shape), ``context`` (per-invocation state and send hand-off, shared by every guest flavour),
``hostfuncs`` (ABI v1 for core modules + WASI stdio), ``wasi_poll`` (WASI sleeps), ``ffi`` (every use
of wasmtime's private C API: raw host calls, and the async API that runs core guests as fibers on the
event loop), ``engine`` (the process Engine, ticker and Linkers), ``wasmbin`` (reads a binary's
sections), ``module`` (the contract, checked before compiling), ``bulk`` (does a module use bulk
memory instructions), ``compiler`` (compiles in a bounded child process), ``slots`` (compile slots
shared fairly between namespaces), ``cache`` (per-namespace memory LRU + HMAC-signed disk artifacts
under a size cap, and cached refusals), ``invocation`` (one Store, one call), ``scheduler`` (which
guest on the loop runs next), ``threads`` (guest threads shared fairly by namespace), ``executor``
(the seam: loop or threads), ``runtime``.
``component`` runs component-model guests (WIT world ``wasmhost:guest@1.0.0``) with the same
`Limits`, `InvocationContext` and `InvocationResult`; ``Runtime.compile`` tells them apart by the binary.
"""

from .abi import (
    FAULT,
    INVAL,
    LIMIT,
    NOT_CONFIGURED,
    OK,
    RATE_LIMITED,
    TIMEOUT,
    TOO_BIG,
    UNAVAILABLE,
    strerror,
)
from .cache import CacheStats
from .compiler import CompileLimits, CompileRefused
from .component import CompiledComponent
from .context import InvocationContext, Sender, SendLimiter
from .limits import Limits
from .module import CompiledModule, InvalidModule
from .result import InvocationError, InvocationResult, LogEntry
from .runtime import MAX_INPUT_BYTES, Runtime

__all__ = [
    "FAULT",
    "INVAL",
    "LIMIT",
    "MAX_INPUT_BYTES",
    "NOT_CONFIGURED",
    "OK",
    "RATE_LIMITED",
    "TIMEOUT",
    "TOO_BIG",
    "UNAVAILABLE",
    "CacheStats",
    "CompileLimits",
    "CompileRefused",
    "CompiledComponent",
    "CompiledModule",
    "InvalidModule",
    "InvocationContext",
    "InvocationError",
    "InvocationResult",
    "Limits",
    "LogEntry",
    "Runtime",
    "SendLimiter",
    "Sender",
    "strerror",
]
