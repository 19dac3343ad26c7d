"""The asyncio + h2 client APNs uses, against the raw-h2 TLS fake on 127.0.0.1: multiplexing under the
server's stream limit, flow control both ways, GOAWAY, dropped connections, refused streams, timeouts,
idle close, the URL guard and TLS trust."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wasmhost.providers._client import (
    Blocked,
    ClientClosed,
    ConnectionLost,
    InvalidRequest,
    ProtocolFailure,
    RequestTimeout,
    TLSVerifyFailed,
    TransportError,
)
from wasmhost.providers._h2 import MAX_RESPONSE_BODY, H2Client
from wasmhost.providers._tls import ALPN_H2_ONLY, TLSContexts
from wasmhost.testing.apns import DROP, SILENT, H2Server, Reply, Request, _Conn, make_ca

TOKEN = "ab" * 32


def make_ssl_context(ca_bundle: str = "") -> Any:
    return TLSContexts().get(ca_bundle, alpn=ALPN_H2_ONLY)
Handler = Callable[[_Conn, Request], Awaitable[Reply]]


@pytest.fixture(scope="module")
def tls() -> tuple[Any, Any, str]:
    return make_ca()


async def _ok(conn: _Conn, req: Request) -> Reply:
    return Reply(200, {"x-len": str(len(req.body))}, hashlib.sha256(req.body).hexdigest().encode())


@pytest.fixture
async def serve(tls: tuple[Any, Any, str]) -> AsyncIterator[Callable[..., Awaitable[H2Server]]]:
    servers: list[H2Server] = []

    async def start(handler: Handler = _ok, **options: Any) -> H2Server:
        server = await H2Server(tls[1], handler, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.aclose()


@pytest.fixture
async def clients(tls: tuple[Any, Any, str]) -> AsyncIterator[Callable[..., H2Client]]:
    made: list[H2Client] = []

    def make(server: H2Server, *, ca: str | None = None, **options: Any) -> H2Client:
        client = H2Client(server.url, ssl_context=make_ssl_context(tls[2] if ca is None else ca), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def _clean(exc: BaseException, server: H2Server) -> None:
    """Failure text never carries the URL, the path (with its token) or a header value."""
    text = str(exc)
    assert server.url not in text and TOKEN not in text and "secret" not in text


async def _post(client: H2Client, body: bytes = b"{}", path: str = f"/3/device/{TOKEN}", timeout: float = 5.0) -> Any:
    return await client.request("POST", client.base_url + path, [("authorization", "bearer secret")], body,
                                timeout=timeout)


async def test_many_concurrent_streams_share_one_connection_within_the_servers_limit(serve: Any, clients: Any) -> None:
    async def slow_ok(conn: _Conn, req: Request) -> Reply:
        await asyncio.sleep(0.005)
        return await _ok(conn, req)

    server = await serve(slow_ok, max_streams=8)
    client = clients(server)
    responses = await asyncio.gather(*(_post(client, str(i).encode()) for i in range(300)))
    assert [r.status for r in responses] == [200] * 300
    assert [r.body for r in responses] == [hashlib.sha256(str(i).encode()).hexdigest().encode() for i in range(300)]
    assert server.connections == 1 and client.connections == 1
    assert 2 <= server.peak_in_flight <= 8  # multiplexed, and never above SETTINGS_MAX_CONCURRENT_STREAMS


async def test_our_own_stream_cap_applies_below_the_servers(serve: Any, clients: Any) -> None:
    async def slow_ok(conn: _Conn, req: Request) -> Reply:
        await asyncio.sleep(0.005)
        return await _ok(conn, req)

    server = await serve(slow_ok)
    client = clients(server, max_streams=3)
    await asyncio.gather(*(_post(client) for i in range(50)))
    assert 2 <= server.peak_in_flight <= 3


async def test_a_body_larger_than_the_flow_control_window_is_sent_whole(serve: Any, clients: Any) -> None:
    server = await serve(initial_window=1000)  # each stream may send 1,000 bytes until the server acks
    client = clients(server)
    bodies = [bytes([i]) * 30_000 for i in range(4)]  # 120 kB: also beyond the 64 kB connection window
    responses = await asyncio.gather(*(_post(client, body) for body in bodies))
    assert [r.headers["x-len"] for r in responses] == ["30000"] * 4
    assert [r.body for r in responses] == [hashlib.sha256(b).hexdigest().encode() for b in bodies]


async def test_received_data_is_acknowledged_so_the_connection_never_stalls(serve: Any, clients: Any) -> None:
    async def padded(conn: _Conn, req: Request) -> Reply:
        return Reply(400, {}, b'{"reason":"BadMessageId","pad":"' + b"x" * 2000 + b'"}')

    server = await serve(padded)
    client = clients(server)
    for _ in range(100):  # 200 kB of answers: three times the window the server starts with
        response = await _post(client, timeout=2.0)
        assert response.status == 400 and len(response.body) > 2000
    assert server.connections == 1


async def test_a_header_only_answer_ends_in_the_headers_frame(serve: Any, clients: Any) -> None:
    async def apple_200(conn: _Conn, req: Request) -> Reply:
        return Reply(200, {"apns-id": "e2b9a0f6-4f0e-4a0b-8a1d-4b1c2f1e5d00"})

    client = clients(await serve(apple_200))
    response = await _post(client)
    assert (response.status, response.body, response.headers["apns-id"][:8]) == (200, b"", "e2b9a0f6")


async def test_a_dropped_connection_fails_what_is_in_flight_then_reconnects(serve: Any, clients: Any) -> None:
    arrived = asyncio.Event()
    seen: list[Request] = []

    async def handler(conn: _Conn, req: Request) -> Reply:
        if conn.id > 1:
            return Reply(200)
        seen.append(req)
        if len(seen) == 5:
            arrived.set()
        await arrived.wait()
        return DROP if req.path.endswith("drop") else SILENT

    server = await serve(handler)
    client = clients(server)
    results = await asyncio.gather(*(_post(client) for _ in range(4)), _post(client, path="/drop"),
                                   return_exceptions=True)
    assert all(isinstance(r, ConnectionLost) and not r.unprocessed for r in results), results
    for r in results:
        _clean(r, server)
    assert (await _post(client)).status == 200
    assert server.connections == 2


async def test_goaway_retries_the_streams_the_server_did_not_process(serve: Any, clients: Any) -> None:
    seen: list[Request] = []

    async def handler(conn: _Conn, req: Request) -> Reply:
        if conn.id > 1:
            return Reply(200)
        seen.append(req)
        if len(seen) == 4:  # like Apple shutting down: only the first stream was taken
            conn.goaway(min(r.stream_id for r in seen), reason="Shutdown")
        return SILENT

    server = await serve(handler)
    client = clients(server)
    results = await asyncio.gather(*(_post(client) for _ in range(4)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    # The processed stream is unknown (maybe delivered): it fails transiently; the three above
    # last_stream_id went again on a new connection, transparently.
    assert len(failed) == 1 and isinstance(failed[0], ConnectionLost) and not failed[0].unprocessed
    assert "GOAWAY" in str(failed[0]) and "Shutdown" in str(failed[0])
    _clean(failed[0], server)
    assert sorted(r.status for r in results if not isinstance(r, BaseException)) == [200] * 3
    assert server.connections == 2


async def test_a_refused_stream_is_sent_again(serve: Any, clients: Any) -> None:
    calls = 0

    async def handler(conn: _Conn, req: Request) -> Reply:
        nonlocal calls
        calls += 1
        if calls == 1:
            conn.refuse(req.stream_id)
            return SILENT
        return Reply(200)

    server = await serve(handler)
    client = clients(server)
    assert (await _post(client)).status == 200
    assert calls == 2 and server.connections == 1


async def test_a_slow_server_times_out_and_the_stream_is_freed(serve: Any, clients: Any) -> None:
    async def handler(conn: _Conn, req: Request) -> Reply:
        if req.path == "/slow":
            await asyncio.sleep(10)
        return Reply(200)

    server = await serve(handler)
    client = clients(server, max_streams=1)
    with pytest.raises(RequestTimeout) as info:
        await _post(client, path="/slow", timeout=0.2)
    _clean(info.value, server)
    # The only stream slot is free again, on the same connection, and the server saw the reset.
    assert (await _post(client, timeout=2.0)).status == 200
    assert server.connections == 1 and server.resets == 1


async def test_a_cancelled_caller_resets_its_stream(serve: Any, clients: Any) -> None:
    async def handler(conn: _Conn, req: Request) -> Reply:
        return SILENT if req.path == "/never" else Reply(200)

    server = await serve(handler)
    client = clients(server, max_streams=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await _post(client, path="/never")
    assert (await _post(client, timeout=2.0)).status == 200
    assert server.resets == 1


async def test_an_oversized_answer_is_refused(serve: Any, clients: Any) -> None:
    async def huge(conn: _Conn, req: Request) -> Reply:
        return Reply(500, {}, b"x" * (MAX_RESPONSE_BODY + 4000)) if req.path == "/huge" else Reply(200)

    server = await serve(huge)
    client = clients(server)
    with pytest.raises(ProtocolFailure, match="larger than"):
        await _post(client, path="/huge")
    assert (await _post(client)).status == 200  # only that stream was reset; the connection lives on
    assert server.connections == 1


async def test_an_idle_connection_is_closed_and_the_next_request_reconnects(serve: Any, clients: Any) -> None:
    server = await serve()
    client = clients(server, idle_timeout=0.2)
    assert (await _post(client)).status == 200
    for _ in range(50):  # generous: the close needs only one timer tick after 0.2 s
        await asyncio.sleep(0.05)
        if not server.open:
            break
    assert not server.open
    assert (await _post(client)).status == 200
    assert server.connections == 2


async def test_the_guard_refuses_a_private_address_before_connecting(serve: Any, clients: Any) -> None:
    server = await serve()
    blocked = clients(server, guarded=True, allow_private_endpoints=False)
    with pytest.raises(Blocked, match="loopback") as info:
        await _post(blocked)
    _clean(info.value, server)
    assert server.connections == 0
    allowed = clients(server, guarded=True, allow_private_endpoints=True)  # WASMHOST_ALLOW_PRIVATE_ENDPOINTS=1
    assert (await _post(allowed)).status == 200


async def test_the_guard_refuses_a_local_name(tls: tuple[Any, Any, str]) -> None:
    client = H2Client("https://localhost:9", ssl_context=make_ssl_context(tls[2]), guarded=True)
    try:
        with pytest.raises(Blocked, match="local name"):
            await _post(client)
    finally:
        await client.aclose()


async def test_an_untrusted_certificate_fails_verification(serve: Any, clients: Any) -> None:
    server = await serve()
    client = clients(server, ca=make_ca()[2])
    with pytest.raises(TLSVerifyFailed) as info:
        await _post(client)
    _clean(info.value, server)


async def test_a_refused_connection_is_a_connect_failure(clients: Any, serve: Any) -> None:
    server = await serve()
    await server.aclose()  # the port is closed now
    client = clients(server)
    with pytest.raises(TransportError, match="could not connect"):
        await _post(client)


async def test_aclose_fails_what_is_in_flight_and_refuses_new_requests(serve: Any, clients: Any) -> None:
    async def never(conn: _Conn, req: Request) -> Reply:
        return SILENT

    server = await serve(never)
    client = clients(server)
    pending = asyncio.ensure_future(_post(client))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if server.peak_in_flight:
            break
    await client.aclose()
    with pytest.raises(ClientClosed):
        await pending
    with pytest.raises(ClientClosed):
        await _post(client)
    assert client.is_closed
    await client.aclose()  # idempotent


async def test_a_connection_that_ran_out_of_stream_ids_hands_over_to_a_new_one(serve: Any, clients: Any) -> None:
    server = await serve()
    client = clients(server)
    assert (await _post(client)).status == 200
    first = client._conn
    assert first is not None
    first.h2.highest_outbound_stream_id = 2**31 - 1 - 2 * 1000  # what ~1 billion requests leave behind
    assert (await _post(client)).status == 200  # the last stream goes out on the old connection...
    assert (await _post(client)).status == 200  # ...the next on a new one, and the old one is closed
    assert server.connections == 2 and first.closed and client._conn is not first


@pytest.mark.parametrize("header", [("apns-collapse-id", "a\r\nx-injected: 1"), ("apns-collapse-id", "nul\x00"),
                                    ("apns-collapse-id", " padded"), ("APNs-Topic", "x"), ("bad name", "x")])
async def test_a_header_that_is_not_valid_http2_is_refused_before_sending(
    serve: Any, clients: Any, header: tuple[str, str]
) -> None:
    server = await serve()
    client = clients(server)
    with pytest.raises(InvalidRequest):
        await client.request("POST", server.url + "/", [header], timeout=2.0)
    assert server.connections == 0


def test_base_url_must_be_an_https_origin() -> None:
    ctx = make_ssl_context()
    for bad in ("http://api.example.com", "https://api.example.com/3/device", "https://u:p@api.example.com"):
        with pytest.raises(ValueError, match="base_url"):
            H2Client(bad, ssl_context=ctx)


async def test_a_header_new_on_every_request_stays_out_of_the_hpack_tables(serve: Any, clients: Any) -> None:
    """``apns-collapse-id`` differs on every send. Indexed, each value took a place in both ends' HPACK
    tables, pushing out the values that repeat (the JWT), and the encoder searches its table entry by
    entry for every header (bench/README.md, "Durable delivery")."""
    conns: list[_Conn] = []

    async def handler(conn: _Conn, req: Request) -> Reply:
        conns.append(conn)
        assert req.headers["apns-collapse-id"].startswith("id-")
        return Reply(200, {}, b"")

    server = await serve(handler)
    client = clients(server)
    for i in range(20):
        await client.request("POST", client.base_url + f"/3/device/{TOKEN}",
                             [("authorization", "bearer secret"), ("apns-collapse-id", f"id-{i}")], b"{}", timeout=5.0)
    names = [name for name, _ in conns[-1].h2.decoder.header_table.dynamic_entries]
    assert b"authorization" in names and b"apns-collapse-id" not in names
