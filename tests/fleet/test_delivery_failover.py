"""Two gateways share one PostgreSQL delivery queue: one is killed (SIGKILL) mid-delivery toward a slow
ntfy server, the other finishes its deliveries once the lease runs out, and no delivery is ever being
sent by both at once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.gateways import GatewayProcess, create_tenant
from wasmhost.testing._server import Request, Response
from wasmhost.testing.ntfy import FakeNtfy

pytestmark = pytest.mark.asyncio

SENDS = 16
USERS = 4


class WatchedNtfy(FakeNtfy):
    """Counts, per message, how many requests for it are being served at the same moment."""

    in_flight: Counter[str]
    overlaps: int

    async def handle(self, req: Request) -> Response:
        import json

        title = str(json.loads(req.body).get("title", "")) if req.path == "/" else ""
        self.in_flight[title] += 1
        if self.in_flight[title] > 1:
            self.overlaps += 1
        try:
            return await super().handle(req)
        finally:
            self.in_flight[title] -= 1


async def test_the_survivor_finishes_a_killed_gateways_deliveries(fleet_db: str, tmp_path: Path) -> None:
    ntfy = WatchedNtfy(delay=0.5)
    ntfy.in_flight, ntfy.overlaps = Counter(), 0
    await ntfy.start()
    env: dict[str, Any] = {"WASMHOST_DEFAULT_NTFY_URL": ntfy.url, "WASMHOST_DELIVERY_LEASE": "2",
                           "WASMHOST_DELIVERY_POLL": "0.2", "WASMHOST_RETRY_BASE": "0.2", "WASMHOST_RETRY_MAX": "0.5"}
    a = GatewayProcess("qa", fleet_db, tmp_path, **env).start()
    b = GatewayProcess("qb", fleet_db, tmp_path, **env).start()
    try:
        tenant = await create_tenant(a, "queue")
        for u in range(USERS):
            async with tenant.user(a, f"u{u}") as user:
                r = await user.post("/v1/push/devices", json={"device_id": "phone", "provider": "ntfy",
                                                              "token": f"failover-u{u}"})
                assert r.status_code in (200, 201), r.text
        accepted: dict[str, str] = {}
        async with tenant.admin(a) as admin:
            for i in range(SENDS):
                r = await admin.post("/v1/push/send", params={"wait": 0},
                                     json={"user_id": f"u{i % USERS}", "title": f"f{i}", "body": "b"})
                assert r.status_code == 202, r.text
                accepted[f"f{i}"] = r.json()["send_id"]
        deadline = time.monotonic() + 30
        while sum(ntfy.attempts.values()) < 2:
            assert time.monotonic() < deadline, "no delivery started"
            await asyncio.sleep(0.05)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        async with tenant.admin(b) as admin:
            # In flight at the kill: leased by A, result not committed (B may not claim them for 2 s).
            listed = (await admin.get("/v1/push/sends", params={"limit": 200})).json()["sends"]
            in_flight = sum(d["state"] == "sending" for s in listed for d in s["deliveries"])
            deadline = time.monotonic() + 60
            while True:
                pending = (await admin.get("/v1/push/sends", params={"state": "pending", "limit": 200})).json()
                if not pending["sends"]:
                    break
                assert time.monotonic() < deadline, pending
                await asyncio.sleep(0.2)
            for title, send_id in accepted.items():
                status = (await admin.get(f"/v1/push/sends/{send_id}")).json()
                assert [d["state"] for d in status["deliveries"]] == ["delivered"], (title, status)
    finally:
        b.stop()
        a.stop()
        await ntfy.aclose()
    seen = Counter(p["title"] for p in ntfy.published)
    assert set(accepted) <= set(seen)
    assert sum(n - 1 for n in seen.values()) <= in_flight
    assert ntfy.overlaps == 0  # never claimed by both gateways at once
