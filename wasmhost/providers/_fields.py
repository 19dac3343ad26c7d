"""Checks of credentials-document fields shared by the providers: shapes, secrets, tenant URLs (the SSRF
guard's literal check, then its DNS check at save time) and pinned CA bundles. Errors name the field,
never its value."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from ..push.credentials import CredentialsError
from ..push.urlguard import MAX_URL_BYTES, UnsafeURL, check_url, check_url_syntax

__all__ = [
    "MAX_CA_BUNDLE_BYTES",
    "MAX_SECRET_BYTES",
    "check_ca_bundle",
    "check_saved_urls",
    "check_tenant_url",
    "endpoint_fields",
    "reject_unknown_fields",
    "require_string",
    "url_field",
    "validate_secret",
]

#: Largest PEM bundle a tenant may pin for a private endpoint.
MAX_CA_BUNDLE_BYTES = 64 * 1024
#: Longest secret (token, password) a tenant may store.
MAX_SECRET_BYTES = 4096
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


def reject_unknown_fields(document: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse a non-object or a field we do not know (a typo would otherwise be silently ignored)."""
    if not isinstance(document, Mapping):
        raise CredentialsError(f"{where} must be a JSON object")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise CredentialsError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def require_string(document: Mapping[str, Any], key: str, *, max_len: int, required: bool = True) -> str:
    """The field as a stripped string ("" when optional and absent), or a `CredentialsError` naming it
    (never echoing the value)."""
    value = document.get(key)
    if value is None or value == "":
        if required:
            raise CredentialsError(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{key} must be a string")
    value = value.strip()
    if required and not value:
        raise CredentialsError(f"{key} is required")
    if len(value) > max_len:
        raise CredentialsError(f"{key} is longer than {max_len} characters")
    return value


def validate_secret(document: Mapping[str, Any], field: str) -> str:
    """An optional printable-ASCII secret (token, password). The error never echoes the value."""
    value = require_string(document, field, max_len=MAX_SECRET_BYTES, required=False)
    if value and not _PRINTABLE.match(value):
        raise CredentialsError(f"{field} must be printable ASCII without spaces, at most {MAX_SECRET_BYTES} bytes")
    return value


def check_tenant_url(url: str, field: str, *, allow_private_endpoints: bool, https_only: bool = True, base: bool = True,
                     path_allowed: bool = True) -> str:
    """A tenant URL, normalised: passes the SSRF guard's literal check (no DNS; the spec's `check_urls`
    resolves it at save time, and the guarded transport again at connect time, so rebinding is covered).

    `base`: a prefix we append paths to, so a trailing "/" is dropped. `https_only` is off only where the
    protocol has plain-HTTP deployments (self-hosted ntfy).
    """
    try:
        parsed = check_url_syntax(url, allow_private_endpoints=allow_private_endpoints)
    except UnsafeURL as exc:
        raise CredentialsError(f"{field} rejected: {exc}") from None
    if https_only and parsed.scheme != "https":
        raise CredentialsError(f"{field} must be an https URL")
    if parsed.query or parsed.fragment:
        raise CredentialsError(f"{field} must not have a query or fragment")
    if not path_allowed and parsed.path not in ("", "/"):
        raise CredentialsError(f"{field} must be a base URL (scheme, host and port only)")
    return str(parsed).rstrip("/") if base else str(parsed)


def url_field(document: Mapping[str, Any], field: str, *, allow_private_endpoints: bool, https_only: bool = True,
              path_allowed: bool = True) -> str:
    """The optional base-URL field of a credentials document, checked by `check_tenant_url`; "" when absent."""
    value = require_string(document, field, max_len=MAX_URL_BYTES, required=False)
    if not value:
        return ""
    return check_tenant_url(value, field, allow_private_endpoints=allow_private_endpoints, https_only=https_only,
                            path_allowed=path_allowed)


def check_ca_bundle(document: Mapping[str, Any], field: str = "ca_bundle") -> str:
    """The optional PEM bundle that replaces the public roots for this credential's endpoints."""
    value = document.get(field)
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{field} must be a PEM string")
    value = value.strip()
    if len(value.encode()) > MAX_CA_BUNDLE_BYTES:
        raise CredentialsError(f"{field} is larger than {MAX_CA_BUNDLE_BYTES} bytes")
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise CredentialsError(f"{field} must be PEM certificates (-----BEGIN CERTIFICATE-----)")
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError):
        raise CredentialsError(f"{field} does not parse as PEM certificates") from None
    return value


def endpoint_fields(document: Mapping[str, Any], *, allow_private_endpoints: bool, https_only: bool = True,
                    path_allowed: bool = False) -> dict[str, str]:
    """The private-deployment overrides every network provider accepts, ``endpoint`` and ``ca_bundle``,
    checked; only those given."""
    out = {"endpoint": url_field(document, "endpoint", allow_private_endpoints=allow_private_endpoints,
                                 https_only=https_only,
                                 path_allowed=path_allowed),
           "ca_bundle": check_ca_bundle(document)}
    return {k: v for k, v in out.items() if v}


async def check_saved_urls(fields: Iterable[tuple[str, Any]], *, allow_private_endpoints: bool) -> None:
    """The save-time SSRF check of each given (field, URL): resolves the host (fail closed) and refuses
    any non-public address; the error names the field and the host, never the URL."""
    for field, url in fields:
        if url:
            try:
                await check_url(str(url), allow_private_endpoints=allow_private_endpoints)
            except UnsafeURL as exc:
                raise CredentialsError(f"{field} rejected: {exc}") from None
