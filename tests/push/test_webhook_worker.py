"""Webhook units: settings checks, the payload bound, signatures svix accepts, and how one attempt's
outcome is classified (Retry-After honoured, 3xx a failure, transport errors named without the URL)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from svix.webhooks import Webhook as SvixWebhook

from wasmhost.providers import _client as errors
from wasmhost.providers._client import HTTPClient, HTTPResponse
from wasmhost.push.webhooks import (
    MAX_PAYLOAD_BYTES,
    WebhookError,
    WebhookSettings,
    WebhookWorker,
    check_events,
    check_webhook_url,
    event_payload,
    new_secret,
    sign,
)
from wasmhost.store.webhooks import ClaimedEvent, EventOutcome, FinishedEvent


def _event(**changes: Any) -> ClaimedEvent:
    fields: dict[str, Any] = dict(
        id="msg_s1.0.dead_token", namespace="acme", event="delivery.dead_token", send_id="s1", delivery_id="s1.0",
        user_id="alice", device_id="phone", provider="webpush", delivery_state="dead", status=410,
        reason="SubscriptionGone", error="gone", counts_json="", occurred_at=1_700_000_000.5, attempts=0,
        url="https://hooks.example.com/x?k=secret-query", secret=new_secret(),
    )
    fields.update(changes)
    return ClaimedEvent(**fields)


def test_events_are_a_non_empty_known_subset_in_canonical_order() -> None:
    assert check_events(["send.completed", "delivery.failed", "send.completed"]) == ("delivery.failed",
                                                                                    "send.completed")
    for bad in ([], ["delivery.failed", "nope"]):
        with pytest.raises(WebhookError):
            check_events(bad)


async def test_urls_https_or_loopback_http_when_private_endpoints_are_allowed() -> None:
    assert await check_webhook_url("http://127.0.0.1:8/h", allow_private_endpoints=True) == "http://127.0.0.1:8/h"
    assert await check_webhook_url("http://localhost:8/h", allow_private_endpoints=True)
    for url, allow in (("http://10.0.0.1/h", True), ("http://127.0.0.1/h", False), ("https://10.0.0.1/h", False),
                       ("https://[::1]/h", False), ("https://a.example/h#x", True)):
        with pytest.raises(WebhookError) as info:
            await check_webhook_url(url, allow_private_endpoints=allow)
        assert "/h" not in str(info.value)


def test_the_payload_is_bounded_and_signed_as_svix_expects() -> None:
    event = _event(error="é" * 20_000)
    body = event_payload(event)
    assert len(body) <= MAX_PAYLOAD_BYTES
    doc = json.loads(body)
    assert doc["type"] == "delivery.dead_token" and doc["timestamp"] == "2023-11-14T22:13:20.500Z"
    assert doc["data"]["error"].endswith("...") and doc["data"]["device_id"] == "phone"
    stamp = int(time.time())
    headers = {"webhook-id": event.id, "webhook-timestamp": str(stamp),
               "webhook-signature": sign(event.secret, event.id, stamp, body)}
    SvixWebhook(event.secret).verify(body, headers)
    completed = json.loads(event_payload(_event(event="send.completed", counts_json='{"delivered":2}')))
    assert completed["data"] == {"send_id": "s1", "user_id": "alice", "counts": {"delivered": 2}}


class _Store:
    def __init__(self) -> None:
        self.finished: list[EventOutcome] = []

    async def finish_webhook_event(self, owner: str, outcome: EventOutcome, *, disable_after: float) -> FinishedEvent:
        self.finished.append(outcome)
        return FinishedEvent(True)


class _Client(HTTPClient):
    def __init__(self, answer: HTTPResponse | Exception) -> None:
        self.answer = answer
        self.sent: list[tuple[str, Sequence[tuple[str, str]], bytes]] = []

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *,
                      timeout: float) -> HTTPResponse:
        self.sent.append((url, headers, body))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def aclose(self) -> None:
        pass


async def _attempt(answer: HTTPResponse | Exception) -> tuple[EventOutcome, WebhookWorker]:
    store = _Store()
    worker = WebhookWorker(store, WebhookSettings(retry_base=1, retry_max=2), client=_Client(answer))  # type: ignore[arg-type]
    await worker.attempt(_event())
    [outcome] = store.finished
    return outcome, worker


async def test_outcomes_are_classified_and_retry_after_is_honoured() -> None:
    ok, worker = await _attempt(HTTPResponse(204, {}, b""))
    assert ok.success and ok.status == 204 and worker.attempts == {"success": 1}
    busy, _ = await _attempt(HTTPResponse(503, {"retry-after": "120"}, b""))
    assert not busy.success and busy.error == "HTTP 503" and busy.next_attempt_at >= time.time() + 119
    moved, _ = await _attempt(HTTPResponse(302, {"location": "https://elsewhere/"}, b""))
    assert not moved.success and moved.next_attempt_at <= time.time() + 2.1
    for exc, label in ((errors.Blocked("refused 10.0.0.1"), "blocked"), (errors.RequestTimeout("slow"), "timeout"),
                       (errors.ConnectFailed("no"), "unreachable")):
        failed, worker = await _attempt(exc)
        assert not failed.success and worker.attempts == {label: 1}
        assert "secret-query" not in failed.error and "example" not in failed.error


async def test_an_unopenable_secret_is_a_failure_without_a_request() -> None:
    store = _Store()
    client = _Client(HTTPResponse(200, {}, b""))
    worker = WebhookWorker(store, client=client)  # type: ignore[arg-type]
    await worker.attempt(_event(secret=""))
    assert client.sent == [] and not store.finished[0].success and worker.attempts == {"no_secret": 1}


class _QueueStore(_Store):
    """Hands out one batch of claimed events, then none; records what was given back."""

    def __init__(self, batch: list[ClaimedEvent]) -> None:
        super().__init__()
        self.batch = batch
        self.deferred: list[str] = []

    async def webhook_namespaces(self) -> set[str]:
        return {"a", "b"}

    async def claim_webhook_events(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedEvent]:
        out, self.batch = self.batch[:limit], self.batch[limit:]
        return out

    async def defer_webhook_events(self, owner: str, ids: Sequence[str], until: float) -> int:
        assert until > time.time()
        self.deferred += ids
        return len(ids)

    async def release_webhook_leases(self, owner: str) -> int:
        return 0

    async def cap_webhook_events(self, max_pending: int) -> int:
        return 0

    async def prune_webhook_events(self, older_than: float) -> int:
        return 0


class _SlowClient(_Client):
    def __init__(self) -> None:
        super().__init__(HTTPResponse(204, {}, b""))
        self.release = asyncio.Event()

    async def request(self, method: str, url: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *,
                      timeout: float) -> HTTPResponse:
        self.sent.append((url, headers, body))
        await self.release.wait()
        return HTTPResponse(204, {}, b"")


async def test_one_namespace_cannot_take_every_slot() -> None:
    from wasmhost.push.webhooks import MAX_IN_FLIGHT_PER_NAMESPACE

    hog = [_event(id=f"a{i}", namespace="a") for i in range(MAX_IN_FLIGHT_PER_NAMESPACE + 3)]
    store = _QueueStore([*hog, _event(id="b0", namespace="b")])
    client = _SlowClient()
    worker = WebhookWorker(store, WebhookSettings(poll_interval=0.01), client=client)  # type: ignore[arg-type]
    worker.start()
    try:
        for _ in range(200):
            if len(client.sent) == MAX_IN_FLIGHT_PER_NAMESPACE + 1:
                break
            await asyncio.sleep(0.01)
        assert len(client.sent) == MAX_IN_FLIGHT_PER_NAMESPACE + 1  # the hog's share, and b's event
        assert sorted(store.deferred) == sorted(e.id for e in hog[MAX_IN_FLIGHT_PER_NAMESPACE:])
        client.release.set()
        for _ in range(200):
            if len(store.finished) == len(client.sent):
                break
            await asyncio.sleep(0.01)
        assert all(o.success for o in store.finished) and len(store.finished) == MAX_IN_FLIGHT_PER_NAMESPACE + 1
    finally:
        await worker.aclose()


async def test_a_drip_fed_answer_is_cut_at_the_timeout() -> None:
    store = _Store()
    client = _SlowClient()  # never answers
    worker = WebhookWorker(store, WebhookSettings(timeout=0.1), client=client)  # type: ignore[arg-type]
    start = time.monotonic()
    await worker.attempt(_event())
    assert time.monotonic() - start < 1 and worker.attempts == {"timeout": 1} and not store.finished[0].success


async def test_the_sweep_counts_what_the_cap_dropped() -> None:
    class Capped(_QueueStore):
        async def cap_webhook_events(self, max_pending: int) -> int:
            assert max_pending == 5
            return 3

    worker = WebhookWorker(Capped([]), WebhookSettings(max_pending=5), client=_Client(HTTPResponse(204, {}, b"")))  # type: ignore[arg-type]
    await worker.sweep(prune=True)
    assert worker.dropped == {"cap": 3}
