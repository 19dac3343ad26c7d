"""Changes between the processes that share one SQLite state folder.

PostgreSQL carries every change to every process with ``NOTIFY``. SQLite has no such channel, so each
process's `LocalChangeFeed` only hears its own writes. `ChangeRelay` closes the gap: every change the
process publishes is appended to a ring file in the state folder (``changes.ring``), and every process —
gateway workers, and CLI commands writing to the same state — polls the ring's counter every
`POLL_SECONDS` and re-publishes, in its own feed, what the others appended. Caches are therefore
dropped within one poll of a change (plus the time the callbacks take), whichever process made it.

The ring is fixed-size shared memory: a header with the next sequence number and a count of device
changes (what device caches follow, `ChangeRelay.device_sequence`), then `SLOTS` entries, each carrying its
own sequence number. Writers append under ``flock``; readers never lock: a writer fills the entry first
and then moves the counters. A reader that fell more than `SLOTS` behind, or finds an entry
overwritten under it, publishes `Change.everything()` instead (every cache drops all it holds), which is
always safe. A process's own entries carry its origin id and are skipped.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import mmap
import os
import secrets
import struct
from pathlib import Path

from .changes import EVERYTHING, Change, LocalChangeFeed

__all__ = ["POLL_SECONDS", "ChangeRelay"]

LOG = logging.getLogger("wasmhost.store.relay")

POLL_SECONDS = 0.01
SLOTS = 2048
SLOT_BYTES = 256
_MAGIC = 0x57484332  # "WHC2"
_HEADER = struct.Struct("<IIQQ")  # magic, slot count, next sequence number, device changes
_HEADER_BYTES = 64
_ENTRY = struct.Struct("<QH")  # sequence number, payload length
_PAYLOAD_MAX = SLOT_BYTES - _ENTRY.size
#: The kinds of change that move `ChangeRelay.device_sequence`.
_DEVICE_KINDS = frozenset({"device", EVERYTHING})
SIZE = _HEADER_BYTES + SLOTS * SLOT_BYTES
#: A counter read from a file not in this format is trusted only below this (a corrupt one restarts at 1).
_COUNTER_LIMIT = 2**62


def _encode(origin: str, change: Change) -> tuple[bytes, str]:
    """The entry for `change`, and the kind it announces (a change too long for a slot says less)."""
    data = json.dumps([origin, change.namespace, change.kind, change.key], separators=(",", ":")).encode()
    if len(data) > _PAYLOAD_MAX:  # a long key: drop the whole namespace's entries of that kind instead
        data = json.dumps([origin, change.namespace, change.kind, ""], separators=(",", ":")).encode()
    if len(data) > _PAYLOAD_MAX:
        return json.dumps([origin, "", EVERYTHING, ""]).encode(), EVERYTHING
    return data, change.kind


class ChangeRelay:
    """Relays ``feed``'s changes through ``path`` to and from every other process using it."""

    def __init__(self, path: Path, feed: LocalChangeFeed) -> None:
        self.path = path
        self.feed = feed
        self.origin = secrets.token_hex(8)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < SIZE:
                    os.ftruncate(fd, SIZE)
                self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED)
                magic, slots, was_next, was_devices = _HEADER.unpack_from(self._map, 0)
                if (magic, slots) != (_MAGIC, SLOTS):
                    # Another format (an earlier release's) or a corrupt file: start again past both of
                    # its counters, so that a process still reading it sees a jump and drops everything,
                    # and no device counter comes back to a value some process cached its lists under.
                    start = max(was_next, was_devices) + SLOTS + 1
                    start = start if start < _COUNTER_LIMIT else 1
                    self._map[:SIZE] = bytes(SIZE)
                    _HEADER.pack_into(self._map, 0, _MAGIC, SLOTS, start, start)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._seen = self._next()
        self._relaying = False
        self._unsubscribe = feed.subscribe(self._append)
        self._timer: asyncio.TimerHandle | None = None
        self.relayed_in = 0

    def _next(self) -> int:
        return int(_HEADER.unpack_from(self._map, 0)[2])

    def sequence(self) -> int:
        """The ring's counter: it moves as soon as any process sharing the ring announces a change."""
        return self._next()

    def device_sequence(self) -> int:
        """Moves as soon as any process sharing the ring announces a change to a device (or to everything):
        what a device cache must follow. The ring's own counter also moves on every send queued for the
        workers, which would empty such a cache on every ``?wait=0`` send."""
        return int(_HEADER.unpack_from(self._map, 0)[3])

    def _append(self, change: Change) -> None:
        if self._relaying:  # another process's change, re-published here: already in the ring
            return
        data, kind = _encode(self.origin, change)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _, _, seq, devices = _HEADER.unpack_from(self._map, 0)
            offset = _HEADER_BYTES + (seq % SLOTS) * SLOT_BYTES
            _ENTRY.pack_into(self._map, offset, seq, len(data))
            self._map[offset + _ENTRY.size:offset + _ENTRY.size + len(data)] = data
            devices += kind in _DEVICE_KINDS
            _HEADER.pack_into(self._map, 0, _MAGIC, SLOTS, seq + 1, devices)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def poll(self) -> int:
        """Publish what other processes appended since the last poll; returns how many changes."""
        end = self._next()
        if end == self._seen:
            return 0
        changes: list[Change] = []
        if end < self._seen or end - self._seen > SLOTS:  # started again by another process, or fell behind
            changes.append(Change.everything())
        else:
            for seq in range(self._seen, end):
                offset = _HEADER_BYTES + (seq % SLOTS) * SLOT_BYTES
                found, length = _ENTRY.unpack_from(self._map, offset)
                raw = bytes(self._map[offset + _ENTRY.size:offset + _ENTRY.size + min(length, _PAYLOAD_MAX)])
                if found != seq:  # overwritten while we read: we fell behind
                    changes = [Change.everything()]
                    break
                try:
                    origin, namespace, kind, key = json.loads(raw)
                    if origin != self.origin:
                        changes.append(Change(namespace, kind, key))
                except (ValueError, TypeError):
                    changes = [Change.everything()]
                    break
        self._seen = end
        self._relaying = True
        try:
            for change in changes:
                self.feed.publish(change)
        finally:
            self._relaying = False
        self.relayed_in += len(changes)
        return len(changes)

    def start(self) -> None:
        """Poll on the running loop every `POLL_SECONDS` until `close`."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            try:
                self.poll()
            except Exception:  # never let the poller die: caches would go stale up to their TTL
                LOG.exception("store: reading the change ring failed")
            self._timer = loop.call_later(POLL_SECONDS, tick)

        self._timer = loop.call_later(POLL_SECONDS, tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unsubscribe()
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1
