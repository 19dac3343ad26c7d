"""The one HTTP client interface every provider talks through: a request in, (status, headers, body) out.

Implementations: `PoolClient` (httpcore: HTTP/1.1 lanes or an HTTP/2 pool; ntfy, Expo, Web Push, FCM),
`H2Client` (our asyncio + h2 client for APNs, `_h2`), and `wasmhost.testing.MockClient` (in memory, for
unit tests, as httpx's `MockTransport`). Providers never see a foreign exception: every client raises
only the `TransportError`s below, so one classifier (`_failures.transport_failure`) serves them all.

Error texts never hold a URL, a path or a header value: paths and headers carry device tokens and
provider credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

__all__ = [
    "Blocked",
    "ClientClosed",
    "ConnectFailed",
    "ConnectionLost",
    "HTTPClient",
    "InvalidRequest",
    "ProtocolFailure",
    "RequestTimeout",
    "HTTPResponse",
    "StreamReset",
    "TLSVerifyFailed",
    "TransportError",
    "Unanswered",
]


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A whole answer. Header names are lowercase."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class TransportError(Exception):
    """A request failed without an HTTP answer. The text never holds a URL, a path or a header value."""


class Blocked(TransportError):
    """The URL guard refused the address the endpoint resolves to (a tenant URL that is not public)."""


class ConnectFailed(TransportError):
    """DNS, TCP, TLS or the HTTP/2 preface failed."""


class TLSVerifyFailed(ConnectFailed):
    """The server's certificate did not verify against the trusted roots (or the pinned ca_bundle)."""


class Unanswered(TransportError):
    """The request was sent (or queued) but got no answer. Safe to re-send only when `unprocessed`."""

    def __init__(self, text: str, *, unprocessed: bool = False) -> None:
        super().__init__(text)
        self.unprocessed = unprocessed


class ConnectionLost(Unanswered):
    """The connection ended while the request was in flight."""


class StreamReset(Unanswered):
    """The server reset the request's HTTP/2 stream."""


class RequestTimeout(TransportError):
    """No answer within the request's timeout."""


class ProtocolFailure(TransportError):
    """The server broke HTTP, or answered with more than the client accepts."""


class InvalidRequest(TransportError):
    """The request cannot be sent as given; nothing was sent."""


class ClientClosed(TransportError):
    """The client was closed before or while the request ran."""


class HTTPClient:
    """One long-lived client of one provider instance. Subclasses implement `request`.

    `url` is absolute. `timeout` bounds everything: waiting for a connection, sending, and the answer.
    Redirects are never followed and no cookies are kept. `aclose` releases connections; it is
    idempotent, and requests after it raise `ClientClosed`.
    """

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *, timeout: float
    ) -> HTTPResponse:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
