"""Finding 8: loose credential and token checks.

Attack: Web Push accepted ``"vapid_private_key": "SUPERSECRET_CANARY_123"`` (any text became some
P-256 scalar), and a user JWT with ``"exp": "9999999999"`` (a string) was accepted. Namespaces trusting
the same verification key accept each other's user tokens unless ``audience`` is set: the gateway says
so when a tenant saves settings without one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.gateway.harness import GatewayServer, create_tenant
from wasmhost.gateway.usertokens import InvalidUserToken, verify_user_token
from wasmhost.providers.webpush import WebPushSpec
from wasmhost.push.credentials import CredentialsError

CANARY = "SUPERSECRET_CANARY_123"
SECRET = "shared-hs256-secret-" + "k" * 40
SETTINGS = {"alg": "HS256", "key": SECRET, "issuer": None, "audience": None}


@pytest.mark.parametrize("key", [CANARY, "A" * 43, "A" * 42 + "!", "AQ", "_" * 43])
def test_a_vapid_key_must_be_a_p256_private_key(key: str) -> None:
    with pytest.raises(CredentialsError) as info:
        WebPushSpec().validate({"vapid_private_key": key, "vapid_subject": "mailto:ops@example.com"})
    assert key not in str(info.value)


def _token(**claims: object) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_must_be_numbers(claim: str) -> None:
    value = str(int(time.time()) + (300 if claim == "exp" else -10))
    with pytest.raises(InvalidUserToken, match=f"{claim} must be a number"):
        verify_user_token(_token(**{claim: value}), SETTINGS)
    with pytest.raises(InvalidUserToken, match=f"{claim} must be a number"):
        verify_user_token(_token(**{claim: True}), SETTINGS)
    assert verify_user_token(_token(**{claim: int(value)}), SETTINGS) == "alice"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    gw = GatewayServer(Path(tmp_path_factory.mktemp("creds")), allow_private_endpoints=True).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_http_refuses_a_canary_vapid_key(server: GatewayServer) -> None:
    tenant = create_tenant(server, "vapid-canary")
    r = tenant.admin.put("/v1/namespace/push-credentials/webpush",
                         json={"vapid_private_key": CANARY, "vapid_subject": "mailto:ops@example.com"})
    assert r.status_code == 400 and CANARY not in r.text
    tenant.close()


def test_http_refuses_a_string_exp(server: GatewayServer) -> None:
    tenant = create_tenant(server, "string-exp")
    token = jwt.encode({"sub": "alice", "exp": "9999999999"}, tenant.jwt_secret, algorithm="HS256")
    with tenant.user("alice", token) as alice:
        r = alice.get("/v1/push/devices")
    assert r.status_code == 401 and "exp must be a number" in r.json()["error"]
    tenant.close()


def test_saving_settings_without_an_audience_warns_about_shared_keys(server: GatewayServer) -> None:
    a, b = create_tenant(server, "shared-a"), create_tenant(server, "shared-b")
    for tenant in (a, b):
        r = tenant.admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": SECRET})
        assert r.status_code == 200
        assert "audience" in r.json()["warning"]
    # The caveat the warning is about: a token minted for a is accepted by b.
    token = jwt.encode({"sub": "mallory", "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
    with b.user("mallory", token) as c:
        assert c.get("/v1/push/devices").status_code == 200
    # With an audience each namespace accepts only tokens naming it.
    r = b.admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": SECRET, "audience": "shared-b"})
    assert r.status_code == 200 and r.json().get("warning") is None
    with b.user("mallory", token) as c:
        assert c.get("/v1/push/devices").status_code == 401
    a.close()
    b.close()
