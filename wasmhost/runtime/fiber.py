"""Wasmtime's async C API: guests run on the event loop's own thread, on a stack of their own.

Why: handing each invocation to a worker thread and back (and each send and its completion across the
same gap) cost more than the whole invocation: where idle vCPUs halt, every wake of the other thread and
the GIL hand-offs around it are paid in CPU time (numbers in bench/README.md, "Runtime"). Wasmtime's
async API runs the guest on a fiber (a separate native stack) that ``wasmtime_call_future_poll`` resumes
until the guest returns or suspends: when it has used a slice of fuel (`SLICE_FUEL`), at every epoch
tick (fuel does not count time in host calls), or when an async host function (``push_wait``,
``poll_oneoff``) is not ready yet. The loop thread does the polling, so there is no hand-off at all;
many invocations interleave, each bounded as before by its fuel (which traps) and its wall-clock
deadline (enforced by the caller at the suspensions, `invocation._drive`).

Everything here uses ``wasmtime._ffi`` (private, pinned by ``wasmtime>=50,<51``). Python host
functions run on the fiber's stack, which `async_stack_size` sizes to leave them `HOST_STACK_BYTES`.
CPython up to 3.13 bounds C recursion by counting frames, not by comparing stack addresses (verified
here on 3.11); 3.14 compares addresses against the thread's stack, so there the engine keeps guests
on the worker thread (`engine._on_loop_wanted`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import POINTER, byref
from typing import Any

import wasmtime
from wasmtime import InstancePre, Store, Trap, WasmtimeError
from wasmtime import _ffi as ffi

from .ffi import Export

__all__ = [
    "ASYNC_CALLBACK",
    "HOST_STACK_BYTES",
    "SLICE_FUEL",
    "CallFuture",
    "call_async",
    "continuation",
    "define_async_func",
    "instantiate_async",
    "set_continuation",
    "set_i32_result",
    "yield_every",
]

#: Fuel a guest may burn before it yields to the event loop: well under an epoch tick of wasm, so other
#: invocations and deliveries on the loop are not held up by one busy guest.
SLICE_FUEL = 500_000
#: Native stack left for host functions (Python) on each fiber, beyond the wasm stack.
HOST_STACK_BYTES = 2 << 20

#: ``void cb(env, caller, args, nargs, results, nresults, trap_ret, continuation_ret)``
ASYNC_CALLBACK = ffi.wasmtime_func_async_callback_t
CONTINUATION = ffi.wasmtime_func_async_continuation_callback_t
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER = ctypes.cast(0, _FINALIZER)
_I32 = ffi.WASMTIME_I32.value
_KEEP_ALIVE: list[Any] = []
# Returns nothing in wasmtime 50 (wasmtime-py's binding still declares an error pointer: reading it crashes).
_epoch_yield_and_update = ffi.dll["wasmtime_context_epoch_deadline_async_yield_and_update"]
_epoch_yield_and_update.restype = None
_epoch_yield_and_update.argtypes = [ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_uint64]


def define_async_func(linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, cb: Any) -> None:
    """Define (shadowing any earlier definition) a host function that may suspend its caller.

    ``cb`` is an `ASYNC_CALLBACK` that never raises; it must fill ``continuation_ret`` (see
    `set_continuation`).
    """
    _KEEP_ALIVE.append(cb)
    mod, nm = module.encode(), name.encode()
    error = ffi.wasmtime_linker_define_async_func(linker.ptr(), mod, len(mod), nm, len(nm), ty.ptr(), cb, None,
                                                  _NO_FINALIZER)
    if error:
        raise WasmtimeError._from_ptr(error)


def set_i32_result(results: Any, value: int) -> None:
    results[0].kind = _I32
    results[0].of.i32 = value


def set_continuation(continuation: Any, callback: Any, env: int = 0) -> None:
    """Point the host call's continuation at ``callback(env)`` (a `CONTINUATION`; True = finished).

    Wasmtime calls it once straight away and then on every poll until it returns True.
    """
    slot = continuation[0]
    slot.callback = callback
    slot.env = env or None
    slot.finalizer = _NO_FINALIZER


def continuation(fn: Callable[[int], bool]) -> Any:
    """Wrap ``fn(env)`` (must not raise) as a `CONTINUATION`; the caller keeps the result alive."""
    cb = CONTINUATION(lambda env: fn(env or 0))
    _KEEP_ALIVE.append(cb)
    return cb


class CallFuture:
    """One suspended-or-running async operation of a Store: instantiation or a call.

    `poll` runs the guest until it finishes (True) or suspends (False); `close` drops it, which
    stops a guest that has not finished (wasmtime unwinds its fiber). Exactly one may exist per Store.
    """

    __slots__ = ("_ptr", "_trap", "_error", "_keep")

    def __init__(self, ptr: Any, trap: Any, error: Any, keep: tuple[Any, ...]) -> None:
        self._ptr = ptr
        self._trap = trap
        self._error = error
        self._keep = keep  # every argument wasmtime reads until the future is deleted

    def poll(self) -> bool:
        return bool(ffi.wasmtime_call_future_poll(self._ptr))

    def close(self) -> None:
        if self._ptr is not None:
            ffi.wasmtime_call_future_delete(self._ptr)
            self._ptr = None

    def raise_for_failure(self) -> None:
        """After a finished poll: raise the guest's `Trap` or the `WasmtimeError`, as wasmtime-py would."""
        if self._error:
            error, self._error = self._error, POINTER(ffi.wasmtime_error_t)()
            raise WasmtimeError._from_ptr(error)
        if self._trap:
            trap, self._trap = self._trap, POINTER(ffi.wasm_trap_t)()
            raise Trap._from_ptr(trap)


def instantiate_async(store: Store, pre: InstancePre) -> tuple[CallFuture, Any]:
    """Start instantiating ``pre`` in ``store``; the instance struct is valid once the future finishes."""
    instance = ffi.wasmtime_instance_t()
    trap = POINTER(ffi.wasm_trap_t)()
    error = POINTER(ffi.wasmtime_error_t)()
    ptr = ffi.wasmtime_instance_pre_instantiate_async(pre.ptr(), store._context(), byref(instance), byref(trap),
                                                      byref(error))
    return CallFuture(ptr, trap, error, (store, pre, instance)), instance


def call_async(store: Store, func: Export, has_result: bool) -> tuple[CallFuture, Any]:
    """Start calling a ``() -> i32`` or ``() -> ()`` export; results[0].of.i32 holds its value when done."""
    results = (ffi.wasmtime_val_t * 1)()
    trap = POINTER(ffi.wasm_trap_t)()
    error = POINTER(ffi.wasmtime_error_t)()
    target = ctypes.cast(func.addr, POINTER(ffi.wasmtime_func_t))
    ptr = ffi.wasmtime_func_call_async(store._context(), target, None, 0, results, 1 if has_result else 0,
                                       byref(trap), byref(error))
    return CallFuture(ptr, trap, error, (store, func, results)), results


def yield_every(store: Store, fuel: int) -> None:
    """Make the guest suspend after every ``fuel`` units (the Store's total still traps), and at every
    epoch tick instead of trapping at an epoch deadline: fuel does not count time spent in host calls,
    so a guest looping on a cheap host call would otherwise hold the loop for a whole fuel slice
    (hundreds of milliseconds). The caller then enforces the wall-clock deadline at those suspensions."""
    context = store._context()
    store.set_epoch_deadline(1)
    _epoch_yield_and_update(context, 1)
    error = ffi.wasmtime_context_fuel_async_yield_interval(context, fuel)
    if error:
        raise WasmtimeError._from_ptr(error)
