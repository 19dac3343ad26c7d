"""Guest modules' contract with ABI v1, checked before anything compiles them.

A module is accepted only if its whole contract with the host holds: imports only from
``wasmhost`` (known names, exact signatures) and ``wasi_snapshot_preview1``; at most
`CompileLimits.max_functions` functions, one memory and `MAX_MODULE_TABLES` tables; exports
``handle: () -> i32`` and a 32-bit, unshared ``memory`` whose minimum fits the platform memory
maximum; ``_initialize``, if exported, is ``() -> ()``. `read_contract` checks it from the binary's
sections (see `wasmbin`), so a module that breaks it costs no compile; `finish` checks it again on
the loaded module. The reasons are written for the tenant who uploaded the module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from wasmtime import Engine, FuncType, InstancePre, MemoryType, Module, TableType, WasmtimeError

from . import abi
from .engine import EngineHost
from .limits import Limits
from .wasmbin import BinaryError, Export, Import, MemoryLimits, ModuleInfo, TooMany, read_module

__all__ = [
    "HOW_TO_EXPORT_HANDLE",
    "CompiledModule",
    "Contract",
    "InvalidModule",
    "check_contract",
    "finish",
    "module_key",
    "read_contract",
    "to_wasm",
]

_WASM_MAGIC = b"\0asm"
_PAGE = 65536
#: Tables one module may define (= the Store limit in ``invocation``).
MAX_MODULE_TABLES = 4


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


def to_wasm(source: bytes | str, wat2wasm: Callable[[str], bytes]) -> bytes:
    """Binary wasm from binary or WAT text (converted by ``wat2wasm``, which is bounded by the caller)."""
    if isinstance(source, (bytes, bytearray, memoryview)) and bytes(source[:4]) == _WASM_MAGIC:
        return bytes(source)
    try:
        text = source if isinstance(source, str) else bytes(source).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModule("not a WebAssembly module (no \\0asm header) and not WAT text") from None
    if not text.strip():
        raise InvalidModule("the module is empty")
    return wat2wasm(text)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _sig(ty: FuncType) -> str:
    return f"({', '.join(str(p) for p in ty.params)}) -> ({', '.join(str(r) for r in ty.results)})"


def _i32_sig(nparams: int, nresults: int) -> str:
    return f"({', '.join(['i32'] * nparams)}) -> ({', '.join(['i32'] * nresults)})"


#: How each SDK language exports ``handle`` (shown when a module does not).
HOW_TO_EXPORT_HANDLE = (
    ("C", 'WASMHOST_EXPORT("handle") int32_t handle(void) { ... }  (guest_examples/sdk/c/wasmhost.h)'),
    ("Rust", '#[no_mangle] pub extern "C" fn handle() -> i32 { ... }  (crate-type cdylib)'),
    ("Zig", "export fn handle() i32 { ... }  (build an executable with -fno-entry)"),
    ("Go", "//go:wasmexport handle  above  func handle() int32 { ... }  (GOOS=wasip1 -buildmode=c-shared)"),
    ("AssemblyScript", "export function handle(): i32 { ... }  in the entry file"),
    ("WAT", '(func (export "handle") (result i32) ...)'),
)


def _shown(name: str, limit: int = 64) -> str:
    """A name from the module as it goes into a message: cut, so a message stays short whatever the module."""
    return name if len(name) <= limit else name[:limit] + "…"


def _missing_handle(exports: list[Export]) -> str:
    functions = [_shown(e.name) for e in exports if e.kind == "function"]
    others = [f"{e.kind} `{_shown(e.name)}`" for e in exports if e.kind != "function"]
    if not exports:
        found = "it exports nothing at all"
    elif not functions:
        found = f"it exports no functions at all (only {_listing(others)})"
    else:
        shown = [f"function `{name}`" for name in functions] + others
        found = f"it exports {_listing(shown)}"
    how = "; ".join(f"{lang}: {text}" for lang, text in HOW_TO_EXPORT_HANDLE)
    return f"the module must export a function `handle: () -> i32`, but {found}. Export it: {how}"


def _listing(items: list[str], limit: int = 12) -> str:
    shown = items[:limit] + ([f"{len(items) - limit} more"] if len(items) > limit else [])
    return ", ".join(shown)


def _check_import(imp: Import) -> bool:
    """Validate one import; return True if it is a WASI import."""
    where = f"import {_shown(imp.module)}.{_shown(imp.name)}"
    if imp.module == abi.HOST_MODULE:
        if imp.name not in abi.HOST_FUNCTIONS:
            known = ", ".join(abi.HOST_FUNCTIONS)
            raise InvalidModule(f"{where}: ABI v{abi.ABI_VERSION} has no such host function (it has: {known})")
        if imp.kind != "function":
            raise InvalidModule(f"{where} must be a function")
        want = _i32_sig(*abi.HOST_FUNCTIONS[imp.name])
        if imp.signature != want:
            shown = _shown(imp.signature or "", 200)
            raise InvalidModule(f"{where} has signature {shown}; ABI v{abi.ABI_VERSION} defines {want}")
        return False
    if imp.module == abi.WASI_MODULE:
        if imp.kind != "function":
            raise InvalidModule(f"{where} must be a function")
        return True
    raise InvalidModule(
        f"{where}: only the {abi.HOST_MODULE!r} and {abi.WASI_MODULE!r} modules can be imported "
        "(no env, no imported memory; build freestanding or for wasm32-wasi)"
    )


@dataclass(frozen=True, slots=True)
class Contract:
    """What the host needs to know about a module that keeps its contract."""

    uses_wasi: bool
    has_initialize: bool
    memory_min_bytes: int


def check_contract(info: ModuleInfo) -> Contract:
    """Check the module's contract with the host from its structure alone (nothing is compiled)."""
    uses_wasi = False
    for imp in info.imports:
        uses_wasi |= _check_import(imp)
    if len(info.memories) > 1:
        raise InvalidModule(f"the module defines {len(info.memories)} memories; a guest has exactly one")
    if info.tables > MAX_MODULE_TABLES:
        raise InvalidModule(f"the module defines {info.tables} tables; the limit is {MAX_MODULE_TABLES}")
    handle = info.export("handle")
    if handle is None:
        raise InvalidModule(_missing_handle(info.exports))
    if handle.kind != "function" or handle.signature != "() -> (i32)":
        shown = _shown(handle.signature or "", 200) if handle.kind == "function" else f"a {handle.kind}"
        raise InvalidModule(f"export `handle` must be a function () -> (i32), found {shown}")
    memory = info.export("memory")
    if memory is None or memory.memory is None:
        raise InvalidModule("the module must export its linear memory as `memory`")
    mt = memory.memory
    if mt.is_64 or mt.shared:
        raise InvalidModule("`memory` must be a 32-bit, unshared memory")
    min_bytes = mt.min_pages * _PAGE
    cap = Limits.MAXIMA["memory_mb"] << 20
    if min_bytes > cap:
        raise InvalidModule(
            f"`memory` starts at {mt.min_pages} pages ({min_bytes >> 20} MiB); the platform maximum is {cap >> 20} MiB"
        )
    init = info.export("_initialize")
    if init is not None and (init.kind != "function" or init.signature != "() -> ()"):
        raise InvalidModule("export `_initialize` must be a function () -> ()")
    return Contract(uses_wasi, init is not None, min_bytes)


def read_contract(wasm: bytes, *, max_functions: int | None = None) -> Contract:
    """Read a core module's structure and check its contract; raise `InvalidModule` with a reason."""
    try:
        info = read_module(wasm, max_functions)
    except TooMany as exc:
        raise InvalidModule(str(exc)) from None
    except BinaryError as exc:
        raise InvalidModule(f"not a valid WebAssembly module: {exc}") from None
    return check_contract(info)


def _info_of(module: Module) -> ModuleInfo:
    """The structure of a compiled or deserialized module, for the same contract check."""
    info = ModuleInfo()
    for imp in module.imports:
        ty = imp.type
        kind = "function" if isinstance(ty, FuncType) else "memory" if isinstance(ty, MemoryType) else "other"
        info.imports.append(Import(imp.module, imp.name or "", kind, _sig(ty) if isinstance(ty, FuncType) else None))
    for exp in module.exports:
        ty = exp.type
        if isinstance(ty, FuncType):
            info.exports.append(Export(exp.name, "function", _sig(ty)))
        elif isinstance(ty, MemoryType):
            lim = MemoryLimits(ty.limits.min, ty.limits.max, ty.is_shared, ty.is_64)
            info.exports.append(Export(exp.name, "memory", memory=lim))
        else:
            info.exports.append(Export(exp.name, "table" if isinstance(ty, TableType) else "global"))
    return info


def finish(
    host: EngineHost, module: Module, sha: str, origin: Literal["compiled", "disk"], *, bulk_ops: bool = True
) -> CompiledModule:
    """Validate a compiled or deserialized module and pre-link it (for the loop and for threads).

    ``bulk_ops``: `bulk.may_use_bulk_ops` of the binary, when the caller has it.
    """
    contract = check_contract(_info_of(module))
    try:
        pre = host.linker.instantiate_pre(module)
        thread_pre = pre if host.thread_linker is host.linker else host.thread_linker.instantiate_pre(module)
    except WasmtimeError as exc:
        raise InvalidModule(f"the module's imports cannot be linked: {_first_line(exc)}") from None
    return CompiledModule(sha, host.engine, module, pre, contract.uses_wasi, contract.has_initialize,
                          contract.memory_min_bytes, origin, thread_pre, bulk_ops)
