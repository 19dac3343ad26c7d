"""Findings 4, 5 and 7: what reaches the gateway without the right credentials.

4. ``GET /v1/functions/x/`` with ``Host: evil.example`` answered ``307 location: http://evil.example/…``
   (a redirect built from a header the client chose). A wrong path is a 404, never a redirect.
5. Failed authentications were never throttled, and a 2-character operator token was accepted.
7. ``/metrics`` (gateway-wide activity) answered anyone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import ADMIN_TOKEN, GatewayServer, create_tenant
from wasmhost.gateway import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
FAILURES = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    config = GatewayConfig(admin_token=ADMIN_TOKEN, auth_failures_per_minute=FAILURES)
    gw = GatewayServer(tmp_path_factory.mktemp("access"), config, allow_private_endpoints=True).start()
    try:
        yield gw
    finally:
        gw.stop()


# -- 4: no redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/functions/x/", "/v1/namespaces/", "/healthz/", "/v1/push/send/"])
def test_a_trailing_slash_is_a_404_never_a_redirect(server: GatewayServer, path: str) -> None:
    with server.client(ADMIN_TOKEN, Host="evil.example") as c:
        r = c.request("POST" if path.endswith("send/") else "GET", path)
    assert r.status_code == 404, (r.status_code, r.headers)
    assert "location" not in r.headers
    assert r.json() == {"error": "Not Found"}


# -- 7: /metrics needs the operator token -----------------------------------------------------------


def test_metrics_need_the_operator_token(server: GatewayServer) -> None:
    tenant = create_tenant(server, "metrics-peeker")
    with server.client() as anon, server.client(ADMIN_TOKEN) as operator:
        assert anon.get("/metrics").status_code == 401
        assert tenant.admin.get("/metrics").status_code == 401
        r = operator.get("/metrics")
    assert r.status_code == 200 and "wasmhost_invocations_in_flight" in r.text
    tenant.close()


def test_metrics_public_is_an_explicit_choice(tmp_path: Path) -> None:
    gw = GatewayServer(tmp_path, GatewayConfig(admin_token=ADMIN_TOKEN, metrics_public=True)).start()
    try:
        with gw.client() as anon:
            assert anon.get("/metrics").status_code == 200
    finally:
        gw.stop()


def test_metrics_public_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMHOST_ADMIN_TOKEN", ADMIN_TOKEN)
    assert GatewayConfig.from_env().metrics_public is False
    monkeypatch.setenv("WASMHOST_METRICS_PUBLIC", "1")
    assert GatewayConfig.from_env().metrics_public is True


# -- 5: failed authentication is throttled per address; valid credentials still pass ---------------


def test_failed_authentications_are_throttled_without_locking_out_a_valid_key(tmp_path: Path) -> None:
    config = GatewayConfig(admin_token=ADMIN_TOKEN, auth_failures_per_minute=FAILURES)
    gw = GatewayServer(tmp_path, config).start()
    try:
        tenant = create_tenant(gw, "victim", outbox=False)
        with gw.client("whk_guessed-key") as attacker, gw.client("not-the-operator-token-0123456789") as op_guess:
            codes = [attacker.get("/v1/functions").status_code for _ in range(FAILURES)]
            assert codes == [401] * FAILURES
            throttled = attacker.get("/v1/functions")
            assert throttled.status_code == 429, throttled.text
            assert int(throttled.headers["Retry-After"]) >= 1
            assert "authentication" in throttled.json()["error"]
            # Every kind of credential is throttled from that address, the operator's too.
            assert op_guess.get("/v1/namespaces").status_code == 429
            with gw.client() as anon:
                assert anon.get("/v1/functions").status_code == 429
        # The tenant's real key (same address: a NAT, or a reverse proxy in front) still works...
        assert tenant.admin.get("/v1/functions").status_code == 200
        with gw.client(ADMIN_TOKEN) as operator:
            assert operator.get("/v1/namespaces").status_code == 200
        # ...and so does a valid user token.
        with tenant.user("alice") as alice:
            assert alice.get("/v1/push/devices").status_code == 200
    finally:
        gw.stop()


def test_a_short_operator_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        GatewayConfig(admin_token="ab")


def test_serve_refuses_to_start_with_a_short_operator_token(tmp_path: Path) -> None:
    env = {**os.environ, "WASMHOST_ADMIN_TOKEN": "ab", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "wasmhost", "--db", f"sqlite:///{tmp_path}/gw.db", "serve", "--port", "0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "WASMHOST_ADMIN_TOKEN" in lines[0] and "32" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
