"""The provider-neutral push message, and the one parser every entry point shares.

Guests, the CLI and the HTTP API all hand us JSON; parsing it in one place means a field means the
same thing everywhere and the limits hold everywhere.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "MAX_DATA_DEPTH",
    "MAX_MESSAGE_BYTES",
    "SURROGATE_ESCAPE",
    "MessageError",
    "MessageTooBig",
    "PushMessage",
    "has_lone_surrogate",
    "parse_message",
]

#: Largest message JSON accepted from any caller, checked on the raw bytes before parsing.
MAX_MESSAGE_BYTES = 16 * 1024
#: APNs refuses collapse ids over 64 bytes; we refuse them at the door instead of truncating silently.
MAX_MESSAGE_ID_BYTES = 64
MAX_TTL_SECONDS = 28 * 24 * 3600
#: Deepest `data` accepted, the data object itself being level 1: providers, the outbox and every
#: JSON serialiser on the way must be able to carry it.
MAX_DATA_DEPTH = 32
#: Integers in `data` must fit in 64 bits (signed or unsigned): beyond that JSON readers disagree.
_INT_RANGE = range(-(1 << 63), 1 << 64)

_FIELDS = {
    "title", "body", "data", "badge", "sound", "channel", "priority", "ttl_seconds", "message_id",
    "content_available", "target_provider", "exclude_provider",
}


class MessageError(ValueError):
    """The message is not valid JSON of the documented shape (ABI code INVAL, HTTP 400)."""


class MessageTooBig(MessageError):
    """The raw message is over `MAX_MESSAGE_BYTES` (ABI code TOO_BIG, HTTP 413)."""


@dataclass(frozen=True, slots=True)
class PushMessage:
    title: str = ""
    body: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    badge: int | None = None
    sound: str = ""
    channel: str = ""
    priority: str = "normal"
    ttl_seconds: int | None = None
    message_id: str = ""
    content_available: bool = False
    target_provider: str = ""
    exclude_provider: str = ""
    #: Set by the delivery queue, never parsed from a caller's JSON nor stored with the message: a stable
    #: id of the durable send (see `push.collapse`), the same for every attempt of that send in any process.
    send_key: str = ""

    @property
    def collapse_id(self) -> str:
        """What providers send as the push service's collapse id: the tenant's own ``message_id`` when it
        set one, else the send's `send_key` (so a delivery repeated after a crash shows once)."""
        return self.message_id or self.send_key

    def has_visible_content(self) -> bool:
        """Whether an alert push would show anything; Apple silently drops alerts that would not."""
        return bool(self.title or self.body or self.sound or (self.badge or 0) > 0 or self.content_available)

    def to_dict(self) -> dict[str, Any]:
        """The message as JSON-ready fields, leaving out what is unset."""
        out: dict[str, Any] = {}
        for key in _FIELD_ORDER:
            value = getattr(self, key)
            if value in ("", None, {}, False) or (key == "priority" and value == "normal"):
                continue
            out[key] = dict(value) if key == "data" else value
        return out


def _string(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MessageError(f"{key} must be a string")
    return value


def _optional_int(doc: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{key} must be an integer")
    if not low <= value <= high:
        raise MessageError(f"{key} must be between {low} and {high}")
    return value


#: A ``\uD800``–``\uDFFF`` escape: only JSON holding one can decode to a lone surrogate.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def has_lone_surrogate(doc: Any) -> bool:
    """Whether any string (key or value) in decoded JSON cannot be encoded as UTF-8. Iterative, so
    any depth is safe."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _no_constant(name: str) -> Any:
    raise MessageError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MessageError(f"number {text[:20]} is out of range")
    return value


def _check_data(data: dict[str, Any]) -> None:
    """Refuse `data` nested deeper than `MAX_DATA_DEPTH`, or holding numbers JSON cannot carry.

    Iterative, so any depth is refused without touching Python's recursion limit."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DATA_DEPTH:
                raise MessageError(f"data is nested more than {MAX_DATA_DEPTH} levels deep")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if value not in _INT_RANGE:
                raise MessageError("integers in data must fit in 64 bits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise MessageError("numbers in data must be finite")
        else:
            raise MessageError("data must be plain JSON")


def parse_message(raw: bytes | str | dict[str, Any]) -> PushMessage:
    """Parse and validate a message; raise `MessageError` (or `MessageTooBig`) naming the problem."""
    if isinstance(raw, dict):
        doc = raw
    else:
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageTooBig(f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
        if not data.strip():
            raise MessageError("message is empty")
        try:
            doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
        except UnicodeDecodeError:
            raise MessageError("message is not valid UTF-8") from None
        except json.JSONDecodeError as exc:
            raise MessageError(f"message is not valid JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise MessageError(f"message is nested too deeply (data allows {MAX_DATA_DEPTH} levels)") from None
        except MessageError:
            raise
        except ValueError:  # an integer of more digits than Python converts
            raise MessageError("message has a number with too many digits") from None
        if SURROGATE_ESCAPE.search(data) and has_lone_surrogate(doc):
            raise MessageError("message has a string with a lone UTF-16 surrogate (not valid text)")
    if not isinstance(doc, dict):
        raise MessageError("message must be a JSON object")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise MessageError(f"unknown message field(s): {', '.join(unknown)}")

    data_field = doc.get("data") or {}
    if not isinstance(data_field, dict):
        raise MessageError("data must be an object")
    _check_data(data_field)
    priority = _string(doc, "priority") or "normal"
    if priority not in ("high", "normal"):
        raise MessageError('priority must be "high" or "normal"')
    message_id = _string(doc, "message_id")
    if len(message_id.encode("utf-8")) > MAX_MESSAGE_ID_BYTES:
        raise MessageError(f"message_id must be at most {MAX_MESSAGE_ID_BYTES} bytes")
    content_available = doc.get("content_available", False)
    if not isinstance(content_available, bool):
        raise MessageError("content_available must be true or false")
    return PushMessage(
        title=_string(doc, "title"),
        body=_string(doc, "body"),
        data=data_field,
        badge=_optional_int(doc, "badge", 0, 1_000_000),
        sound=_string(doc, "sound"),
        channel=_string(doc, "channel"),
        priority=priority,
        ttl_seconds=_optional_int(doc, "ttl_seconds", 0, MAX_TTL_SECONDS),
        message_id=message_id,
        content_available=content_available,
        target_provider=_string(doc, "target_provider"),
        exclude_provider=_string(doc, "exclude_provider"),
    )


#: The message's JSON fields, in order (`send_key` is the queue's, not the caller's: never serialised).
_FIELD_ORDER = tuple(f.name for f in fields(PushMessage) if f.name in _FIELDS)
