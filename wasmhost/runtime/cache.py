"""Compiled-artifact cache, per namespace: an in-memory LRU in front of HMAC-signed artifacts on disk.

Compiling costs milliseconds to a minute; deserializing costs microseconds to milliseconds. But
``deserialize`` trusts its input completely (it is native code), so a disk artifact is used only if
its HMAC-SHA256 verifies under the caller's key. The MAC covers the namespace, the engine fingerprint
and the source hash as well as the blob, so a file copied from another namespace, engine, module or
host is rejected like a corrupt or truncated one: discarded and recompiled, never loaded.

Every entry, in memory and on disk, is keyed by namespace + source hash: one tenant's deploy never
finds (or times) another tenant's artifact. Refusals are cached the same way (keyed also by the
compile limits they were made under), so a module refused for its contract or for going beyond a
compile limit is not compiled again.

Disk layout: ``<cache_dir>/ns-<sha256(namespace)[:32]>/<source sha256>-<engine fingerprint><suffix>``,
written atomically (temp + rename), so several processes can share the folder: a reader sees an old
file, a whole new one or none. The folder's total size is capped (``max_disk_bytes``): after each
write the least recently used files (by modification time, refreshed on use) are deleted until it
fits. Without a key, a random one is made per process: artifacts then only help within one process.

`ArtifactCache` is the part modules and components share (their files differ: see `component.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import mmap
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from wasmtime import Module, WasmtimeError

from .bulk import may_use_bulk_ops
from .compiler import CompileLimits, CompileRefused, compile_isolated
from .engine import EngineHost
from .module import CompiledModule, InvalidModule, finish, module_key, read_contract, to_wasm

__all__ = [
    "DEFAULT_MAX_DISK_BYTES",
    "DEFAULT_MAX_MEMORY_BYTES",
    "ArtifactCache",
    "CacheStats",
    "ModuleCache",
    "write_atomic",
]

log = logging.getLogger(__name__)

#: v2: the blob is one flag byte (1: the module may use bulk memory instructions, see `bulk`; the
#: binary is not kept, so the flag is) and then the serialized module.
_MAGIC = b"WHMODv2\n"
_REFUSED_MAGIC = b"WHREFv1\n"
_MAC_LEN = 32
_PROCESS_KEY = secrets.token_bytes(32)
#: Default cap on the artifact folder's size (``WASMHOST_MODULE_CACHE_MB``).
DEFAULT_MAX_DISK_BYTES = 2 << 30
#: Default cap on the artifacts one cache (modules, or components) keeps loaded in memory, by their
#: serialized size (a loaded artifact maps about that much code and data).
DEFAULT_MAX_MEMORY_BYTES = 512 << 20
#: A file's use refreshes its LRU time at most this often (a memory hit would otherwise cost a syscall).
_TOUCH_SECONDS = 60.0
#: Temp files older than this were left by a writer that died; the size check removes them.
_STALE_TEMP_SECONDS = 3600.0
_REFUSALS_KEPT = 1024

SourceT = TypeVar("SourceT")
CompiledT = TypeVar("CompiledT")


@dataclass(slots=True)
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    compiles: int = 0
    #: Disk artifacts found but refused (bad MAC, truncated, not deserializable).
    disk_rejected: int = 0
    disk_writes: int = 0
    #: Modules refused from the refusal cache, without compiling.
    refusal_hits: int = 0
    #: Files deleted to keep the folder under its size cap.
    evictions: int = 0


def write_atomic(path: Path, data: bytes | bytearray) -> None:
    """Temp file + rename: a reader sees the old file or the whole new one, never a torn write."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def namespace_dir(namespace: str) -> str:
    """The folder name of a namespace's artifacts."""
    return "ns-" + hashlib.sha256(namespace.encode()).hexdigest()[:32]


class ArtifactCache(Generic[SourceT, CompiledT]):
    """A memory LRU in front of HMAC-signed compiled artifacts on disk, for one engine.

    Subclasses say how to key, compile, read and write their kind of artifact; this class holds the
    LRU, the refusals, the statistics, the file naming, the size cap and the MAC.
    """

    #: File suffix of this kind's artifacts, and the word used in log lines.
    suffix: ClassVar[str]
    label: ClassVar[str]
    #: Prefix of the MAC input, so one kind's artifact never verifies as another kind's.
    domain: ClassVar[bytes] = b""
    default_capacity: ClassVar[int]

    def __init__(
        self,
        host: EngineHost,
        cache_dir: Path | None = None,
        key: bytes | None = None,
        capacity: int | None = None,
        *,
        limits: CompileLimits | None = None,
        max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        self._host = host
        self._dir = Path(cache_dir) if cache_dir is not None else None
        self._key = bytes(key) if key else _PROCESS_KEY
        self._capacity = capacity if capacity is not None else self.default_capacity
        self.limits = limits or CompileLimits()
        self.max_disk_bytes = max_disk_bytes
        self.max_memory_bytes = max_memory_bytes
        self._lru: OrderedDict[tuple[str, str], CompiledT] = OrderedDict()
        self._sizes: dict[tuple[str, str], int] = {}
        self._memory_bytes = 0
        self._touched: dict[tuple[str, str], float] = {}
        self._refused: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    # -- lookups -------------------------------------------------------------------------------

    def key_of(self, source: SourceT) -> str:
        raise NotImplementedError

    def cached(self, namespace: str, sha: str) -> CompiledT | None:
        """The artifact if it is in memory (no disk, no compile)."""
        key = (namespace, sha)
        with self._lock:
            hit = self._lru.get(key)
            if hit is None:
                return None
            self._lru.move_to_end(key)
            self.stats.memory_hits += 1
        self._touch(namespace, sha)
        return hit

    def lookup(self, namespace: str, sha: str) -> CompiledT | None:
        """From memory or disk; raise `InvalidModule` if the module was refused before. No compile."""
        hit = self.cached(namespace, sha)
        if hit is not None:
            return hit
        self._check_refused(namespace, sha)
        compiled = self._load(namespace, sha)
        if compiled is not None:
            path = self.path_for(namespace, sha)
            try:
                size = path.stat().st_size if path is not None else 0
            except OSError:
                size = 0
            self._remember(namespace, sha, compiled, size)
        return compiled

    def get(self, namespace: str, source: SourceT) -> CompiledT:
        """The compiled artifact for ``source`` in ``namespace``: from memory, from disk, or compiled now."""
        sha = self.key_of(source)
        compiled = self.lookup(namespace, sha)
        if compiled is not None:
            return compiled
        try:
            compiled, blob = self._compile(source, sha)
        except InvalidModule as exc:
            if not isinstance(exc, CompileRefused) or exc.cacheable:
                self._refuse(namespace, sha, str(exc))
            raise
        with self._lock:
            self.stats.compiles += 1
        self._store(namespace, sha, blob)
        self._remember(namespace, sha, compiled, len(blob))
        return compiled

    def precheck(self, namespace: str, source: SourceT) -> None:
        """The checks that cost no compile, so a caller can refuse before waiting for a compile slot.

        Raises `InvalidModule` (and caches the refusal) if they fail.
        """
        sha = self.key_of(source)
        self._check_refused(namespace, sha)
        try:
            self._precheck(source)
        except InvalidModule as exc:
            self._refuse(namespace, sha, str(exc))
            raise

    def _precheck(self, source: SourceT) -> None:
        """Checks of the source that need no compile (none by default)."""

    def forget(self, namespace: str, sha: str) -> None:
        """Drop one namespace's artifact of ``sha`` from memory and disk (its function is gone)."""
        with self._lock:
            if self._lru.pop((namespace, sha), None) is not None:
                self._memory_bytes -= self._sizes.pop((namespace, sha), 0)
            self._touched.pop((namespace, sha), None)
        path = self.path_for(namespace, sha)
        if path is not None:
            for p in (path, Path(f"{path}.mac")):
                try:
                    p.unlink()
                except OSError:
                    pass

    # -- paths and MACs ------------------------------------------------------------------------

    def path_for(self, namespace: str, sha: str) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / namespace_dir(namespace) / f"{sha}-{self._host.fingerprint}{self.suffix}"

    def _refusal_path(self, namespace: str, sha: str) -> Path | None:
        if self._dir is None:
            return None
        name = f"{sha}-{self._host.fingerprint}-{self.limits.fingerprint}.refused"
        return self._dir / namespace_dir(namespace) / name

    def _digest(
        self, namespace: str, sha: str, artifact: bytes | bytearray | memoryview | mmap.mmap, domain: bytes = b""
    ) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        head = (domain or self.domain) + namespace.encode() + b"\0" + self._host.fingerprint.encode() + b"\0"
        mac.update(head + sha.encode() + b"\0")
        mac.update(artifact)
        return mac.digest()

    # -- memory --------------------------------------------------------------------------------

    def _remember(self, namespace: str, sha: str, compiled: CompiledT, size: int) -> None:
        """Keep it in memory; drop the least recently used beyond the count or the byte budget."""
        key = (namespace, sha)
        with self._lock:
            if key in self._lru:
                self._memory_bytes -= self._sizes.get(key, 0)
            self._lru[key] = compiled
            self._lru.move_to_end(key)
            self._sizes[key] = size
            self._memory_bytes += size
            while len(self._lru) > 1 and (
                len(self._lru) > self._capacity or self._memory_bytes > self.max_memory_bytes
            ):
                old, _ = self._lru.popitem(last=False)
                self._memory_bytes -= self._sizes.pop(old, 0)
                self._touched.pop(old, None)

    def _touch(self, namespace: str, sha: str) -> None:
        """Refresh the file's LRU time (throttled), so the size cap evicts what is not used."""
        now = time.monotonic()
        key = (namespace, sha)
        with self._lock:
            if now - self._touched.get(key, -_TOUCH_SECONDS) < _TOUCH_SECONDS:
                return
            self._touched[key] = now
        path = self.path_for(namespace, sha)
        if path is not None:
            for p in (path, Path(f"{path}.mac")):
                try:
                    os.utime(p)
                except OSError:
                    pass

    # -- refusals ------------------------------------------------------------------------------

    def _check_refused(self, namespace: str, sha: str) -> None:
        key = (namespace, sha)
        with self._lock:
            reason = self._refused.get(key)
        if reason is None:
            reason = self._load_refusal(namespace, sha)
            if reason is not None:
                with self._lock:
                    self._refused[key] = reason
                    while len(self._refused) > _REFUSALS_KEPT:
                        self._refused.popitem(last=False)
        if reason is not None:
            with self._lock:
                self.stats.refusal_hits += 1
            raise InvalidModule(reason)

    def _refuse(self, namespace: str, sha: str, reason: str) -> None:
        with self._lock:
            self._refused[(namespace, sha)] = reason
            while len(self._refused) > _REFUSALS_KEPT:
                self._refused.popitem(last=False)
        path = self._refusal_path(namespace, sha)
        if path is None:
            return
        text = reason.encode()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # tenants' compiled code: owner only
            write_atomic(path, _REFUSED_MAGIC + self._digest(namespace, sha, text, b"refused\0") + text)
        except OSError as exc:
            log.warning("%s: cannot write %s: %s", self.label, path, exc)
            return
        self.enforce_cap()  # refusals count too: a tenant cannot fill the disk with invalid modules

    def _load_refusal(self, namespace: str, sha: str) -> str | None:
        path = self._refusal_path(namespace, sha)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        header = len(_REFUSED_MAGIC) + _MAC_LEN
        text = data[header:]
        if not data.startswith(_REFUSED_MAGIC) or not hmac.compare_digest(
            data[len(_REFUSED_MAGIC) : header], self._digest(namespace, sha, text, b"refused\0")
        ):
            return None
        return text.decode("utf-8", "replace")

    # -- disk ----------------------------------------------------------------------------------

    def _loaded(self, compiled: CompiledT | None, *paths: Path) -> CompiledT | None:
        """Count a disk hit, or count a refused artifact and delete its files so it is rewritten."""
        if compiled is not None:
            with self._lock:
                self.stats.disk_hits += 1
            for path in paths:
                try:
                    os.utime(path)
                except OSError:
                    pass
            return compiled
        with self._lock:
            self.stats.disk_rejected += 1
        for path in paths:
            try:
                path.unlink()
            except OSError:
                pass
        return None

    def _store(self, namespace: str, sha: str, blob: bytes) -> None:
        path = self.path_for(namespace, sha)
        if path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # tenants' compiled code: owner only
            self._write(path, namespace, sha, blob)
        except OSError as exc:
            log.warning("%s: cannot write %s: %s", self.label, path, exc)
            return
        with self._lock:
            self.stats.disk_writes += 1
        self.enforce_cap()

    def enforce_cap(self) -> None:
        """Delete the least recently used files until the folder fits ``max_disk_bytes``.

        Safe with other processes doing the same: a file deleted under a reader is a cache miss.
        """
        if self._dir is None:
            return
        groups: dict[str, list[tuple[float, int, Path]]] = {}
        total = 0
        now = time.time()
        try:
            # Dot-folders are not artifacts (``.locks`` holds the compile locks: never deleted).
            ns_dirs = [d for d in os.scandir(self._dir) if d.is_dir(follow_symlinks=False) and d.name[:1] != "."]
        except OSError:
            return
        for ns_dir in ns_dirs:
            try:
                entries = list(os.scandir(ns_dir.path))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.name.startswith(".tmp-"):
                    if now - st.st_mtime > _STALE_TEMP_SECONDS:
                        _unlink(Path(entry.path))
                    continue
                total += st.st_size
                # A component's artifact and its tag go together.
                group = entry.path.removesuffix(".mac")
                groups.setdefault(group, []).append((st.st_mtime, st.st_size, Path(entry.path)))
        if total <= self.max_disk_bytes:
            return
        for files in sorted(groups.values(), key=lambda fs: max(f[0] for f in fs)):
            for _, size, path in files:
                if _unlink(path):
                    total -= size
            with self._lock:
                self.stats.evictions += 1
            if total <= self.max_disk_bytes:
                break

    def _compile(self, source: SourceT, sha: str) -> tuple[CompiledT, bytes]:
        """Compile (bounded) and load; return the compiled object and the artifact to store."""
        raise NotImplementedError

    def _load(self, namespace: str, sha: str) -> CompiledT | None:
        """The verified artifact from disk, or None (absent, unreadable or refused)."""
        raise NotImplementedError

    def _write(self, path: Path, namespace: str, sha: str, blob: bytes) -> None:
        raise NotImplementedError


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


class ModuleCache(ArtifactCache[bytes | str, CompiledModule]):
    """Core modules. One file per artifact: ``MAGIC || HMAC || blob``."""

    suffix = ".cwasm"
    label = "module cache"
    default_capacity = 128

    def key_of(self, source: bytes | str) -> str:
        return module_key(source)

    def _precheck(self, source: bytes | str) -> None:
        if isinstance(source, bytes) and source[:4] == b"\0asm":  # WAT text needs converting first
            read_contract(source, max_functions=self.limits.max_functions)

    def _compile(self, source: bytes | str, sha: str) -> tuple[CompiledModule, bytes]:
        wasm = to_wasm(source, lambda text: compile_isolated("wat", text.encode(), self.limits))
        read_contract(wasm, max_functions=self.limits.max_functions)  # before compiling anything
        serialized = compile_isolated("module", wasm, self.limits)
        bulk_ops = may_use_bulk_ops(wasm)
        try:
            module = Module.deserialize(self._host.engine, serialized)
        except WasmtimeError as exc:
            raise InvalidModule(f"the compiled module cannot be loaded: {exc}") from None
        return finish(self._host, module, sha, "compiled", bulk_ops=bulk_ops), bytes([bulk_ops]) + serialized

    def _load(self, namespace: str, sha: str) -> CompiledModule | None:
        path = self.path_for(namespace, sha)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("module cache: cannot read %s: %s", path, exc)
            return None
        header = len(_MAGIC) + _MAC_LEN
        view = memoryview(data)
        ok = (
            len(data) > header
            and data[: len(_MAGIC)] == _MAGIC
            and hmac.compare_digest(view[len(_MAGIC) : header], self._digest(namespace, sha, view[header:]))
        )
        compiled = None
        if ok:
            try:
                module = Module.deserialize(self._host.engine, data[header + 1 :])
                compiled = finish(self._host, module, sha, "disk", bulk_ops=data[header] != 0)
            except (WasmtimeError, InvalidModule) as exc:
                log.warning("module cache: discarding %s: %s", path, exc)
        if compiled is None:
            log.warning("module cache: %s failed verification; recompiling", path.name)
        return self._loaded(compiled, path)

    def _write(self, path: Path, namespace: str, sha: str, blob: bytes) -> None:
        write_atomic(path, _MAGIC + self._digest(namespace, sha, blob) + blob)
