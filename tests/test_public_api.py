"""`import wasmhost` is the public API: every name in ``__all__`` resolves to the real object."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import wasmhost
from wasmhost import gateway, push, runtime, services, store

REQUIRED = {
    "Runtime": runtime.Runtime,
    "Limits": runtime.Limits,
    "InvocationResult": runtime.InvocationResult,
    "InvalidModule": runtime.InvalidModule,
    "Manager": push.Manager,
    "Accepted": push.Accepted,
    "Defaults": push.Defaults,
    "PushMessage": push.PushMessage,
    "open_store": store.open_store,
    "Store": store.Store,
    "Services": services.Services,
    "Settings": services.Settings,
    "create_app": gateway.create_app,
    "gateway_lifespan": gateway.gateway_lifespan,
    "GatewayConfig": gateway.GatewayConfig,
}


def test_the_public_names_are_the_real_objects() -> None:
    for name, obj in REQUIRED.items():
        assert name in wasmhost.__all__
        assert getattr(wasmhost, name) is obj, name
    namespace: dict[str, object] = {}
    exec("from wasmhost import *", namespace)
    assert set(wasmhost.__all__) <= set(namespace)
    assert len(set(wasmhost.__all__)) == len(wasmhost.__all__)


def test_version_comes_from_the_package_metadata() -> None:
    assert wasmhost.__version__ == metadata.version("wasmhost")


def test_unknown_names_are_attribute_errors() -> None:
    try:
        wasmhost.nothing_here  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "nothing_here" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_wasmhost_does_not_load_the_web_stack() -> None:
    code = "import sys, wasmhost; print('fastapi' in sys.modules); wasmhost.create_app; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["False", "True"]
