"""The one entry point for sending: per-namespace config over operator defaults, cached dispatchers.

Every send path (guest host function, CLI, HTTP) goes through `Manager.send_to_user`. The first send
of a namespace builds its dispatcher (config + credentials read, providers built); later sends reuse
it from an LRU with a TTL bound. Changes invalidate at once (`invalidate`); the TTL is the safety net
for changes this process was not told about. Dispatchers that leave the cache give their providers
back to the factory once their last send is done, so providers follow the namespaces in use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..store.base import CredentialStore, DeviceStore, PushConfigStore, StoreError
from .accepted import Accepted
from .delivery import DeliveryQueue, QueueSettings, QueueStore
from .dispatcher import Dispatcher, RetryPolicy
from .errors import PushNotConfigured, PushUnavailable
from .message import PushMessage
from .observer import PushObserver
from .provider import Provider, ProviderFactory, ResolvedConfig
from .report import SendReport

__all__ = ["DEFAULT_CACHE_SIZE", "DEFAULT_CACHE_TTL", "Defaults", "Manager", "PushStore"]

LOG = logging.getLogger("wasmhost.push")

DEFAULT_CACHE_SIZE = 256
DEFAULT_CACHE_TTL = 30.0


class PushStore(PushConfigStore, CredentialStore, DeviceStore, Protocol):
    """What the manager reads: flat config, credentials and devices."""


def _tenant_target(document: Mapping[str, Any], url_field: str) -> bool:
    """Whether a tenant's credentials document picks where (or under which roots) requests go."""
    return bool(document.get(url_field) or document.get("ca_bundle"))


@dataclass(frozen=True)
class Defaults:
    """Operator defaults, used where a namespace has not set its own. Operator URLs are trusted."""

    ntfy_base_url: str = ""
    ntfy_auth_token: str = ""
    expo_access_token: str = ""
    #: Default credentials documents by provider (e.g. ``{"outbox": {}}`` for a demo fleet).
    credentials: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.ntfy_base_url or self.expo_access_token or self.credentials)


class _Lease:
    """How many users hold a dispatcher (the cache, each send, waiters of its build), and the providers
    the factory lent it, given back when the count drops to zero."""

    __slots__ = ("count", "providers")

    def __init__(self, providers: tuple[Provider, ...]) -> None:
        self.count = 0
        self.providers = providers


class _Build:
    __slots__ = ("held", "task", "waiters")

    def __init__(self, task: asyncio.Task[Dispatcher]) -> None:
        self.task = task
        self.waiters = 0  # callers awaiting the build
        self.held: Dispatcher | None = None  # the result, held for those callers until the last one has its own hold


class Manager:
    """Safe for concurrent use from one event loop.

    A dispatcher is in use while it is cached or a send runs on it; when neither is true any more, its
    providers go back to the factory (`ProviderFactory.release`), which may then close them.
    """

    def __init__(
        self,
        store: PushStore,
        factory: ProviderFactory,
        defaults: Defaults | None = None,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        ttl: float = DEFAULT_CACHE_TTL,
        timer: Callable[[], float] = time.monotonic,
        retry: RetryPolicy | None = None,
        observer: PushObserver | None = None,
        queue: QueueStore | None = None,
        queue_settings: QueueSettings | None = None,
    ) -> None:
        if cache_size < 1 or ttl <= 0:
            raise ValueError("cache_size must be at least 1 and ttl positive")
        self.store = store
        self.factory = factory
        self.defaults = defaults or Defaults()
        self.retry = retry or RetryPolicy()
        self.observer = observer or PushObserver()
        self.cache_size = cache_size
        self._ttl = ttl
        self._timer = timer
        # Least recently used first; each entry is (expiry time, dispatcher).
        self._cache: OrderedDict[str, tuple[float, Dispatcher]] = OrderedDict()
        self._leases: dict[Dispatcher, _Lease] = {}
        self._building: dict[str, _Build] = {}
        #: Durable delivery (see `push.delivery`); without a queue store, sends live only in memory.
        self.queue = DeliveryQueue(queue, self, queue_settings) if queue is not None else None

    @property
    def device_store(self) -> DeviceStore:
        return self.store

    @property
    def ttl(self) -> float:
        return self._ttl

    def set_cache_ttl(self, ttl: float) -> None:
        """Change the staleness bound; entries already cached keep the bound they were built under."""
        if ttl > 0:
            self._ttl = ttl

    async def send_to_user(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None,
        idempotency_key: str = "", wait: bool = True,
    ) -> SendReport:
        """Send to every device of the user in `namespace`: accepted durably when there is a queue, then
        delivered within `deadline` (unless not `wait`). Raises `PushNotConfigured`, `PushUnavailable`,
        `SendConflict` and `QueueFull`."""
        accepted = await self.accept(namespace, user_id, message, deadline=deadline,
                                     idempotency_key=idempotency_key, wait=wait)
        return await accepted.deliver()

    async def accept(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None,
        idempotency_key: str = "", wait: bool = True,
    ) -> Accepted:
        """The first half of `send_to_user`: the send accepted (committed, when there is a queue), and what
        is left to deliver within `deadline`. Raises `PushNotConfigured`, `PushUnavailable`, `SendConflict`
        and `QueueFull`, each before anything was stored. Holds no timeout or cancel scope across an await:
        the runtime may finish it in another task than the one that started it (`runtime.context`)."""
        dispatcher = await self._checkout(namespace)
        queue = self.queue
        if queue is None:  # in memory: accepted once a dispatcher will take it
            return Accepted(deliver=lambda: self._deliver_in_memory(dispatcher, namespace, user_id, message,
                                                                    deadline),
                            release=lambda: self._drop(dispatcher))
        try:
            outcome = await queue.accept(dispatcher, namespace, user_id, message, deadline=deadline,
                                         idempotency_key=idempotency_key, wait=wait)
        except BaseException:
            self._drop(dispatcher)
            raise
        if isinstance(outcome, SendReport):
            self._drop(dispatcher)
            return Accepted(outcome)
        return Accepted(send_id=outcome.send_id, deliver=lambda: queue.deliver(outcome),
                        release=lambda: self._drop(dispatcher))

    async def _deliver_in_memory(self, dispatcher: Dispatcher, namespace: str, user_id: str,
                                 message: PushMessage, deadline: float | None) -> SendReport:
        report = await dispatcher.send_to_user(namespace, user_id, message, deadline=deadline)
        for result in report.results:  # nothing retries a send that lives only in memory
            if result.state == "queued":
                result.state = "failed"
        return report

    async def is_configured(self, namespace: str) -> bool:
        """Whether a send would find a provider: defaults, flat config or credentials all count."""
        try:
            self._drop(await self._checkout(namespace))
        except PushNotConfigured:
            return False
        return True

    async def configured_providers(self, namespace: str) -> list[str]:
        """The providers a send in `namespace` would use (empty when push is not configured)."""
        try:
            dispatcher = await self.dispatcher_for(namespace)
        except PushNotConfigured:
            return []
        return sorted(dispatcher.providers)

    def invalidate(self, namespace: str) -> None:
        """Drop the namespace's dispatcher (and any build under way) so the next send reads fresh config."""
        self._evict(namespace)
        self._building.pop(namespace, None)

    def invalidate_all(self) -> None:
        for namespace in list(self._cache):
            self._evict(namespace)
        self._building.clear()

    def cached_namespaces(self) -> list[str]:
        now = self._timer()
        return [namespace for namespace, (expires, _) in self._cache.items() if expires > now]

    async def dispatcher_for(self, namespace: str) -> Dispatcher:
        """The namespace's current dispatcher, for inspection: sends go through `send_to_user`, which
        keeps the dispatcher's providers open while it runs."""
        dispatcher = await self._checkout(namespace)
        self._drop(dispatcher)
        return dispatcher

    @asynccontextmanager
    async def held(self, namespace: str) -> AsyncIterator[Dispatcher]:
        """The namespace's dispatcher, its providers kept open until the block ends."""
        dispatcher = await self._checkout(namespace)
        try:
            yield dispatcher
        finally:
            self._drop(dispatcher)

    async def _checkout(self, namespace: str) -> Dispatcher:
        """The namespace's dispatcher, held for the caller, who must `_drop` it."""
        cached = self._cached(namespace)
        if cached is not None:
            self.observer.dispatcher_cache(namespace, "hit")
            self._hold(cached)
            return cached
        self.observer.dispatcher_cache(namespace, "miss")
        build = self._building.get(namespace)
        if build is None:
            # Concurrent misses share one build. It runs as its own task so a cancelled caller does
            # not cancel it for the others.
            build = _Build(asyncio.ensure_future(self._build(namespace)))
            self._building[namespace] = build
            build.task.add_done_callback(lambda _: self._settle(namespace, build))
        build.waiters += 1
        try:
            dispatcher = await asyncio.shield(build.task)
            self._hold(dispatcher)
            return dispatcher
        finally:
            build.waiters -= 1
            if build.waiters == 0 and build.held is not None:
                held, build.held = build.held, None
                self._drop(held)

    def _settle(self, namespace: str, build: _Build) -> None:
        task = build.task
        current = self._building.get(namespace) is build
        if current:
            del self._building[namespace]
        if task.cancelled() or task.exception() is not None:
            return
        dispatcher = task.result()
        build.held = dispatcher  # the build's own hold (`_build`) now keeps it for the waiters
        # Only the build that is still current may be cached: an invalidate during the build
        # removed it from `_building`, and its (possibly stale) result must not outlive that.
        if current:
            self._store(namespace, dispatcher)
        if build.waiters == 0:
            build.held = None
            self._drop(dispatcher)

    def _cached(self, namespace: str) -> Dispatcher | None:
        entry = self._cache.get(namespace)
        if entry is None:
            return None
        if entry[0] <= self._timer():
            self._evict(namespace)
            return None
        self._cache.move_to_end(namespace)
        return entry[1]

    def _store(self, namespace: str, dispatcher: Dispatcher) -> None:
        self._evict(namespace)
        now = self._timer()
        for stale in [ns for ns, (expires, _) in self._cache.items() if expires <= now]:
            self._evict(stale)
        while len(self._cache) >= self.cache_size:
            self._evict(next(iter(self._cache)))
        self._hold(dispatcher)
        self._cache[namespace] = (now + self._ttl, dispatcher)

    def _evict(self, namespace: str) -> None:
        entry = self._cache.pop(namespace, None)
        if entry is not None:
            self._drop(entry[1])

    def _hold(self, dispatcher: Dispatcher) -> None:
        self._leases[dispatcher].count += 1

    def _drop(self, dispatcher: Dispatcher) -> None:
        lease = self._leases[dispatcher]
        lease.count -= 1
        if lease.count == 0:
            del self._leases[dispatcher]
            self.factory.release(lease.providers)

    async def resolve(self, namespace: str) -> ResolvedConfig:
        """The namespace's effective config: defaults, then its own flat fields, then its credentials."""
        d = self.defaults
        try:
            own = await self.store.get_push_config(namespace)
            credentials = dict(await self.store.all_credentials(namespace))
        except StoreError as exc:
            LOG.error("push: reading config for namespace %s failed: %s", namespace, exc)
            raise PushUnavailable("reading the namespace's push configuration failed") from None
        merged: dict[str, Mapping[str, Any]] = {**d.credentials, **credentials}
        tenant_url = bool(own and own.ntfy_base_url)
        # The operator's default tokens go only to the operator's servers: never to a URL the tenant chose,
        # nor under roots the tenant pinned (its own CA could then vouch for the operator's host).
        ntfy_doc, expo_doc = credentials.get("ntfy") or {}, credentials.get("expo") or {}
        ntfy_default = "" if tenant_url or _tenant_target(ntfy_doc, "base_url") else d.ntfy_auth_token
        expo_default = "" if _tenant_target(expo_doc, "endpoint") else d.expo_access_token
        return ResolvedConfig(
            namespace=namespace,
            ntfy_base_url=own.ntfy_base_url if tenant_url and own else d.ntfy_base_url,
            ntfy_auth_token=(own.ntfy_auth_token if own and own.ntfy_auth_token else ntfy_default),
            ntfy_base_url_tenant=tenant_url,
            expo_access_token=(own.expo_access_token if own and own.expo_access_token else expo_default),
            credentials=merged,
            operator_providers=frozenset(p for p in d.credentials if p not in credentials),
        )

    async def _build(self, namespace: str) -> Dispatcher:
        self.observer.dispatcher_cache(namespace, "build")
        config = await self.resolve(namespace)
        providers = await self.factory.build(config)
        if not providers:
            raise PushNotConfigured(namespace)
        dispatcher = Dispatcher(self.store, providers, retry=self.retry, observer=self.observer)
        # Held from the moment it exists, until `_settle` hands the hold on: a caller that finds the build
        # done before `_settle` has run holds and drops it in between, and must not release its providers.
        lease = self._leases[dispatcher] = _Lease(tuple(providers))
        lease.count = 1
        return dispatcher

    async def aclose(self) -> None:
        """Close the providers' long-lived clients; the manager is unusable afterwards."""
        if self.queue is not None:
            await self.queue.aclose()
        for build in list(self._building.values()):
            build.task.cancel()
        self.invalidate_all()
        await self.factory.aclose()
