"""The provider protocol: how the dispatcher hands deliveries to a push service.

A provider turns deliveries into outcomes and never raises for a delivery's failure; it classifies it
instead, so the dispatcher can retry, prune or surface without knowing any wire protocol. Push never
imports a provider module: a `ProviderFactory` is injected (the seed's rule).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .message import PushMessage

__all__ = [
    "BaseProvider",
    "Delivery",
    "FailureKind",
    "Outcome",
    "Provider",
    "ProviderFactory",
    "ReceiptSource",
    "ResolvedConfig",
]


class FailureKind(enum.Enum):
    TRANSIENT = "transient"  # worth retrying (5xx, 429, dropped connection)
    PERMANENT = "permanent"  # retrying cannot help (bad request, payload too large)
    DEAD_TARGET = "dead_target"  # the token is gone for good: prune the device
    CREDENTIALS = "credentials"  # the tenant's credentials are broken: surface it, stop hammering


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to one device. `token` is plaintext here and must never reach a report or a log."""

    namespace: str
    user_id: str
    device_id: str
    device_row_id: str
    token: str
    message: PushMessage
    registered_at: float = 0.0
    #: The caller records each outcome durably (the delivery queue): a provider whose service confirms
    #: delivery later returns the receipt id in `Outcome.receipt_id` for the caller to read back through
    #: `ReceiptSource`, instead of following it up in memory.
    durable: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    status: int = 0
    reason: str = ""
    message: str = ""
    kind: FailureKind | None = None
    retry_after: float | None = None
    #: For dead targets that carry a timestamp (APNs 410): the token is dead only if it died after the
    #: device's last registration; otherwise the app re-registered it since and it must be kept.
    dead_since: float | None = None
    #: A success the service confirms later (Expo's ticket): the id to read its receipt with.
    receipt_id: str = ""

    @classmethod
    def ok(cls, status: int = 200, receipt_id: str = "") -> Outcome:
        return cls(success=True, status=status, receipt_id=receipt_id)

    @classmethod
    def failed(
        cls,
        kind: FailureKind,
        reason: str,
        message: str = "",
        status: int = 0,
        retry_after: float | None = None,
        dead_since: float | None = None,
    ) -> Outcome:
        return cls(False, status, reason, message, kind, retry_after, dead_since)


@runtime_checkable
class Provider(Protocol):
    """A push service bound to one namespace's credentials."""

    #: Routing name, matched against a device's `provider`.
    name: str
    #: Most deliveries one `send` call takes (Expo: 100); the dispatcher chunks to it.
    max_batch: int

    async def send(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Deliver each message; return one outcome per delivery, in order."""
        ...


class BaseProvider:
    """Helper base for providers whose protocol has no batches: one request per delivery.

    Subclasses implement `send_one`; concurrency per provider is bounded by `concurrency`.
    """

    name: str = ""
    max_batch: int = 1
    concurrency: int = 64

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    async def send_one(self, delivery: Delivery) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _bounded(self, delivery: Delivery) -> Outcome:
        async with self._slots:
            return await self.send_one(delivery)

    async def send(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        if len(deliveries) == 1:
            return [await self._bounded(deliveries[0])]
        return list(await asyncio.gather(*(self._bounded(d) for d in deliveries)))


#: One transaction's statements, each with the rows it runs for (`store.driver` steps).
StoreSteps = Sequence[tuple[str, Sequence[Sequence[Any]]]]


@runtime_checkable
class InStoreProvider(Protocol):
    """A provider whose delivery is a write to the store itself (the outbox). A durable send commits
    these statements in its own accept transaction: the delivery, the send and its state are one commit,
    so such a delivery happens exactly once, whatever crashes, and costs the send nothing more."""

    def store_steps(self, deliveries: Sequence[Delivery]) -> StoreSteps:
        """The statements that deliver `deliveries` (one namespace), for the caller to commit."""
        ...


@runtime_checkable
class ReceiptSource(Protocol):
    """A provider whose successes are confirmed later by a receipt (Expo)."""

    async def check_receipts(self, receipt_ids: Sequence[str]) -> dict[str, Outcome]:
        """The receipts that are ready, by id: absent means not ready yet, or not readable now (a failed
        request): ask again later. Never raises for the service's answers."""
        ...


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """A namespace's effective push settings: operator defaults, then the namespace's own fields,
    plus every credentials document it saved (decrypted)."""

    namespace: str
    ntfy_base_url: str = ""
    ntfy_auth_token: str = ""
    #: True when `ntfy_base_url` came from the tenant (so it must pass the SSRF guard at connect time).
    ntfy_base_url_tenant: bool = False
    expo_access_token: str = ""
    credentials: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Providers whose document is the operator's default, not the tenant's: their URLs are trusted.
    operator_providers: frozenset[str] = frozenset()


class ProviderFactory(Protocol):
    """Builds the providers for a resolved config. Owns long-lived clients; `aclose` releases them.

    Each provider `build` returns is lent to the caller until it passes it back to `release`; the
    factory may close a provider once nobody holds it, and never before."""

    async def build(self, config: ResolvedConfig) -> list[Provider]: ...

    def release(self, providers: Iterable[Provider]) -> None: ...

    async def aclose(self) -> None: ...
