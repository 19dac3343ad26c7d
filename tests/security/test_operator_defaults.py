"""The operator's fleet-wide default push tokens must never travel to a URL a tenant chose.

Attack: a tenant points ntfy (flat config or credentials document) or Expo (credentials ``endpoint``) at a
server it runs, leaves the token empty, and sends to one of its own devices; the send would carry the
operator's default token (``WASMHOST_DEFAULT_NTFY_TOKEN`` / ``WASMHOST_DEFAULT_EXPO_TOKEN``) to that server.
"""

from __future__ import annotations

import time

import pytest

from wasmhost.providers import ProviderPool
from wasmhost.providers.expo import ExpoSpec
from wasmhost.providers.ntfy import NtfySpec
from wasmhost.push import Defaults, Manager, PushMessage, RetryPolicy
from wasmhost.store import SQLiteStore
from wasmhost.store.base import PushConfig
from wasmhost.testing.expo import FakeExpo
from wasmhost.testing.ntfy import FakeNtfy

FAST = RetryPolicy(max_attempts=1, base_delay=0.01, max_delay=0.05)
OPERATOR_NTFY = "tk_operator_default_secret"
OPERATOR_EXPO = "expo-operator-default-secret"


@pytest.mark.parametrize("where", ["flat config", "credentials document"])
async def test_operator_ntfy_token_never_goes_to_a_tenant_base_url(sqlite_store: SQLiteStore, where: str) -> None:
    attacker = await FakeNtfy().start()
    try:
        await sqlite_store.create_namespace("evil")
        spec = NtfySpec(allow_private_endpoints=True)
        manager = Manager(sqlite_store, ProviderPool([spec]),
                          Defaults(ntfy_base_url="https://ntfy.operator.example", ntfy_auth_token=OPERATOR_NTFY),
                          retry=FAST)
        if where == "flat config":
            await sqlite_store.put_push_config(PushConfig("evil", ntfy_base_url=attacker.url))
        else:
            await sqlite_store.put_credentials("evil", "ntfy", spec.validate({"base_url": attacker.url}))
        await sqlite_store.register_device("evil", "mallory", "phone", "ntfy", "topic1")
        await manager.send_to_user("evil", "mallory", PushMessage(body="hi"))
        assert attacker.published, "the send should reach the tenant's server"
        assert not any(OPERATOR_NTFY in seen for seen in attacker.auth_seen)
        await manager.aclose()
    finally:
        await attacker.aclose()


async def test_operator_expo_token_never_goes_to_a_tenant_endpoint(sqlite_store: SQLiteStore) -> None:
    attacker = await FakeExpo().start()
    try:
        await sqlite_store.create_namespace("evil")
        spec = ExpoSpec(sqlite_store, allow_private_endpoints=True, receipt_delay=60)
        manager = Manager(sqlite_store, ProviderPool([spec]), Defaults(expo_access_token=OPERATOR_EXPO),
                          retry=FAST)
        await sqlite_store.put_credentials("evil", "expo", spec.validate({"endpoint": attacker.url}))
        await sqlite_store.register_device("evil", "mallory", "phone", "expo", "ExponentPushToken[abc]")
        await manager.send_to_user("evil", "mallory", PushMessage(title="hi"), deadline=time.monotonic() + 5)
        assert attacker.requests, "the send should reach the tenant's server"
        assert not any(OPERATOR_EXPO in r["auth"] for r in attacker.requests)
        await manager.aclose()
    finally:
        await attacker.aclose()


async def test_operator_defaults_still_apply_to_the_operator_servers(sqlite_store: SQLiteStore) -> None:
    operator = await FakeNtfy(token=OPERATOR_NTFY).start()
    try:
        await sqlite_store.create_namespace("acme")
        manager = Manager(sqlite_store, ProviderPool([NtfySpec(allow_private_endpoints=True)]),
                          Defaults(ntfy_base_url=operator.url, ntfy_auth_token=OPERATOR_NTFY), retry=FAST)
        await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "topic1")
        assert (await manager.send_to_user("acme", "alice", PushMessage(body="hi"))).ok
        assert operator.auth_seen == [f"Bearer {OPERATOR_NTFY}"]
        await manager.aclose()
    finally:
        await operator.aclose()


async def test_operator_tokens_are_not_sent_under_roots_the_tenant_pinned(sqlite_store: SQLiteStore) -> None:
    """A tenant ``ca_bundle`` replaces the public roots: with the operator's token that would let the tenant
    intercept it (a certificate of its own CA for the operator's host), so the default token is withheld."""
    import trustme

    pem = trustme.CA().cert_pem.bytes().decode()
    await sqlite_store.create_namespace("evil")
    manager = Manager(sqlite_store, ProviderPool([]), Defaults(
        ntfy_base_url="https://ntfy.operator.example", ntfy_auth_token=OPERATOR_NTFY, expo_access_token=OPERATOR_EXPO))
    await sqlite_store.put_credentials("evil", "ntfy", NtfySpec().validate({"ca_bundle": pem}))
    await sqlite_store.put_credentials("evil", "expo", ExpoSpec(sqlite_store).validate({"ca_bundle": pem}))
    config = await manager.resolve("evil")
    assert config.ntfy_auth_token == "" and config.expo_access_token == ""
