"""No tenant can slow another: each attack of `bench.attacks` against a real `wasmhost serve`.

One namespace keeps `CONCURRENCY` (8, the per-namespace cap) invocations of an attack running; a
second namespace invokes a trivial function (a trivial component against the component attack) and
``GET /healthz`` meanwhile. Before the fixes each attack stalled the other tenant for seconds (a
log flood also made 655 MB responses and 2.5 GB of RSS); the bounds here are generous for a noisy
machine. The attackers run on their own thread and loop, so their clients do not delay the
measurements.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.attacks import ATTACKS, CONCURRENCY, VICTIM, VICTIM_COMPONENT, Attack
from tests.fleet.gateways import GatewayProcess, Tenant, create_tenant

#: How long each attack runs while the victim is measured.
ATTACK_SECONDS = 4.0
#: Generous bounds on the victim's median and p90 (ms) for a loaded dev machine (measured there at
#: load 12-16 on 2 cores: medians 40-200 ms); before the fixes, seconds. The goal on a quiet
#: machine (p99 <= 50 ms) is measured by ``bench.gateway``, not asserted here.
VICTIM_P50_MS = 250.0
VICTIM_P90_MS = 1_000.0
#: An attack invocation's deadline: each ends and starts again during the attack.
ATTACK_TIMEOUT_MS = 1_500


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants."""
    total = 0.0
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _deploy(client: httpx.Client, name: str, attack: Attack, **limits: int) -> None:
    params = {**attack.limits, **limits}
    r = client.put(f"/v1/functions/{name}", params=params, content=attack.wasm())
    assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("attacks")
    gw = GatewayProcess("attacks", f"sqlite:///{tmp / 'wasmhost.db'}", tmp,
                        WASMHOST_MAX_CONCURRENT_INVOCATIONS=str(CONCURRENCY)).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def tenants(gateway: GatewayProcess) -> tuple[Tenant, Tenant]:
    async def make() -> tuple[Tenant, Tenant]:
        return await create_tenant(gateway, "evil"), await create_tenant(gateway, "good")

    evil, good = asyncio.run(make())
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {evil.api_key}"}, timeout=60) as c:
        for attack in ATTACKS.values():
            _deploy(c, attack.name, attack, timeout_ms=ATTACK_TIMEOUT_MS)
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {good.api_key}"}, timeout=60) as c:
        _deploy(c, VICTIM.name, VICTIM)
        _deploy(c, VICTIM_COMPONENT.name, VICTIM_COMPONENT)
    return evil, good


class Attacker:
    """`CONCURRENCY` invoke loops of one attack, on a thread with its own loop."""

    def __init__(self, url: str, api_key: str, name: str) -> None:
        self.url, self.api_key, self.name = url, api_key, name
        self.stop = threading.Event()
        self.responses: list[int] = []
        self.largest = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as client:
            async def loop() -> None:
                while not self.stop.is_set():
                    r = await client.post(f"/v1/functions/{self.name}/invoke", content=b"")
                    self.responses.append(r.status_code)
                    self.largest = max(self.largest, len(r.content))

            await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))

    def __enter__(self) -> Attacker:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(120)


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_attack_does_not_slow_another_tenant(gateway: GatewayProcess, tenants: tuple[Tenant, Tenant],
                                                attack: str) -> None:
    evil, good = tenants
    victim = VICTIM_COMPONENT if attack.startswith("component") else VICTIM
    rss_before = _rss_mb(gateway.pid)
    invokes: list[float] = []
    health: list[float] = []
    rss_peak = rss_before
    headers = {"Authorization": f"Bearer {good.api_key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as client:
        assert client.post(f"/v1/functions/{victim.name}/invoke", content=b"").json()["code"] == 0
        with Attacker(gateway.url, evil.api_key, attack) as attacker:
            time.sleep(0.3)  # the attack is under way
            end = time.monotonic() + ATTACK_SECONDS
            while time.monotonic() < end:
                start = time.perf_counter()
                r = client.post(f"/v1/functions/{victim.name}/invoke", content=b"")
                invokes.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200 and r.json()["code"] == 0, r.text
                start = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                health.append((time.perf_counter() - start) * 1000)
                rss_peak = max(rss_peak, _rss_mb(gateway.pid))
                time.sleep(0.02)
        assert attacker.responses and set(attacker.responses) <= {200, 429}, set(attacker.responses)
    assert len(invokes) >= 3
    for what, samples in (("invoke", invokes), ("/healthz", health)):
        p50, p90 = _quantile(samples, 0.5), _quantile(samples, 0.9)
        assert p50 < VICTIM_P50_MS and p90 < VICTIM_P90_MS, f"victim {what} p50 {p50:.0f} ms, p90 {p90:.0f} ms"
    # Memory: at most what the attack's invocations may hold (their memory caps), never more.
    memory_mb = ATTACKS[attack].limits.get("memory_mb", 32)
    assert rss_peak - rss_before < CONCURRENCY * memory_mb + 300, (rss_before, rss_peak)
    # A response is bounded whatever the limits (output and logs: 1 MiB each, JSON-escaped).
    assert attacker.largest < 16 << 20
