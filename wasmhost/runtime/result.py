"""What one invocation produced, in the shape the CLI and the HTTP API return as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ErrorKind", "InvocationError", "InvocationResult", "LogEntry"]

ErrorKind = Literal["out_of_fuel", "timeout", "memory", "trap", "invalid_module", "link"]


@dataclass(frozen=True, slots=True)
class InvocationError:
    """Why the guest did not finish normally. ``message`` is human text, safe to show the tenant."""

    kind: ErrorKind
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class LogEntry:
    level: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "message": self.message}


@dataclass(slots=True)
class InvocationResult:
    """``ok`` is true only when ``handle`` returned 0 and nothing went wrong.

    ``sends`` holds one entry per accepted ``push_send_to_user``, in ticket order, whether or not the
    guest waited for it: the send report fields plus ``ticket``, ``user_id`` and ``error`` (null, or
    ``{"code", "kind", "message"}`` when the send failed as a whole or ran out of time).
    """

    code: int | None
    error: InvocationError | None = None
    #: The output as text (invalid UTF-8 replaced); `output_bytes` has it exactly.
    output: str = ""
    output_bytes: bytes = b""
    logs: list[LogEntry] = field(default_factory=list)
    sends: list[dict[str, Any]] = field(default_factory=list)
    fuel_used: int = 0
    duration_ms: float = 0.0
    #: Of `duration_ms`, the time spent instantiating and running the guest (the rest is waiting for
    #: sends still in flight when ``handle`` returned). Not part of `to_dict`.
    guest_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "error": self.error.to_dict() if self.error else None,
            "output": self.output,
            "logs": [entry.to_dict() for entry in self.logs],
            "sends": list(self.sends),
            "fuel_used": self.fuel_used,
            "duration_ms": round(self.duration_ms, 3),
        }
