"""Manager: defaults vs overrides, caching, TTL, invalidation, LRU, isolation, single-flight builds."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from tests.conftest import RecordingProvider
from wasmhost.push import Defaults, Manager, PushMessage, PushNotConfigured, PushUnavailable, ResolvedConfig
from wasmhost.store import PushConfig, SQLiteStore, StoreError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingFactory:
    """Builds one RecordingProvider per configured flat field / credentials doc; remembers configs."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.configs: list[ResolvedConfig] = []
        self.delay = delay
        self.fail = fail
        self.closed = False
        self.released: list[Any] = []

    async def build(self, config: ResolvedConfig) -> list[Any]:
        self.configs.append(config)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("factory broke")
        providers = []
        if config.ntfy_base_url:
            providers.append(RecordingProvider("ntfy"))
        if config.expo_access_token:
            providers.append(RecordingProvider("expo"))
        providers += [RecordingProvider(name) for name in config.credentials]
        return providers

    def release(self, providers: Any) -> None:
        self.released.extend(providers)

    async def aclose(self) -> None:
        self.closed = True


async def _setup(store: SQLiteStore, *namespaces: str) -> None:
    for ns in namespaces:
        await store.create_namespace(ns)


async def test_namespace_without_config_uses_defaults(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory, Defaults(ntfy_base_url="https://ntfy.operator"))
    await manager.dispatcher_for("acme")
    [cfg] = factory.configs
    assert cfg.ntfy_base_url == "https://ntfy.operator" and not cfg.ntfy_base_url_tenant


async def test_namespace_config_overrides_defaults_field_by_field(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme", "beta")
    await sqlite_store.put_push_config(PushConfig("acme", ntfy_base_url="https://ntfy.tenant"))
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory, Defaults(ntfy_base_url="https://ntfy.operator", ntfy_auth_token="op",
                                                      expo_access_token="expo-op"))
    await manager.dispatcher_for("acme")
    await manager.dispatcher_for("beta")
    acme, beta = factory.configs
    assert acme.ntfy_base_url == "https://ntfy.tenant" and acme.ntfy_base_url_tenant
    # The operator's ntfy token stays with the operator's server: acme chose its own.
    assert acme.ntfy_auth_token == "" and acme.expo_access_token == "expo-op"
    assert beta.ntfy_auth_token == "op"
    assert beta.ntfy_base_url == "https://ntfy.operator" and not beta.ntfy_base_url_tenant


async def test_not_configured_without_config_or_defaults(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    manager = Manager(sqlite_store, CountingFactory())
    with pytest.raises(PushNotConfigured, match="acme"):
        await manager.send_to_user("acme", "alice", PushMessage(title="x"))
    assert not await manager.is_configured("acme")


async def test_is_configured_counts_credentials(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    manager = Manager(sqlite_store, CountingFactory())
    assert not await manager.is_configured("acme")
    await sqlite_store.put_credentials("acme", "apns", {"team_id": "x"})
    manager.invalidate("acme")
    assert await manager.is_configured("acme")


async def test_cache_hit_builds_once(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}))
    for _ in range(5):
        await manager.send_to_user("acme", "alice", PushMessage(title="x"))
    assert len(factory.configs) == 1


async def test_ttl_expiry_rebuilds(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    clock = FakeClock()
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}), ttl=30, timer=clock)
    first = await manager.dispatcher_for("acme")
    clock.now += 29
    assert await manager.dispatcher_for("acme") is first
    clock.now += 2
    assert await manager.dispatcher_for("acme") is not first
    assert len(factory.configs) == 2


async def test_invalidate_rebuilds_with_fresh_config(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory)
    await sqlite_store.put_push_config(PushConfig("acme", ntfy_base_url="https://v1.example"))
    await manager.dispatcher_for("acme")
    await sqlite_store.put_push_config(PushConfig("acme", ntfy_base_url="https://v2.example"))
    await manager.dispatcher_for("acme")
    assert [c.ntfy_base_url for c in factory.configs] == ["https://v1.example"]
    manager.invalidate("acme")
    await manager.dispatcher_for("acme")
    assert [c.ntfy_base_url for c in factory.configs] == ["https://v1.example", "https://v2.example"]


async def test_lru_evicts_least_recently_used_at_cap(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "a", "b", "c")
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}), cache_size=2)
    await manager.dispatcher_for("a")
    await manager.dispatcher_for("b")
    await manager.dispatcher_for("a")  # a is now most recent
    await manager.dispatcher_for("c")  # evicts b
    assert sorted(manager.cached_namespaces()) == ["a", "c"]
    await manager.dispatcher_for("a")
    assert len(factory.configs) == 3
    await manager.dispatcher_for("b")
    assert len(factory.configs) == 4


async def test_default_cache_cap_is_256(sqlite_store: SQLiteStore) -> None:
    manager = Manager(sqlite_store, CountingFactory(), Defaults(credentials={"outbox": {}}))
    for i in range(300):
        await manager.dispatcher_for(f"ns{i}")
    assert len(manager.cached_namespaces()) == 256


async def test_per_namespace_isolation(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "a", "b")
    await sqlite_store.put_credentials("a", "apns", {"k": 1})
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory, Defaults(ntfy_base_url="https://op.example"))
    da = await manager.dispatcher_for("a")
    db = await manager.dispatcher_for("b")
    assert sorted(da.providers) == ["apns", "ntfy"] and sorted(db.providers) == ["ntfy"]


async def test_fifty_concurrent_first_sends_share_one_build(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    factory = CountingFactory(delay=0.05)
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}))
    dispatchers = await asyncio.gather(*(manager.dispatcher_for("acme") for _ in range(50)))
    assert len(factory.configs) == 1
    assert len({id(d) for d in dispatchers}) == 1


async def test_failed_build_is_not_cached(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    factory = CountingFactory(fail=True)
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await manager.dispatcher_for("acme")
    factory.fail = False
    await manager.dispatcher_for("acme")
    assert len(factory.configs) == 3


async def test_invalidate_during_build_does_not_cache_stale_result(sqlite_store: SQLiteStore) -> None:
    await _setup(sqlite_store, "acme")
    factory = CountingFactory(delay=0.05)
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}))
    first = asyncio.ensure_future(manager.dispatcher_for("acme"))
    await asyncio.sleep(0.01)
    manager.invalidate("acme")
    await first
    assert manager.cached_namespaces() == []
    await manager.dispatcher_for("acme")
    assert len(factory.configs) == 2


async def test_cancelled_caller_does_not_cancel_shared_build(sqlite_store: SQLiteStore) -> None:
    factory = CountingFactory(delay=0.05)
    manager = Manager(sqlite_store, factory, Defaults(credentials={"outbox": {}}))
    a = asyncio.ensure_future(manager.dispatcher_for("acme"))
    b = asyncio.ensure_future(manager.dispatcher_for("acme"))
    await asyncio.sleep(0.01)
    a.cancel()
    assert (await b) is not None
    assert len(factory.configs) == 1


class BrokenStore:
    """A store whose reads fail: a read error must be an error, never a silently missing provider."""

    async def get_push_config(self, namespace: str) -> PushConfig | None:
        return None

    async def all_credentials(self, namespace: str) -> Mapping[str, dict[str, Any]]:
        raise StoreError("disk on fire")


async def test_store_read_error_is_an_error_and_not_cached() -> None:
    factory = CountingFactory()
    manager = Manager(BrokenStore(), factory, Defaults(ntfy_base_url="https://op.example"))  # type: ignore[arg-type]
    with pytest.raises(PushUnavailable):
        await manager.dispatcher_for("acme")
    assert factory.configs == [] and manager.cached_namespaces() == []


async def test_aclose_closes_factory(sqlite_store: SQLiteStore) -> None:
    factory = CountingFactory()
    manager = Manager(sqlite_store, factory)
    await manager.aclose()
    assert factory.closed


def test_bad_cache_settings_rejected(sqlite_store: SQLiteStore) -> None:
    with pytest.raises(ValueError):
        Manager(sqlite_store, CountingFactory(), cache_size=0)
    with pytest.raises(ValueError):
        Manager(sqlite_store, CountingFactory(), ttl=0)


class _InstantStore:
    """Answers without suspending, so a build finishes within its task's first step."""

    async def get_push_config(self, namespace: str) -> None:
        return None

    async def all_credentials(self, namespace: str) -> dict[str, Any]:
        return {"outbox": {}}


async def test_callers_that_find_the_build_done_before_it_settles_keep_its_providers() -> None:
    """Two sends arrive after the build finished but before its done-callback ran; the first holds and
    drops the dispatcher in one go. The second must still find it held (it raised KeyError, a 500)."""
    factory = CountingFactory()
    manager = Manager(_InstantStore(), factory, Defaults())  # type: ignore[arg-type]

    async def use() -> None:
        async with manager.held("acme"):
            pass

    first = asyncio.ensure_future(use())
    await asyncio.sleep(0)  # `first` starts the build and waits for it
    late = [asyncio.ensure_future(use()) for _ in range(2)]  # run after the build, before its callbacks
    await asyncio.gather(first, *late)
    assert factory.released == []  # the cache still holds the dispatcher: nothing was given back
    assert (await manager.dispatcher_for("acme")) is (await manager.dispatcher_for("acme"))
