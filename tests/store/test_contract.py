"""The store contract, run unchanged on the embedded SQLite backend and on a real PostgreSQL:
sealing, token exclusivity, isolation between namespaces, clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.store.conftest import Backend
from wasmhost.store import KeyRing, NotFound, PushConfig, StoreError

pytestmark = pytest.mark.asyncio


async def _ns(store: Any, *names: str) -> None:
    for name in names:
        await store.create_namespace(name)


async def test_namespaces(store: Any) -> None:
    await _ns(store, "b", "a")
    assert await store.list_namespaces() == ["a", "b"]
    assert await store.namespace_exists("a")
    assert not await store.namespace_exists("zzz")
    with pytest.raises(StoreError, match="already exists"):
        await store.create_namespace("a")


async def test_device_token_is_sealed_and_never_listed(store: Any, backend: Backend) -> None:
    await _ns(store, "acme")
    dev = await store.register_device("acme", "alice", "phone", "outbox", "secret-token-123", "ios", "1.0")
    public = await store.list_user_devices("acme", "alice")
    assert [d.id for d in public] == [dev.id] and public[0].token == ""
    assert "secret-token-123" not in str(public[0].public())
    with_tokens = await store.list_user_devices("acme", "alice", with_tokens=True)
    assert with_tokens[0].token == "secret-token-123"
    raw = await backend.fetchone("SELECT token_sealed, token_fp FROM devices")
    assert raw is not None
    assert "secret-token-123" not in raw[0] and "secret-token-123" not in raw[1]
    assert raw[0].startswith("wh1:1:")


async def test_reregistration_keeps_row_id_and_created_at(store: Any) -> None:
    await _ns(store, "acme")
    first = await store.register_device("acme", "alice", "phone", "outbox", "t1")
    second = await store.register_device("acme", "alice", "phone", "outbox", "t2")
    assert second.id == first.id and second.created_at == first.created_at
    devices = await store.list_user_devices("acme", "alice", with_tokens=True)
    assert [d.token for d in devices] == ["t2"]


async def test_one_token_one_owner_per_namespace_last_wins(store: Any) -> None:
    await _ns(store, "acme", "other")
    await store.register_device("acme", "alice", "phone", "outbox", "shared")
    await store.register_device("acme", "bob", "phone", "outbox", "shared")
    assert await store.list_user_devices("acme", "alice") == []
    assert len(await store.list_user_devices("acme", "bob")) == 1
    # switching back reclaims it
    await store.register_device("acme", "alice", "phone", "outbox", "shared")
    assert await store.list_user_devices("acme", "bob") == []
    # another namespace keeps its own registration of the same token
    await store.register_device("other", "carol", "phone", "outbox", "shared")
    assert len(await store.list_user_devices("acme", "alice")) == 1
    assert len(await store.list_user_devices("other", "carol")) == 1


async def test_alert_and_voip_tokens_coexist(store: Any) -> None:
    await _ns(store, "acme")
    await store.register_device("acme", "alice", "phone", "apns", "aa11")
    await store.register_device("acme", "alice", "phone-voip", "apns_voip", "bb22")
    assert len(await store.list_user_devices("acme", "alice")) == 2


async def test_register_validation_and_unknown_namespace(store: Any) -> None:
    for args in (("", "d", "p", "t"), ("u", "", "p", "t"), ("u", "d", "", "t"), ("u", "d", "p", "")):
        with pytest.raises(ValueError):
            await store.register_device("acme", *args)
    with pytest.raises(NotFound, match="namespace"):
        await store.register_device("nope", "u", "d", "outbox", "t")


async def test_delete_device_is_scoped(store: Any) -> None:
    await _ns(store, "acme", "other")
    dev = await store.register_device("acme", "alice", "phone", "outbox", "t1")
    with pytest.raises(NotFound):
        await store.delete_device("other", dev.id)
    with pytest.raises(NotFound):
        await store.delete_device("acme", dev.id, user_id="bob")
    await store.delete_device("acme", dev.id, user_id="alice")
    with pytest.raises(NotFound):
        await store.delete_device("acme", dev.id)


async def test_prune_respects_reregistration_time(store: Any) -> None:
    await _ns(store, "acme")
    dev = await store.register_device("acme", "alice", "phone", "outbox", "t1")
    assert not await store.prune_device("acme", dev.id, registered_before=dev.updated_at - 10)
    assert await store.prune_device("acme", dev.id, registered_before=dev.updated_at + 10)
    dev2 = await store.register_device("acme", "alice", "tablet", "outbox", "t2")
    assert await store.prune_device("acme", dev2.id, registered_before=None)


async def test_credentials_sealed_and_bound_to_their_row(store: Any, backend: Backend) -> None:
    await _ns(store, "acme", "other")
    await store.put_credentials("acme", "ntfy", {"base_url": "https://ntfy.example", "auth_token": "tk_secret"})
    assert await store.get_credentials("acme", "ntfy") == {
        "base_url": "https://ntfy.example", "auth_token": "tk_secret"}
    assert await store.get_credentials("other", "ntfy") is None
    raw = await backend.fetchone("SELECT document_sealed FROM push_credentials")
    assert raw is not None
    sealed = raw[0]
    assert "tk_secret" not in sealed
    # a sealed document copied into another namespace's row does not open there
    await store.put_credentials("other", "ntfy", {"base_url": "https://x.example"})
    await backend.execute("UPDATE push_credentials SET document_sealed = ? WHERE namespace = 'other'", sealed)
    with pytest.raises(StoreError, match="does not open"):
        await store.get_credentials("other", "ntfy")
    await store.delete_credentials("acme", "ntfy")
    await store.delete_credentials("acme", "ntfy")  # idempotent
    assert await store.all_credentials("acme") == {}


async def test_push_config_roundtrip_and_redaction(store: Any) -> None:
    await _ns(store, "acme")
    saved = await store.put_push_config(PushConfig("acme", "https://ntfy.example", "tok", "expo-secret"))
    got = await store.get_push_config("acme")
    assert got is not None and got.expo_access_token == "expo-secret" and got.updated_at == saved.updated_at
    red = got.redacted()
    assert red["has_expo_access_token"] is True and "expo-secret" not in str(red)
    await store.delete_push_config("acme")
    assert await store.get_push_config("acme") is None
    with pytest.raises(NotFound):
        await store.put_push_config(PushConfig("nope", "https://x.example"))


async def test_wrong_master_key_is_a_clear_error(backend: Backend, keyring: KeyRing) -> None:
    store = await backend.open(keyring)
    await store.aclose()
    with pytest.raises(StoreError, match="right master key"):
        await backend.open(KeyRing({1: b"\x01" * 32}))


async def test_rotation_keeps_old_values_readable_and_fingerprints_stable(backend: Backend, keyring: KeyRing) -> None:
    store = await backend.open(keyring)
    await store.create_namespace("acme")
    await store.register_device("acme", "alice", "phone", "outbox", "shared")
    await store.aclose()
    rotated = KeyRing({1: bytes(range(32)), 2: b"\x02" * 32})
    store = await backend.open(rotated)
    assert (await store.list_user_devices("acme", "alice", with_tokens=True))[0].token == "shared"
    await store.register_device("acme", "bob", "phone", "outbox", "shared")  # exclusivity still matches
    assert await store.list_user_devices("acme", "alice") == []
    await store.aclose()


async def test_outbox_and_functions(store: Any) -> None:
    await _ns(store, "acme", "other")
    await store.record_delivery("acme", "alice", "phone", {"title": "hi ✓"})
    [rec] = await store.list_deliveries("acme")
    assert rec.to_dict()["message"] == {"title": "hi ✓"} and rec.user_id == "alice"
    assert await store.list_deliveries("other") == []
    meta = await store.put_function("acme", "f", b"\0asm", {"fuel": 5})
    assert meta.size == 4 and meta.module == b""
    assert (await store.get_function("acme", "f")).module == b"\0asm"
    with pytest.raises(NotFound):
        await store.get_function("other", "f")
    assert [f.name for f in await store.list_functions("acme")] == ["f"]
    await store.delete_function("acme", "f")
    with pytest.raises(NotFound):
        await store.delete_function("acme", "f")


async def test_api_keys(store: Any) -> None:
    await _ns(store, "acme", "other")
    key = await store.add_api_key("acme", "k1", "hash1")
    assert (await store.find_api_key("hash1")) == key
    assert await store.find_api_key("nope") is None
    with pytest.raises(StoreError):
        await store.add_api_key("other", "k2", "hash1")
    with pytest.raises(NotFound):
        await store.add_api_key("missing", "k3", "hash3")
    with pytest.raises(NotFound):
        await store.revoke_api_key("other", "k1")
    assert [k.id for k in await store.list_api_keys("acme")] == ["k1"]
    await store.revoke_api_key("acme", "k1")
    assert await store.find_api_key("hash1") is None


async def test_auth_settings_sealed(store: Any, backend: Backend) -> None:
    await _ns(store, "acme")
    await store.put_auth_settings("acme", {"alg": "HS256", "key": "hmac-secret-value"})
    assert (await store.get_auth_settings("acme")) == {"alg": "HS256", "key": "hmac-secret-value"}
    raw = await backend.fetchone("SELECT settings_sealed FROM namespace_auth")
    assert raw is not None
    assert "hmac-secret-value" not in raw[0]
    await store.delete_auth_settings("acme")
    assert await store.get_auth_settings("acme") is None
