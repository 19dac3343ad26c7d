"""Component-model guests: the WIT world ``wasmhost:guest@1.0.0`` beside ABI v1 core modules.

Python (componentize-py) and JavaScript (componentize-qjs) guests are components, not core modules.
They get the same sandbox as core modules — one fresh Store per invocation with the same fuel,
epoch deadline and memory cap, the namespace bound by the host, the same `InvocationContext` (so the
same caps on output, logs and sends, the same send hand-off and the same `InvocationResult`) — and
the same host capabilities under WIT names (``guest_examples/wit/guest.wit``).

A binary is a component when its preamble says layer 1 (bytes 4..8 are ``0d 00 01 00``); core
modules say layer 0. Components are accepted only if they import nothing but the host interface
(build with ``--stub-wasi``) and export ``handle: func() -> s32``.

Compiling a component is slow (an 18 MB componentize-py component takes seconds); it runs in a
bounded child process like a module's (see `compiler`), and compiled components are cached like
modules, per namespace: an in-memory LRU, then HMAC-signed artifacts on disk. A disk
artifact is opened once, its MAC checked on a mapping of it, and that same open file handed to
wasmtime via ``/proc/self/fd`` (no second path lookup, no 40 MB copy through Python), so a cached
load costs tens of milliseconds instead of seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mmap
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wasmtime import Engine, ExitTrap, Store, Trap, WasmtimeError
from wasmtime import component as wc

from wasmhost.push.message import MAX_MESSAGE_BYTES, MessageError, MessageTooBig, parse_message

from . import abi
from .cache import ArtifactCache, write_atomic
from .compiler import compile_isolated
from .context import InvocationContext
from .faults import host_failure
from .invocation import MAX_TABLE_ELEMENTS, classify, epoch_ticks
from .limits import Limits
from .module import InvalidModule
from .result import InvocationError

__all__ = [
    "HOST_INTERFACE",
    "WORLD",
    "CompiledComponent",
    "ComponentCache",
    "is_component",
    "run_component",
]

log = logging.getLogger(__name__)

#: The WIT world components implement, and the one interface they may import.
WORLD = "wasmhost:guest/guest@1.0.0"
HOST_INTERFACE = "wasmhost:guest/host@1.0.0"
#: Core instances, memories and tables one component may create (componentize-py and
#: componentize-qjs components use a handful of each: the guest, its libc and adapter shims).
MAX_COMPONENT_INSTANCES = 64
MAX_COMPONENT_MEMORIES = 8
MAX_COMPONENT_TABLES = 32

_PREAMBLE = b"\0asm"
_COMPONENT_LAYER = b"\x0d\x00\x01\x00"
_MAGIC = b"WHCMPv1\n"
_MAC_LEN = 32
_LEVELS = {name: i for i, name in enumerate(abi.LOG_LEVELS)}


def is_component(source: bytes | str | bytearray | memoryview) -> bool:
    """Whether ``source`` is a component binary (preamble layer 1) rather than a core module or WAT."""
    if isinstance(source, str):
        return False
    head = bytes(source[:8])
    return head[:4] == _PREAMBLE and head[4:8] == _COMPONENT_LAYER


@dataclass(frozen=True, eq=False, slots=True)
class CompiledComponent:
    """A validated component, ready to instantiate."""

    sha256: str
    engine: Engine
    component: wc.Component
    #: How this object was made: compiled from source, or loaded from the on-disk cache.
    origin: Literal["compiled", "disk"]


# -- validation ----------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def validate(engine: Engine, component: wc.Component) -> None:
    """Check the world contract; raise `InvalidModule` with a reason the tenant can act on."""
    ty = component.type
    for name in ty.imports(engine):
        if name != HOST_INTERFACE:
            raise InvalidModule(
                f"component import {name!r}: only {HOST_INTERFACE!r} can be imported "
                "(build with --stub-wasi so WASI is not imported)"
            )
    handle = ty.exports(engine).get("handle")
    if handle is None:
        raise InvalidModule(f"the component must export `handle: func() -> s32` (world {WORLD})")
    fty = handle.ty
    if not isinstance(fty, wc.FuncType) or fty.params or not isinstance(fty.result, wc.S32):
        raise InvalidModule("component export `handle` must be `func() -> s32`")


# -- cache ---------------------------------------------------------------------------------------


class ComponentCache(ArtifactCache[bytes, CompiledComponent]):
    """Memory LRU in front of HMAC-signed serialized components on disk (see the module docstring).

    Files: ``<cache_dir>/ns-…/<sha256>-<engine fingerprint>.ccwasm`` is wasmtime's artifact as is (so
    it can be mapped in place) and ``….ccwasm.mac`` holds ``MAGIC || HMAC(key, "component" ||
    namespace || fingerprint || sha256 || artifact)``.
    """

    suffix = ".ccwasm"
    label = "component cache"
    domain = b"component\0"
    default_capacity = 16

    def key_of(self, source: bytes) -> str:
        return hashlib.sha256(source).hexdigest()

    def _compile(self, source: bytes, sha: str) -> tuple[CompiledComponent, bytes]:
        blob = compile_isolated("component", bytes(source), self.limits)
        try:
            component = wc.Component.deserialize(self._host.engine, blob)
        except WasmtimeError as exc:
            raise InvalidModule(f"the compiled component cannot be loaded: {_first_line(exc)}") from None
        validate(self._host.engine, component)
        return CompiledComponent(sha, self._host.engine, component, "compiled"), blob

    def _load(self, namespace: str, sha: str) -> CompiledComponent | None:
        path = self.path_for(namespace, sha)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("component cache: cannot open %s: %s", path, exc)
            return None
        compiled = None
        try:
            compiled = self._verify_and_load(fd, namespace, sha)
        except FileNotFoundError:  # no tag: a write was interrupted
            pass
        except (OSError, ValueError, WasmtimeError, InvalidModule) as exc:
            log.warning("component cache: discarding %s: %s", path.name, _first_line(exc))
        finally:
            os.close(fd)
        return self._loaded(compiled, path, Path(f"{path}.mac"))

    def _verify_and_load(self, fd: int, namespace: str, sha: str) -> CompiledComponent | None:
        path = self.path_for(namespace, sha)
        assert path is not None
        tag = Path(f"{path}.mac").read_bytes()
        if len(tag) != len(_MAGIC) + _MAC_LEN or not tag.startswith(_MAGIC):
            return None
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
            digest = self._digest(namespace, sha, mapped)
        if not hmac.compare_digest(tag[len(_MAGIC) :], digest):
            return None
        if sys.platform.startswith("linux"):
            # Load the verified open file itself, not the path again: a file swapped in after the
            # check is never loaded.
            component = wc.Component.deserialize_file(self._host.engine, f"/proc/self/fd/{fd}")
        else:  # pragma: no cover - other hosts pay a copy
            component = wc.Component.deserialize(self._host.engine, os.pread(fd, size, 0))
        validate(self._host.engine, component)
        return CompiledComponent(sha, self._host.engine, component, "disk")

    def _write(self, path: Path, namespace: str, sha: str, blob: bytes) -> None:
        # The tag first: a blob without a matching tag is refused, never trusted.
        write_atomic(Path(f"{path}.mac"), _MAGIC + self._digest(namespace, sha, blob))
        write_atomic(path, blob)


# -- host functions ------------------------------------------------------------------------------

_local = threading.local()


def _ctx() -> InvocationContext | None:
    return getattr(_local, "ctx", None)


def _guard(default: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A host function that never raises: no context or an unexpected error gives ``default``."""

    def wrapped(store: Any, *args: Any) -> Any:
        ctx = _ctx()
        if ctx is None:
            return default
        try:
            return fn(ctx, *args)
        except Exception as exc:  # never let an exception cross into wasmtime (it is routed through a global)
            host_failure(fn.__name__, exc)
            return default

    wrapped.__name__ = fn.__name__
    return wrapped


def _input(ctx: InvocationContext) -> str:
    return ctx.input.decode("utf-8", "replace")


def _input_bytes(ctx: InvocationContext) -> bytes:
    return bytes(ctx.input)


def _output_write(ctx: InvocationContext, data: str) -> int:
    return ctx.write_output(data.encode("utf-8", "surrogatepass"))


def _log(ctx: InvocationContext, level: str, message: str) -> int:
    index = _LEVELS.get(level)
    if index is None:
        return abi.INVAL
    cap = ctx.limits.max_log_line_bytes
    return ctx.add_log(index, message.encode("utf-8", "surrogatepass")[: cap + 1])


def _push_send_to_user(ctx: InvocationContext, user: str, message: str) -> int:
    """The checks of ABI v1 ``push_send_to_user``, in the same order, with the same codes."""
    admitted = ctx.admit_send()
    if admitted != abi.OK:
        return admitted
    try:
        user_bytes = user.encode("utf-8")
    except UnicodeEncodeError:
        ctx.note(3, "push-send-to-user: the user id is not valid UTF-8")
        return abi.INVAL
    if not user_bytes:
        ctx.note(3, "push-send-to-user: the user id is empty")
        return abi.INVAL
    if len(user_bytes) > abi.MAX_USER_ID_BYTES:
        ctx.note(3, f"push-send-to-user: the user id is {len(user_bytes)} bytes; the limit is {abi.MAX_USER_ID_BYTES}")
        return abi.TOO_BIG
    raw = message.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_MESSAGE_BYTES:
        ctx.note(3, f"push-send-to-user: message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
        return abi.TOO_BIG
    try:
        parsed = parse_message(raw)
    except MessageTooBig as exc:
        ctx.note(3, f"push-send-to-user: {exc}")
        return abi.TOO_BIG
    except MessageError as exc:
        ctx.note(3, f"push-send-to-user: {exc}")
        return abi.INVAL
    return ctx.send(user, parsed)


def _push_wait(ctx: InvocationContext, ticket: int) -> str | int:
    record = ctx.find_send(ticket)
    if record is None:
        return abi.INVAL
    if not ctx.wait_send(record):
        return abi.TIMEOUT
    if record.code:
        return record.code
    return record.report_json.decode("utf-8")


_HOST_FUNCS: dict[str, tuple[Any, Callable[..., Any]]] = {
    "input": ("", _input),
    "input-bytes": (b"", _input_bytes),
    "output-write": (abi.UNAVAILABLE, _output_write),
    "log": (abi.UNAVAILABLE, _log),
    "push-send-to-user": (abi.UNAVAILABLE, _push_send_to_user),
    "push-wait": (abi.UNAVAILABLE, _push_wait),
}

_LINKERS: dict[int, wc.Linker] = {}
_LINKERS_LOCK = threading.Lock()


def _linker(engine: Engine) -> wc.Linker:
    """One component Linker per Engine, with the host interface defined once."""
    key = id(engine)
    linker = _LINKERS.get(key)
    if linker is None:
        with _LINKERS_LOCK:
            linker = _LINKERS.get(key)
            if linker is None:
                linker = wc.Linker(engine)
                with linker.root() as root, root.add_instance(HOST_INTERFACE) as iface:
                    for name, (default, fn) in _HOST_FUNCS.items():
                        iface.add_func(name, _guard(default, fn))
                _LINKERS[key] = linker
    return linker


# -- invocation ----------------------------------------------------------------------------------

#: wasmtime's texts for the traps the sandbox causes. Component calls report traps as a
#: `WasmtimeError` carrying the text rather than a `Trap` with a code.
_OUT_OF_FUEL_TEXT = "all fuel consumed by WebAssembly"
_INTERRUPT_TEXT = "wasm trap: interrupt"


def _classify(exc: Exception, limits: Limits, instantiating: bool) -> InvocationError:
    if not isinstance(exc, Trap):
        text = str(exc)
        if _OUT_OF_FUEL_TEXT in text:
            return InvocationError("out_of_fuel", f"the function used all of its {limits.fuel:,} fuel")
        if _INTERRUPT_TEXT in text:
            return InvocationError("timeout", f"the function ran past its {limits.timeout_ms} ms deadline")
    return classify(exc, limits, instantiating=instantiating)



def run_component(
    compiled: CompiledComponent, ctx: InvocationContext
) -> tuple[int | None, InvocationError | None, int]:
    """Instantiate and call ``handle`` on the wasm worker thread; return (code, error, fuel used)."""
    limits = ctx.limits
    linker = _linker(compiled.engine)
    ctx.start_clock()
    store = Store(compiled.engine)
    store.set_fuel(limits.fuel)
    store.set_epoch_deadline(epoch_ticks(limits.timeout_ms))
    store.set_limits(
        memory_size=limits.memory_bytes,
        table_elements=MAX_TABLE_ELEMENTS,
        instances=MAX_COMPONENT_INSTANCES,
        tables=MAX_COMPONENT_TABLES,
        memories=MAX_COMPONENT_MEMORIES,
    )
    code: int | None = None
    error: InvocationError | None = None
    instantiating = True
    _local.ctx = ctx
    try:
        instance = linker.instantiate(store, compiled.component)
        instantiating = False
        handle = instance.get_func(store, "handle")
        if handle is None:  # validated at compile time; defensive
            raise WasmtimeError("export `handle` disappeared")
        result = handle(store)
        code = int(result)
    except ExitTrap as exc:
        code = exc.code
    except (Trap, WasmtimeError) as exc:
        error = _classify(exc, limits, instantiating)
    finally:
        _local.ctx = None
    try:
        fuel_used = limits.fuel - store.get_fuel()
    except WasmtimeError:
        fuel_used = limits.fuel
    return code, error, fuel_used
