"""The outbox: a local sink that records each delivery in the store.

It is the embedded default for demos and tests: what a device "received" can be read back exactly
(`wasmhost outbox`), with no network and no accounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..push.credentials import CredentialsError
from ..push.provider import Delivery, FailureKind, Outcome, ResolvedConfig, StoreSteps
from ..store.base import OutboxStore, StoreError

__all__ = ["OutboxProvider", "OutboxSpec"]

MAX_TOKEN_BYTES = 512
#: Most deliveries one transaction records (a bigger fan-out is split by the dispatcher).
OUTBOX_BATCH_MAX = 500


class OutboxProvider:
    """Records a send's deliveries as one transaction (a fan-out to 20 devices is one commit)."""

    name = "outbox"
    max_batch = OUTBOX_BATCH_MAX

    def __init__(self, store: OutboxStore) -> None:
        self.store = store

    @staticmethod
    def _rows(deliveries: Sequence[Delivery]) -> list[tuple[str, str, dict[str, Any]]]:
        as_dict: dict[int, dict[str, Any]] = {}  # a fan-out shares one message: convert it once
        rows = []
        for d in deliveries:
            message = as_dict.get(id(d.message))
            if message is None:
                message = as_dict[id(d.message)] = d.message.to_dict()
            rows.append((d.user_id, d.device_id, message))
        return rows

    def store_steps(self, deliveries: Sequence[Delivery]) -> StoreSteps:
        """The outbox rows as statements for a durable send's accept transaction (`InStoreProvider`)."""
        if not deliveries:
            return []
        return self.store.outbox_steps(deliveries[0].namespace, self._rows(deliveries))

    async def send(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        if not deliveries:
            return []
        rows = self._rows(deliveries)
        try:
            # One dispatcher serves one namespace, so every delivery of a batch is in the same one.
            await self.store.record_deliveries(deliveries[0].namespace, rows)
        except StoreError as exc:
            return [Outcome.failed(FailureKind.TRANSIENT, "StoreError", str(exc)) for _ in deliveries]
        return [Outcome.ok() for _ in deliveries]


class OutboxSpec:
    """Credentials are ``{}``: turning the outbox on is saving an empty document."""

    name = "outbox"

    def __init__(self, store: OutboxStore) -> None:
        self.store = store

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        if document:
            raise CredentialsError(f"outbox takes no settings; unexpected field(s): {', '.join(sorted(document))}")
        return {}

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        token = token.strip()
        if not token:
            raise CredentialsError("token is required")
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise CredentialsError(f"token is longer than {MAX_TOKEN_BYTES} bytes")
        return token

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        return config.credentials.get(self.name)

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> OutboxProvider:
        return OutboxProvider(self.store)
