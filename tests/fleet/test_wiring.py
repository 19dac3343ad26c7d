"""`Services` turns announced changes into exactly the invalidations they need (SQLite: in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from wasmhost.gateway.metrics import ChangeFeedCollector
from wasmhost.push import Defaults
from wasmhost.services import Services, Settings
from wasmhost.store import Change


@pytest.fixture
async def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    monkeypatch.setenv("WASMHOST_MASTER_KEY", "1:" + "cd" * 32)
    svc = await Services.open(Settings(db_url=f"sqlite:///{tmp_path / 'w.db'}",
                                       defaults=Defaults(credentials={"outbox": {}})))
    try:
        yield svc
    finally:
        await svc.aclose()


async def test_config_and_credential_changes_drop_the_namespace_dispatcher(services: Services) -> None:
    store, manager = services.store, services.manager
    for ns in ("acme", "other"):
        await store.create_namespace(ns)
        await manager.dispatcher_for(ns)
    await store.put_credentials("acme", "outbox", {})
    assert manager.cached_namespaces() == ["other"]
    await manager.dispatcher_for("acme")
    await store.delete_push_config("other")  # nothing to delete: nothing announced, nothing dropped
    assert sorted(manager.cached_namespaces()) == ["acme", "other"]


async def test_device_and_function_changes_keep_dispatchers(services: Services) -> None:
    store, manager = services.store, services.manager
    await store.create_namespace("acme")
    await manager.dispatcher_for("acme")
    await store.register_device("acme", "alice", "phone", "outbox", "tok")  # devices are read per send
    await store.put_function("acme", "f", b"\0asm", {})  # functions per invocation, modules by hash
    assert manager.cached_namespaces() == ["acme"]


async def test_everything_drops_every_dispatcher_and_metrics_show_it(services: Services) -> None:
    for ns in ("acme", "other"):
        await services.store.create_namespace(ns)
        await services.manager.dispatcher_for(ns)
    assert services.changes is not None
    services.changes.publish(Change.everything())
    assert services.manager.cached_namespaces() == []
    registry = CollectorRegistry()
    registry.register(ChangeFeedCollector(lambda: services))
    text = generate_latest(registry).decode()
    assert "wasmhost_change_invalidations_total 1.0" in text
    assert "listener_connected" not in text  # SQLite has no listener to report


async def test_closed_services_stop_listening(services: Services) -> None:
    await services.store.create_namespace("acme")
    await services.manager.dispatcher_for("acme")
    feed = services.changes
    assert feed is not None
    await services.aclose()
    feed.publish(Change("acme", "credentials", "outbox"))
    assert services.invalidations == 0
