"""The SSRF guard: literal and odd numeric hosts, resolution at save, and the connect-time re-check."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wasmhost.providers._client import Blocked, ConnectFailed, TLSVerifyFailed
from wasmhost.providers._pool import PoolClient
from wasmhost.providers._tls import TLSContexts
from wasmhost.push.urlguard import (
    MAX_URL_BYTES,
    UnsafeURL,
    check_url,
    check_url_syntax,
    is_reserved,
)

PUBLIC = [
    "https://ntfy.sh",
    "https://ntfy.example.com/base/",
    "http://93.184.216.34:8080/x",
    "https://[2606:4700:4700::1111]/",
    "https://push.example.com:8443/wp/abc?x=1",
]

REFUSED = {
    "ftp://ntfy.sh": "scheme",
    "ntfy.sh": "scheme",
    "https://": "malformed|no host",
    "": "empty",
    "https://user:pw@ntfy.sh": "user name",
    "http://169.254.169.254/latest/meta-data": "link-local",
    "http://127.0.0.1:8080": "loopback",
    "http://127.9.9.9": "loopback",
    "http://10.1.2.3": "private",
    "http://172.16.0.1": "private",
    "http://192.168.1.1": "private",
    "http://100.64.0.1": "carrier-grade NAT",
    "http://0.0.0.0": "unspecified",
    "http://198.18.0.2": "benchmarking",
    "http://198.19.1.1": "benchmarking",
    "http://192.0.0.8": "IETF",
    "http://224.0.0.1": "multicast",
    "http://[::1]": "loopback",
    "http://[::]": "unspecified",
    "http://[fd00::1]": "unique local",
    "http://[fe80::1]": "link-local",
    "http://[64:ff9b::a00:1]": "NAT64",
    "http://[::ffff:127.0.0.1]": "loopback",
    "http://[ff02::1]": "multicast",
    "http://0x7f.1": "numeric",
    "http://0x7f000001": "numeric",
    "http://2130706433": "numeric",
    "http://017700000001": "numeric",
    "http://0177.0.0.1": "malformed|numeric",
    "http://127.1": "numeric",
    "http://foo.123": "numeric",
    "http://localhost:8080": "local name",
    "http://api.localhost": "local name",
    "http://exa mple.com": "whitespace",
    "https://a.example/" + "x" * MAX_URL_BYTES: "longer than",
}


@pytest.mark.parametrize("url", PUBLIC)
def test_syntax_accepts_public_urls(url: str) -> None:
    check_url_syntax(url)


@pytest.mark.parametrize(("url", "why"), REFUSED.items())
def test_syntax_refuses(url: str, why: str) -> None:
    with pytest.raises(UnsafeURL, match=why):
        check_url_syntax(url)


def test_error_text_never_carries_the_path_or_query() -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url_syntax("http://127.0.0.1/wp/secret-token-abc?auth=secret-q")
    assert "secret" not in str(info.value)


def test_allow_private_lets_loopback_through_but_not_odd_numeric_hosts() -> None:
    check_url_syntax("http://127.0.0.1:8080", allow_private_endpoints=True)
    check_url_syntax("http://localhost:8080", allow_private_endpoints=True)
    with pytest.raises(UnsafeURL, match="numeric"):
        check_url_syntax("http://2130706433", allow_private_endpoints=True)


def test_is_reserved_names_the_block() -> None:
    import ipaddress

    assert is_reserved(ipaddress.ip_address("8.8.8.8")) is None
    assert is_reserved(ipaddress.ip_address("169.254.169.254")) == "link-local (cloud metadata)"
    assert is_reserved(ipaddress.ip_address("fe80::1%eth0")) == "scoped (zone id)"


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Answer getaddrinfo from `table`; unknown names fail like NXDOMAIN. Returns the names asked."""
    asked: list[str] = []
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for ip in table[host]:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            addr = (ip, int(port or 0), 0, 0) if family == socket.AF_INET6 else (ip, int(port or 0))
            out.append((family, socket.SOCK_STREAM, 6, "", addr))
        return out

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def test_check_url_requires_every_resolved_address_to_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {
        "public.example": ["93.184.216.34", "2606:2800:220:1::1"],
        "mixed.example": ["93.184.216.34", "10.0.0.5"],
        "meta.example": ["169.254.169.254"],
    })
    await check_url("https://public.example/x")
    with pytest.raises(UnsafeURL, match="private"):
        await check_url("https://mixed.example/x")
    with pytest.raises(UnsafeURL, match="link-local"):
        await check_url("https://meta.example/")


async def test_check_url_fails_closed_when_the_name_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {})
    with pytest.raises(UnsafeURL, match="does not resolve"):
        await check_url("https://nowhere.invalid/")


async def test_check_url_skips_dns_for_literals_and_when_private_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, {})
    await check_url("https://93.184.216.34/")
    await check_url("http://anything.internal:8080/", allow_private_endpoints=True)
    assert asked == []


@pytest.fixture
async def loopback_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A tiny HTTP server on 127.0.0.1 that counts connections and answers 200 (or 302 on /redirect)."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        seen.append(path)
        if path == "/redirect":
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


def _client(allow_private_endpoints: bool = False, ssl_context: Any = None) -> PoolClient:
    """The guarded client every provider uses for tenant URLs (httpcore with the guard's backend)."""
    return PoolClient(ssl_context=ssl_context or TLSContexts().get(), guarded=True,
                      allow_private_endpoints=allow_private_endpoints)


async def test_transport_refuses_loopback_at_connect_time(loopback_server: tuple[int, list[str]]) -> None:
    port, seen = loopback_server
    async with _client() as client:
        with pytest.raises(Blocked) as info:
            await client.request("GET", f"http://127.0.0.1:{port}/wp/secret-token", timeout=5)
    assert "loopback" in str(info.value) and "secret-token" not in str(info.value)
    assert seen == []


async def test_transport_catches_dns_rebinding(
    loopback_server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name was public when saved; by send time it points at loopback. The connect-time check refuses."""
    port, seen = loopback_server
    table = {"rebind.example": ["93.184.216.34"]}
    fake_dns(monkeypatch, table)
    await check_url(f"http://rebind.example:{port}/")
    table["rebind.example"] = ["127.0.0.1"]
    async with _client() as client:
        with pytest.raises(Blocked):
            await client.request("GET", f"http://rebind.example:{port}/", timeout=5)
    assert seen == []


async def test_transport_allows_private_when_told_and_connects_to_the_checked_address(
    loopback_server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen = loopback_server
    fake_dns(monkeypatch, {"svc.internal": ["127.0.0.1"]})
    async with _client(allow_private_endpoints=True) as client:
        assert (await client.request("GET", f"http://127.0.0.1:{port}/a", timeout=5)).status == 200
        response = await client.request("GET", f"http://svc.internal:{port}/b", timeout=5)
        assert response.status == 200
        # A redirect is returned to the caller, never followed.
        assert (await client.request("GET", f"http://127.0.0.1:{port}/redirect", timeout=5)).status == 302
    assert seen == ["/a", "/b", "/redirect"]


async def test_plain_network_errors_are_not_guard_refusals() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    async with _client(allow_private_endpoints=True) as client:
        with pytest.raises(ConnectFailed) as info:
            await client.request("GET", f"http://127.0.0.1:{port}/", timeout=5)
    assert not isinstance(info.value, TLSVerifyFailed)


async def test_tls_verifies_the_host_name_although_the_guard_dials_the_checked_ip() -> None:
    """The transport connects to the resolved, checked address, but SNI and certificate checks still use the
    URL's name: a certificate for another name is refused."""
    import ssl

    import trustme

    from wasmhost.testing import FakeServer, Response

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with FakeServer(lambda r: Response(200, b"ok"), ssl_context=server_ctx) as server:
        async with _client(True, client_ctx) as client:
            assert (await client.request("GET", f"https://localhost:{server.port}/", timeout=5)).body == b"ok"
            with pytest.raises(TLSVerifyFailed):  # the certificate names localhost only
                await client.request("GET", f"https://127.0.0.1:{server.port}/", timeout=5)
