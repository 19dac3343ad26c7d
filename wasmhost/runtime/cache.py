"""Compiled-module cache: an in-memory LRU in front of HMAC-signed artifacts on disk.

Compiling costs milliseconds to seconds; deserializing costs microseconds. But
``Module.deserialize`` trusts its input completely (it is native code), so a disk artifact is used
only if its HMAC-SHA256 verifies under the caller's key. The MAC covers the engine fingerprint and
the module hash as well as the blob, so a file copied from another engine, another module or
another host is rejected like a corrupt or truncated one: discarded and recompiled, never loaded.

File: ``<cache_dir>/<module sha256>-<engine fingerprint>.cwasm`` =
``MAGIC || HMAC(key, fingerprint || sha256 || blob) || blob``, written atomically (temp + rename).
Without a key, a random one is made per process: artifacts then only help within one process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from wasmtime import Module, WasmtimeError

from .engine import EngineHost
from .module import CompiledModule, InvalidModule, compile_source, finish, module_key

__all__ = ["CacheStats", "ModuleCache"]

log = logging.getLogger(__name__)

_MAGIC = b"WHMODv1\n"
_MAC_LEN = 32
_PROCESS_KEY = secrets.token_bytes(32)


@dataclass(slots=True)
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    compiles: int = 0
    #: Disk artifacts found but refused (bad MAC, truncated, not deserializable).
    disk_rejected: int = 0
    disk_writes: int = 0


class ModuleCache:
    def __init__(
        self,
        host: EngineHost,
        cache_dir: Path | None = None,
        key: bytes | None = None,
        capacity: int = 128,
    ) -> None:
        self._host = host
        self._dir = Path(cache_dir) if cache_dir is not None else None
        self._key = bytes(key) if key else _PROCESS_KEY
        self._capacity = capacity
        self._lru: OrderedDict[str, CompiledModule] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, source: bytes | str) -> CompiledModule:
        """The compiled module for ``source``: from memory, from disk, or freshly compiled."""
        sha = module_key(source)
        with self._lock:
            hit = self._lru.get(sha)
            if hit is not None:
                self._lru.move_to_end(sha)
                self.stats.memory_hits += 1
                return hit
        compiled = self._load(sha)
        if compiled is None:
            compiled = compile_source(self._host, source, sha)  # raises InvalidModule
            with self._lock:
                self.stats.compiles += 1
            self._store(compiled)
        with self._lock:
            self._lru[sha] = compiled
            self._lru.move_to_end(sha)
            while len(self._lru) > self._capacity:
                self._lru.popitem(last=False)
        return compiled

    def path_for(self, sha: str) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / f"{sha}-{self._host.fingerprint}.cwasm"

    def _mac(self, sha: str, blob: bytes | memoryview) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        mac.update(self._host.fingerprint.encode() + b"\0" + sha.encode() + b"\0")
        mac.update(blob)
        return mac.digest()

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
            and hmac.compare_digest(view[len(_MAGIC) : header], self._mac(sha, view[header:]))
        )
        compiled = None
        if ok:
            try:
                module = Module.deserialize(self._host.engine, data[header:])
                compiled = finish(self._host, module, sha, "disk")
            except (WasmtimeError, InvalidModule) as exc:
                log.warning("module cache: discarding %s: %s", path, exc)
        if compiled is None:
            with self._lock:
                self.stats.disk_rejected += 1
            log.warning("module cache: %s failed verification; recompiling", path.name)
            try:
                path.unlink()
            except OSError:
                pass
            return None
        with self._lock:
            self.stats.disk_hits += 1
        return compiled

    def _store(self, compiled: CompiledModule) -> None:
        path = self.path_for(compiled.sha256)
        if path is None:
            return
        try:
            blob = bytes(compiled.module.serialize())
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_MAGIC + self._mac(compiled.sha256, blob) + blob)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, WasmtimeError) as exc:
            log.warning("module cache: cannot write %s: %s", path, exc)
            return
        with self._lock:
            self.stats.disk_writes += 1
