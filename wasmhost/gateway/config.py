"""Operator settings of the HTTP gateway (limits and the operator token), read from ``WASMHOST_*``."""

from __future__ import annotations

from dataclasses import dataclass

from .._env import env_flag, env_int, env_str

__all__ = ["GatewayConfig"]

MIB = 1 << 20
#: Shortest operator token accepted: it guards every namespace, so it must not be guessable.
MIN_ADMIN_TOKEN_CHARS = 32


@dataclass(frozen=True)
class GatewayConfig:
    """Every limit the gateway enforces, by name. Tests build one directly."""

    #: Operator token (``WASMHOST_ADMIN_TOKEN``); empty disables the operator routes (503).
    admin_token: str = ""
    #: Largest module accepted by ``PUT /v1/functions/{name}`` (``WASMHOST_MAX_MODULE_BYTES``); `wasmhost run`
    #: applies it too. Big enough for a componentize-py component (an interpreter snapshot) of every SDK language.
    max_module_bytes: int = 32 * MIB
    #: Largest invocation input (``WASMHOST_MAX_INPUT_BYTES``); the runtime's own cap is 16 MiB.
    max_input_bytes: int = 1 * MIB
    #: Invocations one namespace may have running or queued at once (``WASMHOST_MAX_CONCURRENT_INVOCATIONS``).
    max_concurrent_invocations: int = 8
    #: Invocations the whole gateway may have running or queued (``WASMHOST_MAX_INVOCATIONS``).
    max_total_invocations: int = 64
    #: Sends (HTTP and guest) one namespace may start per minute (``WASMHOST_SENDS_PER_MINUTE``).
    sends_per_minute: int = 600
    #: On PostgreSQL, seconds a gateway's lease of a namespace's invocation slots lasts unless renewed
    #: (``WASMHOST_SLOT_LEASE_SECONDS``): how long a crashed gateway's slots stay taken (docs/fleet.md).
    slot_lease_seconds: int = 30
    #: Functions one namespace may have (``WASMHOST_MAX_FUNCTIONS_PER_NAMESPACE``); the next deploy is a 409.
    max_functions_per_namespace: int = 100
    #: Total module bytes of one namespace's functions (``WASMHOST_MAX_NAMESPACE_MODULE_BYTES``); beyond is a 413.
    max_namespace_module_bytes: int = 128 * MIB
    #: Seconds the server waits for in-flight requests on shutdown (``WASMHOST_SHUTDOWN_GRACE``).
    shutdown_grace_seconds: int = 70
    #: Failed authentications one client address may make per minute before further failures are
    #: answered 429 (``WASMHOST_AUTH_FAILURES_PER_MINUTE``); valid credentials always pass.
    auth_failures_per_minute: int = 30
    #: Serve ``/metrics`` without the operator token (``WASMHOST_METRICS_PUBLIC``), for scrapers on a
    #: private network.
    metrics_public: bool = False
    #: Worker processes of `wasmhost serve` (``WASMHOST_WORKERS``; 0: one per core; ``--workers`` wins).
    workers: int = 0
    #: One log line per request (``WASMHOST_ACCESS_LOG=1``); off by default, it costs every request.
    access_log: bool = False

    def __post_init__(self) -> None:
        from ..runtime import MAX_INPUT_BYTES

        if self.max_input_bytes > MAX_INPUT_BYTES:
            raise ValueError(f"max_input_bytes must be at most {MAX_INPUT_BYTES} (the runtime's cap)")
        if self.admin_token and len(self.admin_token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"WASMHOST_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
                f" (got {len(self.admin_token)}); generate one with: openssl rand -hex 32"
            )
        for name in ("max_module_bytes", "max_input_bytes", "max_concurrent_invocations", "max_total_invocations",
                     "sends_per_minute", "slot_lease_seconds", "auth_failures_per_minute",
                     "max_functions_per_namespace", "max_namespace_module_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @classmethod
    def from_env(cls) -> GatewayConfig:
        return cls(
            admin_token=env_str("WASMHOST_ADMIN_TOKEN"),
            max_module_bytes=env_int("WASMHOST_MAX_MODULE_BYTES", cls.max_module_bytes),
            max_input_bytes=env_int("WASMHOST_MAX_INPUT_BYTES", cls.max_input_bytes),
            max_concurrent_invocations=env_int("WASMHOST_MAX_CONCURRENT_INVOCATIONS", cls.max_concurrent_invocations),
            max_total_invocations=env_int("WASMHOST_MAX_INVOCATIONS", cls.max_total_invocations),
            sends_per_minute=env_int("WASMHOST_SENDS_PER_MINUTE", cls.sends_per_minute),
            slot_lease_seconds=env_int("WASMHOST_SLOT_LEASE_SECONDS", cls.slot_lease_seconds),
            max_functions_per_namespace=env_int("WASMHOST_MAX_FUNCTIONS_PER_NAMESPACE",
                                                cls.max_functions_per_namespace),
            max_namespace_module_bytes=env_int("WASMHOST_MAX_NAMESPACE_MODULE_BYTES", cls.max_namespace_module_bytes),
            shutdown_grace_seconds=env_int("WASMHOST_SHUTDOWN_GRACE", cls.shutdown_grace_seconds),
            auth_failures_per_minute=env_int("WASMHOST_AUTH_FAILURES_PER_MINUTE", cls.auth_failures_per_minute),
            metrics_public=env_flag("WASMHOST_METRICS_PUBLIC", cls.metrics_public),
            workers=env_int("WASMHOST_WORKERS", cls.workers, minimum=0),
            access_log=env_flag("WASMHOST_ACCESS_LOG", cls.access_log),
        )
