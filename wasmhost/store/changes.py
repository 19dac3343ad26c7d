"""Change notifications: every write that a gateway may have cached is announced, so caches drop it at once.

The store publishes a `Change` after each committed write to push config, credentials, auth settings,
API keys, functions or devices. Subscribers (the push manager's wiring, the gateway) invalidate exactly
that. SQLite announces in-process (`LocalChangeFeed`); the PostgreSQL fleet backend also sends each change
with ``NOTIFY`` in the writing transaction, so every other gateway hears it (see ``postgres.py``).

A feed that may have missed changes (its listener connection dropped) announces `Change.everything()`
once it is back; the caches' TTL stays the bound for everything in between.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "EVERYTHING",
    "KINDS",
    "Change",
    "ChangeCallback",
    "ChangeFeed",
    "HasChangeFeed",
    "LocalChangeFeed",
]

LOG = logging.getLogger("wasmhost.store.changes")

#: What a change can be about; `key` names the object within the namespace (provider, function, device id…).
#: ``deliveries`` caches nothing: it says deliveries became due now (a send accepted for the workers, leases
#: put back), so idle delivery workers of every gateway claim them at once instead of at their next poll.
KINDS = frozenset({"push_config", "credentials", "auth", "api_key", "function", "device", "webhook", "deliveries"})
#: The kind of `Change.everything()`: any cached state may be stale.
EVERYTHING = "everything"

#: Largest encoded change (PostgreSQL's NOTIFY payload limit is 8000 bytes).
MAX_PAYLOAD_BYTES = 7900


@dataclass(frozen=True, slots=True)
class Change:
    namespace: str
    kind: str
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS and self.kind != EVERYTHING:
            raise ValueError(f"unknown change kind {self.kind!r}; expected one of {', '.join(sorted(KINDS))}")

    @classmethod
    def everything(cls) -> Change:
        return cls("", EVERYTHING)

    @property
    def is_everything(self) -> bool:
        return self.kind == EVERYTHING

    def to_payload(self, origin: str = "") -> str:
        """JSON for a NOTIFY payload. `origin` lets the publishing process skip its own echo."""
        payload = json.dumps({"ns": self.namespace, "kind": self.kind, "key": self.key, "origin": origin},
                             separators=(",", ":"), ensure_ascii=False)
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            # Names are bounded elsewhere; if one is not, announce the whole namespace instead of failing a write.
            payload = json.dumps({"ns": self.namespace, "kind": self.kind, "key": "", "origin": origin})
        return payload

    @classmethod
    def from_payload(cls, payload: str) -> tuple[Change, str]:
        """Parse a NOTIFY payload into (change, origin); `ValueError` if it is not one of ours."""
        try:
            data = json.loads(payload)
            return cls(str(data["ns"]), str(data["kind"]), str(data.get("key", ""))), str(data.get("origin", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("not a wasmhost change notification") from exc


#: Called on the event loop for every change; must be quick (drop a cache entry) and must not block.
ChangeCallback = Callable[[Change], None]


class ChangeFeed(Protocol):
    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call `callback` for every change from now on; returns a function that unsubscribes."""
        ...

    def publish(self, change: Change) -> None:
        """Announce a committed change to this process's subscribers."""
        ...


@runtime_checkable
class HasChangeFeed(Protocol):
    """A store that announces its changes."""

    @property
    def changes(self) -> ChangeFeed: ...


class LocalChangeFeed:
    """In-process fan-out. A failing subscriber is logged and never stops the others or the write."""

    def __init__(self) -> None:
        self._subscribers: list[ChangeCallback] = []
        self.published = 0

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    @property
    def subscribed(self) -> bool:
        return bool(self._subscribers)

    def publish(self, change: Change) -> None:
        self.published += 1
        self._dispatch(change)

    def _dispatch(self, change: Change) -> None:
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                LOG.exception("store: change subscriber failed on %s/%s", change.kind, change.namespace)
