"""Per-namespace counters shared by every worker process of one gateway.

The gateway runs as several processes (`server`); the caps it enforces — invocations in progress per
namespace and in total, sends per minute per namespace — are for the gateway as a whole, so their
counters live in one shared memory table that every worker maps. Operations are a few loads and stores
under a lock: a `threading.Lock` (components call the send limiter from threads) around an `flock` on
the table's file (the processes), so no call waits on anything slower than another worker's few
microseconds inside the same lock.

Layout: a header (invocations in progress, in total and per worker) and ``SETS × WAYS`` entries, a
namespace hashing to one set. An entry holds a token bucket (tokens, last refill time on the shared
CLOCK_MONOTONIC) and the namespace's invocations in progress, in total and per worker: when a worker
dies, the supervisor subtracts what that worker held (`reap`), so a crash never leaks a slot.

An entry with nothing in progress and a bucket idle for a full refill period can be reused by another
namespace: forgetting it loses nothing. When a set has no free entry, the idlest entry with nothing in
progress is reused (its bucket restarts full, as an evicted in-memory bucket did); when all of a set's
entries have invocations in progress, a new namespace is refused (429) until one finishes.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import mmap
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_WORKERS", "CapTable", "TableFull", "WorkerGroup"]

#: Worker processes a table can track (each has its own per-entry in-progress counter).
MAX_WORKERS = 32
SETS = 512
WAYS = 16
#: Seconds after which an idle bucket is full again whatever its rate (rates are per minute).
REFILL_SECONDS = 60.0

_KEYS = struct.Struct(f"<{WAYS}Q")
_HEADER = struct.Struct(f"<i{MAX_WORKERS}i")
# tokens, stamp, in progress (total), in progress per worker
_ENTRY = struct.Struct(f"<ddi{MAX_WORKERS}h")
_HEADER_SIZE = 256
_KEYS_OFFSET = _HEADER_SIZE
_ENTRIES_OFFSET = _KEYS_OFFSET + SETS * WAYS * 8
_ENTRY_SIZE = 96
SIZE = _ENTRIES_OFFSET + SETS * WAYS * _ENTRY_SIZE
assert _HEADER.size <= _HEADER_SIZE and _ENTRY.size <= _ENTRY_SIZE


class TableFull(Exception):
    """Every entry of the namespace's set has invocations in progress."""


@functools.lru_cache(maxsize=4096)
def _key(namespace: str) -> int:
    return int.from_bytes(hashlib.blake2b(namespace.encode(), digest_size=8).digest(), "little") or 1


class CapTable:
    """Open with `create` (a new table) and `attach` it in each process that uses it."""

    def __init__(self, path: Path, *, timer: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._timer = timer
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._lock_fd = -1
        self._lock_pid = -1
        self._thread_lock = threading.Lock()
        self.worker = 0

    @classmethod
    def create(cls, directory: Path | None = None, *, timer: Callable[[], float] = time.monotonic) -> CapTable:
        """A zeroed table in a new file (in ``directory``, default a temporary folder); remove it with
        `unlink` when every process is done with it."""
        fd, name = tempfile.mkstemp(prefix="wasmhost-caps-", dir=directory)
        try:
            os.ftruncate(fd, SIZE)
        finally:
            os.close(fd)
        return cls(Path(name), timer=timer)

    def attach(self, worker: int) -> None:
        """Use the table as worker ``worker`` (0 ≤ worker < MAX_WORKERS) of this process. After a fork the
        mapping is inherited, but the lock needs an open file of this process's own."""
        if not 0 <= worker < MAX_WORKERS:
            raise ValueError(f"worker index must be in 0..{MAX_WORKERS - 1}")
        self.worker = worker
        self._reopen_lock()

    def _reopen_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
        self._lock_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self._lock_pid = os.getpid()

    def unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._map.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._lock_pid != os.getpid():  # forked without attach: flock would be shared with the parent
                self._reopen_lock()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- entries ---------------------------------------------------------------------------------

    def _find(self, namespace: str, now: float, *, create: bool) -> int | None:
        """The entry index of ``namespace`` (claimed if ``create`` and absent), or None."""
        key = _key(namespace)
        first = (key % SETS) * WAYS
        keys = _KEYS.unpack_from(self._map, _KEYS_OFFSET + first * 8)
        for way, k in enumerate(keys):
            if k == key:
                return first + way
        if not create:
            return None
        victim, victim_stamp = -1, float("inf")
        for way, k in enumerate(keys):
            index = first + way
            if k == 0:
                victim = index
                break
            _tokens, stamp, in_progress = struct.unpack_from("<ddi", self._map, self._entry_offset(index))
            if in_progress == 0 and stamp < victim_stamp:
                victim, victim_stamp = index, stamp
        if victim < 0:
            raise TableFull
        self._map[_KEYS_OFFSET + victim * 8:_KEYS_OFFSET + victim * 8 + 8] = key.to_bytes(8, "little")
        _ENTRY.pack_into(self._map, self._entry_offset(victim), -1.0, now, 0, *([0] * MAX_WORKERS))
        return victim

    @staticmethod
    def _entry_offset(index: int) -> int:
        return _ENTRIES_OFFSET + index * _ENTRY_SIZE

    # -- invocations in progress -----------------------------------------------------------------

    def try_begin(self, namespace: str, per_namespace: int, total: int) -> str | None:
        """Count one more invocation of ``namespace``; on refusal return why ("namespace", "gateway" or
        "table") and count nothing. Pair a success with `end`."""
        w = self.worker
        with self._locked():
            header = list(_HEADER.unpack_from(self._map, 0))
            if header[0] >= total:
                return "gateway"
            try:
                index = self._find(namespace, self._timer(), create=True)
            except TableFull:
                return "table"
            assert index is not None
            offset = self._entry_offset(index)
            entry = list(_ENTRY.unpack_from(self._map, offset))
            if entry[2] >= per_namespace:
                return "namespace"
            entry[2] += 1
            entry[3 + w] += 1
            header[0] += 1
            header[1 + w] += 1
            _ENTRY.pack_into(self._map, offset, *entry)
            _HEADER.pack_into(self._map, 0, *header)
        return None

    def end(self, namespace: str) -> None:
        w = self.worker
        with self._locked():
            index = self._find(namespace, self._timer(), create=False)
            if index is None:  # reaped meanwhile: nothing left to give back
                return
            offset = self._entry_offset(index)
            entry = list(_ENTRY.unpack_from(self._map, offset))
            if entry[3 + w] <= 0:
                return
            entry[2] -= 1
            entry[3 + w] -= 1
            header = list(_HEADER.unpack_from(self._map, 0))
            header[0] -= 1
            header[1 + w] -= 1
            _ENTRY.pack_into(self._map, offset, *entry)
            _HEADER.pack_into(self._map, 0, *header)

    def in_progress(self, namespace: str | None = None) -> int:
        """Invocations in progress in the whole gateway, or of one namespace."""
        with self._locked():
            if namespace is None:
                return int(_HEADER.unpack_from(self._map, 0)[0])
            index = self._find(namespace, self._timer(), create=False)
            return 0 if index is None else int(_ENTRY.unpack_from(self._map, self._entry_offset(index))[2])

    def reap(self, worker: int) -> int:
        """Give back every invocation slot worker ``worker`` held (it died); returns how many."""
        freed = 0
        with self._locked():
            header = list(_HEADER.unpack_from(self._map, 0))
            for index in range(SETS * WAYS):
                offset = self._entry_offset(index)
                held = struct.unpack_from("<h", self._map, offset + 20 + 2 * worker)[0]
                if held:
                    entry = list(_ENTRY.unpack_from(self._map, offset))
                    entry[2] -= held
                    entry[3 + worker] = 0
                    _ENTRY.pack_into(self._map, offset, *entry)
                    freed += held
            header[0] -= header[1 + worker]
            header[1 + worker] = 0
            _HEADER.pack_into(self._map, 0, *header)
        return freed

    # -- token buckets ---------------------------------------------------------------------------

    def _level(self, entry: list[float], capacity: float, rate: float, now: float) -> float:
        tokens, stamp = entry[0], entry[1]
        if tokens < 0:  # a fresh entry starts full
            return capacity
        return min(capacity, tokens + max(0.0, now - stamp) * rate)

    def take_token(self, namespace: str, per_minute: int) -> bool:
        """Take one of ``namespace``'s ``per_minute`` tokens (refilled evenly); False when none is left."""
        capacity, rate = float(per_minute), per_minute / REFILL_SECONDS
        with self._locked():
            now = self._timer()
            try:
                index = self._find(namespace, now, create=True)
            except TableFull:
                return False
            assert index is not None
            offset = self._entry_offset(index)
            entry = list(_ENTRY.unpack_from(self._map, offset))
            tokens = self._level(entry, capacity, rate, now)
            ok = tokens >= 1.0
            entry[0] = tokens - 1.0 if ok else tokens
            entry[1] = now
            _ENTRY.pack_into(self._map, offset, *entry)
        return ok

    def tokens(self, namespace: str, per_minute: int) -> float:
        capacity, rate = float(per_minute), per_minute / REFILL_SECONDS
        with self._locked():
            now = self._timer()
            index = self._find(namespace, now, create=False)
            if index is None:
                return capacity
            entry = list(_ENTRY.unpack_from(self._map, self._entry_offset(index)))
            return self._level(entry, capacity, rate, now)


@dataclass(frozen=True)
class WorkerGroup:
    """What the worker processes of one gateway share: the cap table, and a folder where each worker
    leaves a snapshot of its metrics so that any of them can answer ``/metrics`` for all (`metrics`)."""

    caps: CapTable
    metrics_dir: Path | None = None

    @classmethod
    def create(cls) -> WorkerGroup:
        folder = Path(tempfile.mkdtemp(prefix="wasmhost-workers-"))
        (folder / "metrics").mkdir()
        return cls(CapTable.create(folder), folder / "metrics")

    @classmethod
    def single(cls) -> WorkerGroup:
        """For an app that is its own gateway (tests, embedding): caps of its own, no shared metrics."""
        caps = CapTable.create()
        caps.attach(0)
        caps.unlink()  # mapped and locked through open files; nothing else will open it
        return cls(caps)

    def remove(self) -> None:
        self.caps.unlink()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir.parent, ignore_errors=True)
