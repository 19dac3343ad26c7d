"""`MockClient`: the in-memory `HTTPClient`, for unit tests of providers (as httpx's `MockTransport`)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..providers._client import ClientClosed, HTTPClient, HTTPResponse

__all__ = ["MockClient", "MockRequest"]


@dataclass(frozen=True, slots=True)
class MockRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout: float

    def header(self, name: str) -> str | None:
        """The first header called `name` (any case), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


Handler = Callable[[MockRequest], "HTTPResponse | Awaitable[HTTPResponse]"]


class MockClient(HTTPClient):
    """Answers every request with `handler(request)`, a sync or async function. The handler scripts
    failures by raising a `TransportError` (e.g. `TLSVerifyFailed`), exactly what a real client raises.
    Every request is kept in `requests`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []
        self.closed = False

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *, timeout: float
    ) -> HTTPResponse:
        if self.closed:
            raise ClientClosed("the client is closed")
        request = MockRequest(method, url, list(headers), body, timeout)
        self.requests.append(request)
        result = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def aclose(self) -> None:
        self.closed = True
