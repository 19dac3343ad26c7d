"""The HTTP/1.1 server under the ntfy, Expo and Web Push fakes.

`FakeServer` is a minimal HTTP/1.1 server on asyncio (keep-alive, optional TLS) rather than an ASGI app,
because the fakes must script failures an ASGI server cannot: a connection dropped mid-request.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

__all__ = ["DROP", "FakeServer", "Request", "Response", "ServedFake"]

#: Returned by a handler: close the connection without answering.
DROP: Any = object()
_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 302: "Found", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 410: "Gone", 413: "Payload Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
            507: "Insufficient Storage"}
MAX_BODY = 1 << 20


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class FakeServer:
    """Serve `handler` on 127.0.0.1 (random port). Counts connections, so tests can assert reuse."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context, backlog=1024)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        k = k.strip().lower()
                        headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    writer.transport.abort()
                    return
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                result = self.handler(Request(method, target, headers, body, conn))
                response = await result if inspect.isawaitable(result) else result
                if response is DROP:
                    writer.transport.abort()
                    return
                out = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}"]
                hdrs = {"content-length": str(len(response.body))}
                hdrs.update((k.lower(), v) for k, v in response.headers.items())
                out += [f"{k}: {v}" for k, v in hdrs.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + response.body)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # the loop is shutting down: a fake just stops serving
            return
        finally:
            self._writers.discard(writer)


@dataclass
class ServedFake:
    """A fake push service served by a plain-HTTP `FakeServer` on 127.0.0.1 once started. Subclasses
    define `handle`; a test may set `server` itself (with TLS, say) instead of calling `start`."""

    server: FakeServer | None = field(default=None, kw_only=True)

    def handle(self, req: Request) -> Response | Awaitable[Response]:
        raise NotImplementedError

    async def start(self) -> Self:
        self.server = await FakeServer(self.handle).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def aclose(self) -> None:
        if self.server is not None:
            await self.server.aclose()
