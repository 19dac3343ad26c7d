"""Compiled-module cache: an in-memory LRU in front of HMAC-signed artifacts on disk.

Compiling costs milliseconds to seconds; deserializing costs microseconds. But
``Module.deserialize`` trusts its input completely (it is native code), so a disk artifact is used
only if its HMAC-SHA256 verifies under the caller's key. The MAC covers the engine fingerprint and
the module hash as well as the blob, so a file copied from another engine, another module or
another host is rejected like a corrupt or truncated one: discarded and recompiled, never loaded.

File: ``<cache_dir>/<module sha256>-<engine fingerprint>.cwasm`` =
``MAGIC || HMAC(key, fingerprint || sha256 || blob) || blob``, written atomically (temp + rename).
Without a key, a random one is made per process: artifacts then only help within one process.

`ArtifactCache` is the part compiled components share (their files differ: see `component.py`).
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
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from wasmtime import Module, WasmtimeError

from .engine import EngineHost
from .module import CompiledModule, InvalidModule, compile_source, finish, module_key

__all__ = ["ArtifactCache", "CacheStats", "ModuleCache", "write_atomic"]

log = logging.getLogger(__name__)

_MAGIC = b"WHMODv1\n"
_MAC_LEN = 32
_PROCESS_KEY = secrets.token_bytes(32)

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


class ArtifactCache(Generic[SourceT, CompiledT]):
    """A memory LRU in front of HMAC-signed compiled artifacts on disk, for one engine.

    Subclasses say how to key, compile, read and write their kind of artifact; this class holds the
    LRU, the statistics, the file naming and the MAC (which covers the engine fingerprint and the
    source hash, so an artifact from another engine, source or host does not verify).
    """

    #: File suffix of this kind's artifacts, and the word used in log lines.
    suffix: ClassVar[str]
    label: ClassVar[str]
    #: Prefix of the MAC input, so one kind's artifact never verifies as another kind's.
    domain: ClassVar[bytes] = b""
    default_capacity: ClassVar[int]

    def __init__(
        self, host: EngineHost, cache_dir: Path | None = None, key: bytes | None = None, capacity: int | None = None
    ) -> None:
        self._host = host
        self._dir = Path(cache_dir) if cache_dir is not None else None
        self._key = bytes(key) if key else _PROCESS_KEY
        self._capacity = capacity if capacity is not None else self.default_capacity
        self._lru: OrderedDict[str, CompiledT] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, source: SourceT) -> CompiledT:
        """The compiled artifact for ``source``: from memory, from disk, or freshly compiled."""
        sha = self._key_of(source)
        with self._lock:
            hit = self._lru.get(sha)
            if hit is not None:
                self._lru.move_to_end(sha)
                self.stats.memory_hits += 1
                return hit
        compiled = self._load(sha)
        if compiled is None:
            compiled = self._compile(source, sha)  # raises InvalidModule
            with self._lock:
                self.stats.compiles += 1
            self._store(sha, compiled)
        with self._lock:
            self._lru[sha] = compiled
            self._lru.move_to_end(sha)
            while len(self._lru) > self._capacity:
                self._lru.popitem(last=False)
        return compiled

    def path_for(self, sha: str) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / f"{sha}-{self._host.fingerprint}{self.suffix}"

    def _digest(self, sha: str, artifact: bytes | bytearray | memoryview | mmap.mmap) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        mac.update(self.domain + self._host.fingerprint.encode() + b"\0" + sha.encode() + b"\0")
        mac.update(artifact)
        return mac.digest()

    def _loaded(self, compiled: CompiledT | None, *paths: Path) -> CompiledT | None:
        """Count a disk hit, or count a refused artifact and delete its files so it is rewritten."""
        if compiled is not None:
            with self._lock:
                self.stats.disk_hits += 1
            return compiled
        with self._lock:
            self.stats.disk_rejected += 1
        for path in paths:
            try:
                path.unlink()
            except OSError:
                pass
        return None

    def _store(self, sha: str, compiled: CompiledT) -> None:
        path = self.path_for(sha)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(path, sha, compiled)
        except (OSError, WasmtimeError) as exc:
            log.warning("%s: cannot write %s: %s", self.label, path, exc)
            return
        with self._lock:
            self.stats.disk_writes += 1

    def _key_of(self, source: SourceT) -> str:
        raise NotImplementedError

    def _compile(self, source: SourceT, sha: str) -> CompiledT:
        raise NotImplementedError

    def _load(self, sha: str) -> CompiledT | None:
        """The verified artifact from disk, or None (absent, unreadable or refused)."""
        raise NotImplementedError

    def _write(self, path: Path, sha: str, compiled: CompiledT) -> None:
        raise NotImplementedError


class ModuleCache(ArtifactCache[bytes | str, CompiledModule]):
    """Core modules. One file per artifact: ``MAGIC || HMAC || blob``."""

    suffix = ".cwasm"
    label = "module cache"
    default_capacity = 128

    def _key_of(self, source: bytes | str) -> str:
        return module_key(source)

    def _compile(self, source: bytes | str, sha: str) -> CompiledModule:
        return compile_source(self._host, source, sha)

    def _load(self, sha: str) -> CompiledModule | None:
        path = self.path_for(sha)
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
            and hmac.compare_digest(view[len(_MAGIC) : header], self._digest(sha, view[header:]))
        )
        compiled = None
        if ok:
            try:
                module = Module.deserialize(self._host.engine, data[header:])
                compiled = finish(self._host, module, sha, "disk")
            except (WasmtimeError, InvalidModule) as exc:
                log.warning("module cache: discarding %s: %s", path, exc)
        if compiled is None:
            log.warning("module cache: %s failed verification; recompiling", path.name)
        return self._loaded(compiled, path)

    def _write(self, path: Path, sha: str, compiled: CompiledModule) -> None:
        blob = bytes(compiled.module.serialize())
        write_atomic(path, _MAGIC + self._digest(sha, blob) + blob)
