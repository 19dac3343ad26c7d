"""APNs and FCM delivery throughput: wasmhost against the usual Python peer, same loopback fake, same run.

* APNs: wasmhost's dispatcher + `apns` provider (its own asyncio + h2 client, `wasmhost.providers._h2`,
  at most `APNS_CONCURRENCY` streams in flight) vs aioapns (its own h2 protocol, up to 1,000 streams),
  both against the raw-h2 TLS fake of `wasmhost.testing.apns` (200s end in the HEADERS frame, as Apple's do, which
  aioapns needs). With httpx the ratio was 0.45–0.51; httpcore's HTTP/2 cost ~2x per request.
* FCM: wasmhost's dispatcher + `fcm` provider vs firebase-admin's `messaging.send_each_async` (httpx
  HTTP/2), both against the fake token endpoint + send endpoint of `wasmhost.testing.fcm`.

Each side is warmed up (connection, JWT / OAuth token) and then timed over `n` concurrent sends, best
of `ROUNDS` interleaved rounds. The fake runs in the same process and loop, so absolute numbers are
low; the ratio is what counts. Run directly: ``python bench/providers_apns_fcm.py [n]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script: `bench` itself is importable from the repo root
    sys.path.insert(0, str(_ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from bench._timing import bench_devices, best_rates  # noqa: E402
from wasmhost.providers.apns import ApnsSpec  # noqa: E402
from wasmhost.providers.fcm import FcmSpec  # noqa: E402
from wasmhost.push import Dispatcher, PushMessage, ResolvedConfig  # noqa: E402
from wasmhost.store.base import Device  # noqa: E402
from wasmhost.testing.apns import FakeAPNs, make_ca  # noqa: E402
from wasmhost.testing.fcm import FakeFCM, make_service_account  # noqa: E402

__all__ = ["bench_apns", "bench_fcm"]

ROUNDS = 3
WARMUP = 20
TEAM, KEY_ID, BUNDLE = "TEAM123456", "KEY1234567", "com.example.bench"


class _NoStore:
    """The dispatcher only touches the store to prune; the fakes answer 200, so nothing is pruned."""

    async def prune_device(self, namespace: str, device_row_id: str, registered_before: float | None) -> bool:
        return False






@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def bench_apns(n: int) -> dict[str, Any]:
    """Sends per second to the fake APNs: wasmhost (`apns_per_s`) vs aioapns (`apns_peer_per_s`)."""
    _ca, server_ctx, ca_pem = make_ca()
    fake = await FakeAPNs(server_ctx).start()
    key = ec.generate_private_key(ec.SECP256R1())
    fake.add_key(TEAM, KEY_ID, key.public_key())
    p8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()
    spec = ApnsSpec(allow_private_endpoints=True)
    doc = spec.validate({"team_id": TEAM, "key_id": KEY_ID, "bundle_id": BUNDLE, "p8_key": p8,
                         "environment": "production", "endpoint": fake.url, "ca_bundle": ca_pem})
    provider = spec.build(ResolvedConfig("bench", credentials={"apns": doc}), doc)
    dispatcher = Dispatcher(_NoStore(), [provider])  # type: ignore[arg-type]
    message = PushMessage(title="Bench", body="hello", data={"k": "v"})
    tokens = [f"{i:064x}" for i in range(n)]
    devices = bench_devices("apns", tokens)

    async def ours(devs: list[Device] = devices) -> int:
        report = await dispatcher.send_to_devices("bench", devs, message, deadline=time.monotonic() + 300)
        return report.devices_succeeded

    peer_run: Callable[[], Awaitable[int]] | None = None
    peer_client: Any = None
    try:
        import ssl

        from aioapns import APNs, NotificationRequest, PushType
        from aioapns.connection import APNsProductionClientProtocol

        APNsProductionClientProtocol.APNS_SERVER = "127.0.0.1"
        APNsProductionClientProtocol.APNS_PORT = fake.server.port  # type: ignore[assignment]
        peer_client = APNs(key=p8, key_id=KEY_ID, team_id=TEAM, topic=BUNDLE, use_sandbox=False,
                           ssl_context=ssl.create_default_context(cadata=ca_pem))
        payload = {"aps": {"alert": {"title": "Bench", "body": "hello"}}, "k": "v"}

        async def peer(toks: list[str] = tokens) -> int:
            results = await asyncio.gather(*(peer_client.send_notification(
                NotificationRequest(device_token=t, message=payload, push_type=PushType.ALERT)) for t in toks))
            return sum(1 for r in results if r.is_successful)

        peer_run = peer
    except ImportError:
        peer_run = None

    try:
        await ours(devices[:WARMUP])
        rounds: list[tuple[str, Callable[[], Awaitable[int]]]] = [("ours", ours)]
        if peer_run is not None:
            await peer(tokens[:WARMUP])
            rounds.append(("peer", peer_run))
        best = await best_rates(rounds, n, ROUNDS)
    finally:
        await provider.aclose()
        await fake.aclose()
    return _result("apns", best)


async def bench_fcm(n: int) -> dict[str, Any]:
    """Sends per second to the fake FCM: wasmhost (`fcm_per_s`) vs firebase-admin (`fcm_peer_per_s`)."""
    ca, server_ctx, ca_pem = make_ca()
    with tempfile.TemporaryDirectory() as tmp:
        server_pem = Path(tmp) / "server.pem"
        server_pem.write_bytes(ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.bytes())
        ca_file = Path(tmp) / "ca.pem"
        ca_file.write_text(ca_pem)
        fake = await FakeFCM(server_ctx, str(server_pem)).start()
        account, public = make_service_account(fake.token_uri, "bench-project")
        fake.add_account(account, public)
        spec = FcmSpec(allow_private_endpoints=True)
        doc = spec.validate({"service_account": account, "endpoint": fake.url, "ca_bundle": ca_pem})
        provider = spec.build(ResolvedConfig("bench", credentials={"fcm": doc}), doc)
        dispatcher = Dispatcher(_NoStore(), [provider])  # type: ignore[arg-type]
        message = PushMessage(title="Bench", body="hello", data={"k": "v"})
        tokens = [f"fcm-token-{i}" for i in range(n)]
        devices = bench_devices("fcm", tokens)

        async def ours(devs: list[Device] = devices) -> int:
            report = await dispatcher.send_to_devices("bench", devs, message, deadline=time.monotonic() + 300)
            return report.devices_succeeded

        app: Any = None
        try:
            # firebase-admin trusts the test CA through the environment (requests for the token,
            # httpx for sends); its send URL is a class attribute.
            with _env(SSL_CERT_FILE=str(ca_file), REQUESTS_CA_BUNDLE=str(ca_file)):
                peer_run: Callable[[], Awaitable[int]] | None = None
                try:
                    import firebase_admin
                    from firebase_admin import credentials, messaging

                    messaging._MessagingService.FCM_URL = fake.url + "/v1/projects/{0}/messages:send"
                    app = firebase_admin.initialize_app(credentials.Certificate(account), name=f"bench-{id(fake)}")
                    # google-auth fetches the token synchronously, which would block this loop (and the
                    # in-process fake token endpoint with it): fetch it once in a thread, as a warm-up.
                    from google.auth.transport.requests import Request as GoogleRequest

                    await asyncio.to_thread(app.credential.get_credential().refresh, GoogleRequest())

                    async def peer(toks: list[str] = tokens) -> int:
                        chunks = [toks[i:i + 500] for i in range(0, len(toks), 500)]
                        responses = await asyncio.gather(*(messaging.send_each_async([
                            messaging.Message(token=t, notification=messaging.Notification("Bench", "hello"),
                                              data={"k": "v"}) for t in chunk], app=app) for chunk in chunks))
                        return sum(r.success_count for r in responses)

                    peer_run = peer
                except ImportError:
                    peer_run = None
                await ours(devices[:WARMUP])
                rounds: list[tuple[str, Callable[[], Awaitable[int]]]] = [("ours", ours)]
                if peer_run is not None:
                    await peer(tokens[:WARMUP])
                    rounds.append(("peer", peer_run))
                best = await best_rates(rounds, n, ROUNDS)
        finally:
            if app is not None:
                # delete_app() calls asyncio.run(): close the async client here, delete from a thread.
                await messaging._get_messaging_service(app)._async_client.aclose()
                await asyncio.to_thread(firebase_admin.delete_app, app)
            await provider.aclose()
            await fake.aclose()
    return _result("fcm", best)


def _result(p: str, best: dict[str, float]) -> dict[str, Any]:
    ours, peer = best["ours"], best.get("peer")
    return {
        f"{p}_per_s": round(ours, 1),
        f"{p}_peer_per_s": round(peer, 1) if peer else None,
        f"{p}_ratio": round(ours / peer, 2) if peer else None,
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(asyncio.run(bench_apns(count)))
    print(asyncio.run(bench_fcm(count)))
