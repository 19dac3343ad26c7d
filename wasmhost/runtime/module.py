"""Compiling and validating guest modules against ABI v1.

A module is accepted only if it compiles and its whole contract with the host holds: imports only
from ``wasmhost`` (known names, exact signatures) and ``wasi_snapshot_preview1``; exports
``handle: () -> i32`` and a 32-bit, unshared ``memory`` whose minimum fits the platform memory
maximum; ``_initialize``, if exported, is ``() -> ()``. The reasons are written for the tenant who
uploaded the module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import wasmtime
from wasmtime import Engine, ExportType, FuncType, ImportType, InstancePre, MemoryType, Module, WasmtimeError

from . import abi
from .bulk import may_use_bulk_ops
from .engine import EngineHost
from .limits import Limits

__all__ = ["CompiledModule", "InvalidModule", "compile_source", "module_key", "to_wasm", "validate"]

_WASM_MAGIC = b"\0asm"
_PAGE = 65536


class InvalidModule(ValueError):
    """The module cannot run here; the message says why in terms the tenant can act on."""


@dataclass(frozen=True, eq=False, slots=True)
class CompiledModule:
    """A validated module, ready to instantiate. Hold on to it to skip hashing on every invoke."""

    sha256: str
    engine: Engine
    module: Module
    pre: InstancePre
    uses_wasi: bool
    has_initialize: bool
    memory_min_bytes: int
    #: How this object was made: compiled from source, or loaded from the on-disk cache.
    origin: Literal["compiled", "disk"]
    #: ``pre`` for a guest run on a thread (linked with the blocking flavours of the host calls).
    thread_pre: InstancePre
    #: The module may execute bulk memory/table instructions (see `bulk`); True when not known.
    bulk_ops: bool = True


def module_key(source: bytes | str) -> str:
    """The cache key of a module: sha256 of the bytes (WAT text as UTF-8) as given."""
    data = source.encode() if isinstance(source, str) else bytes(source)
    return hashlib.sha256(data).hexdigest()


def to_wasm(source: bytes | str) -> bytes:
    """Binary wasm from binary or WAT text."""
    if isinstance(source, (bytes, bytearray, memoryview)) and bytes(source[:4]) == _WASM_MAGIC:
        return bytes(source)
    try:
        text = source if isinstance(source, str) else bytes(source).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModule("not a WebAssembly module (no \\0asm header) and not WAT text") from None
    if not text.strip():
        raise InvalidModule("the module is empty")
    try:
        return bytes(wasmtime.wat2wasm(text))
    except WasmtimeError as exc:
        raise InvalidModule(f"WAT text does not parse: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _sig(ty: FuncType) -> str:
    return f"({', '.join(str(p) for p in ty.params)}) -> ({', '.join(str(r) for r in ty.results)})"


def _i32_sig(nparams: int, nresults: int) -> str:
    return f"({', '.join(['i32'] * nparams)}) -> ({', '.join(['i32'] * nresults)})"


def _check_import(imp: ImportType) -> bool:
    """Validate one import; return True if it is a WASI import."""
    where = f"import {imp.module}.{imp.name}"
    ty = imp.type
    if imp.module == abi.HOST_MODULE:
        name = imp.name or ""
        if name not in abi.HOST_FUNCTIONS:
            known = ", ".join(abi.HOST_FUNCTIONS)
            raise InvalidModule(f"{where}: ABI v{abi.ABI_VERSION} has no such host function (it has: {known})")
        if not isinstance(ty, FuncType):
            raise InvalidModule(f"{where} must be a function")
        want = _i32_sig(*abi.HOST_FUNCTIONS[name])
        if _sig(ty) != want:
            raise InvalidModule(f"{where} has signature {_sig(ty)}; ABI v{abi.ABI_VERSION} defines {want}")
        return False
    if imp.module == abi.WASI_MODULE:
        if not isinstance(ty, FuncType):
            raise InvalidModule(f"{where} must be a function")
        return True
    raise InvalidModule(
        f"{where}: only the {abi.HOST_MODULE!r} and {abi.WASI_MODULE!r} modules can be imported "
        "(no env, no imported memory; build freestanding or for wasm32-wasi)"
    )


def validate(module: Module) -> tuple[bool, bool, int]:
    """Check the contract; return (uses_wasi, has_initialize, memory minimum in bytes)."""
    uses_wasi = False
    for imp in module.imports:
        uses_wasi |= _check_import(imp)
    exports: dict[str, ExportType] = {e.name: e for e in module.exports}
    handle = exports.get("handle")
    if handle is None:
        raise InvalidModule("the module must export a function `handle: () -> i32` (it exports none)")
    if not isinstance(handle.type, FuncType) or _sig(handle.type) != "() -> (i32)":
        shown = _sig(handle.type) if isinstance(handle.type, FuncType) else "a non-function"
        raise InvalidModule(f"export `handle` must be () -> (i32), found {shown}")
    memory = exports.get("memory")
    if memory is None or not isinstance(memory.type, MemoryType):
        raise InvalidModule("the module must export its linear memory as `memory`")
    mt = memory.type
    if mt.is_64 or mt.is_shared:
        raise InvalidModule("`memory` must be a 32-bit, unshared memory")
    min_bytes = mt.limits.min * _PAGE
    cap = Limits.MAXIMA["memory_mb"] << 20
    if min_bytes > cap:
        raise InvalidModule(
            f"`memory` starts at {mt.limits.min} pages ({min_bytes >> 20} MiB); the platform maximum is {cap >> 20} MiB"
        )
    init = exports.get("_initialize")
    has_initialize = init is not None
    if init is not None and (not isinstance(init.type, FuncType) or _sig(init.type) != "() -> ()"):
        raise InvalidModule("export `_initialize` must be a function () -> ()")
    return uses_wasi, has_initialize, min_bytes


def finish(
    host: EngineHost, module: Module, sha: str, origin: Literal["compiled", "disk"], *, bulk_ops: bool = True
) -> CompiledModule:
    """Validate a compiled or deserialized module and pre-link it (for the loop and for threads).

    ``bulk_ops``: `bulk.may_use_bulk_ops` of the binary, when the caller has it.
    """
    uses_wasi, has_initialize, min_bytes = validate(module)
    try:
        pre = host.linker.instantiate_pre(module)
        thread_pre = pre if host.thread_linker is host.linker else host.thread_linker.instantiate_pre(module)
    except WasmtimeError as exc:
        raise InvalidModule(f"the module's imports cannot be linked: {_first_line(exc)}") from None
    return CompiledModule(sha, host.engine, module, pre, uses_wasi, has_initialize, min_bytes, origin, thread_pre,
                          bulk_ops)


def compile_source(host: EngineHost, source: bytes | str, sha: str | None = None) -> CompiledModule:
    """Compile and validate; raise `InvalidModule` with a human reason."""
    wasm = to_wasm(source)
    try:
        module = Module(host.engine, wasm)
    except WasmtimeError as exc:
        raise InvalidModule(f"not a valid WebAssembly module: {_first_line(exc)}") from None
    return finish(host, module, sha or module_key(source), "compiled", bulk_ops=may_use_bulk_ops(wasm))
