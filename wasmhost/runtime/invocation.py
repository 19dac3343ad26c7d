"""Running one core-module invocation on the wasm worker thread.

A fresh Store per invocation (isolation: fresh memory and globals, nothing kept between tenants),
with fuel, an epoch deadline and memory/table/instance limits set before any guest code runs.
Guest failures become an `InvocationError`; they never raise out of here.
"""

from __future__ import annotations

import math
import re

from wasmtime import ExitTrap, Store, Trap, TrapCode, WasiConfig, WasmtimeError

from . import ffi
from .engine import TICK_SECONDS
from .hostfuncs import CoreContext, set_current
from .limits import Limits
from .module import CompiledModule
from .result import InvocationError

__all__ = ["classify", "run_core"]

#: Table elements a guest may have (function-pointer tables of C/Go/Rust guests stay far below).
MAX_TABLE_ELEMENTS = 100_000


def epoch_ticks(timeout_ms: int) -> int:
    """Ticks after the current epoch such that the guest gets at least ``timeout_ms`` (+ <1 tick)."""
    return max(1, math.ceil(timeout_ms / 1000 / TICK_SECONDS)) + 1


def _text(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and ln != "Caused by:" and not re.match(r"^\d+:\s+0x", ln)]
    return ": ".join(lines[:3])[:500] or type(exc).__name__


def classify(exc: Exception, limits: Limits, *, instantiating: bool) -> InvocationError:
    """Map a wasmtime failure to the error kinds of `InvocationResult`."""
    if isinstance(exc, Trap):
        code = exc.trap_code
        if code is TrapCode.OUT_OF_FUEL:
            return InvocationError("out_of_fuel", f"the function used all of its {limits.fuel:,} fuel")
        if code is TrapCode.INTERRUPT:
            return InvocationError("timeout", f"the function ran past its {limits.timeout_ms} ms deadline")
        name = code.name if code is not None else "UNKNOWN"
        where = "during instantiation" if instantiating else "in handle"
        return InvocationError("trap", f"wasm trap {name} {where}: {_text(exc)}")
    text = _text(exc)
    if instantiating and "maximum concurrent limit" in text:  # the engine's instance pool is full
        return InvocationError("link", f"instantiation failed: the host has no free instance slot ({text}); try again")
    if instantiating and "limit" in text and ("memory" in text or "table" in text or "instance" in text):
        return InvocationError("memory", f"the module does not fit its limits ({limits.memory_mb} MiB): {text}")
    if instantiating:
        return InvocationError("link", f"instantiation failed: {text}")
    return InvocationError("trap", f"wasm error: {text}")


def run_core(compiled: CompiledModule, ctx: CoreContext) -> tuple[int | None, InvocationError | None, int]:
    """Instantiate and call ``handle``; return (handle's code, error, fuel used)."""
    limits = ctx.limits
    ctx.start_clock()
    store = Store(compiled.engine)
    store.set_fuel(limits.fuel)
    store.set_epoch_deadline(epoch_ticks(limits.timeout_ms))
    store.set_limits(
        memory_size=limits.memory_bytes,
        table_elements=MAX_TABLE_ELEMENTS,
        instances=1,
        tables=4,
        memories=1,
    )
    if compiled.uses_wasi:
        store.set_wasi(WasiConfig())  # no args, env or preopens; stdio is ours (see hostfuncs)
    code: int | None = None
    error: InvocationError | None = None
    instantiating = True
    set_current(ctx)
    try:
        instance = compiled.pre.instantiate(store)
        instantiating = False
        if compiled.has_initialize:
            init = ffi.export(store, instance, "_initialize")
            if init is not None:
                ffi.call(store, init, has_result=False)
        handle = ffi.export(store, instance, "handle")
        if handle is None:  # validated at compile time; defensive
            raise WasmtimeError("export `handle` disappeared")
        code = ffi.call(store, handle, has_result=True)
    except ExitTrap as exc:  # WASI proc_exit: its status is the function's code
        code = exc.code
    except (Trap, WasmtimeError) as exc:
        error = classify(exc, limits, instantiating=instantiating)
    finally:
        set_current(None)
        ctx.stop_clock()
        ctx.finish_stderr()
    try:
        fuel_used = limits.fuel - store.get_fuel()
    except WasmtimeError:
        fuel_used = limits.fuel
    return code, error, fuel_used
