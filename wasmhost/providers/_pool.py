"""`PoolClient`: the `HTTPClient` of ntfy, Expo, Web Push (HTTP/1.1 lanes) and FCM (one HTTP/2 pool).

Built on httpcore's public API: connection pools whose network backend is the URL guard's
(`GuardedBackend`) for tenant URLs, so every connection is checked whatever DNS says at that moment.
No proxies (the environment is never read: a proxy would connect for us and bypass the guard), no
redirects, no cookies.

HTTP/1.1 connections are independent lanes: one single-connection pool each, and a request goes to the
least busy lane. httpcore's pool rescans (and polls the socket of) every connection each time a request
starts or ends, so one pool of N connections costs O(N) per request; lanes keep each pool at one.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpcore

from ..push.urlguard import GuardedBackend, UnsafeConnection
from . import _client as errors
from ._client import HTTPClient, HTTPResponse, TransportError

__all__ = ["MAX_RESPONSE_BODY", "USER_AGENT", "PoolClient"]

#: Sent with every request: services see who is calling, not a library default.
USER_AGENT = "wasmhost-push/1"
#: Bytes of one response body we accept, after decoding (push services answer with small JSON).
MAX_RESPONSE_BODY = 1024 * 1024
#: How many causes down a wrapped exception is searched (the TLS error sits under httpcore's wrapper).
_MAX_CAUSES = 8


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _mapped() -> Iterator[None]:
    """httpcore's exceptions as ours; the text names the error class only (httpcore's may quote a URL)."""
    try:
        yield
    except UnsafeConnection as exc:
        raise errors.Blocked(str(exc)) from None
    except (httpcore.ConnectTimeout, httpcore.ReadTimeout, httpcore.WriteTimeout, httpcore.PoolTimeout) as exc:
        raise errors.RequestTimeout(f"the push service did not answer in time ({type(exc).__name__})") from None
    except httpcore.ConnectError as exc:
        if _caused_by(exc, ssl.SSLCertVerificationError):
            raise errors.TLSVerifyFailed("the push service's certificate did not verify") from None
        raise errors.ConnectFailed(f"could not connect ({type(exc).__name__})") from None
    except (httpcore.ReadError, httpcore.WriteError, httpcore.NetworkError) as exc:
        raise errors.ConnectionLost(f"the connection failed ({type(exc).__name__})") from None
    except (httpcore.LocalProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise errors.InvalidRequest(f"the request cannot be sent ({type(exc).__name__})") from None
    except httpcore.RemoteProtocolError as exc:
        raise errors.ProtocolFailure(f"the push service broke HTTP ({type(exc).__name__})") from None


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without its gzip/deflate content coding, at most `MAX_RESPONSE_BODY` bytes of it."""
    if encoding not in ("gzip", "deflate"):
        return body
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    try:
        decoder = zlib.decompressobj(wbits)
        out = decoder.decompress(body, MAX_RESPONSE_BODY + 1)
    except zlib.error:
        raise errors.ProtocolFailure("the response body does not decode") from None
    if len(out) > MAX_RESPONSE_BODY:
        raise errors.ProtocolFailure(f"the response body is larger than {MAX_RESPONSE_BODY} bytes")
    return out


def _request(
    method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes, timeout: float
) -> httpcore.Request:
    """The httpcore request, with the Host, User-Agent and Content-Length headers it needs."""
    try:
        target = httpcore.URL(url)
        host = target.host.decode("ascii")
        if target.scheme not in (b"http", b"https") or not host:
            raise ValueError(url)
        if ":" in host:
            host = f"[{host}]"
        default = 443 if target.scheme == b"https" else 80
        authority = host if target.port in (None, default) else f"{host}:{target.port}"
        return httpcore.Request(
            method, target,
            headers=[("Host", authority), ("User-Agent", USER_AGENT), *headers, ("Content-Length", str(len(body)))],
            content=body,
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
        )
    except (ValueError, TypeError, UnicodeError):
        raise errors.InvalidRequest("the request URL or a header is malformed") from None


class PoolClient(HTTPClient):
    """`lanes` pools of `connections` each (HTTP/1.1 lanes: many pools of one; FCM: one HTTP/2 pool)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        guarded: bool,
        allow_private_endpoints: bool = False,
        lanes: int = 1,
        connections: int = 1,
        http2: bool = False,
        keepalive_expiry: float | None = None,
    ) -> None:
        if lanes < 1 or connections < 1:
            raise ValueError("lanes and connections must be at least 1")
        self.pools = [
            httpcore.AsyncConnectionPool(
                ssl_context=ssl_context, max_connections=connections, max_keepalive_connections=connections,
                keepalive_expiry=keepalive_expiry, http1=True, http2=http2, retries=0,
                network_backend=GuardedBackend(allow_private_endpoints) if guarded else None,
            )
            for _ in range(lanes)
        ]
        self._busy = [0] * lanes
        self._closed = False

    @property
    def busy(self) -> int:
        """Requests in flight."""
        return sum(self._busy)

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *, timeout: float
    ) -> HTTPResponse:
        if self._closed:
            raise errors.ClientClosed("the client is closed")
        lane = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[lane] += 1
        try:
            with _mapped():
                request = _request(method, url, headers, body, timeout)
                response = await self.pools[lane].handle_async_request(request)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_stream():  # type: ignore[union-attr]
                        size += len(chunk)
                        if size > MAX_RESPONSE_BODY:
                            raise errors.ProtocolFailure(f"the response body is larger than {MAX_RESPONSE_BODY} bytes")
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except TransportError:
            if self._closed:
                raise errors.ClientClosed("the client was closed") from None
            raise
        finally:
            self._busy[lane] -= 1
        names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        return HTTPResponse(response.status, names, _decoded(b"".join(chunks), names.get("content-encoding", "")))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pool in self.pools:
            await pool.aclose()
