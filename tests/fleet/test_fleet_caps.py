"""Per-namespace caps hold for the fleet, not per gateway: two real gateways on one PostgreSQL, a tenant
sending and invoking through both. Each gateway alone would allow the whole cap (20 sends a minute, 2
invocations at once), so twice the cap would get through without the fleet's counters."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fleet.gateways import ROOT, GatewayProcess, Tenant, create_tenant, metric
from wasmhost.runtime import RATE_LIMITED

SENDS_PER_MINUTE = 20
MAX_CONCURRENT = 2
LEASE_SECONDS = 3
CAPS = {
    "WASMHOST_SENDS_PER_MINUTE": str(SENDS_PER_MINUTE),
    "WASMHOST_MAX_CONCURRENT_INVOCATIONS": str(MAX_CONCURRENT),
    "WASMHOST_SLOT_LEASE_SECONDS": str(LEASE_SECONDS),
}

#: Sleeps for the number of nanoseconds its input holds (8 bytes, little-endian) with WASI's poll_oneoff,
#: then outputs "slept": an invocation that holds its slot for a known time without using a core.
SLEEPER = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "input_read" (func $read (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 4000) "slept")
  (func (export "handle") (result i32)
    (drop (call $read (i32.const 3000) (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.load (i32.const 3000)))
    (drop (call $poll (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 2048)))
    (drop (call $out (i32.const 4000) (i32.const 5)))
    (i32.const 0)))"""


SPAM_SENDS = (ROOT / "guest_examples" / "sandbox" / "spam_sends.wat").read_text()


def _nap(seconds: float) -> bytes:
    return struct.pack("<q", int(seconds * 1e9))


@pytest.fixture(scope="module")
def capped(fleet_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    tmp: Path = tmp_path_factory.mktemp("fleet-caps")
    started: list[GatewayProcess] = []
    try:
        for name in ("a", "b"):
            started.append(GatewayProcess(name, fleet_db, tmp, **CAPS).start())
        yield started[0], started[1]
    finally:
        for gw in started:
            gw.stop()


async def _sleeper_tenant(a: GatewayProcess) -> Tenant:
    tenant = await create_tenant(a, "caps")
    async with tenant.admin(a) as admin:
        r = await admin.put("/v1/functions/nap", content=SLEEPER.encode(), params={"timeout_ms": 30_000})
        assert r.status_code == 200, r.text
    return tenant


async def _in_flight(gw: GatewayProcess) -> float:
    async with gw.client() as client:
        return metric((await client.get("/metrics")).text, "wasmhost_invocations_in_flight")


async def _invoke(client: httpx.AsyncClient, seconds: float) -> httpx.Response:
    return await client.post("/v1/functions/nap/invoke", content=_nap(seconds))


async def test_sends_per_minute_hold_across_gateways(capped: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = capped
    tenant = await create_tenant(a, "caps")
    async with tenant.admin(a) as on_a, tenant.admin(b) as on_b:
        assert (await on_a.put("/v1/namespace/push-credentials/outbox", json={})).status_code == 200
        async with tenant.user(a, "alice") as alice:
            r = await alice.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox", "token": "t-1"})
            assert r.status_code == 200, r.text
        started = time.monotonic()
        answers = []
        for i in range(2 * SENDS_PER_MINUTE):  # alternately through A and B
            answers.append(await (on_a, on_b)[i % 2].post("/v1/push/send", json={"user_id": "alice", "body": str(i)}))
        elapsed = time.monotonic() - started
    codes = [r.status_code for r in answers]
    assert set(codes) == {200, 429}, codes
    refilled = int(elapsed * SENDS_PER_MINUTE / 60)  # one token every 3 s
    # Each gateway may end holding its last grant (one token at 20 a minute) unspent, never more.
    assert SENDS_PER_MINUTE - 2 <= codes.count(200) <= SENDS_PER_MINUTE + refilled, codes
    assert 200 in codes[0::2] and 200 in codes[1::2]  # both gateways sent: they shared one budget
    refused = next(r for r in answers if r.status_code == 429)
    assert f"at most {SENDS_PER_MINUTE} sends per minute" in refused.json()["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    async with a.client() as client:  # the grants are visible to the operator
        page = (await client.get("/metrics")).text
    assert 'wasmhost_fleet_cap_requests_total{kind="send_grant"}' in page


async def test_guest_sends_share_the_fleets_budget(capped: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = capped
    tenant = await create_tenant(a, "caps")
    accepted = []
    started = time.monotonic()
    async with tenant.admin(a) as on_a, tenant.admin(b) as on_b:
        assert (await on_a.put("/v1/namespace/push-credentials/outbox", json={})).status_code == 200
        r = await on_a.put("/v1/functions/spam", content=SPAM_SENDS.encode())
        assert r.status_code == 200, r.text
        for i in range(30):  # alternately: each invocation sends until the host refuses
            r = await (on_a, on_b)[i % 2].post("/v1/functions/spam/invoke")
            assert r.status_code == 200, r.text
            n, code = struct.unpack("<ii", base64.b64decode(r.json()["output_base64"]))
            assert code == RATE_LIMITED
            accepted.append(n)
        # An HTTP send of the namespace shares that budget, through either gateway.
        refused = await on_b.post("/v1/push/send", json={"user_id": "alice", "body": "x"})
    elapsed = time.monotonic() - started
    refilled = int(elapsed * SENDS_PER_MINUTE / 60)  # one token every 3 s
    assert SENDS_PER_MINUTE - 2 <= sum(accepted) <= SENDS_PER_MINUTE + refilled, accepted
    assert sum(accepted[0::2]) and sum(accepted[1::2])  # both gateways' guests sent
    assert refused.status_code == 429 or refilled, refused.text


async def test_concurrent_invocations_hold_across_gateways(capped: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = capped
    tenant = await _sleeper_tenant(a)
    async with tenant.admin(a) as on_a, tenant.admin(b) as on_b:
        for client in (on_a, on_b):  # compile on both first, so the race below is only for slots
            r = await _invoke(client, 0)
            assert r.status_code == 200 and r.json()["output"] == "slept", r.text
        await asyncio.sleep(1.5)  # the warm-up's slots, unused for a tick, go back to the fleet
        started = time.monotonic()
        answers = await asyncio.gather(*(_invoke(client, 2.0) for client in (on_a, on_b, on_a, on_b)))
        elapsed = time.monotonic() - started
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 429, 429], [r.text for r in answers]
    assert elapsed < 4.0  # the two ran at once (a refused one did not wait for a slot)
    assert all(r.json()["output"] == "slept" for r in answers if r.status_code == 200)
    refused = next(r for r in answers if r.status_code == 429)
    assert f"already has {MAX_CONCURRENT} invocations in progress" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"


async def test_a_crashed_gateways_slots_come_back_after_its_lease(capped: tuple[GatewayProcess, GatewayProcess],
                                                                  tmp_path: Path, fleet_db: str) -> None:
    a, _ = capped
    tenant = await _sleeper_tenant(a)
    doomed = GatewayProcess("doomed", fleet_db, tmp_path, **CAPS).start()
    try:
        async with tenant.admin(doomed) as on_doomed, tenant.admin(a) as on_a:
            long = [asyncio.ensure_future(_invoke(on_doomed, 20.0)) for _ in range(MAX_CONCURRENT)]
            deadline = time.monotonic() + 30
            while await _in_flight(doomed) < MAX_CONCURRENT:  # both hold their slots (the first compiles)
                assert not any(t.done() for t in long), [t.result().text for t in long if t.done()]
                assert time.monotonic() < deadline, "the doomed gateway's invocations never started"
                await asyncio.sleep(0.05)
            assert (await _invoke(on_a, 0)).status_code == 429
            assert doomed.proc is not None
            doomed.proc.kill()  # SIGKILL: it gives nothing back
            killed = time.monotonic()
            for task in long:
                with pytest.raises(httpx.HTTPError):
                    await task
            r = await _invoke(on_a, 0)
            if time.monotonic() - killed < 1.0:  # its lease was renewed at most 2 s before it died
                assert r.status_code == 429, "the dead gateway's lease was given back: it cannot have been"
            while (r := await _invoke(on_a, 0)).status_code == 429:
                assert time.monotonic() - killed < LEASE_SECONDS + 5, "the crashed gateway's slots never came back"
                await asyncio.sleep(0.1)
            assert r.status_code == 200 and r.json()["output"] == "slept", r.text
            both = await asyncio.gather(*(_invoke(on_a, 0.3) for _ in range(MAX_CONCURRENT)))
            assert [x.status_code for x in both] == [200] * MAX_CONCURRENT  # every slot came back
    finally:
        doomed.stop()
