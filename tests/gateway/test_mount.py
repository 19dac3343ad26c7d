"""The gateway mounted under a prefix of another app: `gateway_lifespan` starts and stops it with the host
app (Starlette runs only the outer app's lifespan), and every route and error works under the prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from wasmhost import GatewayConfig, Settings, create_app, gateway_lifespan

TOKEN = "operator-token-for-the-mount-test"
NOOP = '(module (memory (export "memory") 1) (func (export "handle") (result i32) (i32.const 0)))'


def _host(gateway: FastAPI, with_lifespan: bool) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gateway_lifespan(gateway):
            yield

    return Starlette(routes=[Mount("/wasm", app=gateway)], lifespan=lifespan if with_lifespan else None)


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("WASMHOST_MASTER_KEY", "ef" * 32)
    return create_app(Settings(db_url=f"sqlite:///{tmp_path / 'wasmhost.db'}"), GatewayConfig(admin_token=TOKEN))


def test_a_mounted_gateway_runs_with_the_host_apps_lifespan(gateway: FastAPI) -> None:
    operator = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(_host(gateway, with_lifespan=True)) as client:
        assert gateway.state.gateway.services is not None
        assert client.get("/wasm/healthz").status_code == 200
        created = client.post("/wasm/v1/namespaces", json={"name": "acme"}, headers=operator)
        assert created.status_code == 201, created.text
        admin = {"Authorization": f"Bearer {created.json()['api_key']}"}
        assert client.put("/wasm/v1/functions/noop", content=NOOP, headers=admin).status_code == 200
        result = client.post("/wasm/v1/functions/noop/invoke", headers=admin).json()
        assert result["ok"] is True
        r = client.delete("/wasm/v1/functions", headers=admin)  # the 405's Allow header sees past the prefix
        assert r.status_code == 405 and r.headers["allow"] == "GET", r.headers
        assert client.get("/wasm/v1/nothing").status_code == 404
    assert gateway.state.gateway.services is None  # closed with the host app


def test_without_it_the_mounted_gateway_says_so_instead_of_failing(gateway: FastAPI) -> None:
    with TestClient(_host(gateway, with_lifespan=False)) as client:
        r = client.post("/wasm/v1/namespaces", json={"name": "acme"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 503 and r.json() == {"error": "the gateway is starting or stopping"}


def test_gateway_lifespan_takes_only_a_gateway() -> None:
    with pytest.raises(TypeError, match="create_app"):
        gateway_lifespan(FastAPI())
