"""A send's collapse id: the same on every attempt of one send (the fast path and a worker's retry after a
crash, which re-reads the message from the store), different between sends, and never overriding the
tenant's own ``message_id``. Checked on what real fakes on 127.0.0.1 received (APNs and FCM over TLS + HTTP/2)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.providers import ProviderPool, default_specs
from wasmhost.providers.apns import build_request
from wasmhost.providers.fcm import build_message
from wasmhost.push import Defaults, Manager, PushMessage, QueueSettings
from wasmhost.push.collapse import send_key, with_send_key
from wasmhost.push.credentials import validate_credentials, validate_device_token
from wasmhost.push.message import MessageError, parse_message
from wasmhost.store import SQLiteStore
from wasmhost.testing.apns import FakeAPNs, make_ca
from wasmhost.testing.fcm import FakeFCM, make_service_account
from wasmhost.testing.ntfy import FakeNtfy
from wasmhost.testing.webpush import FakeWebPush

TEAM, KEY_ID = "TEAM123456", "KEY1234567"
APNS_TOKEN = "cd" * 32
FCM_TOKEN = "fcm-registration-token-collapse"
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_-]{32}$")


def _pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# -- the key itself --------------------------------------------------------------------------------------


def test_the_send_key_is_stable_fits_every_service_and_tells_sends_apart() -> None:
    long_key = "order #42 / ünïcode and spaces, " * 10  # far over APNs' 64 bytes and Topic's alphabet
    key = send_key("acme", long_key, "s1")
    assert _KEY_CHARS.match(key) and key == send_key("acme", long_key, "s2")  # the key names the send
    assert key != send_key("other", long_key, "s1")  # namespaces never collapse into each other
    assert send_key("acme", "", "s1") == send_key("acme", "", "s1") != send_key("acme", "", "s2")
    assert _KEY_CHARS.match(send_key("acme", "", "s1"))
    assert send_key("acme", "", "s1") != send_key("acme", "s1", "s1")  # a key never mimics a send id


def test_the_send_key_is_never_parsed_nor_serialised() -> None:
    with pytest.raises(MessageError, match="send_key"):
        parse_message('{"title": "t", "send_key": "x"}')
    message = with_send_key(PushMessage(title="t"), "acme", "", "s1")
    assert message.collapse_id == message.send_key and "send_key" not in message.to_dict()
    assert with_send_key(PushMessage(title="t", message_id="mine"), "acme", "", "s1").collapse_id == "mine"


def test_providers_carry_the_collapse_id_where_each_service_has_one() -> None:
    keyed = with_send_key(PushMessage(title="t", body="b"), "acme", "", "s1")
    apns = build_request(keyed, bundle_id="com.example.app", voip=False)
    assert apns.headers["apns-collapse-id"] == keyed.send_key
    fcm = build_message("tok", keyed)["message"]
    assert fcm["apns"]["headers"]["apns-collapse-id"] == keyed.send_key
    assert fcm["webpush"]["headers"]["Topic"] == keyed.send_key
    assert fcm["android"]["notification"]["tag"] == keyed.send_key
    # FCM keeps four collapse keys per offline device: a per-send key must not become one.
    assert "collapse_key" not in fcm["android"]
    data_only = build_message("tok", with_send_key(PushMessage(data={"k": "v"}), "acme", "", "s1"))["message"]
    assert "notification" not in data_only["android"] and "collapse_key" not in data_only["android"]
    # The tenant's own message_id stays the collapse id everywhere, and Android's collapse_key.
    mine = with_send_key(PushMessage(title="t", message_id="order-42"), "acme", "order-42", "s1")
    assert build_request(mine, bundle_id="com.example.app", voip=False).headers["apns-collapse-id"] == "order-42"
    fcm = build_message("tok", mine)["message"]
    assert fcm["android"]["collapse_key"] == "order-42" and fcm["apns"]["headers"]["apns-collapse-id"] == "order-42"
    assert fcm["webpush"]["headers"]["Topic"] == "order-42"
    # A message that never went through the queue (no send key, no message_id) has none.
    plain = build_message("tok", PushMessage(title="t"))["message"]
    assert "apns-collapse-id" not in plain["apns"]["headers"] and "Topic" not in plain["webpush"]["headers"]
    assert "apns-collapse-id" not in build_request(PushMessage(title="t"), bundle_id="com.example.app",
                                                   voip=False).headers


# -- over real sockets, through the durable queue ------------------------------------------------------------


class Fakes:
    def __init__(self, tmp: Path) -> None:
        ca, server_ctx, self.ca_pem = make_ca()
        cert_path = tmp / "server.pem"
        cert_path.write_bytes(ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.bytes())
        self.apns = FakeAPNs(server_ctx)
        self.fcm = FakeFCM(server_ctx, str(cert_path))
        self.webpush = FakeWebPush()
        self.ntfy = FakeNtfy()
        self.all: list[Any] = [self.apns, self.fcm, self.webpush, self.ntfy]

    async def start(self) -> Fakes:
        for fake in self.all:
            await fake.start()
        return self

    async def aclose(self) -> None:
        for fake in self.all:
            await fake.aclose()


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    running = await Fakes(tmp_path).start()
    try:
        yield running
    finally:
        await running.aclose()


async def _manager(store: SQLiteStore, fakes: Fakes) -> Manager:
    await store.create_namespace("acme")
    specs = {s.name: s for s in default_specs(store, allow_private_endpoints=True)}
    p8 = ec.generate_private_key(ec.SECP256R1())
    fakes.apns.add_key(TEAM, KEY_ID, p8.public_key())
    account, public = make_service_account(fakes.fcm.token_uri)
    fakes.fcm.add_account(account, public)
    documents = {
        "webpush": {"vapid_private_key": _pem(ec.generate_private_key(ec.SECP256R1())),
                    "vapid_subject": "mailto:ops@example.com"},
        "apns": {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": "com.example.app", "p8_key": _pem(p8),
                 "environment": "sandbox", "endpoint": fakes.apns.url, "ca_bundle": fakes.ca_pem},
        "fcm": {"service_account": account, "endpoint": fakes.fcm.url, "ca_bundle": fakes.ca_pem},
        "ntfy": {"base_url": fakes.ntfy.url},
    }
    for name, doc in documents.items():
        await store.put_credentials("acme", name, await validate_credentials(specs[name], doc))
    tokens = {"apns": APNS_TOKEN, "fcm": FCM_TOKEN, "webpush": fakes.webpush.browser("sub1").token(fakes.webpush.url),
              "ntfy": "collapseTopic"}
    for name, token in tokens.items():
        token = await validate_device_token(specs[name], token, documents.get(name))
        await store.register_device("acme", "alice", f"{name}-device", name, token)
    return Manager(store, ProviderPool(specs.values()), Defaults(), queue=store,
                   queue_settings=QueueSettings(lease_seconds=5))


def _ids(fakes: Fakes) -> list[tuple[str, str, str, str]]:
    """Per attempt, what each service received as collapse id (APNs header, FCM's APNs header, FCM's Web
    Push Topic, Web Push Topic)."""
    return [(a.headers.get("apns-collapse-id", ""), f["apns"]["headers"].get("apns-collapse-id", ""),
             f["webpush"]["headers"].get("Topic", ""), w["topic"] or "")
            for a, f, w in zip(fakes.apns.seen, fakes.fcm.seen, fakes.webpush.received, strict=True)]


async def _crash_and_retry(store: SQLiteStore, manager: Manager, send_id: str) -> None:
    """As if the process died after the services accepted the send, before its results were committed: the
    rows are back to ``sending`` under a lease that has run out, and a worker takes them over."""
    assert manager.queue is not None
    await manager.queue.flush()
    await store.driver.execute("UPDATE deliveries SET state = 'sending', lease_owner = 'dead', lease_until = 0"
                               " WHERE send_id = ?", (send_id,))
    assert await manager.queue.claim_once() == 4


@pytest.mark.asyncio
async def test_a_retried_send_carries_the_same_collapse_id_and_another_send_a_new_one(
    sqlite_store: SQLiteStore, fakes: Fakes
) -> None:
    manager = await _manager(sqlite_store, fakes)
    try:
        first = await manager.send_to_user("acme", "alice", PushMessage(title="Hello", body="one"))
        assert first.ok, first.to_dict()
        await _crash_and_retry(sqlite_store, manager, first.send_id or "")
        keyed = await manager.send_to_user("acme", "alice", PushMessage(title="Hello", body="two"),
                                           idempotency_key="invoice 2026/12 — a key of any length " * 3)
        await _crash_and_retry(sqlite_store, manager, keyed.send_id or "")
        mine = await manager.send_to_user("acme", "alice", PushMessage(title="Hello", message_id="order-42"))
        assert mine.ok and len({first.send_id, keyed.send_id, mine.send_id}) == 3
    finally:
        await manager.aclose()

    ids = _ids(fakes)
    assert len(ids) == 5
    fast, retry, keyed_fast, keyed_retry, own = ids
    assert fast == retry and keyed_fast == keyed_retry  # the same on the fast path and the worker's retry
    assert len(set(fast)) == 1 and _KEY_CHARS.match(fast[0])  # one id per send, fitting every service
    assert len(set(keyed_fast)) == 1 and keyed_fast[0] != fast[0]  # another send, another id
    assert own == ("order-42",) * 4  # the tenant's message_id is used as given
    android = [f["android"] for f in fakes.fcm.seen]
    assert [a["notification"]["tag"] for a in android] == [fast[0], fast[0], keyed_fast[0], keyed_fast[0], "order-42"]
    assert [a.get("collapse_key") for a in android] == [None, None, None, None, "order-42"]
    # ntfy documents no duplicate control: the repeat is published twice, with nothing to collapse it.
    assert len(fakes.ntfy.published) == 5
