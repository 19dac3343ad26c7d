"""`rotate_keys`: every sealed value moves to the newest master key while the store keeps serving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.store.conftest import Backend
from wasmhost.store import KeyRing, PushConfig, rotate_keys
from wasmhost.store.rotation import sealed_columns

OLD = bytes(range(32))
NEW = b"\x02" * 32


async def _populate(store: Any, devices: int = 25) -> None:
    await store.create_namespace("acme")
    await store.create_namespace("other")
    await store.put_push_config(PushConfig("acme", "https://ntfy.example", "ntfy-secret", "expo-secret"))
    await store.put_push_config(PushConfig("other", "https://ntfy.example"))  # empty secrets stay empty
    await store.put_credentials("acme", "ntfy", {"base_url": "https://ntfy.example", "auth_token": "tk"})
    await store.put_credentials("other", "outbox", {})
    await store.put_auth_settings("acme", {"alg": "HS256", "key": "hmac-secret"})
    store.max_devices_per_user = devices  # five users share them: more each than the default cap allows
    for i in range(devices):
        await store.register_device("acme", f"user{i % 5}", f"dev{i}", "outbox", f"token-{i}")


async def _sealed_values(backend: Backend) -> list[str]:
    values = []
    for column in sealed_columns():
        where = f" WHERE {column.where}" if column.where else ""
        rows = await backend.fetchall(f"SELECT {column.column} FROM {column.table}{where}")
        values += [str(r[0]) for r in rows if r[0]]
    return values


async def test_rotation_reseals_everything_and_keeps_fingerprints(backend: Backend) -> None:
    old_store = await backend.open(KeyRing({1: OLD}))
    await _populate(old_store)
    fp_before = old_store.token_fingerprint("acme", "token-3")
    raw_fp = await backend.fetchone("SELECT token_fp FROM devices WHERE device_id = 'dev3'")
    await old_store.aclose()

    both = KeyRing({1: OLD, 2: NEW})
    store = await backend.open(both)
    report = await rotate_keys(store, both, batch_size=7)  # several batches per table
    # 1 fingerprint key + 2 config secrets + 2 credentials + 1 auth + 25 tokens
    assert report.resealed == 31 and report.complete and report.remaining == 0
    assert report.by_column["devices.token_sealed"] == 25
    assert all(v.startswith("wh1:2:") for v in await _sealed_values(backend))
    assert await backend.fetchone("SELECT token_fp FROM devices WHERE device_id = 'dev3'") == raw_fp
    again = await rotate_keys(store, both)
    assert again.resealed == 0 and again.already_current == 31
    await store.aclose()

    # the old key can now be retired: a store holding only the new key reads everything
    new_only = await backend.open(KeyRing({2: NEW}))
    assert new_only.token_fingerprint("acme", "token-3") == fp_before
    assert (await new_only.get_push_config("acme")).ntfy_auth_token == "ntfy-secret"
    assert (await new_only.get_credentials("acme", "ntfy"))["auth_token"] == "tk"
    assert (await new_only.get_auth_settings("acme"))["key"] == "hmac-secret"
    tokens = {d.token for u in range(5) for d in await new_only.list_user_devices("acme", f"user{u}", True)}
    assert tokens == {f"token-{i}" for i in range(25)}
    # exclusivity still matches by fingerprint after rotation
    await new_only.register_device("acme", "mallory", "x", "outbox", "token-3")
    assert "dev3" not in [d.device_id for d in await new_only.list_user_devices("acme", "user3")]


async def test_rotation_while_serving_never_breaks_a_read_or_loses_a_write(backend: Backend) -> None:
    old_store = await backend.open(KeyRing({1: OLD}))
    await _populate(old_store, devices=200)
    await old_store.aclose()
    both = KeyRing({1: OLD, 2: NEW})
    serving, rotating = await backend.open(both), await backend.open(both)
    stop = asyncio.Event()
    reads = 0
    writes = 0

    async def serve() -> None:
        nonlocal reads, writes
        while not stop.is_set():
            for u in range(5):
                devices = await serving.list_user_devices("acme", f"user{u}", with_tokens=True)
                assert all(d.token.startswith("token-") for d in devices)
                reads += 1
            writes += 1
            document = {"base_url": "https://ntfy.example", "auth_token": f"w{writes}"}
            await serving.put_credentials("acme", "ntfy", document)
            await asyncio.sleep(0)

    server = asyncio.create_task(serve())
    report = await rotate_keys(rotating, both, batch_size=16)
    stop.set()
    await server
    assert reads > 0 and report.complete
    # the last write made during the rotation is what is stored (never replaced by an older value)
    assert (await serving.get_credentials("acme", "ntfy"))["auth_token"] == f"w{writes}"


async def test_values_written_by_a_gateway_without_the_new_key_are_reported(backend: Backend) -> None:
    lagging = await backend.open(KeyRing({1: OLD}))
    await _populate(lagging, devices=3)
    both = KeyRing({1: OLD, 2: NEW})
    report = await rotate_keys(await backend.open(both), both)
    assert report.complete
    await lagging.put_credentials("acme", "outbox", {})  # still sealing with version 1
    report = await rotate_keys(await backend.open(both), KeyRing({2: NEW}))  # and a ring missing version 1
    assert report.unreadable == 1 and report.remaining == 1 and not report.complete
    assert "secret" not in str(report.to_dict())


async def test_rotation_rejects_bad_batch_sizes(backend: Backend) -> None:
    store = await backend.open(KeyRing({1: OLD}))
    with pytest.raises(ValueError, match="batch_size"):
        await rotate_keys(store, KeyRing({1: OLD}), batch_size=0)


async def test_rotation_refuses_a_store_it_cannot_walk() -> None:
    with pytest.raises(TypeError, match="does not support key rotation"):
        await rotate_keys(object(), KeyRing({1: OLD}))
