"""The process-wide Engine: its configuration, epoch ticker, function types and Linker.

One Engine per process (wasmtime's compiled code, FuncTypes and Linkers are tied to it; a FuncType
used with two Engines aborts the process). Fuel gives a deterministic CPU budget; epoch
interruption gives the wall-clock deadline, driven by one ticker thread every 10 ms. The Linker is
built once with every host function; per-invocation state reaches them through a thread-local.

The ticker is reference-counted by the Runtimes using the engine, so ``Runtime.aclose`` stops it
when the last one closes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import threading
from importlib import metadata

import wasmtime
from wasmtime import Config, Engine, FuncType, Linker, ValType

from .hostfuncs import define_host_functions

__all__ = ["TICK_SECONDS", "EngineHost", "engine_host"]

#: Epoch tick period. A deadline of n ticks lands within ((n-1)·tick, n·tick].
TICK_SECONDS = 0.010
#: Wasm stack per invocation; deep recursion traps STACK_OVERFLOW instead of growing.
MAX_WASM_STACK = 512 * 1024
#: Bump when the on-disk artifact format or the engine settings below change.
_CACHE_FORMAT = 1


class EngineHost:
    def __init__(self) -> None:
        cfg = Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        cfg.cranelift_opt_level = "speed"
        cfg.max_wasm_stack = MAX_WASM_STACK
        cfg.wasm_threads = False  # shared memories would escape the per-Store memory cap
        self.engine = Engine(cfg)
        i32 = ValType.i32()
        #: (i32 × n) -> i32, built for this Engine only.
        self.functypes = {n: FuncType([i32] * n, [i32]) for n in range(5)}
        self.linker = Linker(self.engine)
        define_host_functions(self.linker, self.functypes)
        self.fingerprint = self._fingerprint()
        self._lock = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None
        self._ticker: threading.Thread | None = None

    @staticmethod
    def _fingerprint() -> str:
        """Identifies everything a serialized module depends on besides its own bytes."""
        try:
            version = metadata.version("wasmtime")
        except metadata.PackageNotFoundError:  # pragma: no cover - vendored installs
            version = getattr(wasmtime, "__version__", "unknown")
        settings = {
            "format": _CACHE_FORMAT,
            "wasmtime": version,
            "machine": platform.machine(),
            "system": platform.system(),
            "consume_fuel": True,
            "epoch_interruption": True,
            "opt_level": "speed",
            "max_wasm_stack": MAX_WASM_STACK,
            "wasm_threads": False,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]

    def acquire(self) -> None:
        """Start the epoch ticker if this is its first user."""
        with self._lock:
            self._users += 1
            if self._ticker is None:
                stop = threading.Event()
                engine = self.engine

                def tick() -> None:
                    while not stop.wait(TICK_SECONDS):
                        engine.increment_epoch()

                self._stop = stop
                self._ticker = threading.Thread(target=tick, name="wasmhost-epoch", daemon=True)
                self._ticker.start()

    def release(self) -> None:
        """Stop the ticker when its last user is gone."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or self._ticker is None:
                return
            stop, ticker = self._stop, self._ticker
            self._stop = self._ticker = None
        assert stop is not None
        stop.set()
        ticker.join(timeout=1.0)

    @property
    def ticking(self) -> bool:
        return self._ticker is not None


_HOST: EngineHost | None = None
_HOST_LOCK = threading.Lock()


def engine_host() -> EngineHost:
    """The process's EngineHost, created on first use."""
    global _HOST
    if _HOST is None:
        with _HOST_LOCK:
            if _HOST is None:
                _HOST = EngineHost()
    return _HOST
