"""`PoolClient`, the httpcore client of ntfy, Expo, Web Push and FCM, against a loopback server: what it
sends on every request, how it bounds and decodes answers, and that nothing leaks into its errors."""

from __future__ import annotations

import gzip
import zlib

import pytest

from wasmhost.providers._client import ClientClosed, InvalidRequest, ProtocolFailure
from wasmhost.providers._pool import MAX_RESPONSE_BODY, USER_AGENT, PoolClient
from wasmhost.providers._tls import TLSContexts
from wasmhost.testing import FakeServer, Request, Response


def _client(**options: object) -> PoolClient:
    return PoolClient(ssl_context=TLSContexts().get(), guarded=False, **options)  # type: ignore[arg-type]


async def test_each_request_carries_host_user_agent_and_length_and_reuses_its_lane() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"{}", {"x-answer": "yes"})

    async with FakeServer(handler) as server, _client(lanes=2) as client:
        host = f"127.0.0.1:{server.port}"
        for _ in range(3):
            answer = await client.request("POST", server.url + "/p?q=1", [("X-Token", "t")], b"abc", timeout=5)
            assert (answer.status, answer.headers["x-answer"], answer.body) == (200, "yes", b"{}")
    assert [r.target for r in seen] == ["/p?q=1"] * 3
    assert all(r.headers["host"] == host and r.headers["user-agent"] == USER_AGENT
               and r.headers["content-length"] == "3" and r.body == b"abc" for r in seen)
    assert server.connections == 1  # one request at a time: the least busy lane is the first, kept alive


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_gzip_and_deflate_answers_are_decoded(coding: str) -> None:
    body = b'{"data": [' + b'{"status": "ok"},' * 100 + b"{}]}"
    packed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    async with FakeServer(lambda r: Response(200, packed, {"content-encoding": coding})) as server, \
            _client() as client:
        assert (await client.request("GET", server.url + "/", timeout=5)).body == body


async def test_answers_beyond_the_cap_fail_whether_sent_or_decoded_large() -> None:
    big = b"x" * (MAX_RESPONSE_BODY + 1)
    bomb = gzip.compress(big)  # small on the wire, over the cap once decoded
    answers = iter([Response(200, big), Response(200, bomb, {"content-encoding": "gzip"})])
    async with FakeServer(lambda r: next(answers)) as server, _client() as client:
        for _ in range(2):
            with pytest.raises(ProtocolFailure, match="larger than"):
                await client.request("GET", server.url + "/secret-token", timeout=5)


async def test_a_malformed_url_is_refused_without_echoing_it_and_a_closed_client_refuses() -> None:
    client = _client()
    with pytest.raises(InvalidRequest) as info:
        await client.request("POST", "ftp://host/secret-token", timeout=5)
    assert "secret-token" not in str(info.value)
    await client.aclose()
    with pytest.raises(ClientClosed):
        await client.request("POST", "https://example.com/", timeout=5)
