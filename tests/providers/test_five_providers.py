"""One user with a device on each of five providers gets one push on each, concurrently: the send takes
about as long as the slowest fake service, not the sum. Every fake is a real server on 127.0.0.1 (APNs
and FCM over TLS + HTTP/2 with a test CA)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.providers import ProviderPool, default_specs
from wasmhost.push import Defaults, Manager, PushMessage
from wasmhost.push.credentials import validate_credentials, validate_device_token
from wasmhost.store import SQLiteStore
from wasmhost.testing.apns import FakeAPNs, make_ca
from wasmhost.testing.expo import FakeExpo
from wasmhost.testing.fcm import FakeFCM, make_service_account
from wasmhost.testing.ntfy import FakeNtfy
from wasmhost.testing.webpush import FakeWebPush

#: Per-service latency the fakes add; the slowest bounds the whole send.
DELAYS = {"ntfy": 0.2, "expo": 0.25, "webpush": 0.3, "apns": 0.35, "fcm": 0.4}
TEAM, KEY_ID = "TEAM123456", "KEY1234567"
APNS_TOKEN = "ab" * 32
FCM_TOKEN = "fcm-registration-token-secret-123"
EXPO_TOKEN = "ExponentPushToken[secretExpo1]"


def _pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class Fakes:
    def __init__(self, tmp: Path) -> None:
        ca, self.server_ctx, self.ca_pem = make_ca()
        self.cert_path = tmp / "server.pem"
        self.cert_path.write_bytes(ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.bytes())
        self.ntfy = FakeNtfy(delay=DELAYS["ntfy"])
        self.expo = FakeExpo(delay=DELAYS["expo"])
        self.webpush = FakeWebPush(delay=DELAYS["webpush"])
        self.apns = FakeAPNs(self.server_ctx)
        self.apns.delay = DELAYS["apns"]
        self.fcm = FakeFCM(self.server_ctx, str(self.cert_path))
        send = self.fcm.send_server.handler

        async def slow_fcm(conn: Any, request: Any) -> Any:
            await asyncio.sleep(DELAYS["fcm"])
            return await send(conn, request)

        self.fcm.send_server.handler = slow_fcm

    async def start(self) -> Fakes:
        for fake in (self.ntfy, self.expo, self.webpush, self.apns, self.fcm):
            await fake.start()  # type: ignore[attr-defined]
        return self

    async def aclose(self) -> None:
        for fake in (self.ntfy, self.expo, self.webpush, self.apns, self.fcm):
            await fake.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    running = await Fakes(tmp_path).start()
    try:
        yield running
    finally:
        await running.aclose()


async def test_five_providers_one_push_each_concurrently(
    sqlite_store: SQLiteStore, fakes: Fakes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = sqlite_store
    await store.create_namespace("acme")
    specs = {s.name: s for s in default_specs(store, allow_private_endpoints=True)}
    p8 = ec.generate_private_key(ec.SECP256R1())
    fakes.apns.add_key(TEAM, KEY_ID, p8.public_key())
    account, public = make_service_account(fakes.fcm.token_uri)
    fakes.fcm.add_account(account, public)
    vapid = ec.generate_private_key(ec.SECP256R1())
    documents = {
        "ntfy": {"base_url": fakes.ntfy.url},
        "expo": {"endpoint": fakes.expo.url},
        "webpush": {"vapid_private_key": _pem(vapid), "vapid_subject": "mailto:ops@example.com"},
        "apns": {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": "com.example.app", "p8_key": _pem(p8),
                 "environment": "sandbox", "endpoint": fakes.apns.url, "ca_bundle": fakes.ca_pem},
        "fcm": {"service_account": account, "endpoint": fakes.fcm.url, "ca_bundle": fakes.ca_pem},
    }
    for name, doc in documents.items():  # the same path a PUT takes
        await store.put_credentials("acme", name, await validate_credentials(specs[name], doc))
    webpush_token = fakes.webpush.browser("secretSub1").token(fakes.webpush.url)
    tokens = {"ntfy": "secretNtfyTopic", "expo": EXPO_TOKEN, "webpush": webpush_token, "apns": APNS_TOKEN,
              "fcm": FCM_TOKEN}
    for name, token in tokens.items():
        token = await validate_device_token(specs[name], token, documents.get(name))
        await store.register_device("acme", "alice", f"{name}-device", name, token)

    manager = Manager(store, ProviderPool(specs.values()), Defaults())
    try:
        warm = await manager.send_to_user("acme", "alice", PushMessage(title="warm-up", body="b"))
        assert warm.ok, warm.to_dict()  # connections, TLS handshakes and the OAuth token are now in place

        started = time.monotonic()
        report = await manager.send_to_user("acme", "alice", PushMessage(title="Hello", body="from five"))
        elapsed = time.monotonic() - started
    finally:
        await manager.aclose()

    assert report.ok, report.to_dict()
    assert sorted(r.provider for r in report.results) == ["apns", "expo", "fcm", "ntfy", "webpush"]
    # One push each, per send.
    assert len(fakes.ntfy.published) == 2
    assert len(fakes.expo.delivered) == 2
    assert len(fakes.webpush.received) == 2
    assert len(fakes.apns.seen) == 2
    assert len(fakes.fcm.seen) == 2
    assert fakes.webpush.received[-1]["payload"] == {"title": "Hello", "body": "from five"}
    # Concurrent: about the slowest fake (0.4 s), far from the sequential sum (1.5 s).
    print(f"five providers: {elapsed:.3f} s (slowest fake {max(DELAYS.values())} s, sum {sum(DELAYS.values())} s)")
    assert max(DELAYS.values()) <= elapsed < 0.75 * sum(DELAYS.values()), elapsed
    text = report.to_json() + "\n".join(r.getMessage() for r in caplog.records)
    for token in ("secretNtfyTopic", "secretExpo1", "secretSub1", APNS_TOKEN, FCM_TOKEN):
        assert token not in text
