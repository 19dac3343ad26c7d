"""Push providers, one module each, the pool that builds them per namespace, and the HTTP client
interface they all talk through (`HTTPClient`; `wasmhost.testing.MockClient` is its in-memory fake)."""

from ._client import HTTPClient, HTTPResponse, TransportError
from ._logs import quiet_http_loggers
from .outbox import OutboxProvider, OutboxSpec
from .pool import ProviderPool
from .registry import default_specs

__all__ = [
    "HTTPClient",
    "HTTPResponse",
    "OutboxProvider",
    "OutboxSpec",
    "ProviderPool",
    "TransportError",
    "default_specs",
    "quiet_http_loggers",
]
