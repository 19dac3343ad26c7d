"""wasmhost: run tenant WebAssembly functions that push to their users' devices, one namespace at a time.

The public API is what this module exports (``__all__``); every submodule is internal and may change
in any release. See docs/embedding.md::

    import wasmhost

    services = await wasmhost.Services.open(wasmhost.Settings(db_url="sqlite:///./state/wasmhost.db"))
    module = await services.runtime.compile_async(wat_or_wasm, namespace="acme")
    result = await services.runtime.invoke("acme", module, b'{"user": "alice"}', wasmhost.Limits(timeout_ms=2000))
    await services.aclose()

`create_app`, `GatewayConfig` and `gateway_lifespan` (the HTTP gateway) are imported on first use, so an
embedder that does not serve HTTP does not load the web stack.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from .push import (
    Accepted,
    Defaults,
    Manager,
    MessageError,
    PushError,
    PushMessage,
    SendReport,
    parse_message,
)
from .runtime import (
    CompiledComponent,
    CompiledModule,
    InvalidModule,
    InvocationError,
    InvocationResult,
    Limits,
    Runtime,
)
from .services import Services, Settings
from .store import NotFound, Store, StoreError, open_store

if TYPE_CHECKING:
    from .gateway import GatewayConfig, create_app, gateway_lifespan

try:
    __version__ = metadata.version("wasmhost")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Accepted",
    "CompiledComponent",
    "CompiledModule",
    "Defaults",
    "GatewayConfig",
    "InvalidModule",
    "InvocationError",
    "InvocationResult",
    "Limits",
    "Manager",
    "MessageError",
    "NotFound",
    "PushError",
    "PushMessage",
    "Runtime",
    "SendReport",
    "Services",
    "Settings",
    "Store",
    "StoreError",
    "__version__",
    "create_app",
    "gateway_lifespan",
    "open_store",
    "parse_message",
]

_GATEWAY = frozenset({"GatewayConfig", "create_app", "gateway_lifespan"})


def __getattr__(name: str) -> Any:
    if name in _GATEWAY:
        from . import gateway

        value = getattr(gateway, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wasmhost' has no attribute {name!r}")
