"""Wiring: the store, the push manager and the runtime, assembled once for the CLI, the gateway or an embedder.

Nothing below this module imports it; it is the one place that knows every part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ._env import env_flag, env_float, env_int, env_str
from .providers import ProviderPool, default_specs, quiet_http_loggers
from .push import Defaults, Manager, PushObserver, QueueSettings
from .push.credentials import ProviderSpec
from .push.delivery import QueueStore
from .push.webhooks import WebhookSettings, WebhookStore, WebhookWorker
from .runtime import CompileLimits, Runtime, SendLimiter
from .runtime.cache import DEFAULT_MAX_DISK_BYTES
from .runtime.runtime import DEFAULT_COMPILE_SLOTS
from .store import (
    DEFAULT_DB_URL,
    DEFAULT_MAX_DEVICES_PER_USER,
    Change,
    ChangeFeed,
    HasChangeFeed,
    KeyRing,
    Store,
    load_keyring,
    open_store,
    state_dir_for,
)
from .store.private import private_dir

__all__ = ["Services", "Settings"]

LOG = logging.getLogger("wasmhost")

#: Changes that make a namespace's cached dispatcher stale. Devices are read per send and functions per
#: invocation (the compiled-module cache is keyed by module hash), so those changes have nothing to drop here.
DISPATCHER_KINDS = frozenset({"push_config", "credentials"})


@dataclass
class Settings:
    """Operator settings. `from_env` reads ``WASMHOST_*`` variables; embedders and tests build one directly."""

    db_url: str = DEFAULT_DB_URL
    defaults: Defaults = field(default_factory=Defaults)
    dispatcher_ttl: float = 30.0
    allow_private_endpoints: bool = False
    #: Devices one user may register per namespace (``WASMHOST_MAX_DEVICES_PER_USER``).
    max_devices_per_user: int = DEFAULT_MAX_DEVICES_PER_USER
    queue: QueueSettings = field(default_factory=QueueSettings)
    #: Bounds on each compile (``WASMHOST_MAX_MODULE_FUNCTIONS``, ``WASMHOST_COMPILE_CPU_SECONDS``, …).
    compile_limits: CompileLimits = field(default_factory=CompileLimits)
    #: Compiles at once (``WASMHOST_COMPILE_SLOTS``); one namespace holds at most one.
    compile_slots: int = DEFAULT_COMPILE_SLOTS
    #: Cap on the compiled-artifact folder, least recently used deleted first (``WASMHOST_MODULE_CACHE_MB``).
    module_cache_bytes: int = DEFAULT_MAX_DISK_BYTES
    #: Tenant webhooks (``WASMHOST_WEBHOOK_*``; events are kept as long as sends, ``WASMHOST_SEND_RETENTION``).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    @classmethod
    def from_env(cls, db_url: str | None = None) -> Settings:
        outbox = env_flag("WASMHOST_DEFAULT_OUTBOX", False)
        return cls(
            db_url=db_url or env_str("WASMHOST_DB", DEFAULT_DB_URL),
            defaults=Defaults(
                ntfy_base_url=env_str("WASMHOST_DEFAULT_NTFY_URL"),
                ntfy_auth_token=env_str("WASMHOST_DEFAULT_NTFY_TOKEN"),
                expo_access_token=env_str("WASMHOST_DEFAULT_EXPO_TOKEN"),
                credentials={"outbox": {}} if outbox else {},
            ),
            dispatcher_ttl=env_float("WASMHOST_DISPATCHER_TTL", cls.dispatcher_ttl),
            allow_private_endpoints=env_flag("WASMHOST_ALLOW_PRIVATE_ENDPOINTS", False),
            max_devices_per_user=env_int("WASMHOST_MAX_DEVICES_PER_USER", cls.max_devices_per_user),
            queue=QueueSettings(
                default_ttl=env_float("WASMHOST_SEND_DEFAULT_TTL", QueueSettings.default_ttl),
                max_queued=env_int("WASMHOST_MAX_QUEUED_DELIVERIES", QueueSettings.max_queued),
                lease_seconds=env_float("WASMHOST_DELIVERY_LEASE", QueueSettings.lease_seconds),
                poll_interval=env_float("WASMHOST_DELIVERY_POLL", QueueSettings.poll_interval),
                retry_base=env_float("WASMHOST_RETRY_BASE", QueueSettings.retry_base),
                retry_max=env_float("WASMHOST_RETRY_MAX", QueueSettings.retry_max),
                retention=env_float("WASMHOST_SEND_RETENTION", QueueSettings.retention),
            ),
            compile_limits=CompileLimits.from_env(),
            compile_slots=env_int("WASMHOST_COMPILE_SLOTS", DEFAULT_COMPILE_SLOTS),
            module_cache_bytes=env_int("WASMHOST_MODULE_CACHE_MB", DEFAULT_MAX_DISK_BYTES >> 20) << 20,
            webhooks=WebhookSettings(
                disable_after=env_float("WASMHOST_WEBHOOK_DISABLE_AFTER", WebhookSettings.disable_after),
                max_pending=env_int("WASMHOST_WEBHOOK_MAX_PENDING", WebhookSettings.max_pending),
                timeout=env_float("WASMHOST_WEBHOOK_TIMEOUT", WebhookSettings.timeout),
                retry_base=env_float("WASMHOST_WEBHOOK_RETRY_BASE", WebhookSettings.retry_base),
                retry_max=env_float("WASMHOST_WEBHOOK_RETRY_MAX", WebhookSettings.retry_max),
                retention=env_float("WASMHOST_SEND_RETENTION", WebhookSettings.retention),
            ),
        )

    @property
    def state_dir(self) -> Path:
        path = state_dir_for(self.db_url)
        assert path is not None
        return path


class Services:
    """The assembled parts (`store`, `manager`, `runtime`), for one event loop.

    Open with `Services.open`, close with `aclose` (the runtime after its running invocations, then the
    provider clients, then the store). Open one per process and share it.
    """

    def __init__(
        self, settings: Settings, keyring: KeyRing, store: Store, factory: ProviderPool, manager: Manager,
        runtime: Runtime,
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.store = store
        self.factory = factory
        self.manager = manager
        self.runtime = runtime
        self.changes: ChangeFeed | None = store.changes if isinstance(store, HasChangeFeed) else None
        self.invalidations = 0  # dispatcher invalidations caused by announced changes
        #: The webhook sender (with durable delivery only: its events are written with delivery states).
        self.webhooks: WebhookWorker | None = None
        self._unsubscribe: Callable[[], None] | None = None
        if self.changes is not None:
            self._unsubscribe = self.changes.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        """Drop exactly what the change made stale; the manager's TTL bounds whatever was not announced."""
        if change.is_everything:
            LOG.warning("store: change notifications may have been missed; dropping every cached dispatcher")
            self.manager.invalidate_all()
            self.invalidations += 1
        elif change.kind in DISPATCHER_KINDS:
            self.manager.invalidate(change.namespace)
            self.invalidations += 1
        if self.webhooks is not None and (change.is_everything or change.kind == "webhook"):
            self.webhooks.changed()

    @property
    def specs(self) -> dict[str, ProviderSpec]:
        return self.factory.specs

    @classmethod
    async def open(
        cls,
        settings: Settings | None = None,
        *,
        observer: PushObserver | None = None,
        send_limiter: SendLimiter | None = None,
    ) -> Services:
        settings = settings or Settings.from_env()
        quiet_http_loggers()  # before any client exists: request URLs and headers carry secrets
        keyring = load_keyring(settings.state_dir)
        store = await open_store(settings.db_url, keyring)
        store.max_devices_per_user = settings.max_devices_per_user
        try:
            specs = default_specs(store, allow_private_endpoints=settings.allow_private_endpoints)
            factory = ProviderPool(specs)
            manager = Manager(store, factory, settings.defaults, ttl=settings.dispatcher_ttl, observer=observer)
            for folder in (settings.state_dir, settings.state_dir / "modules"):  # compiled tenant code
                private_dir(folder)
            manager = Manager(store, factory, settings.defaults, ttl=settings.dispatcher_ttl, observer=observer,
                              queue=cast(QueueStore, store), queue_settings=settings.queue)
            runtime = Runtime(
                manager,
                cache_dir=settings.state_dir / "modules",
                cache_key=keyring.derive("module-cache"),
                send_limiter=send_limiter,
                compile_limits=settings.compile_limits,
                cache_max_bytes=settings.module_cache_bytes,
                compile_slots=settings.compile_slots,
            )
        except BaseException:
            await store.aclose()
            raise
        services = cls(settings, keyring, store, factory, manager, runtime)
        if manager.queue is not None:
            services.webhooks = WebhookWorker(cast(WebhookStore, store), settings.webhooks,
                                              allow_private_endpoints=settings.allow_private_endpoints,
                                              on_namespaces=manager.queue.set_webhook_namespaces)
            manager.queue.on_events = services.webhooks.wake
            try:
                await services.webhooks.refresh()  # before the first send: its events must not be missed
            except BaseException:
                await services.aclose()
                raise
        return services

    def start_delivery(self) -> None:
        """Start this process's delivery worker: it retries queued deliveries and takes over expired leases."""
        if self.manager.queue is not None:
            self.manager.queue.start()
        if self.webhooks is not None:
            self.webhooks.start()

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:
            await self.runtime.aclose()
            await self.manager.aclose()
            if self.webhooks is not None:
                await self.webhooks.aclose()
        finally:
            await self.store.aclose()
