"""SSRF guard for URLs that tenants or end users supply (ntfy base URLs, endpoints, Web Push subscriptions).

Three layers, because each alone has a hole:

* `check_url_syntax`: shape and literal addresses, no DNS. Refuses odd numeric hosts (``0x7f.1``,
  ``2130706433``, ``017700000001``) that resolvers read as IPv4 but naive checks read as names.
* `check_url`: the save-time check. Resolves the host (bounded, fail closed) and refuses the URL unless
  *every* address is public.
* `resolve_checked` + `check_peer`: the connect-time check. DNS can change between save and send
  (rebinding), so every client resolves again, refuses reserved addresses, connects to the checked IP
  itself and re-checks the peer: `GuardedBackend` does it for httpcore pools, and the APNs client calls
  the two functions itself. Clients never follow redirects.

Error texts name the host or address at most, never the whole URL: paths carry device tokens.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = [
    "DNS_TIMEOUT",
    "MAX_URL_BYTES",
    "RESERVED_NETWORKS",
    "GuardedBackend",
    "UnsafeConnection",
    "UnsafeURL",
    "check_address",
    "check_peer",
    "check_url",
    "check_url_syntax",
    "is_reserved",
    "resolve_checked",
    "resolve_host",
]

#: Bound on one name resolution, at save and at connect time.
DNS_TIMEOUT = 5.0
#: Longest URL accepted from a tenant or end user (browsers' push endpoints are well under this).
MAX_URL_BYTES = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NETS = (
    # IPv4
    ("0.0.0.0/8", "unspecified (this network)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    # IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
#: Address blocks no tenant URL may reach (besides IPv4-mapped forms of these, checked as IPv4).
RESERVED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why) for net, why in _NETS
)

_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class UnsafeURL(ValueError):
    """The URL may not be used: bad shape or a non-public target. The text says why (no path, no query)."""


class UnsafeConnection(httpcore.ConnectError):
    """Raised at connect time by `GuardedBackend`; httpcore passes it through as a `ConnectError`."""


def is_reserved(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped (zone id)"
        if ip.ipv4_mapped is not None:
            return is_reserved(ip.ipv4_mapped)
    for net, why in RESERVED_NETWORKS:
        if ip.version == net.version and ip in net:
            return why
    # Belt and braces: anything the standard library does not consider global is refused too.
    if not ip.is_global:
        return "not globally routable"
    return None


def check_address(ip: IPAddress | str, *, allow_private_endpoints: bool = False) -> None:
    """Refuse a single address unless it is public (or private targets are allowed)."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if allow_private_endpoints:
        return
    why = is_reserved(addr)
    if why:
        raise UnsafeURL(f"address {addr} is {why}, not a public address")


def _parse(url: str) -> httpx.URL:
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL("URL is empty")
    if len(url.encode()) > MAX_URL_BYTES:
        raise UnsafeURL(f"URL is longer than {MAX_URL_BYTES} bytes")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UnsafeURL("URL contains whitespace or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise UnsafeURL("URL is malformed") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL("URL scheme must be http or https")
    if not parsed.host:
        raise UnsafeURL("URL has no host")
    if parsed.userinfo:
        raise UnsafeURL("URL must not contain a user name or password")
    return parsed


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url_syntax(url: str, *, allow_private_endpoints: bool = False) -> httpx.URL:
    """Check shape and any literal address, without DNS; return the parsed URL or raise `UnsafeURL`."""
    parsed = _parse(url)
    host = parsed.host.rstrip(".").lower()
    if "%" in host:
        raise UnsafeURL("URL host must not carry a zone id")
    ip = _literal(host)
    if ip is not None:
        check_address(ip, allow_private_endpoints=allow_private_endpoints)
        return parsed
    labels = host.split(".")
    # Resolvers read "0x7f.1", "2130706433", "0177.0.0.1" or "127.1" as IPv4; a real name never has an
    # all-numeric last label (no TLD is numeric), so any of these is refused outright.
    if all(_NUMERIC_LABEL.match(label) for label in labels) or _NUMERIC_LABEL.match(labels[-1]):
        raise UnsafeURL(f"URL host {host!r} is a non-standard numeric address")
    if not allow_private_endpoints and (host in _LOCAL_NAMES or host.endswith(".localhost")):
        raise UnsafeURL(f"URL host {host!r} is a local name")
    return parsed


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (bounded by DNS_TIMEOUT); UnsafeURL when it resolves to none."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(DNS_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnsafeURL(f"resolving {host!r} took longer than {DNS_TIMEOUT:g} s") from None
    except OSError:
        raise UnsafeURL(f"host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeURL(f"host {host!r} has no addresses")
    return addresses


async def check_url(url: str, *, allow_private_endpoints: bool = False) -> httpx.URL:
    """The save-time check: syntax, then every resolved address must be public. Fails closed on DNS errors."""
    parsed = check_url_syntax(url, allow_private_endpoints=allow_private_endpoints)
    if allow_private_endpoints or _literal(parsed.host) is not None:
        return parsed  # nothing DNS could add: every address is allowed, or the address is already checked
    for ip in await resolve_host(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)):
        check_address(ip, allow_private_endpoints=False)
    return parsed


async def resolve_checked(host: str, port: int, *, allow_private_endpoints: bool = False) -> list[IPAddress]:
    """The connect-time check: every address `host` resolves to now, each one allowed, or `UnsafeURL`.

    Callers connect to these addresses themselves (never to the name again), so DNS cannot change in
    between, and then check the connected peer with `check_peer`."""
    literal = _literal(host)
    if literal is None:
        check_url_syntax(f"http://{host}/", allow_private_endpoints=allow_private_endpoints)
    addresses = [literal] if literal is not None else await resolve_host(host, port)
    for ip in addresses:
        check_address(ip, allow_private_endpoints=allow_private_endpoints)
    return addresses


def check_peer(peer: Any, *, allow_private_endpoints: bool = False) -> None:
    """Belt and braces after connecting: the socket's peer address (``(host, port, …)``) is allowed."""
    if not peer:
        raise UnsafeURL("the connected address is unknown")
    try:
        check_address(str(peer[0]).split("%", 1)[0], allow_private_endpoints=allow_private_endpoints)
    except ValueError as exc:
        if isinstance(exc, UnsafeURL):
            raise
        raise UnsafeURL("the connected address is not an IP address") from None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to checked addresses (`resolve_checked`) and
    checks the peer it got (`check_peer`). Pools using it must not follow redirects, nor use a proxy."""

    def __init__(self, allow_private_endpoints: bool = False) -> None:
        self.allow_private_endpoints = allow_private_endpoints
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve_checked(host, port, allow_private_endpoints=self.allow_private_endpoints)
        except UnsafeURL as exc:
            raise UnsafeConnection(f"connection refused by the URL guard: {exc}") from exc
        last: Exception | None = None
        for ip in addresses:
            try:
                stream = await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            try:
                check_peer(stream.get_extra_info("server_addr"), allow_private_endpoints=self.allow_private_endpoints)
            except UnsafeURL as exc:
                await stream.aclose()
                raise UnsafeConnection(f"connection refused by the URL guard: {exc}") from exc
            return stream
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeConnection("connection refused by the URL guard: unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
