"""Helpers for the runtime tests: guest paths, a recording fake sender, i32 decoding."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from wasmhost.push.accepted import Accepted
from wasmhost.push.message import PushMessage
from wasmhost.push.report import DeviceResult, SendReport

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "guest_examples" / "sandbox"
WELCOME = ROOT / "guest_examples" / "welcome"


def sandbox(name: str) -> str:
    return (SANDBOX / name).read_text()


def i32s(data: bytes | str) -> list[int]:
    raw = data.encode("latin-1") if isinstance(data, str) else data
    return list(struct.unpack(f"<{len(raw) // 4}i", raw[: len(raw) // 4 * 4]))


class FakeSender:
    """Records sends; accepts each after `accept_delay` seconds, then answers with `devices` successful
    outbox deliveries after `delay` seconds more.

    `hang=True` accepts but never answers; `hang_accept=True` never accepts; `error` is raised instead
    of accepting (the send is refused)."""

    def __init__(
        self, devices: int = 1, delay: float = 0.0, hang: bool = False, error: BaseException | None = None,
        *, accept_delay: float = 0.0, hang_accept: bool = False,
    ) -> None:
        self.devices = devices
        self.delay = delay
        self.hang = hang
        self.error = error
        self.accept_delay = accept_delay
        self.hang_accept = hang_accept
        self.calls: list[tuple[str, str, PushMessage, float | None]] = []
        self.cancelled = 0
        #: Sends accepted so far, and delivered.
        self.accepted = self.delivered = 0

    async def accept(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None
    ) -> Accepted:
        self.calls.append((namespace, user_id, message, deadline))
        await self._pause(self.hang_accept, self.accept_delay)
        if self.error is not None:
            raise self.error
        self.accepted += 1
        return Accepted(deliver=self._deliver)

    async def _deliver(self) -> SendReport:
        await self._pause(self.hang, self.delay)
        self.delivered += 1
        return SendReport([DeviceResult(f"d{i}", "outbox", True, 200, attempts=1) for i in range(self.devices)])

    async def _pause(self, hang: bool, delay: float) -> None:
        """Wait forever (`hang`) or `delay` seconds, counting a cancellation."""
        try:
            if hang:
                await asyncio.Event().wait()
            if delay:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
