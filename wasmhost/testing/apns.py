"""A fake APNs on 127.0.0.1: TLS + HTTP/2 (raw `h2`, so framing is under our control), checking what
Apple checks and answering from a per-token script.

`H2Server` is the generic part (also used by the FCM fake for its send endpoint): it accepts TLS
connections with ALPN ``h2`` (and, like Apple, prior-knowledge HTTP/2 without ALPN, which aioapns
uses), counts connections, ends header-only responses in the HEADERS frame, and can drop a connection
mid-request, send GOAWAY, refuse a stream, leave a request unanswered, advertise a small stream limit or
flow-control window, and records the peak number of requests it held at once and the resets it received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["DROP", "SILENT", "FakeAPNs", "H2Server", "Reply", "Request", "make_ca"]


def make_ca() -> tuple[trustme.CA, ssl.SSLContext, str]:
    """A test CA, a server context for 127.0.0.1/localhost, and the CA's PEM (what tenants paste as ca_bundle)."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    return ca, ctx, ca.cert_pem.bytes().decode()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int
    stream_id: int = 0


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


#: Returned by a handler to close the connection abruptly instead of answering.
DROP = Reply(-1)
#: Returned by a handler to leave the request unanswered (its stream stays open).
SILENT = Reply(-2)


class _Conn(asyncio.Protocol):
    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.id = next(server._ids)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.transport: asyncio.Transport | None = None
        self.state: dict[str, Any] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server.open.add(self)
        self.h2.initiate_connection()
        settings: dict[h2.settings.SettingCodes | int, int] = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_streams}
        if self.server.initial_window is not None:
            settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = self.server.initial_window
        self.h2.update_settings(settings)
        transport.write(self.h2.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except Exception:
            self.abort()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers}, bytearray())
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = self.streams.pop(event.stream_id)
                asyncio.ensure_future(self._answer(event.stream_id, headers, bytes(body)))
            elif isinstance(event, h2.events.StreamReset):
                self.server.resets += 1
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.abort()
                return
        self.flush()

    async def _answer(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        request = Request(headers.get(":method", ""), headers.get(":path", ""), headers, body, self.id, stream_id)
        server = self.server
        server.in_flight += 1
        server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
        try:
            reply = await server.handler(self, request)
        finally:
            server.in_flight -= 1
        if self.transport is None or self.transport.is_closing() or reply is SILENT:
            return
        if reply is DROP:
            self.abort()
            return
        out = [(":status", str(reply.status)), *reply.headers.items()]
        try:
            if not reply.body:
                self.h2.send_headers(stream_id, out, end_stream=True)  # as Apple does: no empty DATA frame
            else:
                self.h2.send_headers(stream_id, [*out, ("content-length", str(len(reply.body)))])
                step = self.h2.max_outbound_frame_size  # bodies fit the window; only the frame size splits them
                for at in range(0, len(reply.body), step):
                    self.h2.send_data(stream_id, reply.body[at:at + step], end_stream=at + step >= len(reply.body))
        except h2.exceptions.ProtocolError:  # the client reset the stream (or the connection) meanwhile
            return
        self.flush()

    def goaway(self, last_stream_id: int, *, reason: str = "Shutdown", close: bool = True) -> None:
        """Say GOAWAY as APNs does (JSON reason in the debug data), then close the connection."""
        self.h2.close_connection(0, json.dumps({"reason": reason}).encode(), last_stream_id=last_stream_id)
        self.flush()
        if close and self.transport is not None:
            self.transport.close()

    def refuse(self, stream_id: int) -> None:
        """Reset one stream with REFUSED_STREAM: the server did not process it."""
        self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


Handler = Callable[[_Conn, Request], Awaitable[Reply]]


class H2Server:
    """A raw HTTP/2 + TLS server on 127.0.0.1 with a free port; `handler` answers each request."""

    def __init__(self, ssl_context: ssl.SSLContext, handler: Handler, max_streams: int = 1000,
                 initial_window: int | None = None) -> None:
        self.ssl_context = ssl_context
        self.handler = handler
        self.max_streams = max_streams
        self.initial_window = initial_window
        self.connections = 0
        self.in_flight = 0  # requests received and not yet answered, across connections
        self.peak_in_flight = 0
        self.resets = 0  # RST_STREAM frames received from clients
        self.open: set[_Conn] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> H2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        for conn in list(self.open):
            conn.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Seen:
    token: str
    headers: dict[str, str]
    payload: dict[str, Any] | None
    jwt: str
    connection: int


class FakeAPNs:
    """Checks the ES256 provider token against registered keys, the required headers and the size limits;
    answers scripted tokens with scripted failures and everything else with 200.

    Script actions (per device token, consumed in order): ``ok``, ``dead`` (410 Unregistered with
    `dead_timestamp_ms`), ``bad-token`` (400 BadDeviceToken), ``bad-request`` (400 BadMessageId),
    ``expired-auth`` (403 ExpiredProviderToken: the JWT in use is then expired for good),
    ``invalid-auth`` (403 InvalidProviderToken), ``rate-limit`` (429 TooManyRequests, Retry-After 1),
    ``unavailable`` (503), ``drop`` (connection closed mid-request), ``goaway`` (GOAWAY below this stream,
    so it was not processed, then close), ``goaway-processed`` (GOAWAY that covers this stream, then close
    without answering it).
    """

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self.server = H2Server(ssl_context, self._handle)
        self.keys: dict[str, tuple[str, ec.EllipticCurvePublicKey]] = {}
        self.script: dict[str, list[str]] = {}
        self.seen: list[Seen] = []
        self.errors: list[str] = []  # every refusal the fake made on its own checks, with the reason
        self.jwts: set[str] = set()
        self.expired_jwts: set[str] = set()
        self._verified: dict[str, dict[str, Any]] = {}
        self.dead_timestamp_ms = 0
        self.delay = 0.0

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def connections(self) -> int:
        return self.server.connections

    def add_key(self, team_id: str, key_id: str, public_key: ec.EllipticCurvePublicKey) -> None:
        self.keys[key_id] = (team_id, public_key)

    async def start(self) -> FakeAPNs:
        await self.server.start()
        return self

    async def aclose(self) -> None:
        await self.server.aclose()

    def _error(self, status: int, reason: str, **extra: Any) -> Reply:
        self.errors.append(reason)
        return Reply(status, {}, json.dumps({"reason": reason, **extra}).encode())

    def _check_jwt(self, conn: _Conn, auth: str) -> Reply | None:
        if not auth.lower().startswith("bearer "):
            return self._error(403, "MissingProviderToken")
        token = auth[7:]
        claims = self._verified.get(token)  # like Apple, verify a token once, not on every request
        if claims is None:
            try:
                kid = jwt.get_unverified_header(token).get("kid", "")
                team_id, public = self.keys[kid]
                claims = jwt.decode(token, public, algorithms=["ES256"], options={"require": ["iat", "iss"]})
            except (KeyError, jwt.PyJWTError):
                return self._error(403, "InvalidProviderToken")
            if claims["iss"] != team_id:
                return self._error(403, "InvalidProviderToken")
            self._verified[token] = claims
        if token in self.expired_jwts or time.time() - claims["iat"] > 3600:
            return self._error(403, "ExpiredProviderToken")
        previous = conn.state.get("jwt")
        if previous is not None and previous != token and previous not in self.expired_jwts:
            return self._error(429, "TooManyProviderTokenUpdates")
        conn.state["jwt"] = token
        self.jwts.add(token)
        return None

    async def _handle(self, conn: _Conn, req: Request) -> Reply:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = await self._check_and_answer(conn, req)
        if reply is not DROP:  # like Apple, echo the client's apns-id (aioapns matches answers by it)
            reply.headers["apns-id"] = req.headers.get("apns-id") or str(uuid.uuid4())
        return reply

    async def _check_and_answer(self, conn: _Conn, req: Request) -> Reply:
        if req.method != "POST":
            return self._error(405, "MethodNotAllowed")
        if not req.path.startswith("/3/device/"):
            return self._error(404, "BadPath")
        token = req.path[len("/3/device/"):]
        refused = self._check_jwt(conn, req.headers.get("authorization", ""))
        if refused is not None:
            return refused
        topic = req.headers.get("apns-topic", "")
        push_type = req.headers.get("apns-push-type", "")
        priority = req.headers.get("apns-priority", "10")
        if not topic:
            return self._error(400, "MissingTopic")
        if push_type not in ("alert", "background", "voip"):
            return self._error(400, "InvalidPushType")
        if (push_type == "voip") != topic.endswith(".voip"):
            return self._error(400, "DeviceTokenNotForTopic")
        if priority not in ("5", "10", "1") or (push_type == "background" and priority != "5"):
            return self._error(400, "BadPriority")
        if len(req.headers.get("apns-collapse-id", "").encode()) > 64:
            return self._error(400, "BadCollapseId")
        if "apns-expiration" in req.headers and not req.headers["apns-expiration"].isdigit():
            return self._error(400, "BadExpirationDate")
        if len(req.body) > (5120 if push_type == "voip" else 4096):
            return self._error(413, "PayloadTooLarge")
        try:
            payload = json.loads(req.body)
        except ValueError:
            return self._error(400, "PayloadEmpty")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return self._error(400, "PayloadEmpty")
        self.seen.append(Seen(token, req.headers, payload, req.headers["authorization"][7:], conn.id))
        steps = self.script.get(token)
        action = steps.pop(0) if steps else "ok"
        if action == "dead":
            return self._error(410, "Unregistered", timestamp=self.dead_timestamp_ms)
        if action == "bad-token":
            return self._error(400, "BadDeviceToken")
        if action == "bad-request":
            return self._error(400, "BadMessageId")
        if action == "expired-auth":
            self.expired_jwts.add(req.headers["authorization"][7:])
            return self._error(403, "ExpiredProviderToken")
        if action == "invalid-auth":
            return self._error(403, "InvalidProviderToken")
        if action == "rate-limit":
            reply = self._error(429, "TooManyRequests")
            reply.headers["retry-after"] = "1"
            return reply
        if action == "unavailable":
            return self._error(503, "ServiceUnavailable")
        if action == "drop":
            return DROP
        if action in ("goaway", "goaway-processed"):
            conn.goaway(max(req.stream_id - 2, 0) if action == "goaway" else req.stream_id)
            return SILENT
        return Reply(200)
