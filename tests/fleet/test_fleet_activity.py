"""Activity is kept in the shared store: what one gateway ran and delivered, another reports (within the
one-second write interval), and each namespace sees only its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.fleet.gateways import GatewayProcess, create_tenant

pytestmark = pytest.mark.asyncio

LOGGER = """(module
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "ran on a")
  (func (export "handle") (result i32) (drop (call $log (i32.const 1) (i32.const 0) (i32.const 8))) (i32.const 0)))"""


async def _eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError("not seen in time")
        await asyncio.sleep(0.1)


async def test_one_gateways_activity_is_read_on_another(fleet: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = fleet
    tenant, other = await create_tenant(a, "act"), await create_tenant(a, "act")
    async with tenant.admin(a) as on_a, tenant.admin(b) as on_b, other.admin(b) as theirs:
        assert (await on_a.put("/v1/namespace/push-credentials/outbox", json={})).status_code == 200
        async with tenant.user(a, "alice") as alice:
            r = await alice.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox", "token": "t-1"})
            assert r.status_code == 200, r.text
        assert (await on_a.put("/v1/functions/logger", content=LOGGER)).status_code == 200
        assert (await on_a.post("/v1/functions/logger/invoke")).json()["ok"]
        assert (await on_a.post("/v1/push/send", json={"user_id": "alice", "title": "x"})).status_code == 200

        async def recent() -> list[Any]:
            return list((await on_b.get("/v1/functions/logger/invocations")).json()["invocations"])

        invocations = await _eventually(recent)
        assert [i["logs"][0]["message"] for i in invocations] == ["ran on a"]

        async def delivered() -> list[Any]:
            return list((await on_b.get("/v1/namespace/usage?minutes=5")).json()["deliveries"])

        deliveries = await _eventually(delivered)
        assert [(d["provider"], d["outcome"], d["count"]) for d in deliveries] == [("outbox", "success", 1)]
        usage = (await on_b.get("/v1/namespace/usage?minutes=5")).json()
        assert [(i["outcome"], i["count"]) for i in usage["invocations"]] == [("ok", 1)]
        mine = (await theirs.get("/v1/namespace/usage")).json()
        assert mine["deliveries"] == [] and mine["invocations"] == []
        assert (await theirs.get("/v1/functions/logger/invocations")).status_code == 404
