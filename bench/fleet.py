"""A gateway fleet on one PostgreSQL: sends per second through one and through two real gateways, and how
long a change made on gateway A takes to invalidate gateway B's cache.

``python -m bench.fleet [--quick]``; the last line is JSON with ``one_gateway_per_s``,
``two_gateways_per_s``, ``invalidate_p50_ms`` and ``invalidate_p99_ms`` (goal: p99 < 100 ms), plus the
scaling ratio and the idle latency.

* Throughput: two ``python -m wasmhost serve`` processes share a fresh database; the outbox provider
  (one row per delivery in PostgreSQL) keeps the push service out of the measurement. The load comes from
  wrk (`bench.wrk`), `--concurrency` connections with two wrk threads in all, first all to A, then split
  over A and B (one wrk per gateway). Every send is a full request: API key, device list (cached,
  dropped by NOTIFY), the durable accept, the delivery row, the deliveries' states, the report. wrk's
  own CPU per send is reported: on a small machine it is a share the gateways cannot have.
* Invalidation latency: a writer process changes a namespace's credentials (``put_credentials``, the
  statement that NOTIFYs) and notes the time just before; a listener process runs `Services` exactly
  as a gateway does and notes the time its change callback runs, right after the manager dropped the
  namespace's dispatcher. Both use CLOCK_MONOTONIC, which is shared by all processes of a machine. It is
  measured while both gateways are under the send load (a phase of its own, after the throughput
  phases) and idle.

The reference design lets B see A's change only when B's cache expires: 30 s on average 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import jwt

from bench.wrk import require_wrk, wrk

__all__ = ["main"]

SERVER_URL = os.environ.get("WASMHOST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_TOKEN = "bench-operator-token-0123456789abcdef"
MASTER_KEY = "1:" + "be" * 32
ROOT = Path(__file__).resolve().parent.parent
USERS = 100
GOAL_P99_MS = 100.0
STARTUP_TIMEOUT = 60.0
#: Bound on waiting for a notification that never comes (it then counts as lost).
LATENCY_TIMEOUT = 5.0


def _db_url(database: str) -> str:
    return urlunsplit(urlsplit(SERVER_URL)._replace(path="/" + database, query=""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WASMHOST_ADMIN_TOKEN": ADMIN_TOKEN,
        "WASMHOST_MASTER_KEY": MASTER_KEY,
        "WASMHOST_STATE_DIR": str(state),
        "WASMHOST_SENDS_PER_MINUTE": "100000000",  # the per-namespace cap would be the benchmark otherwise
        "PYTHONUNBUFFERED": "1",
        # One process per gateway: "two gateways" is then a second process, as on a second machine.
        "WASMHOST_WORKERS": "1",
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds() -> float:
    """CPU used so far by every PostgreSQL process on this machine (backends, WAL writer, checkpointer…)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


class Gateway:
    def __init__(self, name: str, db_url: str, tmp: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wasmhost", "--db", db_url, "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=_env(tmp / f"state-{name}"), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient() as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway {self.name} exited; see its log")
                try:
                    if (await client.get(self.url + "/healthz", timeout=1)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway {self.name} did not start")
                await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        """The gateway's CPU, its worker processes included."""
        pids = [self.proc.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(self.proc.pid):
                        pids.append(int(entry.name))
                except (OSError, IndexError):
                    continue
        return sum(_cpu_seconds(pid) for pid in pids)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def _setup(gw: Gateway) -> tuple[str, str]:
    """A namespace with the outbox on and `USERS` users with one device each; returns (namespace, api key)."""
    name = f"bench-{secrets.token_hex(3)}"
    secret = secrets.token_hex(32)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/namespaces", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        r.raise_for_status()
        key = r.json()["api_key"]
        admin = {"Authorization": f"Bearer {key}"}
        (await c.put("/v1/namespace/push-credentials/outbox", json={}, headers=admin)).raise_for_status()
        (await c.put("/v1/namespace/auth", json={"alg": "HS256", "key": secret}, headers=admin)).raise_for_status()
        for i in range(USERS):
            token = jwt.encode({"sub": f"user{i}", "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
            r = await c.post("/v1/push/devices", json={"device_id": "phone", "provider": "outbox", "token": f"t{i}"},
                             headers={"Authorization": f"Bearer {token}", "X-Wasmhost-Namespace": name})
            r.raise_for_status()
    return name, key


async def _load(gateways: list[Gateway], key: str, concurrency: int, seconds: float) -> tuple[float, int]:
    """Sends per second over `seconds` and errors: wrk with `concurrency` connections split over `gateways`,
    two wrk threads in all (one wrk per gateway when there are two)."""
    body = json.dumps({"user_id": "user0", "body": "bench"}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    shares = [concurrency // len(gateways) + (i < concurrency % len(gateways)) for i in range(len(gateways))]
    threads = max(1, 2 // len(gateways))
    results = await asyncio.gather(*(
        asyncio.to_thread(wrk, gw.url + "/v1/push/send", method="POST", body=body, headers=headers,
                          connections=share, seconds=seconds, threads=threads)
        for gw, share in zip(gateways, shares, strict=True)
    ))
    return sum(r.rps for r in results), sum(r.errors for r in results)


# -- invalidation latency: writer and listener processes -------------------------------------------------

async def _listener(db_url: str) -> None:
    """Run `Services` as a gateway does and print ``<key> <monotonic ns>`` when a change has been applied."""
    from wasmhost.services import Services, Settings
    from wasmhost.store import Change

    svc = await Services.open(Settings(db_url=db_url))

    def seen(change: Change) -> None:  # subscribed after Services' own callback: the dispatcher is gone
        if change.kind == "credentials" and change.key.startswith("lat"):
            print(change.key, time.monotonic_ns(), flush=True)

    assert svc.changes is not None
    svc.changes.subscribe(seen)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await svc.aclose()


async def _writer(db_url: str, namespace: str, count: int, interval: float) -> None:
    """Once told to go (a line on stdin), make `count` credential changes; print ``{key: monotonic ns before
    the write}`` as JSON. Started ahead of time so its start-up is not part of a measured phase."""
    from wasmhost.store import parse_keyring
    from wasmhost.store.postgres import PostgresStore

    store = await PostgresStore(db_url, parse_keyring(MASTER_KEY), min_size=1, max_size=1, listen=False).open()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    started: dict[str, int] = {}
    try:
        for i in range(count):
            key = f"lat{i}"
            started[key] = time.monotonic_ns()
            await store.put_credentials(namespace, key, {})
            await asyncio.sleep(interval)
    finally:
        await store.aclose()
    print(json.dumps(started), flush=True)


class _LatencyProbe:
    """A listener process (a gateway's `Services`) and a writer process (another gateway's store)."""

    def __init__(self, db_url: str, namespace: str, count: int, tmp: Path) -> None:
        self.args = ["--db", db_url]
        self.namespace = namespace
        self.count = count
        self.env = _env(tmp / "state-listener")
        self.procs: list[asyncio.subprocess.Process] = []

    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.fleet", *self.args, *args, cwd=ROOT, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_TIMEOUT)
        if line.strip() != b"ready":
            raise RuntimeError(f"latency {args[1]} failed to start")
        return proc

    async def start(self) -> _LatencyProbe:
        self.listener = await self._spawn("--role", "listener")
        self.writer = await self._spawn("--role", "writer", "--namespace", self.namespace, "--count", str(self.count))
        return self

    async def run(self) -> tuple[list[float], int]:
        """Latencies in ms from write to applied invalidation, and how many changes never arrived."""
        received: dict[str, int] = {}

        async def read() -> None:
            assert self.listener.stdout is not None
            while len(received) < self.count:
                text = (await self.listener.stdout.readline()).decode().split()
                if not text:
                    return
                received[text[0]] = int(text[1])

        reader = asyncio.create_task(read())
        assert self.writer.stdin is not None and self.writer.stdout is not None
        self.writer.stdin.write(b"go\n")
        await self.writer.stdin.drain()
        out = await self.writer.stdout.read()
        await self.writer.wait()
        started: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        try:
            await asyncio.wait_for(reader, LATENCY_TIMEOUT)
        except TimeoutError:
            pass
        latencies = [(received[k] - t0) / 1e6 for k, t0 in started.items() if k in received]
        return latencies, self.count - len(latencies)

    async def aclose(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class _Cost:
    gateway_ms: float
    postgres_ms: float
    client_ms: float

    def __str__(self) -> str:
        return (f"CPU per send: gateways {self.gateway_ms:.2f} ms, PostgreSQL {self.postgres_ms:.2f} ms, "
                f"wrk {self.client_ms:.2f} ms")


class _Meter:
    """CPU used by the gateways, PostgreSQL and wrk between laps, per send."""

    def __init__(self, gateways: list[Gateway]) -> None:
        self.gateways = gateways  # the probes' processes are reaped only after the last lap
        self._last = self._now()

    def _now(self) -> tuple[float, float, float]:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
        return (sum(g.cpu_seconds() for g in self.gateways), _postgres_cpu_seconds(),
                usage.ru_utime + usage.ru_stime)

    def lap(self, sends: float) -> _Cost:
        now = self._now()
        used = [(b - a) * 1000 / max(sends, 1) for a, b in zip(self._last, now, strict=True)]
        self._last = now
        return _Cost(*used)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(SERVER_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(quick: bool, concurrency: int) -> dict[str, Any]:
    seconds = 3.0 if quick else 10.0
    changes = 100 if quick else 400
    database = f"wasmhost_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{database}"')
    db_url = _db_url(database)
    tmp = Path(tempfile.mkdtemp(prefix=f"{database}-"))  # gateway logs and state; kept only on failure
    gateways: list[Gateway] = []
    failed = True
    try:
        gateways = [Gateway("a", db_url, tmp)]
        await gateways[0].ready()  # A migrates; B then starts on a current schema
        gateways.append(Gateway("b", db_url, tmp))
        await gateways[1].ready()
        a, b = gateways
        namespace, key = await _setup(a)
        await _load([a, b], key, concurrency, 1.0)  # warm both: connections, dispatchers, code paths

        print(f"fleet: {concurrency} sends in flight for {seconds:.0f} s per phase, outbox provider, "
              f"{os.cpu_count()} CPU(s) shared by wrk, the gateways and PostgreSQL")
        meter = _Meter(gateways)
        one, errors_one = await _load([a], key, concurrency, seconds)
        cost_one = meter.lap(one * seconds)
        print(f"  one gateway:  {one:7.0f} sends/s, errors {errors_one}; {cost_one}")

        two, errors_two = await _load([a, b], key, concurrency, seconds)
        cost_two = meter.lap(two * seconds)
        print(f"  two gateways: {two:7.0f} sends/s, errors {errors_two}; {cost_two}")

        # Invalidation under load: a phase of its own, so the probes' CPU is not in the figures above.
        probe = await _LatencyProbe(db_url, namespace, changes // 2, tmp).start()
        try:
            load = asyncio.create_task(_load([a, b], key, concurrency, seconds))
            await asyncio.sleep(0.5)
            loaded, lost_loaded = await probe.run()
            await load
        finally:
            await probe.aclose()

        probe = await _LatencyProbe(db_url, namespace, changes, tmp).start()
        try:
            idle, lost_idle = await probe.run()
        finally:
            await probe.aclose()
        failed = False
    finally:
        for gw in gateways:
            gw.stop()
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if failed:
            print(f"fleet: gateway logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    p50, p99 = _percentile(loaded, 50), _percentile(loaded, 99)
    idle_p50, idle_p99 = _percentile(idle, 50), _percentile(idle, 99)
    print(f"  invalidation A -> B under load: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(loaded):.2f} ms "
          f"({len(loaded)} changes, {lost_loaded} lost)")
    print(f"  invalidation A -> B idle:       p50 {idle_p50:.2f} ms, p99 {idle_p99:.2f} ms, max {max(idle):.2f} ms "
          f"({len(idle)} changes, {lost_idle} lost)")
    print(f"  goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if p99 < GOAL_P99_MS else 'MISSED'}; "
          f"scaling two/one = {two / one:.2f}; a TTL-only fleet (30 s) would take 15 000 ms on average")
    wrk_share = cost_one.client_ms / max(cost_one.client_ms + cost_one.gateway_ms + cost_one.postgres_ms, 1e-9)
    print(f"  wrk's share of the CPU used per send with one gateway: {wrk_share:.0%}")
    return {
        "one_gateway_per_s": round(one, 1),
        "wrk_cpu_share": round(wrk_share, 3),
        "gateway_cpu_ms_per_send": round(cost_one.gateway_ms, 3),
        "postgres_cpu_ms_per_send": round(cost_one.postgres_ms, 3),
        "wrk_cpu_ms_per_send": round(cost_one.client_ms, 3),
        "two_gateways_per_s": round(two, 1),
        "scaling_ratio": round(two / one, 3),
        "invalidate_p50_ms": round(p50, 3),
        "invalidate_p99_ms": round(p99, 3),
        "idle_invalidate_p50_ms": round(idle_p50, 3),
        "idle_invalidate_p99_ms": round(idle_p99, 3),
        "notifications_lost": lost_loaded + lost_idle,
        "concurrency": concurrency,
        "seconds_per_phase": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per phase instead of 10 s, fewer changes")
    parser.add_argument("--concurrency", type=int, default=16, help="sends in flight (default 16)")
    parser.add_argument("--role", choices=["listener", "writer"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "listener":
        try:
            asyncio.run(_listener(args.db))
        except KeyboardInterrupt:
            pass
        return 0
    if args.role == "writer":
        asyncio.run(_writer(args.db, args.namespace, args.count, interval=0.01))
        return 0
    if args.concurrency < 2:
        parser.error("--concurrency must be at least 2 (one connection per gateway)")
    require_wrk()
    result = asyncio.run(run(args.quick, args.concurrency))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
