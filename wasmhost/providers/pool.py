"""Builds each namespace's providers from its resolved config and keeps them alive while they are used.

A provider that holds connections or tokens (APNs JWT, FCM OAuth token, HTTP/2 connections) is built
once per (namespace, provider, credentials document) and reused across dispatcher rebuilds; when the
document changes, a new one is built and the old one closed.

Memory follows the namespaces in use, not every namespace ever seen. Each provider counts the
dispatchers holding it (`build` takes a hold on every provider it returns, `release` gives it back):

* a held provider is never closed; one that was replaced or removed while held is closed when the last
  hold goes;
* a provider nobody holds stays ready for the namespace's next dispatcher, but only the `max_idle`
  most recently released ones, and none longer than `idle_timeout`: the others are closed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..push.credentials import ProviderSpec, document_digest
from ..push.provider import Provider, ResolvedConfig

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_IDLE", "ProviderPool"]

LOG = logging.getLogger("wasmhost.push")

#: Namespaces' providers kept open while no dispatcher holds them (the dispatcher cache holds the rest).
DEFAULT_MAX_IDLE = 64
#: Seconds an unheld provider stays open; longer than the dispatcher TTL, so a namespace that keeps
#: sending keeps its connections across rebuilds.
DEFAULT_IDLE_TIMEOUT = 300.0


async def _close(provider: Provider) -> None:
    close = getattr(provider, "aclose", None)
    if close is None:
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:  # closing must never break a rebuild
        LOG.exception("push: closing provider %s failed", provider.name)


class _Entry:
    __slots__ = ("digest", "holds", "idle_since", "key", "provider", "current")

    def __init__(self, key: tuple[str, str], digest: str, provider: Provider) -> None:
        self.key = key
        self.digest = digest
        self.provider = provider
        self.holds = 0
        self.idle_since = 0.0
        self.current = True  # still the namespace's provider (False once replaced or removed)


class ProviderPool:
    """The `ProviderFactory` the CLI and gateway use: one `ProviderSpec` per supported provider."""

    def __init__(
        self,
        specs: Iterable[ProviderSpec],
        *,
        max_idle: int = DEFAULT_MAX_IDLE,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_idle < 0 or idle_timeout <= 0:
            raise ValueError("max_idle must be at least 0 and idle_timeout positive")
        self.specs: dict[str, ProviderSpec] = {spec.name: spec for spec in specs}
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._timer = timer
        self._live: dict[tuple[str, str], _Entry] = {}  # the current provider per (namespace, provider)
        self._entries: dict[int, _Entry] = {}  # every open provider we built, by id(provider)
        self._idle: OrderedDict[int, _Entry] = OrderedDict()  # unheld current ones, least recently released first
        self._closing: set[asyncio.Task[None]] = set()
        self.builds = 0  # providers constructed (not reused); tests and metrics read it

    @property
    def supported(self) -> list[str]:
        return sorted(self.specs)

    @property
    def open_count(self) -> int:
        """Providers built and not yet closed (held, idle, or waiting for their last hold)."""
        return len(self._entries)

    async def build(self, config: ResolvedConfig) -> list[Provider]:
        """The namespace's providers, each held once for the caller until `release`."""
        providers: list[Provider] = []
        for name, spec in self.specs.items():
            key = (config.namespace, name)
            document = spec.document_for(config)
            live = self._live.get(key)
            if document is None:
                if live is not None:
                    self._retire(live)
                continue
            digest = document_digest({"doc": dict(document), "operator": name in config.operator_providers})
            if live is not None and live.digest == digest:
                self._hold(live)
                providers.append(live.provider)
                continue
            try:
                provider = spec.build(config, document)
            except Exception as exc:
                # A document that no longer builds (e.g. a key that stopped parsing) leaves this provider
                # out; its devices then report UnknownProvider with a reason instead of failing silently.
                LOG.error("push: building %s for namespace %s failed: %s", name, config.namespace,
                          type(exc).__name__)
                continue
            self.builds += 1
            entry = _Entry(key, digest, provider)
            self._live[key] = self._entries[id(provider)] = entry
            if live is not None:
                self._retire(live)
            self._hold(entry)
            providers.append(provider)
        self._trim()
        return providers

    def release(self, providers: Iterable[Provider]) -> None:
        """Give back one hold on each provider `build` returned (a dispatcher is no longer used)."""
        now = self._timer()
        for provider in providers:
            entry = self._entries.get(id(provider))
            if entry is None or entry.provider is not provider or entry.holds == 0:
                continue
            entry.holds -= 1
            if entry.holds:
                continue
            if entry.current:
                entry.idle_since = now
                self._idle[id(provider)] = entry
            else:
                self._close_later(entry)
        self._trim()

    def _hold(self, entry: _Entry) -> None:
        entry.holds += 1
        self._idle.pop(id(entry.provider), None)

    def _retire(self, entry: _Entry) -> None:
        """The namespace no longer uses `entry`: close it now, or when its last holder lets go."""
        entry.current = False
        if self._live.get(entry.key) is entry:
            del self._live[entry.key]
        self._idle.pop(id(entry.provider), None)
        if entry.holds == 0:
            self._close_later(entry)

    def _trim(self) -> None:
        """Close unheld providers beyond `max_idle`, and those idle longer than `idle_timeout`."""
        expired = self._timer() - self.idle_timeout
        while self._idle:
            entry = next(iter(self._idle.values()))
            if len(self._idle) <= self.max_idle and entry.idle_since > expired:
                break
            self._retire(entry)

    def _close_later(self, entry: _Entry) -> None:
        self._entries.pop(id(entry.provider), None)
        task = asyncio.get_running_loop().create_task(_close(entry.provider))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every provider, held or not; the pool is unusable afterwards."""
        entries, self._entries = list(self._entries.values()), {}
        self._live.clear()
        self._idle.clear()
        for entry in entries:
            await _close(entry.provider)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
