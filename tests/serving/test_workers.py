"""`wasmhost serve --workers N` as a user runs it: several processes on one port and one SQLite file, caps
held for the gateway as a whole, a killed worker replaced, and a drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fleet.gateways import GatewayProcess, Tenant, create_tenant

#: Spins until its deadline: an invocation that holds its slot for `timeout_ms`.
SPIN = """(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (loop $l (br $l)) (i32.const 0)))"""


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess("w", f"sqlite:///{tmp_path / 'wasmhost.db'}", tmp_path, WASMHOST_WORKERS="2",
                        WASMHOST_MAX_CONCURRENT_INVOCATIONS="2", WASMHOST_SENDS_PER_MINUTE="5",
                        WASMHOST_SHUTDOWN_GRACE="20").start()
    yield gw
    gw.stop()


async def _tenant(gw: GatewayProcess) -> Tenant:
    tenant = await create_tenant(gw, "work")
    async with tenant.admin(gw) as admin:
        r = await admin.put("/v1/functions/spin?timeout_ms=4000&fuel=1000000000", content=SPIN)
        assert r.status_code == 200, r.text
        assert (await admin.put("/v1/namespace/push-credentials/outbox", json={})).status_code == 200
    async with tenant.user(gw, "alice") as alice:
        r = await alice.post("/v1/push/devices", json={"device_id": "d", "provider": "outbox", "token": "t"})
        assert r.status_code == 200, r.text
    return tenant


async def test_caps_hold_for_the_whole_gateway(gateway: GatewayProcess) -> None:
    assert len(_children(gateway.pid)) == 2
    tenant = await _tenant(gateway)

    async def invoke() -> int:  # a connection of its own each: the kernel spreads them over the workers
        async with tenant.admin(gateway) as admin:
            return (await admin.post("/v1/functions/spin/invoke")).status_code

    codes = await asyncio.gather(*(invoke() for _ in range(8)))
    assert sorted(codes) == [200, 200] + [429] * 6

    async def send() -> int:
        async with tenant.admin(gateway) as admin:
            return (await admin.post("/v1/push/send", json={"user_id": "alice", "title": "hi"})).status_code

    codes = await asyncio.gather(*(send() for _ in range(12)))
    assert codes.count(200) == 5 and codes.count(429) == 7, (codes, gateway.log()[-3000:])


async def test_a_killed_worker_is_replaced_and_its_slots_come_back(gateway: GatewayProcess) -> None:
    tenant = await _tenant(gateway)
    before = _children(gateway.pid)
    async with tenant.admin(gateway) as admin:
        slow = asyncio.create_task(admin.post("/v1/functions/spin/invoke"))
        await asyncio.sleep(0.5)  # the invocation holds a slot in one of the workers
        for pid in before:
            subprocess.run(["kill", "-9", str(pid)], check=True)
        with pytest.raises(httpx.HTTPError):
            await slow
    deadline = time.monotonic() + 30
    while len(_children(gateway.pid) - before) < 2:
        assert time.monotonic() < deadline, gateway.log()
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    codes = []
    async with tenant.admin(gateway) as admin:
        for _ in range(20):
            try:
                codes.append((await admin.get("/v1/functions")).status_code)
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
            if codes and codes[-1] == 200:
                break
        assert codes[-1] == 200

    async def invoke() -> int:
        async with tenant.admin(gateway) as client:
            return (await client.post("/v1/functions/spin/invoke")).status_code

    assert await asyncio.gather(invoke(), invoke()) == [200, 200]  # both slots are free again
    assert "given back" in gateway.log()


async def test_sigterm_drains_invocations_in_progress(gateway: GatewayProcess) -> None:
    tenant = await _tenant(gateway)
    async with tenant.admin(gateway) as admin:
        slow = asyncio.create_task(admin.post("/v1/functions/spin/invoke"))
        await asyncio.sleep(0.5)
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        r = await slow
    assert r.status_code == 200 and r.json()["error"]["kind"] in ("timeout", "out_of_fuel")  # it ran to its end
    assert await asyncio.to_thread(gateway.proc.wait, 30) == 0


def _output_guest(text: str) -> str:
    return f"""(module
  (import "wasmhost" "output_write" (func $write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{text}")
  (func (export "handle") (result i32) (drop (call $write (i32.const 0) (i32.const {len(text)}))) (i32.const 0)))"""


async def _until_every_worker_agrees(check: object, bound: float) -> float:
    """Seconds until 20 fresh connections in a row (spread over the workers) pass ``check``."""
    start = time.monotonic()
    while True:
        oks = await asyncio.gather(*(check() for _ in range(20)))  # type: ignore[operator]
        if all(oks):
            return time.monotonic() - start
        assert time.monotonic() - start < bound, "a worker kept serving what another changed"
        await asyncio.sleep(0.01)


@pytest.fixture
def roomy(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess("r", f"sqlite:///{tmp_path / 'wasmhost.db'}", tmp_path, WASMHOST_WORKERS="2",
                        WASMHOST_MAX_CONCURRENT_INVOCATIONS="64").start()
    yield gw
    gw.stop()


async def test_every_worker_drops_what_another_changed(roomy: GatewayProcess) -> None:
    gateway = roomy
    """Caches of API keys and functions are warm in every worker; a revoke or a redeploy made through one
    worker is honoured by all of them well within the TTL (30 s)."""
    tenant = await _tenant(gateway)
    async with tenant.admin(gateway) as admin:
        assert (await admin.put("/v1/functions/v", content=_output_guest("one"))).status_code == 200

    async def output_is(text: str) -> bool:
        async with tenant.admin(gateway) as admin:
            return (await admin.post("/v1/functions/v/invoke")).json()["output"] == text

    await _until_every_worker_agrees(lambda: output_is("one"), 5)  # warms both workers' caches
    async with tenant.admin(gateway) as admin:
        assert (await admin.put("/v1/functions/v", content=_output_guest("two"))).status_code == 200
    await _until_every_worker_agrees(lambda: output_is("two"), 5)  # the TTL is 30 s

    async with gateway.client("fleet-operator-token-0123456789abcdef") as op:
        r = await op.post(f"/v1/namespaces/{tenant.name}/keys")
        assert r.status_code == 201, r.text
        extra_key, key_id = r.json()["api_key"], r.json()["key_id"]

    async def key_answers(expected: int) -> bool:
        async with gateway.client(extra_key) as client:
            return (await client.get("/v1/functions")).status_code == expected

    await _until_every_worker_agrees(lambda: key_answers(200), 5)
    async with gateway.client("fleet-operator-token-0123456789abcdef") as op:
        assert (await op.delete(f"/v1/namespaces/{tenant.name}/keys/{key_id}")).status_code == 200
    await _until_every_worker_agrees(lambda: key_answers(401), 5)


async def test_metrics_count_what_every_worker_did(roomy: GatewayProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.fleet.gateways import ADMIN_TOKEN
    from wasmhost.gateway.metrics import SNAPSHOT_SECONDS

    def ok_invocations(text: str) -> float:
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "wasmhost_invocations_total" and s.labels == {"outcome": "ok"})

    tenant = await create_tenant(roomy, "metrics")
    async with tenant.admin(roomy) as admin:
        assert (await admin.put("/v1/functions/v", content=_output_guest("hi"))).status_code == 200

    async def invoke() -> None:  # fresh connections: the kernel spreads them over both workers
        async with tenant.admin(roomy) as admin:
            assert (await admin.post("/v1/functions/v/invoke")).status_code == 200

    await asyncio.gather(*(invoke() for _ in range(40)))
    await asyncio.sleep(2 * SNAPSHOT_SECONDS)  # the other worker's snapshot is at most this old
    seen = set()
    for _ in range(6):  # whichever worker answers the scrape, it counts every worker's invocations
        async with roomy.client(ADMIN_TOKEN) as op:
            text = (await op.get("/metrics")).text
        seen.add(ok_invocations(text))
    assert seen == {40.0}


async def test_workers_stop_when_the_supervisor_is_killed(gateway: GatewayProcess) -> None:
    workers = _children(gateway.pid)
    assert len(workers) == 2
    assert gateway.proc is not None
    gateway.proc.kill()
    gateway.proc.wait(10)
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived its supervisor"
        await asyncio.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "gone"
