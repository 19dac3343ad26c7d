"""Builds each namespace's providers from its resolved config, keeping long-lived clients alive.

A provider that holds connections or tokens (APNs JWT, FCM OAuth token, HTTP/2 connections) is built
once per (namespace, provider, credentials document) and reused across dispatcher rebuilds; when the
document changes, the old provider is closed and a new one built.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable

from ..push.credentials import ProviderSpec, document_digest
from ..push.provider import Provider, ResolvedConfig

__all__ = ["ProviderFactoryImpl"]

LOG = logging.getLogger("wasmhost.push")


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


class ProviderFactoryImpl:
    """The `ProviderFactory` the CLI and gateway use: one `ProviderSpec` per supported provider."""

    def __init__(self, specs: Iterable[ProviderSpec]) -> None:
        self.specs: dict[str, ProviderSpec] = {spec.name: spec for spec in specs}
        self._live: dict[tuple[str, str], tuple[str, Provider]] = {}
        self.builds = 0  # providers constructed (not reused); tests and metrics read it

    @property
    def supported(self) -> list[str]:
        return sorted(self.specs)

    async def build(self, config: ResolvedConfig) -> list[Provider]:
        providers: list[Provider] = []
        for name, spec in self.specs.items():
            key = (config.namespace, name)
            document = spec.document_for(config)
            live = self._live.get(key)
            if document is None:
                if live is not None:
                    del self._live[key]
                    await _close(live[1])
                continue
            digest = document_digest({"doc": dict(document), "operator": name in config.operator_providers})
            if live is not None and live[0] == digest:
                providers.append(live[1])
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
            self._live[key] = (digest, provider)
            if live is not None:
                await _close(live[1])
            providers.append(provider)
        return providers

    async def aclose(self) -> None:
        live, self._live = self._live, {}
        for _, provider in live.values():
            await _close(provider)
