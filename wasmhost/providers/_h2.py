"""A small HTTP/2 client on asyncio and `h2`: one TLS connection, many concurrent streams (APNs).

httpx → httpcore → anyio spent nearly all of an APNs send's CPU (bench/README.md, Push providers), so, as
aioapns does, this drives `h2` from an asyncio Protocol and writes only the glue, plus what aioapns leaves
out: the SSRF guard at connect time, ALPN, the server's SETTINGS_MAX_CONCURRENT_STREAMS, flow control in
both directions, a timeout on every request, GOAWAY and lost connections (unprocessed streams are retried
on a new connection), idle close, and error texts that never carry a URL, a path or a header value.

Errors, all the shared `_client.TransportError`s:

* `Blocked`: the URL guard refused the address (a tenant endpoint that is not public); permanent.
* `ConnectFailed`: TCP or TLS failed; `TLSVerifyFailed` when the certificate is not trusted.
* `Unanswered`: the request got no answer. `ConnectionLost` (the connection ended) or `StreamReset` (the
  server reset the stream). `unprocessed` is true when the server said it did not act on it (GOAWAY above
  ``last_stream_id``, REFUSED_STREAM): the client then retries it on a new connection by itself.
* `RequestTimeout`: no answer within the request's timeout; the stream is reset.
* `ProtocolFailure`: the server broke HTTP/2 or sent an oversized answer.
* `InvalidRequest`: a header is not valid HTTP/2 as given (name not lowercase, CR/LF/NUL or surrounding
  whitespace in a value); nothing was sent.
* `ClientClosed`: the client was closed.

Header compression: h2's outbound normalisation is off (names must already be lowercase and values clean;
`request` checks both). That also turns off h2's habit of sending ``authorization`` never-indexed, so the
provider JWT enters the connection's HPACK table once instead of being Huffman-coded on every request
(numbers: bench/README.md). That is safe here: HPACK only ever matches a whole value under the same
name, and no caller-controlled field is named ``authorization``, so no guess can be tested against it
(RFC 7541 §7.1). The ``:path`` (a device token, unique per request) is sent never-indexed, so it neither
sits in the table nor pushes the JWT out of it.

h2 moves a connection to CLOSED as soon as a GOAWAY arrives (python-hyper/h2#1181), so streams at or below
``last_stream_id`` cannot be completed after it: they fail with `ConnectionLost` (maybe processed), which
callers treat as transient.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple

from ..push.urlguard import UnsafeURL, check_peer, check_url_syntax, resolve_checked
from ._client import (
    Blocked,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    HTTPClient,
    HTTPResponse,
    InvalidRequest,
    ProtocolFailure,
    RequestTimeout,
    StreamReset,
    TLSVerifyFailed,
    TransportError,
    Unanswered,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "DEFAULT_MAX_STREAMS",
    "IDLE_TIMEOUT",
    "MAX_RESPONSE_BODY",
    "MAX_UNPROCESSED_RETRIES",
    "H2Client",
]

LOG = logging.getLogger("wasmhost.providers.h2")

#: Seconds for DNS, TCP, TLS and the server's first SETTINGS frame together.
CONNECT_TIMEOUT = 10.0
#: Our own cap on streams in flight on one connection; the server's MAX_CONCURRENT_STREAMS lowers it.
DEFAULT_MAX_STREAMS = 1000
#: Idle seconds (no stream in flight) after which the connection is closed; the next request reconnects.
IDLE_TIMEOUT = 600.0
#: Bytes of one response body we accept (APNs error bodies are tens of bytes).
MAX_RESPONSE_BODY = 16 * 1024
#: Times one request is re-sent on a new connection after the server said it did not process it.
MAX_UNPROCESSED_RETRIES = 2
#: Seconds `aclose` waits for the TLS close before it aborts the connection.
CLOSE_TIMEOUT = 1.0
#: Headers whose value is new on every request, sent never-indexed like the path. Indexed, each takes a
#: place in both ends' HPACK tables, pushing out values that do repeat (the provider JWT), and the
#: encoder searches its table entry by entry for every header (bench/README.md, "Durable delivery").
SINGLE_USE_HEADERS = frozenset({"apns-collapse-id"})
#: Stream ids are 31 bits; a connection that has used this many opens no more streams (a new one takes over).
_LAST_STREAM_ID = 2**31 - 1 - 2 * DEFAULT_MAX_STREAMS
_REASON = re.compile(r"[^A-Za-z0-9_.-]")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


class _Stream:
    __slots__ = ("body", "future", "headers", "id", "pending", "status")

    def __init__(self, stream_id: int, future: asyncio.Future[HTTPResponse]) -> None:
        self.id = stream_id
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.pending = b""  # request body not yet sent (waiting for flow-control window)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection. Everything runs in loop callbacks; writes are coalesced per loop iteration."""

    def __init__(self, max_streams: int, idle_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None, normalize_outbound_headers=False)
        self.h2 = h2.connection.H2Connection(config)
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.active = 0  # streams holding a slot (sent, or about to be)
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.ready: asyncio.Future[None] = self.loop.create_future()  # the server's first SETTINGS arrived
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.draining = False  # no new streams (GOAWAY, ids used up, closing)
        self.closed = False
        self.last_active = self.loop.time()
        self._flush_pending = False
        self._idle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports (uvicorn picks uvloop when it is
        # installed) do not subclass asyncio.Transport, yet offer what we use of it.
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        self._flush()
        self._idle = self.loop.call_later(self.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(ProtocolFailure(f"the server broke HTTP/2 ({type(exc).__name__})"))
            self._flush()
            self._abort()
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self._on_headers(event)
            elif isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._on_reset(event)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_pending()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._on_settings()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event)
                break  # h2 refuses every later frame on this connection
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.draining = True
        if self._idle is not None:
            self._idle.cancel()
        self._fail_all(ConnectionLost("the connection was lost", unprocessed=False))
        if not self.ready.done():
            self.ready.set_exception(ConnectFailed("the connection closed before the HTTP/2 preface"))
            self.ready.exception()  # retrieved here: the opener may already have given up
        if not self.lost.done():
            self.lost.set_result(None)

    # -- requests --------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self.draining

    async def request(self, headers: list[Any], body: bytes) -> HTTPResponse:
        await self._acquire()
        try:
            stream_id = self.h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self._release()
            self.draining = True
            raise ConnectionLost("stream ids used up", unprocessed=True) from None
        if stream_id >= _LAST_STREAM_ID:
            self.draining = True  # this one still goes; the next request opens a new connection
        future: asyncio.Future[HTTPResponse] = self.loop.create_future()
        stream = _Stream(stream_id, future)
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
        except h2.exceptions.ProtocolError as exc:
            self._release()
            raise ProtocolFailure(f"could not open a stream ({type(exc).__name__})") from None
        self.streams[stream_id] = stream
        if body:
            stream.pending = body
            self._send_stream(stream)
        self._schedule_flush()
        try:
            return await future
        except asyncio.CancelledError:  # the caller's timeout or cancellation: free the stream for others
            if self.streams.pop(stream_id, None) is not None:
                self._reset(stream_id, h2.errors.ErrorCodes.CANCEL)
                self._release()
            raise

    async def _acquire(self) -> None:
        if self.draining:
            raise ConnectionLost("the connection is closing", unprocessed=True)
        if self.active < self._limit() and not self.waiters:
            self.active += 1
            return
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # a slot was handed over just as we were cancelled
            else:
                try:
                    self.waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def _limit(self) -> int:
        return min(self.max_streams, self.h2.remote_settings.max_concurrent_streams)

    def _release(self) -> None:
        self.active -= 1
        self.last_active = self.loop.time()
        if self.draining and self.active == 0 and not self.closed:
            self.close()  # a connection that takes no new streams goes once its last one is done
            return
        self._wake()

    def _wake(self) -> None:
        limit = self._limit()
        while self.waiters and self.active < limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def _send_stream(self, stream: _Stream) -> None:
        """Send as much of the body as the stream and connection windows allow; the rest waits for WINDOW_UPDATE."""
        while stream.pending:
            size = min(self.h2.local_flow_control_window(stream.id), self.h2.max_outbound_frame_size,
                       len(stream.pending))
            if size <= 0:
                return
            chunk, stream.pending = stream.pending[:size], stream.pending[size:]
            self.h2.send_data(stream.id, chunk, end_stream=not stream.pending)

    def _send_pending(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending:
                try:
                    self._send_stream(stream)
                except h2.exceptions.ProtocolError:  # closed by the server meanwhile
                    stream.pending = b""

    # -- events --------------------------------------------------------------------------------

    def _on_headers(self, event: h2.events.ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)  # type: ignore[arg-type]
        if stream is None:
            return
        for name, value in event.headers or ():
            if name == b":status":
                stream.status = int(value)
            elif not name.startswith(b":"):
                stream.headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        try:  # give the window back at once, or ~1,000 error bodies would stall the connection
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
        except h2.exceptions.ProtocolError:
            pass
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.body.extend(event.data or b"")
        if len(stream.body) > MAX_RESPONSE_BODY:
            self._reset(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._finish(stream, ProtocolFailure(f"the response body is larger than {MAX_RESPONSE_BODY} bytes"))

    def _on_end(self, stream_id: int | None) -> None:
        stream = self.streams.get(stream_id or 0)
        if stream is None:
            return
        if stream.pending:  # answered before the whole body went out (e.g. 413): close our side too
            stream.pending = b""
            self._reset(stream.id, h2.errors.ErrorCodes.NO_ERROR)
        if not stream.status:
            self._finish(stream, ProtocolFailure("the response had no :status"))
            return
        self._finish(stream, HTTPResponse(stream.status, stream.headers, bytes(stream.body)))

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id or 0)
        if stream is None:
            return
        code = event.error_code
        refused = code == h2.errors.ErrorCodes.REFUSED_STREAM
        name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
        self._finish(stream, StreamReset(f"the server reset the stream ({name})", unprocessed=refused))

    def _on_settings(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        self._wake()  # the stream limit may have grown
        self._send_pending()  # and the initial window with it

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.draining = True
        last = event.last_stream_id if event.last_stream_id is not None else 2**31
        reason = _goaway_reason(event.additional_data)
        code = event.error_code
        name = code.name if isinstance(code, h2.errors.ErrorCodes) else str(code)
        LOG.info("HTTP/2 server sent GOAWAY (%s%s); last stream %d, %d in flight", name,
                 f", {reason}" if reason else "", last, len(self.streams))
        text = f"the server closed the connection (GOAWAY {name}{', ' + reason if reason else ''})"
        for stream in list(self.streams.values()):
            self._finish(stream, ConnectionLost(text, unprocessed=stream.id > last))
        self._fail_waiters(ConnectionLost(text, unprocessed=True))
        if self.transport is not None:
            self.transport.close()  # after the flush that follows this event

    # -- plumbing ------------------------------------------------------------------------------

    def _finish(self, stream: _Stream, result: HTTPResponse | TransportError) -> None:
        if self.streams.pop(stream.id, None) is None:
            return
        self._release()
        if stream.future.done():
            return
        if isinstance(result, HTTPResponse):
            stream.future.set_result(result)
        else:
            stream.future.set_exception(result)

    def _fail_all(self, error: TransportError) -> None:
        for stream in list(self.streams.values()):
            self._finish(stream, error)
        self._fail_waiters(ConnectionLost(str(error), unprocessed=True))

    def _fail_waiters(self, error: TransportError) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:  # already closed on h2's side
            return
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _abort(self) -> None:
        self.closed = self.draining = True
        if self.transport is not None:
            self.transport.abort()

    def _check_idle(self) -> None:
        if self.closed:
            return
        idle_for = self.loop.time() - self.last_active
        if not self.streams and self.active == 0 and idle_for >= self.idle_timeout:
            LOG.debug("closing an HTTP/2 connection idle for %.0f s", idle_for)
            self.close()
            return
        busy = bool(self.streams) or self.active > 0
        self._idle = self.loop.call_later(self.idle_timeout if busy else self.idle_timeout - idle_for,
                                          self._check_idle)

    def close(self, error: TransportError | None = None) -> None:
        """Fail what is in flight (with `error`), say GOAWAY and close the TLS connection."""
        if self.closed:
            return
        self.draining = True
        self._fail_all(error or ClientClosed("the connection was closed"))
        try:
            self.h2.close_connection()
        except h2.exceptions.ProtocolError:
            pass
        self._flush()
        if self.transport is not None:
            self.transport.close()

    async def aclose(self, error: TransportError) -> None:
        self.close(error)
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT)
        except TimeoutError:
            self._abort()


def _goaway_reason(data: bytes | None) -> str:
    """APNs puts ``{"reason": …}`` in GOAWAY debug data; keep only a short, plain reason code."""
    if not data:
        return ""
    text = data[:256].decode("utf-8", "replace")
    match = re.search(r'"reason"\s*:\s*"([^"]{1,64})"', text)
    return _REASON.sub("", match.group(1)) if match else ""


class H2Client(HTTPClient):
    """HTTP/2 requests to one https origin over one long-lived connection, opened on first use.

    A tenant-supplied origin (`guarded`) is resolved and every address checked by the URL guard before
    connecting, and the connected peer is checked again; operator-trusted origins connect directly.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext,
        guarded: bool = False,
        allow_private_endpoints: bool = False,
        max_streams: int = DEFAULT_MAX_STREAMS,
        connect_timeout: float = CONNECT_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
            raise ValueError("base_url must be an https origin without credentials")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("base_url must be an origin (scheme, host and port only)")
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._prefix = self.base_url + "/"
        self.host = parts.hostname
        self.port = parts.port or 443
        self.authority = parts.netloc
        self.ssl_context = ssl_context
        self.guarded = guarded
        self.allow_private_endpoints = allow_private_endpoints
        self.max_streams = max_streams
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.connections = 0  # connections opened so far; tests and metrics read it
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *, timeout: float
    ) -> HTTPResponse:
        """Send one request and return the whole answer, or raise a `TransportError` saying what went wrong.

        `url` must be on this client's origin. `timeout` bounds everything: waiting for a connection or
        a free stream, sending, and the answer.
        """
        if self._closed:
            raise ClientClosed("the client is closed")
        if not url.startswith(self._prefix):
            raise InvalidRequest("the URL is not on this client's origin")
        path = url[len(self.base_url):]
        for name, value in headers:
            if not _HEADER_NAME.match(name):
                raise InvalidRequest("a header name is not a lowercase HTTP token")
            if _FORBIDDEN_IN_VALUE.search(value) or value != value.strip(" \t"):
                raise InvalidRequest(f"the {name} header contains CR, LF, NUL or surrounding whitespace")
        full: list[Any] = [(":method", method), (":scheme", "https"), (":authority", self.authority),
                           NeverIndexedHeaderTuple(":path", path),
                           *(NeverIndexedHeaderTuple(n, v) if n in SINGLE_USE_HEADERS else (n, v) for n, v in headers)]
        try:
            async with asyncio.timeout(timeout):
                for attempt in range(MAX_UNPROCESSED_RETRIES + 1):
                    conn = self._conn
                    if conn is None or not conn.usable:
                        conn = await self._connection()
                    try:
                        return await conn.request(full, body)
                    except Unanswered as exc:
                        if not exc.unprocessed or attempt == MAX_UNPROCESSED_RETRIES or self._closed:
                            raise
                raise AssertionError("unreachable")  # pragma: no cover
        except TimeoutError:
            raise RequestTimeout(f"no answer within {timeout:g} s") from None

    async def _connection(self) -> _Connection:
        """The live connection, opening one if needed; concurrent callers share one attempt."""
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._opened)
        # Shielded: a caller that times out must not cancel the attempt the others are waiting on.
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and self._closed and not (current and current.cancelling()):
                raise ClientClosed("the client was closed while connecting") from None  # not our cancellation
            raise

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if task.cancelled() or task.exception() is not None:
            return  # the exception is retrieved: each waiter got it
        conn = task.result()
        if self._closed:
            conn.close()
            return
        self._conn = conn

    async def _open(self) -> _Connection:
        if self._closed:
            raise ClientClosed("the client is closed")
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await self._connect()
                await conn.ready
        except BaseException as exc:
            if conn is not None:
                conn._abort()
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(f"connecting took longer than {self.connect_timeout:g} s") from None
            raise
        self.connections += 1
        return conn

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        targets = await self._targets()
        last: BaseException | None = None
        for target in targets:
            try:
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self.max_streams, self.idle_timeout), target, self.port,
                    ssl=self.ssl_context, server_hostname=self.host,
                )
            except ssl.SSLCertVerificationError as exc:
                raise TLSVerifyFailed(f"the server's certificate did not verify: {exc.verify_message}") from None
            except (OSError, ssl.SSLError) as exc:
                last = exc
                continue
            try:
                self._check_connected(transport)
            except TransportError:
                transport.abort()
                raise
            return conn
        name = type(last).__name__ if last else "no address"
        raise ConnectFailed(f"could not connect ({name})")

    async def _targets(self) -> list[str]:
        """Where to connect: the host itself when trusted, else every resolved address, all checked first."""
        if not self.guarded:
            return [self.host]
        try:
            check_url_syntax(self.base_url, allow_private_endpoints=self.allow_private_endpoints)
            addresses = await resolve_checked(self.host, self.port,
                                              allow_private_endpoints=self.allow_private_endpoints)
        except UnsafeURL as exc:
            raise Blocked(f"connection refused by the URL guard: {exc}") from None
        return [str(ip) for ip in addresses]

    def _check_connected(self, transport: asyncio.BaseTransport) -> None:
        if self.guarded:  # belt and braces: the address we are connected to is the one we checked
            try:
                check_peer(transport.get_extra_info("peername"), allow_private_endpoints=self.allow_private_endpoints)
            except UnsafeURL as exc:
                raise Blocked(f"connection refused by the URL guard: {exc}") from None
        ssl_object = transport.get_extra_info("ssl_object")
        protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if protocol not in (None, "h2"):  # None: no ALPN from the server; APNs speaks HTTP/2 regardless
            raise ConnectFailed(f"the server chose {protocol!r}, not HTTP/2")

    async def aclose(self) -> None:
        """Close the connection; requests in flight fail with `ClientClosed`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=CLOSE_TIMEOUT)  # `_opened` closes what it may still yield
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose(ClientClosed("the client was closed"))
