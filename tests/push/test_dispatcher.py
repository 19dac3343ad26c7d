"""Dispatcher: concurrent fan-out, filters, retries, pruning, redaction, per-device accounting."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.conftest import RecordingProvider, dead
from wasmhost.push import Dispatcher, FailureKind, Outcome, PushMessage, PushUnavailable, RetryPolicy
from wasmhost.push.message import parse_message
from wasmhost.store import Device, SQLiteStore, StoreError

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)


async def _user(store: SQLiteStore, devices: list[tuple[str, str, str]], ns: str = "acme", user: str = "alice") -> None:
    if not await store.namespace_exists(ns):
        await store.create_namespace(ns)
    for device_id, provider, token in devices:
        await store.register_device(ns, user, device_id, provider, token)


async def test_no_devices_is_ok_and_empty(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_namespace("acme")
    report = await Dispatcher(sqlite_store, [RecordingProvider("outbox")]).send_to_user("acme", "nobody", PushMessage())
    assert report.to_dict() == {"ok": True, "devices_attempted": 0, "devices_succeeded": 0, "results": []}


async def test_routes_each_device_to_its_provider_with_its_token(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "apns", "tok-apns"), ("web", "ntfy", "tok-ntfy")])
    apns, ntfy = RecordingProvider("apns"), RecordingProvider("ntfy")
    report = await Dispatcher(sqlite_store, [apns, ntfy]).send_to_user("acme", "alice", PushMessage(title="hi"))
    assert report.ok and report.devices_succeeded == 2
    assert [d.token for d in apns.sent] == ["tok-apns"] and [d.token for d in ntfy.sent] == ["tok-ntfy"]
    assert {r.provider for r in report.results} == {"apns", "ntfy"}
    assert all(r.status == 200 and r.attempts == 1 for r in report.results)


async def test_unknown_provider_reported_and_others_still_sent(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "fcm", "t1"), ("web", "ntfy", "t2")])
    ntfy = RecordingProvider("ntfy")
    report = await Dispatcher(sqlite_store, [ntfy]).send_to_user("acme", "alice", PushMessage(title="hi"))
    assert not report.ok and report.devices_attempted == 2 and report.devices_succeeded == 1
    failed = next(r for r in report.results if not r.success)
    assert failed.reason == "UnknownProvider" and "fcm" in failed.message and failed.attempts == 0


async def test_fan_out_is_concurrent(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [(f"d{i}", f"p{i}", f"t{i}") for i in range(5)])
    providers = [RecordingProvider(f"p{i}", delay=0.2) for i in range(5)]
    start = time.monotonic()
    report = await Dispatcher(sqlite_store, providers).send_to_user("acme", "alice", PushMessage(title="x"))
    elapsed = time.monotonic() - start
    assert report.devices_succeeded == 5
    assert elapsed < 0.2 * 5 * 0.6  # well under the sequential sum


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"target_provider": "apns"}, ["apns"]),
        ({"target_provider": "apns_voip"}, ["apns_voip"]),
        ({"exclude_provider": "apns_voip"}, ["apns", "ntfy"]),
        ({"target_provider": "apns", "exclude_provider": "apns"}, ["apns"]),  # target wins
        ({"target_provider": "fcm"}, []),
        ({}, ["apns", "apns_voip", "ntfy"]),
    ],
)
async def test_target_and_exclude_filters(sqlite_store: SQLiteStore, message: dict, expected: list[str]) -> None:
    await _user(sqlite_store, [("a", "apns", "t1"), ("v", "apns_voip", "t2"), ("n", "ntfy", "t3")])
    providers = [RecordingProvider(n) for n in ("apns", "apns_voip", "ntfy")]
    report = await Dispatcher(sqlite_store, providers).send_to_user(
        "acme", "alice", parse_message({"title": "x", **message}))
    assert sorted(r.provider for r in report.results) == expected
    assert report.devices_attempted == len(expected) and report.ok


async def test_transient_failures_retried_then_succeed(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    flaky = RecordingProvider("p", [Outcome.failed(FailureKind.TRANSIENT, "Unavailable", status=503)] * 2)
    report = await Dispatcher(sqlite_store, [flaky], retry=FAST).send_to_user("acme", "alice", PushMessage(title="x"))
    assert report.ok and report.results[0].attempts == 3 and flaky.calls == 3


async def test_transient_failures_give_up_after_max_attempts(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    down = RecordingProvider("p", [Outcome.failed(FailureKind.TRANSIENT, "Unavailable", status=503)] * 10)
    report = await Dispatcher(sqlite_store, [down], retry=FAST).send_to_user("acme", "alice", PushMessage(title="x"))
    assert not report.ok and report.results[0].attempts == 3 and report.results[0].reason == "Unavailable"


async def test_permanent_failure_not_retried(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    bad = RecordingProvider("p", [Outcome.failed(FailureKind.PERMANENT, "BadRequest", "payload", status=400)])
    report = await Dispatcher(sqlite_store, [bad], retry=FAST).send_to_user("acme", "alice", PushMessage(title="x"))
    assert bad.calls == 1 and report.results[0].to_dict() == {
        "device_id": "phone", "provider": "p", "success": False, "status": 400, "reason": "BadRequest",
        "message": "payload", "unregistered": False, "attempts": 1, "state": "failed"}


async def test_retry_after_beyond_deadline_is_not_waited_for(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    limited = RecordingProvider("p", [Outcome.failed(FailureKind.TRANSIENT, "TooManyRequests", status=429,
                                                     retry_after=60)])
    start = time.monotonic()
    report = await Dispatcher(sqlite_store, [limited]).send_to_user(
        "acme", "alice", PushMessage(title="x"), deadline=time.monotonic() + 1)
    assert time.monotonic() - start < 0.5 and limited.calls == 1 and report.results[0].status == 429


async def test_slow_provider_is_bounded_by_deadline(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "slow", "t1"), ("web", "fast", "t2")])
    start = time.monotonic()
    report = await Dispatcher(sqlite_store, [RecordingProvider("slow", delay=5), RecordingProvider("fast")],
                              retry=FAST).send_to_user("acme", "alice", PushMessage(title="x"),
                                                       deadline=time.monotonic() + 0.2)
    assert time.monotonic() - start < 1.5
    by_provider = {r.provider: r for r in report.results}
    assert by_provider["fast"].success and by_provider["slow"].reason == "Timeout"


async def test_dead_target_pruned(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1"), ("web", "p", "t2")])
    provider = RecordingProvider("p", [dead(), Outcome.ok()])
    report = await Dispatcher(sqlite_store, [provider]).send_to_user("acme", "alice", PushMessage(title="x"))
    assert [r.unregistered for r in report.results] == [True, False]
    assert [d.device_id for d in await sqlite_store.list_user_devices("acme", "alice")] == ["web"]


async def test_dead_target_older_than_reregistration_is_kept(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    provider = RecordingProvider("p", [dead(dead_since=time.time() - 3600)])
    report = await Dispatcher(sqlite_store, [provider]).send_to_user("acme", "alice", PushMessage(title="x"))
    assert report.results[0].unregistered
    assert len(await sqlite_store.list_user_devices("acme", "alice")) == 1


async def test_failure_text_never_carries_token_or_url(
    sqlite_store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    token = "SUPERSECRET-device-token-42"
    await _user(sqlite_store, [("phone", "p", token)])

    class Leaky(RecordingProvider):
        async def send(self, deliveries):  # type: ignore[no-untyped-def]
            raise ConnectionError(f"connect to https://push.example/{token}?x=1 failed for {token}")

    caplog.set_level(logging.DEBUG)
    report = await Dispatcher(sqlite_store, [Leaky("p")]).send_to_user("acme", "alice", PushMessage(title="x"))
    text = json.dumps(report.to_dict())
    assert token not in text and "push.example" not in text
    assert "[request-url]" in text
    assert token not in caplog.text and "push.example" not in caplog.text
    scripted = RecordingProvider("p", [Outcome.failed(FailureKind.PERMANENT, f"Bad {token}", f"token {token} bad")])
    report = await Dispatcher(sqlite_store, [scripted]).send_to_user("acme", "alice", PushMessage(title="x"))
    assert token not in json.dumps(report.to_dict()) and "[device-token]" in report.results[0].message


async def test_batches_respect_max_batch(sqlite_store: SQLiteStore) -> None:
    sqlite_store.max_devices_per_user = 250  # an operator may raise the cap
    await _user(sqlite_store, [(f"d{i}", "expo", f"ExponentPushToken[{i}]") for i in range(250)])
    expo = RecordingProvider("expo", max_batch=100)
    report = await Dispatcher(sqlite_store, [expo]).send_to_user("acme", "alice", PushMessage(title="x"))
    assert expo.calls == 3 and report.devices_succeeded == 250


async def test_store_error_propagates_as_unavailable() -> None:
    class Broken:
        async def list_user_devices(self, namespace: str, user_id: str, with_tokens: bool = False) -> list[Device]:
            raise StoreError("db gone")

    with pytest.raises(PushUnavailable):
        await Dispatcher(Broken(), [RecordingProvider("p")]).send_to_user("acme", "alice", PushMessage())  # type: ignore[arg-type]


async def test_register_replaces_provider_of_same_name(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    first, second = RecordingProvider("p"), RecordingProvider("p")
    dispatcher = Dispatcher(sqlite_store, [first])
    dispatcher.register(second)
    await dispatcher.send_to_user("acme", "alice", PushMessage(title="x"))
    assert first.sent == [] and len(second.sent) == 1


async def test_concurrent_sends_do_not_interfere(sqlite_store: SQLiteStore) -> None:
    await _user(sqlite_store, [("phone", "p", "t1")])
    await _user(sqlite_store, [("phone", "p", "t2")], user="bob")
    provider = RecordingProvider("p")
    dispatcher = Dispatcher(sqlite_store, [provider])
    reports = await asyncio.gather(*(dispatcher.send_to_user("acme", u, PushMessage(title=u))
                                     for u in ["alice", "bob"] * 10))
    assert all(r.ok and r.devices_attempted == 1 for r in reports)
    assert sorted({(d.user_id, d.token) for d in provider.sent}) == [("alice", "t1"), ("bob", "t2")]
