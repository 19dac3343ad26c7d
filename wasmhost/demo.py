"""`wasmhost demo`: the whole story once, on a fresh embedded state folder, told as it happens."""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path

from .services import Services, Settings

__all__ = ["run_demo", "welcome_module"]

NAMESPACE = "demo"
OTHER_NAMESPACE = "other-tenant"


def welcome_module() -> bytes:
    """The welcome guest, package data of wasmhost (so the demo runs from any install).

    In the source tree ``wasmhost/welcome.wasm`` is a symlink to guest_examples/welcome/welcome.wasm,
    the one copy, built from welcome.c; the sdist and the wheel store the file itself.
    """
    try:
        return resources.files(__package__).joinpath("welcome.wasm").read_bytes()
    except OSError as exc:
        raise ValueError(f"the welcome guest is missing from the wasmhost package ({exc.strerror}); "
                         "reinstall wasmhost") from None


async def run_demo(state: str | None = None) -> int:
    folder = Path(state) if state else Path(tempfile.mkdtemp(prefix="wasmhost-demo-"))
    if (folder / "wasmhost.db").exists():
        raise ValueError(f"{folder} already holds a wasmhost state; give a new or empty folder")
    print(f"wasmhost demo — fresh state in {folder}\n", flush=True)  # before the key notice on stderr
    services = await Services.open(Settings(db_url=f"sqlite:///{folder / 'wasmhost.db'}"))
    try:
        return await _story(services)
    finally:
        await services.aclose()


async def _story(services: Services) -> int:
    store = services.store
    await store.create_namespace(NAMESPACE)
    await store.put_credentials(NAMESPACE, "outbox", {})
    print(f"1. Created namespace {NAMESPACE!r} and turned its outbox provider on.")
    phone = await store.register_device(NAMESPACE, "alice", "alice-phone", "outbox", "outbox-token-phone", "ios")
    tablet = await store.register_device(NAMESPACE, "alice", "alice-tablet", "outbox", "outbox-token-tablet",
                                         "android")
    print(f"2. User alice registered two devices: {phone.device_id} and {tablet.device_id}.")
    await store.create_namespace(OTHER_NAMESPACE)
    await store.put_credentials(OTHER_NAMESPACE, "outbox", {})
    await store.register_device(OTHER_NAMESPACE, "alice", "someone-elses-phone", "outbox", "outbox-token-other")
    print(f"   (Another tenant, {OTHER_NAMESPACE!r}, also has a user called alice, with her own phone.)")

    source = welcome_module()
    module = await services.runtime.compile_async(source, namespace=NAMESPACE)
    payload = {"user": "alice", "name": "Alice"}
    print(f"3. Invoking the welcome guest (welcome.wasm, {len(source)} bytes) in namespace {NAMESPACE!r}")
    print(f"   with input {json.dumps(payload)}.")
    result = await services.runtime.invoke(NAMESPACE, module, json.dumps(payload).encode())
    doc = result.to_dict()
    status = "ok" if result.ok else f"FAILED ({doc['error'] or 'code ' + str(doc['code'])})"
    print(f"   Result: {status}; handle returned {doc['code']}; {doc['fuel_used']} fuel; {doc['duration_ms']:.1f} ms.")
    print(f"   Guest output: {doc['output'].strip()!r}")
    for entry in doc["logs"]:
        print(f"   Guest log [{entry['level']}]: {entry['message']}")

    print("4. Delivery report for each send the guest made:")
    for send in doc["sends"]:
        print(f"   to {send['user_id']}: {send['devices_succeeded']}/{send['devices_attempted']} devices")
        for r in send["results"]:
            outcome = "delivered" if r["success"] else f"failed: {r['reason']} {r['message']}"
            print(f"     - {r['device_id']:<14} via {r['provider']}: status {r['status']}, "
                  f"{r['attempts']} attempt(s), {outcome}")

    print("5. What each device received (the outbox):")
    for rec in await store.list_deliveries(NAMESPACE):
        print(f"     - {rec.user_id}/{rec.device_id}: {json.dumps(rec.message, ensure_ascii=False)}")
    leaked = await store.list_deliveries(OTHER_NAMESPACE)
    print(f"   {OTHER_NAMESPACE!r} received {len(leaked)} push(es): the guest reached only its own namespace.")
    return 0 if result.ok and not leaked else 1
