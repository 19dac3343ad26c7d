"""Against a real `wasmhost serve`: one tenant's compiles neither hold up another tenant's deploy nor
run unbounded, and the 300,000-function module is refused before it compiles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.gateways import GatewayProcess, create_tenant
from tests.wasmgen import many_functions

ECHO = b"""(module
  (import "wasmhost" "input_len" (func $len (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (i32.const 0)))"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess("compiles", f"sqlite:///{tmp_path / 'wasmhost.db'}", tmp_path)
    try:
        yield gw.start()
    finally:
        gw.stop()


async def test_an_attackers_compiles_do_not_delay_another_tenants_deploy(gateway: GatewayProcess) -> None:
    attacker, victim = await create_tenant(gateway, "attacker"), await create_tenant(gateway, "victim")
    finished: dict[str, float] = {}
    started = time.monotonic()

    async def deploy(tenant_name: str, client_of: object, name: str, body: bytes) -> int:
        async with client_of as client:  # type: ignore[attr-defined]
            r = await client.put(f"/v1/functions/{name}", content=body, headers={"Content-Type": "application/wasm"},
                                 timeout=300)
        finished[name] = time.monotonic() - started
        return int(r.status_code)

    t0 = time.monotonic()
    assert await deploy(victim.name, victim.admin(gateway), "baseline", ECHO + b" ;; before the attack") == 200
    baseline_s = time.monotonic() - t0
    started = time.monotonic()
    # Legitimate but slow to compile (within every limit), twice at once, then the 300k-function module.
    slow = [asyncio.ensure_future(deploy(attacker.name, attacker.admin(gateway), f"slow{i}",
                                         many_functions(45_000, body_ops=4, salt=i))) for i in range(2)]
    await asyncio.sleep(1.0)  # both requests are in: one compiling, one waiting for the attacker's turn
    t0 = time.monotonic()
    assert await deploy(victim.name, victim.admin(gateway), "echo", ECHO) == 200
    victim_s = time.monotonic() - t0
    async with gateway.client() as anyone:
        t0 = time.monotonic()
        assert (await anyone.get("/healthz")).status_code == 200
        healthz_s = time.monotonic() - t0
    async with attacker.admin(gateway) as client:
        t0 = time.monotonic()
        r = await client.put("/v1/functions/huge", content=many_functions(300_000),
                             headers={"Content-Type": "application/wasm"}, timeout=300)
        huge_s = time.monotonic() - t0
    assert r.status_code == 400 and "(WASMHOST_MAX_MODULE_FUNCTIONS)" in r.json()["error"]
    assert await asyncio.gather(*slow) == [200, 200]
    assert finished["echo"] < min(finished["slow0"], finished["slow1"])  # the victim did not wait for the attacker
    print(f"\nvictim deploy alone {baseline_s * 1000:.0f} ms; during the attacker's compiles: "
          f"{victim_s * 1000:.0f} ms, "
          f"healthz {healthz_s * 1000:.0f} ms, 300k-function refusal {huge_s * 1000:.0f} ms; "
          f"the attacker's compiles finished at {finished['slow0']:.1f} s and {finished['slow1']:.1f} s")
    async with victim.admin(gateway) as client:
        r = await client.post("/v1/functions/echo/invoke")
        assert r.status_code == 200 and r.json()["ok"], r.text
