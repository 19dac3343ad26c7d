"""WASI preview 1 ``poll_oneoff`` for guests on the event loop: a sleep suspends the guest, nothing else.

Layouts (little-endian): a subscription is 48 bytes — userdata u64 @0, tag u8 @8 (0 clock, 1 fd_read,
2 fd_write), then for a clock: id u32 @16, timeout u64 @24 (ns), precision u64 @32, flags u16 @40
(bit 0: the timeout is absolute); for an fd: fd u32 @16. An event is 32 bytes — userdata u64 @0,
error u16 @8, type u8 @10, nbytes u64 @16, flags u16 @24.

Rules: stdin, stdout and stderr (the only fds a guest has) are always ready, so a poll with an fd
subscription returns at once; any other fd gets an EBADF event. Clocks are realtime (0) and
monotonic (1), relative or absolute; other clock ids get an EINVAL event. With nothing ready, the
guest sleeps until its earliest clock is due — but never past its invocation deadline, after which
its epoch deadline traps it as usual. `MAX_SUBSCRIPTIONS` bounds one call's work.
"""

from __future__ import annotations

import ctypes
import struct
import time
from dataclasses import dataclass

__all__ = ["MAX_SUBSCRIPTIONS", "Poll", "parse"]

MAX_SUBSCRIPTIONS = 1024
SUBSCRIPTION_BYTES = 48
EVENT_BYTES = 32

_CLOCK, _FD_READ, _FD_WRITE = 0, 1, 2
_REALTIME, _MONOTONIC = 0, 1
_ABSTIME = 1
_EBADF, _EINVAL = 8, 28
_STDIO = (0, 1, 2)


@dataclass(frozen=True, slots=True)
class Subscription:
    userdata: int
    tag: int
    clock_id: int = 0
    timeout_ns: int = 0
    absolute: bool = False
    fd: int = 0


def parse(raw: bytes) -> list[Subscription] | None:
    """The subscriptions in ``raw`` (n × 48 bytes), or None if one has an unknown tag."""
    subs = []
    for offset in range(0, len(raw), SUBSCRIPTION_BYTES):
        userdata, tag = struct.unpack_from("<QB", raw, offset)
        if tag == _CLOCK:
            clock_id, timeout, _precision, flags = struct.unpack_from("<I4xQQH", raw, offset + 16)
            subs.append(Subscription(userdata, tag, clock_id, timeout, bool(flags & _ABSTIME)))
        elif tag in (_FD_READ, _FD_WRITE):
            subs.append(Subscription(userdata, tag, fd=struct.unpack_from("<I", raw, offset + 16)[0]))
        else:
            return None
    return subs


class Poll:
    """One ``poll_oneoff`` call: which events are ready now, and when the rest become due."""

    def __init__(self, subs: list[Subscription], input_left: int, monotonic_origin: float) -> None:
        """``monotonic_origin``: the host's ``time.monotonic()`` when the guest's WASI context was made
        (wasmtime's monotonic clock counts from there)."""
        self.subs = subs
        self.input_left = input_left
        now = time.monotonic()
        wall = time.time_ns()
        #: Monotonic second at which each clock subscription is due (None: not a valid clock).
        self.due: list[float | None] = [
            self._due(s, now, wall, monotonic_origin) if s.tag == _CLOCK else None for s in subs
        ]

    @staticmethod
    def _due(sub: Subscription, now: float, wall_ns: int, origin: float) -> float | None:
        if sub.clock_id not in (_REALTIME, _MONOTONIC):
            return None
        if not sub.absolute:
            return now + sub.timeout_ns / 1e9
        if sub.clock_id == _REALTIME:
            return now + (sub.timeout_ns - wall_ns) / 1e9
        return origin + sub.timeout_ns / 1e9

    def wake_at(self) -> float | None:
        """When to look again if nothing is ready now: the earliest due clock."""
        due = [d for s, d in zip(self.subs, self.due, strict=True) if s.tag == _CLOCK and d is not None]
        return min(due) if due else None

    def ready(self) -> list[tuple[int, int, int, int]]:
        """Events ready now, as (userdata, error, type, nbytes)."""
        now = time.monotonic()
        events = []
        for sub, due in zip(self.subs, self.due, strict=True):
            if sub.tag == _CLOCK:
                if due is None:
                    events.append((sub.userdata, _EINVAL, _CLOCK, 0))
                elif due <= now:
                    events.append((sub.userdata, 0, _CLOCK, 0))
            elif sub.fd not in _STDIO or (sub.tag == _FD_READ) != (sub.fd == 0):
                events.append((sub.userdata, _EBADF, sub.tag, 0))
            else:
                events.append((sub.userdata, 0, sub.tag, self.input_left if sub.tag == _FD_READ else 0))
        return events

    @staticmethod
    def write(base: int, out: int, nevents_ptr: int, events: list[tuple[int, int, int, int]]) -> None:
        """Write ``events`` at ``out`` and their count at ``nevents_ptr`` (both bounds-checked by the caller)."""
        blob = b"".join(struct.pack("<QHBxxxxxQH6x", u, err, kind, nbytes, 0) for u, err, kind, nbytes in events)
        if blob:
            ctypes.memmove(base + out, blob, len(blob))
        ctypes.memmove(base + nevents_ptr, struct.pack("<I", len(events)), 4)
