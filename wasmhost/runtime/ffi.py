"""Every use of wasmtime's private C API (``wasmtime._ffi``, pinned by ``wasmtime>=50,<51``): nothing
else in the package imports it, and ``tests/runtime/test_ffi_pin.py`` fails when the pinned version
changes, so an upgrade is a deliberate review of this module.

Fast paths. wasmtime-py's host-function trampoline builds ``Val`` objects for every argument and
converts the result through throwaway ``ValType`` objects on every call; an *unchecked* callback
that reads raw ``i32`` slots does none of that (numbers in bench/README.md, "Runtime"). Likewise
calling an export through ``Func.__call__`` looks up its type each time. Raw values:
``wasmtime_val_raw_t`` is a 16-byte union, so argument ``i`` of an i32-only function is
``slots[4 * i]`` of an ``int32`` view and the single result goes to ``slots[0]`` (with
``slots[1] = 0``, since wasmtime reads results as zero-extended 64-bit values).

Fibers: guests run on the event loop's own thread, on a stack of their own. Handing each invocation
to a worker thread and back (and each send and its completion across the same gap) cost more than
the whole invocation: where idle vCPUs halt, every wake of the other thread and the GIL hand-offs
around it are paid in CPU time. Wasmtime's async API runs the guest on a fiber (a separate native
stack) that ``wasmtime_call_future_poll`` resumes until the guest returns or suspends: when it has
used a slice of fuel (`SLICE_FUEL`), at every epoch tick, when a host call cut its slice short
(`end_slice`), or when an async host function is not ready yet. The loop thread does the polling
(`scheduler`), so there is no hand-off at all. Python host functions run on the fiber's stack,
which the async stack size leaves `HOST_STACK_BYTES`. CPython up to 3.13 bounds C recursion by
counting frames, not by comparing stack addresses (verified here on 3.11); 3.14 compares addresses
against the thread's stack, so there the engine keeps guests on the guest threads
(`engine._on_loop_wanted`).

Engine settings wasmtime-py does not expose (the async stack size, the pooling allocator) are set
here too (`configure`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import POINTER, byref, c_bool, c_char_p, c_int32, c_size_t, c_void_p
from typing import Any

import wasmtime
from wasmtime import Config, Instance, InstancePre, Store, Trap, WasmtimeError
from wasmtime import _ffi as _ffi

__all__ = [
    "ASYNC_CALLBACK",
    "HOST_CALLBACK",
    "HOST_STACK_BYTES",
    "SLICE_FUEL",
    "CallFuture",
    "Export",
    "call",
    "call_async",
    "caller_context",
    "caller_memory",
    "configure",
    "context_address",
    "continuation",
    "define_async_func",
    "define_raw_func",
    "end_slice",
    "export",
    "export_raw",
    "instantiate_async",
    "memory_data",
    "memory_size",
    "set_continuation",
    "set_i32_result",
    "set_yield_interval",
    "yield_every",
]


#: ``wasm_trap_t *cb(void *env, wasmtime_caller_t *caller, wasmtime_val_raw_t *slots, size_t n)``
HOST_CALLBACK = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_int32), c_size_t)


def _proto(name: str, restype: Any, argtypes: list[Any]) -> Any:
    # dll[name] returns a fresh function object, so our prototypes don't disturb wasmtime-py's.
    fn = _ffi.dll[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


caller_context: Callable[[int], int] = _proto("wasmtime_caller_context", c_void_p, [c_void_p])
memory_data: Callable[[int, int], int] = _proto("wasmtime_memory_data", c_void_p, [c_void_p, c_void_p])
memory_size: Callable[[int, int], int] = _proto("wasmtime_memory_data_size", c_size_t, [c_void_p, c_void_p])
_set_fuel = _proto("wasmtime_context_set_fuel", c_void_p, [c_void_p, ctypes.c_uint64])
_get_fuel = _proto("wasmtime_context_get_fuel", c_void_p, [c_void_p, POINTER(ctypes.c_uint64)])
_yield_interval = _proto("wasmtime_context_fuel_async_yield_interval", c_void_p, [c_void_p, ctypes.c_uint64])


def _check(error: int | None) -> None:
    if error:
        raise WasmtimeError._from_ptr(ctypes.cast(error, POINTER(_ffi.wasmtime_error_t)))


def context_address(store: Store) -> int:
    """The address of ``store``'s ``wasmtime_context_t`` (what host calls see as the caller's context)."""
    return ctypes.cast(store._context(), c_void_p).value or 0


def set_yield_interval(context: int, fuel: int) -> None:
    """Suspend a guest on the loop every ``fuel`` units (takes effect when its fuel is next refilled)."""
    _check(_yield_interval(context, fuel))


def end_slice(context: int) -> None:
    """From a host call: make the guest suspend almost as soon as it is back in wasm (the caller
    restores the yield interval before resuming it). Fuel, unlike the epoch deadline, is re-read
    by compiled code after every call."""
    fuel = ctypes.c_uint64()
    _check(_get_fuel(context, byref(fuel)))
    _check(_yield_interval(context, 1))
    _check(_set_fuel(context, fuel.value))
_caller_export_get = _proto("wasmtime_caller_export_get", c_bool, [c_void_p, c_char_p, c_size_t, c_void_p])

_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, c_void_p))
_KEEP_ALIVE: list[Any] = []


def define_raw_func(linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, cb: Any) -> None:
    """Define an unchecked host function; ``cb`` must be a `HOST_CALLBACK` that never raises."""
    _KEEP_ALIVE.append(cb)
    mod, nm = module.encode(), name.encode()
    error = _ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        mod,
        len(mod),
        nm,
        len(nm),
        ty.ptr(),
        ctypes.cast(cb, _ffi.wasmtime_func_unchecked_callback_t),
        None,
        _NO_FINALIZER,
    )
    if error:
        raise WasmtimeError._from_ptr(error)


class Export:
    """A resolved export (keeps the extern struct alive); ``addr`` points at its func/memory."""

    __slots__ = ("item", "kind", "addr")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.kind: int = item.kind
        self.addr: int = ctypes.addressof(item.of)


def caller_memory(caller: int) -> Export | None:
    """The calling instance's ``memory`` export, or None if it has no such memory."""
    item = _ffi.wasmtime_extern_t()
    if not _caller_export_get(caller, b"memory", 6, ctypes.addressof(item)):
        return None
    if item.kind != _ffi.WASMTIME_EXTERN_MEMORY.value:
        return None
    return Export(item)


def export(store: Store, instance: Instance, name: str) -> Export | None:
    """One export by name, without enumerating all of them the way ``Instance.exports`` does."""
    return export_raw(store, instance._instance, name)


def export_raw(store: Store, instance: Any, name: str) -> Export | None:
    """`export` for a bare ``wasmtime_instance_t`` (what async instantiation fills in)."""
    item = _ffi.wasmtime_extern_t()
    raw = name.encode()
    if not _ffi.wasmtime_instance_export_get(store._context(), byref(instance), raw, len(raw), byref(item)):
        return None
    return Export(item)


def call(store: Store, func: Export, has_result: bool) -> int | None:
    """Call a ``() -> i32`` or ``() -> ()`` export; raise `Trap` / `WasmtimeError` like wasmtime-py."""
    slots = (_ffi.wasmtime_val_raw_t * 1)()
    trap = POINTER(_ffi.wasm_trap_t)()
    error = _ffi.wasmtime_func_call_unchecked(
        store._context(), ctypes.cast(func.addr, POINTER(_ffi.wasmtime_func_t)), slots, 1, byref(trap)
    )
    if error:
        raise WasmtimeError._from_ptr(error)
    if trap:
        raise Trap._from_ptr(trap)
    return int(slots[0].i32) if has_result else None


#: Fuel a guest may burn before it yields to the event loop: well under an epoch tick of wasm, so other
#: invocations and deliveries on the loop are not held up by one busy guest.
SLICE_FUEL = 500_000
#: Native stack left for host functions (Python) on each fiber, beyond the wasm stack.
HOST_STACK_BYTES = 2 << 20

#: ``void cb(env, caller, args, nargs, results, nresults, trap_ret, continuation_ret)``
ASYNC_CALLBACK = _ffi.wasmtime_func_async_callback_t
CONTINUATION = _ffi.wasmtime_func_async_continuation_callback_t
_I32 = _ffi.WASMTIME_I32.value
# Returns nothing in wasmtime 50 (wasmtime-py's binding still declares an error pointer: reading it crashes).
_epoch_yield_and_update = _ffi.dll["wasmtime_context_epoch_deadline_async_yield_and_update"]
_epoch_yield_and_update.restype = None
_epoch_yield_and_update.argtypes = [ctypes.POINTER(_ffi.wasmtime_context_t), ctypes.c_uint64]


def define_async_func(linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, cb: Any) -> None:
    """Define (shadowing any earlier definition) a host function that may suspend its caller.

    ``cb`` is an `ASYNC_CALLBACK` that never raises; it must fill ``continuation_ret`` (see
    `set_continuation`).
    """
    _KEEP_ALIVE.append(cb)
    mod, nm = module.encode(), name.encode()
    error = _ffi.wasmtime_linker_define_async_func(linker.ptr(), mod, len(mod), nm, len(nm), ty.ptr(), cb, None,
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
        return bool(_ffi.wasmtime_call_future_poll(self._ptr))

    def close(self) -> None:
        if self._ptr is not None:
            _ffi.wasmtime_call_future_delete(self._ptr)
            self._ptr = None

    def raise_for_failure(self) -> None:
        """After a finished poll: raise the guest's `Trap` or the `WasmtimeError`, as wasmtime-py would."""
        if self._error:
            error, self._error = self._error, POINTER(_ffi.wasmtime_error_t)()
            raise WasmtimeError._from_ptr(error)
        if self._trap:
            trap, self._trap = self._trap, POINTER(_ffi.wasm_trap_t)()
            raise Trap._from_ptr(trap)


def instantiate_async(store: Store, pre: InstancePre) -> tuple[CallFuture, Any]:
    """Start instantiating ``pre`` in ``store``; the instance struct is valid once the future finishes."""
    instance = _ffi.wasmtime_instance_t()
    trap = POINTER(_ffi.wasm_trap_t)()
    error = POINTER(_ffi.wasmtime_error_t)()
    ptr = _ffi.wasmtime_instance_pre_instantiate_async(pre.ptr(), store._context(), byref(instance), byref(trap),
                                                      byref(error))
    return CallFuture(ptr, trap, error, (store, pre, instance)), instance


def call_async(store: Store, func: Export, has_result: bool) -> tuple[CallFuture, Any]:
    """Start calling a ``() -> i32`` or ``() -> ()`` export; results[0].of.i32 holds its value when done."""
    results = (_ffi.wasmtime_val_t * 1)()
    trap = POINTER(_ffi.wasm_trap_t)()
    error = POINTER(_ffi.wasmtime_error_t)()
    target = ctypes.cast(func.addr, POINTER(_ffi.wasmtime_func_t))
    ptr = _ffi.wasmtime_func_call_async(store._context(), target, None, 0, results, 1 if has_result else 0,
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
    error = _ffi.wasmtime_context_fuel_async_yield_interval(context, fuel)
    if error:
        raise WasmtimeError._from_ptr(error)


def configure(config: Config, async_stack_size: int, pooling: dict[str, int] | None) -> None:
    """Set the async stack size and, if given, the pooling allocator: each key ``name`` is the setting
    ``wasmtime_pooling_allocation_config_<name>_set``."""
    _ffi.wasmtime_config_async_stack_size_set(config.ptr(), async_stack_size)
    if pooling is None:
        return
    pool = _ffi.wasmtime_pooling_allocation_config_new()
    try:
        for name, value in pooling.items():
            getattr(_ffi, f"wasmtime_pooling_allocation_config_{name}_set")(pool, value)
        _ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)  # copies the settings
    finally:
        _ffi.wasmtime_pooling_allocation_config_delete(pool)
