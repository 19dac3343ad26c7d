"""Durable delivery benchmark: what accepting a send durably costs, and how fast the queue drains.

    python -m bench.delivery [--quick]

Measures, in one run, on the real Manager + outbox provider + SQLite store (one file):

a. accept — ``Manager.send_to_user`` to a user with one outbox device, delivered: durable (the send
   and its delivery row committed first, the state recorded after) against the in-memory path (no
   queue: today's path before durable delivery), interleaved rounds. Also the welcome guest invoked
   through the runtime both ways (``welcome_vs_memory``), and an accept alone (``?wait=0``).
b. throughput — N sends queued with ``wait=0`` (100 users × 1 device), then drained by the worker, running
   as in a gateway (it claims under a lease while earlier claims are delivered, and records): deliveries
   per second, against the same N sent one after another on the in-memory path; best of the rounds,
   interleaved.
c. recovery — 1,000 deliveries left queued or ``sending`` under an expired lease by a "crashed"
   process; a fresh process (new store, new manager, new lease owner) drains them: seconds to drain.
   ``lost`` counts accepted deliveries absent from the outbox afterwards, ``duplicates`` the extra rows.
d. pages — database pages one send's commit writes (SQLite's WAL), durable and in memory: the same on
   any machine, and what sets the ratio of the times in (a).
e. the same drain to the APNs loopback fake (TLS, HTTP/2): ``apns_deliveries_per_s`` against
   ``apns_direct_per_s`` (in-memory sends to it, one after another) and ``apns_direct_concurrent_per_s``
   (the same from 32 concurrent senders), best of 3 interleaved rounds; ``apns_delivered`` counts what
   the fake received of the queued sends (3 × N). Also (a) against a network service: the same sends one
   after another, durable and delivered at once, per send (``apns_accept_us``) against the in-memory
   path's (``apns_memory_us``).

Last line: JSON with ``accept_us``, ``memory_us``, ``accept_vs_memory`` (goal <= 1.3),
``welcome_us``, ``welcome_memory_us``, ``welcome_vs_memory``, ``queue_only_us``, ``deliveries_per_s``,
``direct_per_s``, ``recovery_s``, ``lost`` (goal 0), ``duplicates``, ``accept_pages``, ``memory_pages``,
``apns_accept_us``, ``apns_memory_us``, ``apns_accept_vs_memory``, ``apns_deliveries_per_s``,
``apns_direct_per_s``, ``apns_direct_concurrent_per_s``, ``apns_delivered``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from wasmhost.providers import ProviderPool, default_specs
from wasmhost.push import Defaults, Manager, PushMessage, QueueSettings
from wasmhost.push.delivery import LANES_PER_NAMESPACE
from wasmhost.runtime import Limits, Runtime
from wasmhost.store import KeyRing, SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
WELCOME = (ROOT / "guest_examples" / "welcome" / "welcome.wasm").read_bytes()
WELCOME_INPUT = b'{"user": "alice", "name": "Alice"}'
KEYRING = KeyRing({1: os.urandom(32)})
#: A lease long enough that no drain here outlives its claim (the crash in `recovery` claims for 0.2 s).
SETTINGS = QueueSettings(lease_seconds=30.0, poll_interval=0.05, batch=500)


def _manager(store: SQLiteStore, durable: bool) -> Manager:
    return Manager(store, ProviderPool(default_specs(store)), Defaults(credentials={"outbox": {}}),
                   queue=store if durable else None, queue_settings=SETTINGS)


async def _open(path: Path) -> SQLiteStore:
    store = await SQLiteStore(path, KEYRING).open()
    if not await store.namespace_exists("bench"):
        await store.create_namespace("bench")
        await store.register_device("bench", "alice", "phone", "outbox", "tok-alice")
        for i in range(100):
            await store.register_device("bench", f"u{i}", "phone", "outbox", f"tok-u{i}")
    return store


async def _per_call_us(fn: Any, iterations: int) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        await fn()
    return (time.perf_counter() - start) / iterations * 1e6


async def accept(store: SQLiteStore, iterations: int, rounds: int) -> dict[str, float]:
    durable, memory = _manager(store, True), _manager(store, False)
    message = PushMessage(title="hi")

    async def send_durable() -> None:
        report = await durable.send_to_user("bench", "alice", message)
        assert report.ok and report.send_id, report.to_dict()

    async def send_memory() -> None:
        assert (await memory.send_to_user("bench", "alice", message)).ok

    async def queue_only() -> None:
        await durable.send_to_user("bench", "alice", message, wait=False)

    runtimes = {name: Runtime(m) for name, m in (("durable", durable), ("memory", memory))}
    module = runtimes["durable"].compile(WELCOME, namespace="bench")
    limits = Limits()

    def invoker(name: str) -> Any:
        async def invoke() -> None:
            result = await runtimes[name].invoke("bench", module, WELCOME_INPUT, limits)
            assert result.ok and result.sends[0]["devices_succeeded"] == 1, result.to_dict()
        return invoke

    samples: dict[str, list[float]] = {k: [] for k in ("accept", "memory", "welcome", "welcome_memory", "queue")}
    for fn in (send_durable, send_memory, invoker("durable"), invoker("memory")):
        await fn()  # warm caches
    for _ in range(rounds):
        samples["accept"].append(await _per_call_us(send_durable, iterations))
        samples["memory"].append(await _per_call_us(send_memory, iterations))
        samples["welcome"].append(await _per_call_us(invoker("durable"), iterations))
        samples["welcome_memory"].append(await _per_call_us(invoker("memory"), iterations))
    samples["queue"].append(await _per_call_us(queue_only, iterations))
    # The queued rows of `queue_only` are not part of the later measurements.
    assert durable.queue is not None
    while await durable.queue.claim_once():
        pass
    for runtime in runtimes.values():
        await runtime.aclose()
    out = {k: min(v) for k, v in samples.items()}
    return {
        "accept_us": round(out["accept"], 1),
        "memory_us": round(out["memory"], 1),
        "accept_vs_memory": round(out["accept"] / out["memory"], 2),
        "welcome_us": round(out["welcome"], 1),
        "welcome_memory_us": round(out["welcome_memory"], 1),
        "welcome_vs_memory": round(out["welcome"] / out["welcome_memory"], 2),
        "queue_only_us": round(out["queue"], 1),
    }


async def pages(path: Path, sends: int = 50) -> dict[str, float]:
    """Database pages one send's commit writes to the WAL, durable (the send, its delivery row and the
    outbox row in one transaction) and in memory (the outbox row): the same on any machine, unlike the
    times above, and what sets their ratio. Counted from the WAL's growth over `sends` sends from a
    truncated WAL, on a fresh file: fewer pages than any checkpoint would wait for."""
    store = await _open(path)
    durable, memory = _manager(store, True), _manager(store, False)
    [(page_size,)] = await store.driver.fetch("PRAGMA page_size")
    wal = Path(str(path) + "-wal")
    out: dict[str, float] = {}
    try:
        for name, manager in (("accept_pages", durable), ("memory_pages", memory)):
            await store.driver.fetch("PRAGMA wal_checkpoint(TRUNCATE)")
            for i in range(sends):
                assert (await manager.send_to_user("bench", "alice", PushMessage(title=f"p-{i}"))).ok
            frames = (wal.stat().st_size - 32) / (page_size + 24)  # WAL header; each frame's header
            out[name] = round(frames / sends, 1)
    finally:
        await store.aclose()
    return out


async def _queue_sends(manager: Manager, n: int, tag: str) -> None:
    for i in range(n):
        await manager.send_to_user("bench", f"u{i % 100}", PushMessage(title=f"{tag}-{i}"), wait=False)


async def _drain(manager: Manager, n: int) -> float:
    """Seconds the manager's worker, started now, takes to finish `n` queued deliveries: it claims more
    while earlier claims are being delivered, as in a running gateway."""
    queue = manager.queue
    assert queue is not None

    def finished() -> int:
        return sum(queue.transitions[s] for s in ("delivered", "failed", "dead", "expired"))

    goal = finished() + n
    start = time.perf_counter()
    queue.start()
    try:
        while finished() < goal:
            await asyncio.sleep(0.001)
        return time.perf_counter() - start
    finally:
        await queue.aclose()


async def throughput(store: SQLiteStore, n: int, rounds: int) -> dict[str, float]:
    """N sends (100 users, one outbox device each) queued, then drained by the worker, against the same N
    sent one after another on the in-memory path; best of `rounds` interleaved."""
    durable, memory = _manager(store, True), _manager(store, False)
    queued_per_s = direct_per_s = 0.0
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            await memory.send_to_user("bench", f"u{i % 100}", PushMessage(title=f"m-{r}-{i}"))
        direct_per_s = max(direct_per_s, n / (time.perf_counter() - start))
        await _queue_sends(durable, n, f"tp-{r}")
        queued_per_s = max(queued_per_s, n / await _drain(durable, n))
    return {"deliveries_per_s": round(queued_per_s), "direct_per_s": round(direct_per_s)}


async def throughput_apns(path: Path, n: int, rounds: int = 3) -> dict[str, float]:
    """The same drain with every device on the APNs loopback fake (TLS, HTTP/2, its own task on this loop),
    against the direct path to it: `n` in-memory sends one after another; best of `rounds` interleaved."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wasmhost.testing.apns import FakeAPNs, make_ca

    _, server_tls, ca_pem = make_ca()
    p8 = ec.generate_private_key(ec.SECP256R1())
    fake = await FakeAPNs(server_tls).start()
    fake.add_key("TEAM123456", "KEY1234567", p8.public_key())
    pem = p8.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()
    apns = {"team_id": "TEAM123456", "key_id": "KEY1234567", "bundle_id": "com.example.bench", "p8_key": pem,
            "environment": "sandbox", "endpoint": fake.url, "ca_bundle": ca_pem}
    store = await SQLiteStore(path, KEYRING).open()
    await store.create_namespace("bench")
    for i in range(100):
        await store.register_device("bench", f"u{i}", "phone", "apns", f"{i:064x}")

    def manager(durable: bool) -> Manager:
        return Manager(store, ProviderPool(default_specs(store)), Defaults(credentials={"apns": apns}),
                       queue=store if durable else None, queue_settings=SETTINGS)

    try:
        direct, durable = manager(False), manager(True)
        assert (await direct.send_to_user("bench", "u0", PushMessage(title="warm"))).ok
        direct_per_s = concurrent_per_s = queued_per_s = accept_per_s = 0.0

        async def sender(r: int, lane: int) -> None:
            for i in range(lane, n, LANES_PER_NAMESPACE):
                await direct.send_to_user("bench", f"u{i % 100}", PushMessage(title=f"c-{r}-{i}"))

        for r in range(rounds):  # interleaved, best of each: the paths see the same machine
            start = time.perf_counter()
            for i in range(n):
                await direct.send_to_user("bench", f"u{i % 100}", PushMessage(title=f"d-{r}-{i}"))
            direct_per_s = max(direct_per_s, n / (time.perf_counter() - start))
            start = time.perf_counter()
            for i in range(n):  # the same, durable: accepted, then delivered at once
                assert (await durable.send_to_user("bench", f"u{i % 100}", PushMessage(title=f"s-{r}-{i}"))).ok
            accept_per_s = max(accept_per_s, n / (time.perf_counter() - start))
            start = time.perf_counter()
            await asyncio.gather(*(sender(r, lane) for lane in range(LANES_PER_NAMESPACE)))
            concurrent_per_s = max(concurrent_per_s, n / (time.perf_counter() - start))
            await _queue_sends(durable, n, f"apns-{r}")
            queued_per_s = max(queued_per_s, n / await _drain(durable, n))
        titles = [str(((r.payload or {}).get("aps") or {}).get("alert", {}).get("title", "")) for r in fake.seen]
        delivered = sum(1 for t in titles if t.startswith("apns-"))
        await direct.aclose()
        await durable.aclose()
    finally:
        await store.aclose()
        await fake.aclose()
    return {"apns_accept_us": round(1e6 / accept_per_s, 1), "apns_memory_us": round(1e6 / direct_per_s, 1),
            "apns_accept_vs_memory": round(direct_per_s / accept_per_s, 2),
            "apns_deliveries_per_s": round(queued_per_s), "apns_direct_per_s": round(direct_per_s),
            "apns_direct_concurrent_per_s": round(concurrent_per_s), "apns_delivered": delivered}


async def recovery(path: Path, n: int) -> dict[str, float]:
    """A process accepts `n` sends and dies with them queued (half) or leased (half); a new one drains them."""
    store = await _open(path)
    crashed = _manager(store, True)
    await _queue_sends(crashed, n, "rec")
    assert crashed.queue is not None
    claimed = await store.claim_deliveries(crashed.queue.owner, 0.2, n // 2)  # in flight at the "kill"
    assert len(claimed) == n // 2
    await store.aclose()  # no release of the leases: it crashed
    await asyncio.sleep(0.3)  # the leases run out
    start = time.perf_counter()
    store = await _open(path)
    manager = _manager(store, True)
    await _drain(manager, n)
    seconds = time.perf_counter() - start
    rows = [r for r in await store.list_deliveries("bench", 1_000_000) if r.message.get("title", "").startswith("rec-")]
    seen = Counter(r.message["title"] for r in rows)
    lost = sum(1 for i in range(n) if f"rec-{i}" not in seen)
    duplicates = sum(c - 1 for c in seen.values())
    await store.aclose()
    return {"recovery_s": round(seconds, 3), "lost": lost, "duplicates": duplicates}


async def main(quick: bool) -> dict[str, Any]:
    iterations, rounds, n = (200, 3, 1000) if quick else (1000, 5, 5000)
    with tempfile.TemporaryDirectory() as tmp:
        store = await _open(Path(tmp) / "bench.db")
        result = await accept(store, iterations, rounds)
        result.update(await throughput(store, n, rounds))
        await store.aclose()
        result.update(await recovery(Path(tmp) / "recovery.db", 1000))
        result.update(await pages(Path(tmp) / "pages.db"))
        result.update(await throughput_apns(Path(tmp) / "apns.db", n))
    return result


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {'quick' if args.quick else 'full'} run,"
          f" best of {3 if args.quick else 5} interleaved rounds; outbox provider, one SQLite file")
    print(json.dumps(result))


if __name__ == "__main__":
    run()
