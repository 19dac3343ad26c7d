"""Push delivery throughput per provider: wasmhost against the usual Python peer, same loopback fake,
same run. ``python -m bench.providers [--quick] [-n N]``; the last line is one JSON object with
``<provider>_per_s``, ``<provider>_peer_per_s`` and ``<provider>_ratio`` for each provider.

Peers (each driven the way its docs show, with its best connection reuse):

* apns: aioapns; fcm: firebase-admin ``send_each_async`` (see `bench.providers_apns_fcm`).
* expo: exponent-server-sdk ``PushClient.publish_multiple`` (sync ``requests.Session``, chunks of 100 sent one
  after another), run in a worker thread so the fake keeps serving on the loop.
* webpush: pywebpush ``webpush_async`` with one shared aiohttp session and a pre-parsed VAPID key,
  all sends concurrent.
* ntfy: there is no maintained ntfy client library; the peer is what scripts and apprise do, one
  ``requests.post`` per message (sync, a new connection each time), in a worker thread.

wasmhost is measured through its `Dispatcher` with the real provider, as a send reaches it from the
manager. Each side is warmed up, then timed over `n` sends, best of `ROUNDS` interleaved rounds. The
ntfy, Expo and Web Push fakes (the test fakes, unchanged) run in a separate process, so a peer run in a
worker thread gains nothing from overlapping with the fake, and neither side pays for the fake's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script: `bench` itself is importable from the repo root
    sys.path.insert(0, str(_ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from bench._timing import bench_devices, best_rates  # noqa: E402
from wasmhost.providers.expo import ExpoSpec  # noqa: E402
from wasmhost.providers.ntfy import NtfySpec  # noqa: E402
from wasmhost.providers.webpush import WebPushSpec, build_payload  # noqa: E402
from wasmhost.push import Dispatcher, PushMessage, ResolvedConfig  # noqa: E402
from wasmhost.store.base import Device  # noqa: E402
from wasmhost.testing.expo import FakeExpo  # noqa: E402
from wasmhost.testing.ntfy import FakeNtfy  # noqa: E402
from wasmhost.testing.webpush import Browser, FakeWebPush  # noqa: E402

__all__ = ["bench_expo", "bench_ntfy", "bench_webpush", "main"]

ROUNDS = 3
#: Seconds each fake service takes to answer a request (set from --latency-ms): a real push service is
#: never zero round trips away, and a peer that sends one request at a time pays it every time.
LATENCY = 0.005
MESSAGE = PushMessage(title="Bench", body="hello from the benchmark", data={"k": "v"})


class _NoStore:
    """The dispatcher touches the store only to prune; the fakes answer success, so nothing is pruned."""

    async def prune_device(self, namespace: str, device_row_id: str, registered_before: float | None) -> bool:
        return False




def _fake_process(kind: str, options: dict[str, Any], conn: Connection) -> None:
    """Child process: run one fake until the parent says stop."""
    global LATENCY
    LATENCY = options.pop("latency")

    async def serve() -> None:
        fake: Any
        delay = LATENCY
        if kind == "ntfy":
            fake = FakeNtfy(token=options["token"], delay=delay)
        elif kind == "expo":
            fake = FakeExpo(access_tokens=set(options["access_tokens"]), delay=delay)
        else:
            fake = FakeWebPush(decrypt=False, delay=delay)
            for sub_id in options["subscriptions"]:
                fake.browser(sub_id)
        await fake.start()
        conn.send(fake.url)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await fake.aclose()

    asyncio.run(serve())


@contextlib.asynccontextmanager
async def _remote_fake(kind: str, **options: Any) -> AsyncIterator[str]:
    """Start a fake in its own process; yield its base URL."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_fake_process, args=(kind, {**options, "latency": LATENCY}, child), daemon=True)
    process.start()
    try:
        url: str = await asyncio.wait_for(asyncio.to_thread(parent.recv), 60)
        yield url
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.terminate()


def _dispatch(provider: Any, devices: list[Device]) -> Callable[[], Awaitable[int]]:
    dispatcher = Dispatcher(_NoStore(), [provider])  # type: ignore[arg-type]

    async def run() -> int:
        report = await dispatcher.send_to_devices("bench", devices, MESSAGE, deadline=time.monotonic() + 300)
        return report.devices_succeeded

    return run




def _result(p: str, best: dict[str, float]) -> dict[str, Any]:
    ours, peer = best["ours"], best.get("peer")
    return {
        f"{p}_per_s": round(ours, 1),
        f"{p}_peer_per_s": round(peer, 1) if peer else None,
        f"{p}_ratio": round(ours / peer, 2) if peer else None,
    }


async def bench_ntfy(n: int) -> dict[str, Any]:

    async with _remote_fake("ntfy", token="tk_bench") as url:
        return await _bench_ntfy(n, url)


async def _bench_ntfy(n: int, url: str) -> dict[str, Any]:
    import requests

    spec = NtfySpec()
    config = ResolvedConfig("bench", ntfy_base_url=url, ntfy_auth_token="tk_bench")
    doc = spec.document_for(config)
    assert doc is not None
    provider = spec.build(config, doc)
    topics = [f"bench{i}" for i in range(n)]

    def peer_sync() -> int:
        ok = 0
        for topic in topics:
            r = requests.post(f"{url}/{topic}", data=MESSAGE.body.encode(), timeout=10,
                              headers={"Title": MESSAGE.title, "Authorization": "Bearer tk_bench"})
            ok += r.status_code == 200
        return ok

    async def peer() -> int:
        return await asyncio.to_thread(peer_sync)

    try:
        sides = [("ours", _dispatch(provider, bench_devices("ntfy", topics))), ("peer", peer)]
        best = await best_rates(sides, n, ROUNDS, warmup=True)
    finally:
        await provider.aclose()
    return _result("ntfy", best)


async def bench_expo(n: int) -> dict[str, Any]:
    """At least 1000 messages: with 100 per request, fewer would be a handful of requests, all noise."""
    n = max(n, 1000)

    async with _remote_fake("expo", access_tokens=["expo-bench"]) as url:
        return await _bench_expo(n, url)


async def _bench_expo(n: int, url: str) -> dict[str, Any]:
    import requests
    from exponent_server_sdk import PushClient
    from exponent_server_sdk import PushMessage as ExpoMessage

    spec = ExpoSpec(_NoStore(), allow_private_endpoints=True, receipt_delay=3600)  # type: ignore[arg-type]
    doc = spec.validate({"endpoint": url, "access_token": "expo-bench"})
    config = ResolvedConfig("bench", credentials={"expo": doc})
    effective = spec.document_for(config)
    assert effective is not None
    provider = spec.build(config, effective)
    tokens = [f"ExponentPushToken[bench{i:06d}]" for i in range(n)]
    session = requests.Session()
    session.headers.update({"accept": "application/json", "accept-encoding": "gzip, deflate",
                            "content-type": "application/json", "authorization": "Bearer expo-bench"})
    client = PushClient(host=url, session=session)
    messages = [ExpoMessage(to=t, title=MESSAGE.title, body=MESSAGE.body, data=MESSAGE.data) for t in tokens]

    def peer_sync() -> int:
        return sum(1 for ticket in client.publish_multiple(messages) if ticket.is_success())

    async def peer() -> int:
        return await asyncio.to_thread(peer_sync)

    try:
        sides = [("ours", _dispatch(provider, bench_devices("expo", tokens))), ("peer", peer)]
        best = await best_rates(sides, n, ROUNDS, warmup=True)
    finally:
        await provider.aclose()
        session.close()
    return _result("expo", best)


async def bench_webpush(n: int) -> dict[str, Any]:
    async with _remote_fake("webpush", subscriptions=[f"b{i}" for i in range(n)]) as url:
        return await _bench_webpush(n, url)


async def _bench_webpush(n: int, url: str) -> dict[str, Any]:
    import aiohttp
    import requests
    from py_vapid import Vapid
    from pywebpush import webpush, webpush_async

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    spec = WebPushSpec(allow_private_endpoints=True)
    doc = spec.validate({"vapid_private_key": pem, "vapid_subject": "mailto:bench@example.com"})
    provider = spec.build(ResolvedConfig("bench", credentials={"webpush": doc}), doc)
    subs = [Browser(f"b{i}").subscription(url) for i in range(n)]
    vapid = Vapid.from_pem(pem.encode())
    payload = build_payload(MESSAGE).decode()
    claims = {"sub": "mailto:bench@example.com"}

    def peer_sync() -> int:
        """pywebpush's one-call API as documented: `webpush(...)`, synchronous, a new connection per call."""
        ok = 0
        for sub in subs:
            response = webpush(sub, payload, vapid_private_key=vapid, vapid_claims=dict(claims), ttl=86400)
            ok += isinstance(response, requests.Response) and response.status_code <= 202
        return ok

    async def peer() -> int:
        return await asyncio.to_thread(peer_sync)

    session = aiohttp.ClientSession()

    async def one(sub: dict[str, Any]) -> bool:
        response = await webpush_async(sub, payload, vapid_private_key=vapid, ttl=86400,
                                       vapid_claims=dict(claims), aiohttp_session=session)
        return not isinstance(response, str) and response.status <= 202

    async def peer_async() -> int:
        """Its best configuration: `webpush_async` with one shared aiohttp session, all sends concurrent."""
        return sum(await asyncio.gather(*(one(s) for s in subs)))

    try:
        tokens = [json.dumps(s) for s in subs]
        best = await best_rates([("ours", _dispatch(provider, bench_devices("webpush", tokens))), ("peer", peer),
                            ("peer_async", peer_async)], n, ROUNDS, warmup=True)
    finally:
        await provider.aclose()
        await session.close()
    result = _result("webpush", best)
    result["webpush_peer_async_per_s"] = round(best["peer_async"], 1)
    result["webpush_async_ratio"] = round(best["ours"] / best["peer_async"], 2)
    return result


PROVIDERS = ("apns", "fcm", "expo", "webpush", "ntfy")
#: A provider's whole benchmark (both sides, all rounds) must finish within this; otherwise its numbers are null.
PROVIDER_TIMEOUT = 120.0


async def main(n: int, only: list[str] | None = None) -> dict[str, Any]:
    from bench.providers_apns_fcm import bench_apns, bench_fcm

    benches = {"apns": bench_apns, "fcm": bench_fcm, "expo": bench_expo, "webpush": bench_webpush,
               "ntfy": bench_ntfy}
    results: dict[str, Any] = {}
    for name in only or PROVIDERS:
        started = time.perf_counter()
        try:
            part = await asyncio.wait_for(benches[name](n), PROVIDER_TIMEOUT)
        except Exception as exc:  # one broken peer must not hide the other providers' numbers
            print(f"{name:8} failed: {type(exc).__name__}: {exc}", flush=True)
            part = {f"{name}_per_s": None, f"{name}_peer_per_s": None, f"{name}_ratio": None}
        results.update(part)
        print(f"{name:8} ours {part[f'{name}_per_s']!s:>9}/s  peer {part[f'{name}_peer_per_s']!s:>9}/s  "
              f"ratio {part[f'{name}_ratio']}  ({time.perf_counter() - started:.1f} s)", flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 sends per side instead of 1000 (about a minute)")
    parser.add_argument("-n", type=int, default=0, help="sends per side and round")
    parser.add_argument("--only", action="append", choices=PROVIDERS, help="run only this provider (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=LATENCY * 1000,
                        help="service latency the ntfy/Expo/Web Push fakes add per request (default 5; 0 = CPU only)")
    args = parser.parse_args()
    LATENCY = args.latency_ms / 1000
    count = args.n or (200 if args.quick else 1000)
    print(json.dumps(asyncio.run(main(count, args.only))))
