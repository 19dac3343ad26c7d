"""The flat push config must not open a path the credentials document refuses: an ntfy token over plain HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import GatewayServer, create_tenant


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    gw = GatewayServer(Path(tmp_path_factory.mktemp("gateway"))).start()  # private endpoints not allowed
    try:
        yield gw
    finally:
        gw.stop()


def test_flat_config_refuses_an_ntfy_token_over_plain_http(server: GatewayServer) -> None:
    tenant = create_tenant(server, "plain-http")
    r = tenant.admin.put("/v1/push/config", json={"ntfy_base_url": "http://8.8.8.8", "ntfy_auth_token": "tk_secret1"})
    assert r.status_code == 400 and "https" in r.json()["error"] and "tk_secret1" not in r.text
    # Nor in two steps: the token first, then a plain-HTTP server (or the other way round).
    assert tenant.admin.put("/v1/push/config", json={"ntfy_auth_token": "tk_secret1"}).status_code == 200
    assert tenant.admin.put("/v1/push/config", json={"ntfy_base_url": "http://8.8.8.8"}).status_code == 400
    assert tenant.admin.put("/v1/push/config", json={"ntfy_base_url": "HTTP://8.8.8.8"}).status_code == 400
    assert tenant.admin.put("/v1/push/config", json={"ntfy_base_url": "https://8.8.8.8"}).status_code == 200
    # Without a token, plain HTTP is fine (public ntfy servers take anonymous publishes).
    assert tenant.admin.put("/v1/push/config", json={"ntfy_auth_token": ""}).status_code == 200
    assert tenant.admin.put("/v1/push/config", json={"ntfy_base_url": "http://8.8.8.8"}).status_code == 200
    assert tenant.admin.put("/v1/push/config", json={"ntfy_auth_token": "tk_secret1"}).status_code == 400
    tenant.close()
