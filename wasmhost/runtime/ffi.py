"""The few wasmtime C-API calls we make directly, bypassing wasmtime-py's generic wrappers.

Why: wasmtime-py's host-function trampoline builds ``Val`` objects for every argument and converts the
result through throwaway ``ValType`` objects on every call; an *unchecked* callback that reads raw
``i32`` slots does none of that (numbers in bench/README.md, "Runtime"). Likewise calling an export
through ``Func.__call__`` looks up its type each time. Everything here uses ``wasmtime._ffi`` (private,
pinned by ``wasmtime>=50,<51``) and is covered by the runtime tests; nothing else in the package touches
it.

Raw values: ``wasmtime_val_raw_t`` is a 16-byte union, so argument ``i`` of an i32-only function
is ``slots[4 * i]`` of an ``int32`` view and the single result goes to ``slots[0]`` (with
``slots[1] = 0``, since wasmtime reads results as zero-extended 64-bit values).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from ctypes import POINTER, byref, c_bool, c_char_p, c_int32, c_size_t, c_void_p
from typing import Any

import wasmtime
from wasmtime import Instance, Store, Trap, WasmtimeError
from wasmtime import _ffi as ffi

__all__ = [
    "HOST_CALLBACK",
    "Export",
    "call",
    "caller_context",
    "caller_memory",
    "define_raw_func",
    "context_address",
    "end_slice",
    "set_yield_interval",
    "export",
    "export_raw",
    "memory_data",
    "memory_size",
]

#: ``wasm_trap_t *cb(void *env, wasmtime_caller_t *caller, wasmtime_val_raw_t *slots, size_t n)``
HOST_CALLBACK = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_int32), c_size_t)


def _proto(name: str, restype: Any, argtypes: list[Any]) -> Any:
    # dll[name] returns a fresh function object, so our prototypes don't disturb wasmtime-py's.
    fn = ffi.dll[name]
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
        raise WasmtimeError._from_ptr(ctypes.cast(error, POINTER(ffi.wasmtime_error_t)))


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
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        mod,
        len(mod),
        nm,
        len(nm),
        ty.ptr(),
        ctypes.cast(cb, ffi.wasmtime_func_unchecked_callback_t),
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
    item = ffi.wasmtime_extern_t()
    if not _caller_export_get(caller, b"memory", 6, ctypes.addressof(item)):
        return None
    if item.kind != ffi.WASMTIME_EXTERN_MEMORY.value:
        return None
    return Export(item)


def export(store: Store, instance: Instance, name: str) -> Export | None:
    """One export by name, without enumerating all of them the way ``Instance.exports`` does."""
    return export_raw(store, instance._instance, name)


def export_raw(store: Store, instance: Any, name: str) -> Export | None:
    """`export` for a bare ``wasmtime_instance_t`` (what async instantiation fills in)."""
    item = ffi.wasmtime_extern_t()
    raw = name.encode()
    if not ffi.wasmtime_instance_export_get(store._context(), byref(instance), raw, len(raw), byref(item)):
        return None
    return Export(item)


def call(store: Store, func: Export, has_result: bool) -> int | None:
    """Call a ``() -> i32`` or ``() -> ()`` export; raise `Trap` / `WasmtimeError` like wasmtime-py."""
    slots = (ffi.wasmtime_val_raw_t * 1)()
    trap = POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_func_call_unchecked(
        store._context(), ctypes.cast(func.addr, POINTER(ffi.wasmtime_func_t)), slots, 1, byref(trap)
    )
    if error:
        raise WasmtimeError._from_ptr(error)
    if trap:
        raise Trap._from_ptr(trap)
    return int(slots[0].i32) if has_result else None
