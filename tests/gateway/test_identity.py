"""Identity: the operator token, namespace API keys (hash-only, revocable) and end-user JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wasmhost.gateway import GatewayConfig

from .harness import ADMIN_TOKEN, GatewayServer, Tenant, hs256_token

DEVICE = {"device_id": "phone", "provider": "outbox", "token": "device-token-1"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem_public(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _pem_private(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# -- operator ---------------------------------------------------------------------------------------


def test_operator_routes_need_the_operator_token(server: GatewayServer, make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    with server.client() as anon, server.client("not-the-token") as wrong:
        r = anon.post("/v1/namespaces", json={"name": "nobody"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert wrong.post("/v1/namespaces", json={"name": "nobody"}).status_code == 401
        assert wrong.get("/v1/namespaces").status_code == 401
    # A namespace key is not an operator token.
    assert tenant.admin.post(f"/v1/namespaces/{tenant.name}/keys").status_code == 401
    assert tenant.admin.get("/v1/namespaces").status_code == 401


def test_operator_routes_are_off_without_a_token(tmp_path: Path) -> None:
    gw = GatewayServer(tmp_path, GatewayConfig(admin_token="")).start()
    try:
        with gw.client("anything") as c:
            r = c.post("/v1/namespaces", json={"name": "x"})
        assert r.status_code == 503
        assert "WASMHOST_ADMIN_TOKEN" in r.json()["error"]
    finally:
        gw.stop()


def test_namespace_names_and_duplicates(server: GatewayServer) -> None:
    with server.client(ADMIN_TOKEN) as op:
        for bad in ("", "UPPER", "-lead", "a" * 64, "sp ace", "../x"):
            r = op.post("/v1/namespaces", json={"name": bad})
            assert r.status_code == 400, (bad, r.text)
            assert "name" in r.json()["error"]
        assert op.post("/v1/namespaces", json={"name": "dup-ns"}).status_code == 201
        r = op.post("/v1/namespaces", json={"name": "dup-ns"})
        assert r.status_code == 409 and "already exists" in r.json()["error"]
        assert op.post("/v1/namespaces/no-such-ns/keys").status_code == 404
        assert op.delete("/v1/namespaces/dup-ns/keys/key_nope").status_code == 404


def test_api_keys_are_shown_once_and_revocable(server: GatewayServer, make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    with server.client(ADMIN_TOKEN) as op:
        r = op.post(f"/v1/namespaces/{tenant.name}/keys")
        assert r.status_code == 201
        second = r.json()
        listed = op.get(f"/v1/namespaces/{tenant.name}/keys")
        assert listed.status_code == 200
        assert {k["key_id"] for k in listed.json()["keys"]} == {tenant.key_id, second["key_id"]}
        # The listing never carries a key or its hash.
        assert tenant.key not in listed.text and second["api_key"] not in listed.text
        assert "hash" not in listed.text

        with server.client(second["api_key"]) as other:
            who = other.get("/v1/namespace").json()
            assert who["namespace"] == tenant.name and who["key_id"] == second["key_id"]
            assert op.delete(f"/v1/namespaces/{tenant.name}/keys/{second['key_id']}").status_code == 200
            r = other.get("/v1/namespace")
            assert r.status_code == 401 and "revoked" in r.json()["error"]
    # The first key still works.
    assert tenant.admin.get("/v1/namespace").status_code == 200


def test_admin_routes_refuse_missing_bad_and_user_credentials(
    server: GatewayServer, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant()
    with server.client() as anon:
        r = anon.get("/v1/namespace/push-credentials")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with server.client("whk_" + "A" * 43) as forged, server.client(ADMIN_TOKEN) as op:
        assert forged.get("/v1/functions").status_code == 401
        assert op.get("/v1/functions").status_code == 401
    with tenant.user("alice") as alice:
        r = alice.post("/v1/push/send", json={"user_id": "alice", "title": "hi"})
        assert r.status_code == 401 and "API key" in r.json()["error"]


# -- end-user JWTs ----------------------------------------------------------------------------------


def _register(tenant: Tenant, token: str, namespace: str | None = None) -> int:
    with tenant.server.client(token, **{"X-Wasmhost-Namespace": namespace or tenant.name}) as c:
        return c.post("/v1/push/devices", json=DEVICE).status_code


def test_hs256_user_tokens_refused_when_wrong(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    now = int(time.time())
    secret = tenant.jwt_secret
    assert _register(tenant, hs256_token(secret, "alice")) == 200
    refused = {
        "expired": hs256_token(secret, "alice", exp_in=-3600),
        "wrong key": hs256_token("another-secret-" + "y" * 32, "alice"),
        "wrong alg (HS512)": jwt.encode({"sub": "alice", "exp": now + 300}, secret, algorithm="HS512"),
        "alg none": jwt.encode({"sub": "alice", "exp": now + 300}, None, algorithm="none"),
        "no exp": jwt.encode({"sub": "alice"}, secret, algorithm="HS256"),
        "no sub": jwt.encode({"exp": now + 300}, secret, algorithm="HS256"),
        "empty sub": jwt.encode({"sub": "", "exp": now + 300}, secret, algorithm="HS256"),
        "not a JWT": "garbage.token.here",
        "API key": tenant.key,
    }
    for why, token in refused.items():
        with tenant.server.client(token, **{"X-Wasmhost-Namespace": tenant.name}) as c:
            r = c.post("/v1/push/devices", json=DEVICE)
            assert r.status_code == 401, (why, r.text)
            assert secret not in r.text and token not in r.text


def test_issuer_and_audience_are_checked_when_set(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    secret = tenant.jwt_secret
    r = tenant.admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": secret, "issuer": "https://acme.example",
                                                     "audience": "wasmhost"})
    assert r.status_code == 200
    good = hs256_token(secret, "alice", iss="https://acme.example", aud="wasmhost")
    assert _register(tenant, good) == 200
    assert _register(tenant, hs256_token(secret, "alice", iss="https://evil.example", aud="wasmhost")) == 401
    assert _register(tenant, hs256_token(secret, "alice", iss="https://acme.example", aud="other")) == 401
    assert _register(tenant, hs256_token(secret, "alice")) == 401  # neither claim


def test_es256_and_rs256_and_key_confusion(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"sub": "alice", "exp": int(time.time()) + 300}

    assert tenant.admin.put("/v1/namespace/auth", json={"alg": "ES256", "key": _pem_public(ec_key)}).status_code == 200
    assert _register(tenant, jwt.encode(claims, ec_key, algorithm="ES256")) == 200
    assert _register(tenant, jwt.encode(claims, rsa_key, algorithm="RS256")) == 401  # wrong alg
    view = tenant.admin.get("/v1/namespace/auth").json()
    assert view["alg"] == "ES256" and view["public_key"].startswith("-----BEGIN PUBLIC KEY")

    rsa_pem = _pem_public(rsa_key)
    assert tenant.admin.put("/v1/namespace/auth", json={"alg": "RS256", "key": rsa_pem}).status_code == 200
    assert _register(tenant, jwt.encode(claims, rsa_key, algorithm="RS256")) == 200
    # The classic confusion: the public key used as an HS256 secret must not verify.
    signing = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    forged = signing + "." + _b64(hmac.new(rsa_pem.encode(), signing.encode(), hashlib.sha256).digest())
    assert _register(tenant, forged) == 401


def test_auth_settings_are_validated_and_never_echo_secrets(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cases = [
        ({"alg": "HS256", "key": "short"}, "at least 32 bytes"),
        ({"alg": "ES256", "key": _pem_private(ec_key)}, "PUBLIC key"),
        ({"alg": "RS256", "key": _pem_public(ec_key)}, "RSA public key"),
        ({"alg": "RS256", "key": _pem_public(small_rsa)}, "2048"),
        ({"alg": "ES256", "key": "not a pem"}, "PEM"),
        ({"alg": "none", "key": "x" * 40}, "alg"),
        ({"alg": "HS256"}, "key"),
    ]
    for body, reason in cases:
        r = tenant.admin.put("/v1/namespace/auth", json=body)
        assert r.status_code == 400, (body, r.text)
        assert reason in r.json()["error"], r.text
        if "key" in body and body["alg"] == "HS256":
            assert body["key"] not in r.text
    view = tenant.admin.get("/v1/namespace/auth")
    assert view.status_code == 200 and tenant.jwt_secret not in view.text
    assert view.json() == {"namespace": tenant.name, "configured": True, "alg": "HS256", "issuer": None,
                           "audience": None, "public_key": None}


def test_user_token_of_one_namespace_is_refused_by_another(make_tenant: Callable[..., Tenant]) -> None:
    a, b = make_tenant("a"), make_tenant("b")
    token_a = hs256_token(a.jwt_secret, "alice")
    assert _register(a, token_a) == 200
    assert _register(b, token_a, namespace=b.name) == 401
    assert _register(a, token_a, namespace="no-such-namespace") == 401
    # Without auth settings a namespace accepts no user tokens at all.
    assert b.admin.delete("/v1/namespace/auth").status_code == 200
    assert _register(b, hs256_token(b.jwt_secret, "bob")) == 401


@pytest.mark.parametrize("header", [None, ""])
def test_user_routes_need_the_namespace_header(make_tenant: Callable[..., Tenant], header: str | None) -> None:
    tenant = make_tenant()
    headers = {} if header is None else {"X-Wasmhost-Namespace": header}
    with tenant.server.client(hs256_token(tenant.jwt_secret, "alice"), **headers) as c:
        r = c.get("/v1/push/devices")
    assert r.status_code == 400 and "X-Wasmhost-Namespace" in r.json()["error"]


def test_an_api_key_on_a_user_route_is_told_a_user_jwt_is_needed(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    # No X-Wasmhost-Namespace either: the credential is judged first, so the answer is about it.
    r = tenant.admin.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox", "token": "t"})
    assert r.status_code == 401
    error = r.json()["error"]
    assert "JWT" in error and "not an API key" in error and "X-Wasmhost-Namespace" in error
