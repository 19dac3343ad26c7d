"""The outbox provider and the factory's reuse of long-lived providers across rebuilds."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from wasmhost.providers import OutboxSpec, ProviderPool
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
    manager = Manager(sqlite_store, ProviderPool([OutboxSpec(sqlite_store)]))
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
    factory = ProviderPool([spec])
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
    manager = Manager(sqlite_store, ProviderPool([spec]), Defaults(credentials={"fake": {"key": "op"}}))
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

    manager = Manager(sqlite_store, ProviderPool([Broken(), OutboxSpec(sqlite_store)]))
    dispatcher = await manager.dispatcher_for("acme")
    assert list(dispatcher.providers) == ["outbox"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _tenants(store: SQLiteStore, count: int) -> list[str]:
    names = [f"t{i:03d}" for i in range(count)]
    for name in names:
        await store.create_namespace(name)
        await store.put_credentials(name, "fake", {"key": name})
        await store.register_device(name, "alice", "phone", "fake", "tok")
    return names


async def _settle() -> None:
    for _ in range(3):  # closes run as tasks of their own
        await asyncio.sleep(0)


async def test_open_providers_stay_bounded_however_many_namespaces_send(sqlite_store: SQLiteStore) -> None:
    names = await _tenants(sqlite_store, 40)
    spec = ClosingSpec()
    pool = ProviderPool([spec], max_idle=3)
    manager = Manager(sqlite_store, pool, cache_size=4)
    for name in names:
        assert (await manager.send_to_user(name, "alice", PushMessage(title="t"))).ok
        assert pool.open_count <= 4 + 3  # the cached dispatchers' providers, plus the idle ones kept
    await _settle()
    assert len(spec.built) == 40
    assert sum(not p.closed for p in spec.built) == pool.open_count == 7
    # The most recently used namespaces kept theirs: a send there builds nothing new.
    assert (await manager.send_to_user(names[-1], "alice", PushMessage(title="t"))).ok
    assert len(spec.built) == 40
    await manager.aclose()
    assert all(p.closed for p in spec.built)


async def test_a_provider_in_use_is_never_closed(sqlite_store: SQLiteStore) -> None:
    names = await _tenants(sqlite_store, 10)
    spec = ClosingSpec()
    pool = ProviderPool([spec], max_idle=0)
    manager = Manager(sqlite_store, pool, cache_size=1)
    await manager.dispatcher_for(names[0])
    slow = spec.built[0]
    slow.delay = 0.2
    sending = asyncio.ensure_future(manager.send_to_user(names[0], "alice", PushMessage(title="t")))
    await asyncio.sleep(0.02)
    # Its dispatcher leaves the cache, and its credentials change, while the send is in flight.
    await sqlite_store.put_credentials(names[0], "fake", {"key": "rotated"})
    manager.invalidate(names[0])
    for name in names[1:]:
        await manager.dispatcher_for(name)
    await _settle()
    assert not slow.closed
    assert (await sending).ok
    await _settle()
    assert slow.closed  # the last holder let go: replaced, so closed at once
    await manager.aclose()


async def test_unused_providers_close_after_the_idle_timeout(sqlite_store: SQLiteStore) -> None:
    names = await _tenants(sqlite_store, 3)
    clock = FakeClock()
    spec = ClosingSpec()
    pool = ProviderPool([spec], max_idle=10, idle_timeout=60, timer=clock)
    manager = Manager(sqlite_store, pool, ttl=10, timer=clock)
    for name in names[:2]:
        await manager.send_to_user(name, "alice", PushMessage(title="t"))
    clock.now += 30  # both dispatchers expired; the next cache write lets them go: idle from then on
    await manager.send_to_user(names[0], "alice", PushMessage(title="t"))  # rebuilt on the same provider
    await _settle()
    assert len(spec.built) == 2 and not any(p.closed for p in spec.built)
    clock.now += 45  # names[1] idle for 45 s; names[0]'s new dispatcher expires and lets go now
    await manager.send_to_user(names[2], "alice", PushMessage(title="t"))
    await _settle()
    assert not any(p.closed for p in spec.built)
    clock.now += 20  # names[1] idle for 65 s, names[0] for 20 s
    await manager.send_to_user(names[2], "alice", PushMessage(title="t"))
    await _settle()
    assert spec.built[1].closed and not spec.built[0].closed
    await manager.aclose()


async def test_tls_contexts_are_shared_per_trusted_roots(sqlite_store: SQLiteStore) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wasmhost.providers._tls import TLSContexts
    from wasmhost.providers.apns import apns_specs
    from wasmhost.testing.apns import make_ca

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    ca_pem = make_ca()[2]
    tls = TLSContexts()
    specs = apns_specs(allow_private_endpoints=True, tls=tls)
    base = {"team_id": "TEAM123456", "key_id": "KEY1234567", "bundle_id": "com.example.app", "p8_key": pem,
            "environment": "sandbox", "endpoint": "https://127.0.0.1:9"}
    pool = ProviderPool(specs)
    contexts = []
    for i in range(30):
        doc = specs[0].validate({**base, "ca_bundle": ca_pem} if i % 2 else base)
        providers = await pool.build(ResolvedConfig(namespace=f"t{i}", credentials={"apns": doc}))
        contexts += [p.client.ssl_context for p in providers]  # type: ignore[attr-defined]
    assert len(contexts) == 60  # apns and apns_voip for each namespace
    assert len({id(c) for c in contexts}) == 2 and tls.built == 2  # the public roots, and the pinned CA
    await pool.aclose()


def test_importing_the_providers_leaves_logging_alone_and_the_wiring_quiets_the_http_libraries(
    tmp_path: Any,
) -> None:
    import os
    import subprocess
    import sys

    script = (
        "import asyncio, logging\n"
        "import wasmhost.providers, wasmhost.services\n"
        "names = ('httpx', 'httpcore', 'hpack', 'h2')\n"
        "assert all(logging.getLogger(n).level == logging.NOTSET for n in names)\n"
        "logging.getLogger('h2').setLevel(logging.DEBUG)  # the operator's own choice is kept\n"
        "async def main():\n"
        "    svc = await wasmhost.services.Services.open(wasmhost.services.Settings(db_url=DB))\n"
        "    await svc.aclose()\n"
        "asyncio.run(main())\n"
        "assert [logging.getLogger(n).level for n in names] == [30, 30, 30, 10]\n"
    )
    env = {**os.environ, "WASMHOST_MASTER_KEY": "1:" + "ab" * 32}
    prelude = f"DB = 'sqlite:///{tmp_path}/w.db'\n"
    done = subprocess.run([sys.executable, "-c", prelude + script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
