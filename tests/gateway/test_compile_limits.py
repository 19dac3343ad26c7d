"""Deploys over HTTP: the contract checked before compiling, compile limits, per-namespace artifacts,
artifacts deleted with their function, and per-namespace quotas."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wasmgen import many_functions
from wasmhost.gateway import GatewayConfig
from wasmhost.runtime import CompileLimits, Runtime
from wasmhost.runtime.cache import namespace_dir

from .guests import ECHO
from .harness import ADMIN_TOKEN, GatewayServer, Tenant, create_tenant

_names = itertools.count(1)
MAX_FUNCTIONS = 3
MAX_BYTES = 3 << 20
PAD = 900_000  # three functions of this size fit MAX_BYTES


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    config = GatewayConfig(admin_token=ADMIN_TOKEN, max_functions_per_namespace=MAX_FUNCTIONS,
                           max_namespace_module_bytes=MAX_BYTES, max_module_bytes=4 << 20)
    gw = GatewayServer(tmp_path_factory.mktemp("compile"), config, compile_limits=CompileLimits(cpu_seconds=1))
    try:
        yield gw.start()
    finally:
        gw.stop()


def _tenant(server: GatewayServer) -> Tenant:
    return create_tenant(server, f"c-{next(_names)}", outbox=False)


def _runtime(server: GatewayServer) -> Runtime:
    return server.app.state.gateway.svc.runtime  # type: ignore[no-any-return]


def _artifacts(server: GatewayServer, namespace: str) -> list[Path]:
    return sorted((server.settings.state_dir / "modules" / namespace_dir(namespace)).glob("*.cwasm"))


def test_a_300k_function_module_is_a_400_naming_the_limit(server: GatewayServer) -> None:
    tenant = _tenant(server)
    r = tenant.admin.put("/v1/functions/big", content=many_functions(300_000),
                         headers={"Content-Type": "application/wasm"})
    assert r.status_code == 400
    assert r.json()["error"] == ("invalid module: the module has 300,001 functions; the limit is 50,000 per module "
                                 "(WASMHOST_MAX_MODULE_FUNCTIONS)")
    assert not _artifacts(server, tenant.name)


def test_a_missing_handle_names_the_exports_and_the_fix(server: GatewayServer) -> None:
    tenant = _tenant(server)
    r = tenant.admin.put("/v1/functions/f", content=many_functions(2, export_handle=False))
    assert r.status_code == 400
    error = r.json()["error"]
    assert "it exports function `main`, memory `memory`" in error
    assert "Rust: #[no_mangle]" in error and "Zig: export fn handle() i32" in error


def test_a_compile_beyond_its_cpu_time_is_a_400_and_is_not_compiled_again(server: GatewayServer) -> None:
    tenant = _tenant(server)
    slow = many_functions(45_000, body_ops=8)  # seconds of CPU even on a fast quiet machine, 2 MB
    stats = _runtime(server).cache_stats
    for _ in range(2):
        r = tenant.admin.put("/v1/functions/slow", content=slow)
        assert r.status_code == 400
        assert "used more than 1 s of CPU time (WASMHOST_COMPILE_CPU_SECONDS)" in r.json()["error"]
    assert stats.refusal_hits >= 1


def test_the_same_bytes_compile_again_in_another_namespace(server: GatewayServer) -> None:
    first, second = _tenant(server), _tenant(server)
    module = ECHO.encode() + b" ;; unique to this test"
    stats = _runtime(server).cache_stats
    before = stats.compiles
    assert first.admin.put("/v1/functions/echo", content=module).status_code == 200
    assert second.admin.put("/v1/functions/echo", content=module).status_code == 200
    assert stats.compiles - before == 2  # the second tenant's deploy did not reuse (or time) the first's artifact
    assert len(_artifacts(server, first.name)) == len(_artifacts(server, second.name)) == 1
    assert second.admin.post("/v1/functions/echo/invoke", content=b"hi").json()["output"] == "hi"


def test_deleting_or_replacing_a_function_deletes_its_artifacts(server: GatewayServer) -> None:
    tenant = _tenant(server)
    a, b = ECHO.encode() + b" ;; a", ECHO.encode() + b" ;; b"
    assert tenant.admin.put("/v1/functions/one", content=a).status_code == 200
    assert tenant.admin.put("/v1/functions/two", content=a).status_code == 200
    assert len(_artifacts(server, tenant.name)) == 1
    assert tenant.admin.delete("/v1/functions/one").status_code == 200
    assert len(_artifacts(server, tenant.name)) == 1  # "two" still uses these bytes
    assert tenant.admin.post("/v1/functions/two/invoke", content=b"x").json()["output"] == "x"
    sha_a = _artifacts(server, tenant.name)[0].name.split("-")[0]
    assert tenant.admin.put("/v1/functions/two", content=b).status_code == 200  # replaced
    left = _artifacts(server, tenant.name)
    assert len(left) == 1 and not left[0].name.startswith(sha_a)
    assert tenant.admin.delete("/v1/functions/two").status_code == 200
    assert _artifacts(server, tenant.name) == []
    assert _runtime(server).cached(tenant.name, sha_a) is None


def test_per_namespace_quotas_on_functions_and_module_bytes(server: GatewayServer) -> None:
    tenant = _tenant(server)
    for i in range(MAX_FUNCTIONS):
        assert tenant.admin.put(f"/v1/functions/f{i}", content=ECHO.encode() + b" " * (PAD + i)).status_code == 200
    r = tenant.admin.put("/v1/functions/extra", content=ECHO.encode())
    assert r.status_code == 409
    assert r.json()["error"] == (f"the namespace already has {MAX_FUNCTIONS} functions; the limit is {MAX_FUNCTIONS} "
                                 "(WASMHOST_MAX_FUNCTIONS_PER_NAMESPACE); delete one first")
    assert tenant.admin.put("/v1/functions/f0", content=ECHO.encode() + b"\n" * PAD).status_code == 200  # replacing
    r = tenant.admin.put("/v1/functions/f1", content=ECHO.encode() + b" " * (2 * PAD))
    assert r.status_code == 413
    assert "(WASMHOST_MAX_NAMESPACE_MODULE_BYTES)" in r.json()["error"]
    assert f"the limit is {MAX_BYTES:,}" in r.json()["error"]
    assert tenant.admin.delete("/v1/functions/f2").status_code == 200
    assert tenant.admin.put("/v1/functions/extra", content=ECHO.encode()).status_code == 200
