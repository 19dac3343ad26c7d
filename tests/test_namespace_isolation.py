"""A guest invoked in one namespace reaches only that namespace's devices, whatever it passes.

Real parts end to end: the welcome guest (.wasm built from C in the repo), the runtime, the push
manager, the outbox provider and the SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wasmhost.demo import welcome_module
from wasmhost.services import Services, Settings

KEY = "cd" * 32


@pytest.fixture
async def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    monkeypatch.setenv("WASMHOST_MASTER_KEY", KEY)
    svc = await Services.open(Settings(db_url=f"sqlite:///{tmp_path / 'wasmhost.db'}"))
    for ns in ("acme", "globex"):
        await svc.store.create_namespace(ns)
        await svc.store.put_credentials(ns, "outbox", {})
        await svc.store.register_device(ns, "alice", f"{ns}-phone", "outbox", f"{ns}-token")
    await svc.store.register_device("globex", "globex/alice", "tricky", "outbox", "tricky-token")
    try:
        yield svc
    finally:
        await svc.aclose()


async def _invoke(services: Services, namespace: str, user: str) -> dict:
    module = services.runtime.compile(welcome_module(), namespace=namespace)
    result = await services.runtime.invoke(namespace, module, json.dumps({"user": user, "name": "A"}).encode())
    return result.to_dict()


async def test_same_user_id_in_two_namespaces_reaches_only_the_invoking_one(services: Services) -> None:
    doc = await _invoke(services, "acme", "alice")
    assert doc["ok"], doc
    assert [r["device_id"] for r in doc["sends"][0]["results"]] == ["acme-phone"]
    assert [r.device_id for r in await services.store.list_deliveries("acme")] == ["acme-phone"]
    assert await services.store.list_deliveries("globex") == []
    doc = await _invoke(services, "globex", "alice")
    assert [r["device_id"] for r in doc["sends"][0]["results"]] == ["globex-phone"]
    assert [r.device_id for r in await services.store.list_deliveries("acme")] == ["acme-phone"]


@pytest.mark.parametrize("user", ["globex/alice", "globex:alice", "../globex/alice", "globex\\u0000alice",
                                  "alice@globex", "*", "%"])
async def test_user_ids_that_name_another_namespace_reach_nobody_there(services: Services, user: str) -> None:
    doc = await _invoke(services, "acme", user)
    assert doc["sends"] and doc["sends"][0]["devices_attempted"] == 0
    assert await services.store.list_deliveries("globex") == []
