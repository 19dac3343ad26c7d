"""Running one core-module invocation: on the event loop as a fiber (`run_core_async`), or on the
worker thread (`run_core`) where fibers are not used.

A fresh Store per invocation (isolation: fresh memory and globals, nothing kept between tenants),
with fuel, an epoch deadline and memory/table/instance limits set before any guest code runs.
Guest failures become an `InvocationError`; they never raise out of here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from wasmtime import ExitTrap, Store, Trap, TrapCode, WasiConfig, WasmtimeError

from . import ffi
from .engine import TICK_SECONDS
from .hostfuncs import CoreContext, set_current
from .limits import Limits
from .module import CompiledModule
from .result import InvocationError
from .scheduler import DeadlinePassed
from .traps import clean_text, describe_trap, describe_trap_text

__all__ = ["classify", "run_core", "run_core_async"]

#: Table elements a guest may have (function-pointer tables of C/Go/Rust guests stay far below).
MAX_TABLE_ELEMENTS = 100_000


def epoch_ticks(timeout_ms: int) -> int:
    """Ticks after the current epoch such that the guest gets at least ``timeout_ms`` (+ <1 tick)."""
    return max(1, math.ceil(timeout_ms / 1000 / TICK_SECONDS)) + 1


def classify(exc: Exception, limits: Limits, *, instantiating: bool) -> InvocationError:
    """Map a wasmtime failure to the error kinds of `InvocationResult`."""
    if isinstance(exc, Trap):
        code = exc.trap_code
        if code is TrapCode.OUT_OF_FUEL:
            return InvocationError("out_of_fuel", f"the function used all of its {limits.fuel:,} fuel")
        if code is TrapCode.INTERRUPT:
            return InvocationError("timeout", f"the function ran past its {limits.timeout_ms} ms deadline")
        return InvocationError("trap", describe_trap(exc, "during instantiation" if instantiating else "in handle"))
    text = clean_text(exc)
    if instantiating and "maximum concurrent limit" in text:  # the engine's instance pool is full
        return InvocationError("link", f"instantiation failed: the host has no free instance slot ({text}); try again")
    if instantiating and "limit" in text and ("memory" in text or "table" in text or "instance" in text):
        return InvocationError("memory", f"the module does not fit its limits ({limits.memory_mb} MiB): {text}")
    if instantiating:
        return InvocationError("link", f"instantiation failed: {text}")
    return InvocationError("trap", describe_trap_text(str(exc), "in handle") or f"wasm error: {text}")


def _new_store(compiled: CompiledModule, ctx: CoreContext) -> Store:
    """A Store with fuel and the memory/table/instance limits; the caller arms the epoch (it differs
    between the worker, where it traps, and the loop, where it yields)."""
    limits = ctx.limits
    store = Store(compiled.engine)
    store.set_fuel(limits.fuel)
    store.set_limits(
        memory_size=limits.memory_bytes,
        table_elements=MAX_TABLE_ELEMENTS,
        instances=1,
        tables=4,
        memories=1,
    )
    if compiled.uses_wasi:
        store.set_wasi(WasiConfig())  # no args, env or preopens; stdio is ours (see hostfuncs)
        ctx.monotonic_origin = time.monotonic()
    return store


def _fuel_used(store: Store, limits: Limits) -> int:
    try:
        return limits.fuel - store.get_fuel()
    except WasmtimeError:
        return limits.fuel


def run_core(compiled: CompiledModule, ctx: CoreContext) -> tuple[int | None, InvocationError | None, int]:
    """Instantiate and call ``handle`` on this thread (the worker); return (handle's code, error, fuel used)."""
    limits = ctx.limits
    ctx.start_clock()
    store = _new_store(compiled, ctx)
    store.set_epoch_deadline(epoch_ticks(limits.timeout_ms))
    code: int | None = None
    error: InvocationError | None = None
    instantiating = True
    set_current(ctx)
    try:
        instance = compiled.thread_pre.instantiate(store)
        instantiating = False
        if compiled.has_initialize:
            init = ffi.export(store, instance, "_initialize")
            if init is not None:
                ffi.call(store, init, has_result=False)
        handle = ffi.export(store, instance, "handle")
        if handle is None:  # validated at compile time; defensive
            raise WasmtimeError("export `handle` disappeared")
        code = ffi.call(store, handle, has_result=True)
        if ctx.timed_out_in_host:
            raise DeadlinePassed
    except DeadlinePassed:
        code, error = None, InvocationError("timeout", f"the function ran past its {limits.timeout_ms} ms deadline")
    except ExitTrap as exc:  # WASI proc_exit: its status is the function's code
        code = exc.code
    except (Trap, WasmtimeError) as exc:
        error = classify(exc, limits, instantiating=instantiating)
    finally:
        set_current(None)
        ctx.stop_clock()
        ctx.finish_stderr()
    return code, error, _fuel_used(store, limits)


#: Polls a guest's future to its end on the loop (`scheduler.GuestScheduler.drive`).
Drive = Callable[[ffi.CallFuture, CoreContext], Awaitable[None]]


async def run_core_async(
    compiled: CompiledModule, ctx: CoreContext, drive: Drive
) -> tuple[int | None, InvocationError | None, int]:
    """Instantiate and call ``handle`` on the event loop's thread (see `ffi`), each step polled by
    ``drive``; same result as `run_core`."""
    limits = ctx.limits
    ctx.start_clock()
    store = _new_store(compiled, ctx)
    ffi.yield_every(store, ffi.SLICE_FUEL)  # replaces the epoch deadline trap (see `drive`)
    ctx.store = store
    code: int | None = None
    error: InvocationError | None = None
    instantiating = True
    try:
        future, instance = ffi.instantiate_async(store, compiled.pre)
        await drive(future, ctx)
        instantiating = False
        if compiled.has_initialize:
            init = ffi.export_raw(store, instance, "_initialize")
            if init is not None:
                future, _ = ffi.call_async(store, init, has_result=False)
                await drive(future, ctx)
        handle = ffi.export_raw(store, instance, "handle")
        if handle is None:  # validated at compile time; defensive
            raise WasmtimeError("export `handle` disappeared")
        future, results = ffi.call_async(store, handle, has_result=True)
        await drive(future, ctx)
        code = int(results[0].of.i32)
        if ctx.timed_out_in_host:
            raise DeadlinePassed
    except DeadlinePassed:
        code, error = None, InvocationError("timeout", f"the function ran past its {limits.timeout_ms} ms deadline")
    except ExitTrap as exc:  # WASI proc_exit: its status is the function's code
        code = exc.code
    except (Trap, WasmtimeError) as exc:
        error = classify(exc, limits, instantiating=instantiating)
    finally:
        ctx.stop_clock()
        ctx.finish_stderr()
    return code, error, _fuel_used(store, limits)
