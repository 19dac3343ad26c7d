"""What nearly every request reads, kept in this process: API keys, function metadata, user-token settings.

Each entry is dropped as soon as the store's change feed announces a change to it — from this process,
another worker (the SQLite ring, `store.relay`) or another gateway (PostgreSQL ``NOTIFY``) — and in any
case when its TTL runs out, which bounds staleness if a notification is ever lost. A read that was
already on its way when an invalidation arrived does not put its (possibly older) answer in the cache.
Misses are not cached: an unknown key or function is read again next time, so creating one takes
effect at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from ..store import Change, Store
from ..store.base import ApiKey, FunctionRecord

__all__ = ["ReadCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Entries per cache; the least recently used is dropped beyond it.
MAX_ENTRIES = 10_000


class _Cache(Generic[K, V]):
    def __init__(self, ttl: float, namespace_of: Callable[[K, V], str]) -> None:
        self._entries: TTLCache[K, V] = TTLCache(maxsize=MAX_ENTRIES, ttl=ttl)
        self._namespace_of = namespace_of
        self._generation = 0
        self.hits = 0
        self.misses = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        generation = self._generation
        value = await load()
        if value is not None and generation == self._generation:
            self._entries[key] = value
        return value

    def drop(self, match: Callable[[K, V], bool] | None = None) -> None:
        """Drop every entry, or those ``match`` selects; loads under way are not cached."""
        self._generation += 1
        if match is None:
            self._entries.clear()
            return
        for key in [k for k, v in list(self._entries.items()) if match(k, v)]:
            self._entries.pop(key, None)

    def drop_namespace(self, namespace: str) -> None:
        self.drop(lambda key, value: self._namespace_of(key, value) == namespace)


class ReadCache:
    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        # API keys by hash; a change names the key's namespace (and id), so a revocation drops its namespace's keys.
        self.api_keys: _Cache[str, ApiKey] = _Cache(ttl, lambda _hash, key: key.namespace)
        self.functions: _Cache[tuple[str, str], FunctionRecord] = _Cache(ttl, lambda k, _v: k[0])
        self.auth: _Cache[str, dict[str, Any]] = _Cache(ttl, lambda ns, _v: ns)

    async def api_key(self, key_hash: str) -> ApiKey | None:
        return await self.api_keys.get(key_hash, lambda: self.store.find_api_key(key_hash))

    async def function(self, namespace: str, name: str) -> FunctionRecord:
        """The function's metadata (not its module); `NotFound` from the store when there is none."""
        async def load() -> FunctionRecord:
            return await self.store.get_function(namespace, name, with_module=False)

        found = await self.functions.get((namespace, name), load)
        assert found is not None
        return found

    async def auth_settings(self, namespace: str) -> dict[str, Any] | None:
        return await self.auth.get(namespace, lambda: self.store.get_auth_settings(namespace))

    def on_change(self, change: Change) -> None:
        if change.is_everything:
            for cache in (self.api_keys, self.functions, self.auth):
                cache.drop()
        elif change.kind == "api_key":
            self.api_keys.drop_namespace(change.namespace)
        elif change.kind == "function":
            if change.key:
                self.functions.drop(lambda k, _v: k == (change.namespace, change.key))
            else:
                self.functions.drop_namespace(change.namespace)
        elif change.kind == "auth":
            self.auth.drop_namespace(change.namespace)
