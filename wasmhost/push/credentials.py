"""How a provider's credentials are checked at save, shown redacted, and turned into a provider.

Each provider ships one `ProviderSpec`. The wiring layer (CLI, gateway) hands the specs it supports to
the factory and to the HTTP handlers; there is no global registry to mutate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from .provider import Provider, ResolvedConfig

__all__ = [
    "CredentialsError",
    "ProviderSpec",
    "document_digest",
    "require_configured",
    "validate_credentials",
    "validate_device_token",
]


class CredentialsError(ValueError):
    """The document is invalid; the text names the field and never echoes a secret (HTTP 400)."""


class ProviderSpec(Protocol):
    #: Provider name, as devices and credentials routes spell it (``apns``, ``outbox`` …).
    name: str

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Check a tenant's document at save; return the normalised document or raise `CredentialsError`."""
        ...

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """The document as a tenant may see it again: secrets become ``has_<field>: true``."""
        ...

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        """Check a device token at registration; return it normalised or raise `CredentialsError`."""
        ...

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        """This provider's effective document for the namespace, or None when it is not configured."""
        ...

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> Provider:
        """A provider bound to `document`. May hold connections: it is reused while the document is unchanged."""
        ...


def document_digest(document: Mapping[str, Any]) -> str:
    """Stable identity of a credentials document, to tell whether a built provider is still current."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def validate_credentials(spec: ProviderSpec, document: Mapping[str, Any]) -> dict[str, Any]:
    """Save-time validation: `spec.validate`, then the spec's network checks if it has any.

    `validate` is synchronous and cannot resolve names; specs whose documents carry tenant URLs also
    define ``async check_urls(document)`` (DNS through the SSRF guard, fail closed). Callers that save a
    document (HTTP PUT, CLI) use this function rather than `validate` alone.
    """
    normalised = spec.validate(document)
    check = getattr(spec, "check_urls", None)
    if check is not None:
        await check(normalised)
    return normalised


def require_configured(namespace: str, provider: str, configured: list[str]) -> None:
    """A device for a provider the namespace does not send with would fail every send: refuse it up front."""
    if provider in configured:
        return
    have = ", ".join(configured) if configured else "none"
    raise CredentialsError(
        f"provider {provider!r} is not configured for namespace {namespace!r} (configured: {have}); configure it "
        f"first with `wasmhost credentials set --namespace {namespace} {provider} --json DOC` or "
        f"PUT /v1/namespace/push-credentials/{provider}"
    )


async def validate_device_token(spec: ProviderSpec, token: str, document: Mapping[str, Any] | None) -> str:
    """Registration-time validation: `spec.validate_token`, then ``async check_token_urls(token)`` if defined
    (a Web Push subscription or UnifiedPush endpoint is an end-user URL and passes the SSRF guard)."""
    normalised = spec.validate_token(token, document)
    check = getattr(spec, "check_token_urls", None)
    if check is not None:
        await check(normalised)
    return normalised
