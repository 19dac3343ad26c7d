"""The outbox provider and the factory's reuse of long-lived providers across rebuilds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from wasmhost.providers import OutboxSpec, ProviderFactoryImpl
from wasmhost.push import CredentialsError, Defaults, Manager, PushMessage, ResolvedConfig
from wasmhost.store import SQLiteStore


class ClosingSpec:
    """A spec whose providers record being closed, to watch the factory's lifecycle rules."""

    name = "fake"

    def __init__(self) -> None:
        self.built: list[Any] = []

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return dict(document)

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        return token

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        return config.credentials.get(self.name)

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> Any:
        from tests.conftest import RecordingProvider

        provider = RecordingProvider(self.name)
        self.built.append(provider)
        return provider


async def test_outbox_records_what_each_device_received(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_namespace("acme")
    await sqlite_store.put_credentials("acme", "outbox", {})
    await sqlite_store.register_device("acme", "alice", "phone", "outbox", "t1")
    await sqlite_store.register_device("acme", "alice", "tablet", "outbox", "t2")
    manager = Manager(sqlite_store, ProviderFactoryImpl([OutboxSpec(sqlite_store)]))
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi", data={"k": "v"}))
    assert report.ok and report.devices_succeeded == 2
    records = await sqlite_store.list_deliveries("acme")
    assert [(r.user_id, r.device_id, r.message) for r in records] == [
        ("alice", "phone", {"title": "Hi", "data": {"k": "v"}}),
        ("alice", "tablet", {"title": "Hi", "data": {"k": "v"}}),
    ]


def test_outbox_spec_validation() -> None:
    spec = OutboxSpec(None)  # type: ignore[arg-type]
    assert spec.validate({}) == {}
    with pytest.raises(CredentialsError, match="unexpected"):
        spec.validate({"url": "x"})
    with pytest.raises(CredentialsError, match="required"):
        spec.validate_token("  ", None)
    with pytest.raises(CredentialsError, match="512"):
        spec.validate_token("x" * 513, None)


async def test_provider_reused_across_rebuilds_while_credentials_unchanged(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_namespace("acme")
    await sqlite_store.put_credentials("acme", "fake", {"key": "v1"})
    spec = ClosingSpec()
    factory = ProviderFactoryImpl([spec])
    manager = Manager(sqlite_store, factory)
    first = await manager.dispatcher_for("acme")
    manager.invalidate("acme")
    second = await manager.dispatcher_for("acme")
    assert first is not second and first.providers["fake"] is second.providers["fake"]
    assert len(spec.built) == 1

    await sqlite_store.put_credentials("acme", "fake", {"key": "v2"})
    manager.invalidate("acme")
    third = await manager.dispatcher_for("acme")
    assert third.providers["fake"] is not first.providers["fake"]
    assert spec.built[0].closed and not spec.built[1].closed

    await sqlite_store.delete_credentials("acme", "fake")
    manager.invalidate("acme")
    assert not await manager.is_configured("acme")
    assert spec.built[1].closed

    await sqlite_store.put_credentials("acme", "fake", {"key": "v3"})
    manager.invalidate("acme")
    await manager.dispatcher_for("acme")
    await manager.aclose()
    assert all(p.closed for p in spec.built)


async def test_operator_default_documents_apply_until_tenant_sets_its_own(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_namespace("acme")
    spec = ClosingSpec()
    manager = Manager(sqlite_store, ProviderFactoryImpl([spec]), Defaults(credentials={"fake": {"key": "op"}}))
    config = await manager.resolve("acme")
    assert config.credentials["fake"] == {"key": "op"} and "fake" in config.operator_providers
    await sqlite_store.put_credentials("acme", "fake", {"key": "tenant"})
    config = await manager.resolve("acme")
    assert config.credentials["fake"] == {"key": "tenant"} and "fake" not in config.operator_providers


async def test_spec_that_fails_to_build_is_left_out(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_namespace("acme")
    await sqlite_store.put_credentials("acme", "fake", {"key": "v1"})
    await sqlite_store.put_credentials("acme", "outbox", {})

    class Broken(ClosingSpec):
        def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> Any:
            raise ValueError("key no longer parses")

    manager = Manager(sqlite_store, ProviderFactoryImpl([Broken(), OutboxSpec(sqlite_store)]))
    dispatcher = await manager.dispatcher_for("acme")
    assert list(dispatcher.providers) == ["outbox"]
