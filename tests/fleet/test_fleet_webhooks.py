"""Webhooks across a fleet: a webhook saved through gateway A is used by gateway B's sends at once (B
hears of it through the store's NOTIFY), each event reaches the endpoint once whichever gateway's worker
claims it, and after a DELETE through A, B writes no more events."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from svix.webhooks import Webhook as SvixWebhook

from tests.fleet.gateways import GatewayProcess, create_tenant
from wasmhost.testing._server import FakeServer, Request, Response

pytestmark = pytest.mark.asyncio


async def _until(check: object, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_a_webhook_saved_on_one_gateway_serves_the_others_sends(
    fleet: tuple[GatewayProcess, GatewayProcess]
) -> None:
    a, b = fleet
    received: list[Request] = []

    def handle(req: Request) -> Response:
        received.append(req)
        return Response(204)

    receiver = await FakeServer(handle).start()
    try:
        tenant = await create_tenant(a, "hooks")
        async with tenant.admin(a) as admin_a, tenant.admin(b) as admin_b, tenant.user(b, "alice") as alice:
            assert (await admin_a.put("/v1/namespace/push-credentials/outbox", json={})).status_code == 200
            r = await alice.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox", "token": "t-p"})
            assert r.status_code == 200, r.text
            r = await admin_a.put("/v1/namespace/webhook", json={"url": f"{receiver.url}/hook",
                                                                  "events": ["send.completed"]})
            assert r.status_code == 200, r.text
            secret = r.json()["secret"]
            await asyncio.sleep(0.5)  # NOTIFY reaches B within milliseconds
            sends = []
            for i in range(3):
                r = await admin_b.post("/v1/push/send", json={"user_id": "alice", "title": f"m{i}"})
                assert r.status_code == 200, r.text
                sends.append(r.json()["send_id"])
            await _until(lambda: len(received) >= 3)
            await asyncio.sleep(0.5)
            assert len(received) == 3  # once each, though both gateways' workers look for events
            got = []
            for req in received:
                SvixWebhook(secret).verify(req.body, dict(req.headers))
                got.append(json.loads(req.body)["data"]["send_id"])
            assert sorted(got) == sorted(sends)
            view = (await admin_b.get("/v1/namespace/webhook")).json()
            assert view["last_success_at"] and "secret" not in view

            assert (await admin_a.delete("/v1/namespace/webhook")).status_code == 200
            await asyncio.sleep(0.5)
            r = await admin_b.post("/v1/push/send", json={"user_id": "alice", "title": "after"})
            assert r.status_code == 200
            await asyncio.sleep(1.0)
            assert len(received) == 3
    finally:
        await receiver.aclose()
