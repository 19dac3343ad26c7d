"""Per-device results and the aggregate report that guests, the CLI and the HTTP API all see."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeviceResult", "SendReport"]


@dataclass(slots=True)
class DeviceResult:
    device_id: str
    provider: str
    success: bool
    status: int = 0
    reason: str = ""
    message: str = ""
    unregistered: bool = False
    attempts: int = 0
    #: The delivery's state after this send: ``delivered``, ``queued`` (a transient failure, retried
    #: until the message's TTL), ``sending``, ``failed``, ``dead`` or ``expired``.
    state: str = ""
    #: A transient failure's Retry-After, in seconds (not reported).
    retry_after: float | None = None
    #: A success the service confirms later: the receipt's id (not reported; see `Outcome.receipt_id`).
    receipt_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "provider": self.provider,
            "success": self.success,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "unregistered": self.unregistered,
            "attempts": self.attempts,
            "state": self.state or ("delivered" if self.success else "failed"),
        }


@dataclass(slots=True)
class SendReport:
    """What happened to one send. `ok` means every attempted device succeeded (vacuously with none)."""

    results: list[DeviceResult] = field(default_factory=list)
    #: The accepted send's id, when the send was accepted durably (see `push.delivery`).
    send_id: str | None = None

    @property
    def devices_attempted(self) -> int:
        return len(self.results)

    @property
    def devices_succeeded(self) -> int:
        return sum(1 for r in self.results if r.success)

    @property
    def ok(self) -> bool:
        return all(r.success for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "devices_attempted": self.devices_attempted,
            "devices_succeeded": self.devices_succeeded,
            "results": [r.to_dict() for r in self.results],
        }
        if self.send_id is not None:  # last: guests that read the report by its leading fields keep working
            out["send_id"] = self.send_id
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)
