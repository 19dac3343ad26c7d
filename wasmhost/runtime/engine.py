"""The process-wide Engine: its configuration, epoch ticker, function types and Linker.

One Engine per process (wasmtime's compiled code, FuncTypes and Linkers are tied to it; a FuncType
used with two Engines aborts the process). Fuel gives a deterministic CPU budget; epoch
interruption gives the wall-clock deadline, driven by one ticker thread every 10 ms. The Linker is
built once with every host function; per-invocation state reaches them through a thread-local.

Instances come from wasmtime's pooling allocator: slots for instances, memories and tables are
reserved once (address space only) and reused, so a fresh Store per invocation no longer pays an
mmap + munmap of a 4 GiB memory reservation and its page-table teardown (numbers in bench/README.md,
"Runtime"). Every slot is reset (zeroed and re-imaged) by wasmtime before reuse, so isolation is unchanged.
``WASMHOST_WASM_POOLING=0`` turns it off, and the engine falls back to on-demand allocation by
itself if the reservation is refused (e.g. under ``ulimit -v``).

The ticker is reference-counted by the Runtimes using the engine, so ``Runtime.aclose`` stops it
when the last one closes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import threading
from importlib import metadata

import wasmtime
from wasmtime import Config, Engine, FuncType, Linker, ValType, WasmtimeError

from .._env import env_flag
from .ffi import HOST_STACK_BYTES, configure
from .hostfuncs import define_host_functions

__all__ = ["POOL_SLOTS", "TICK_SECONDS", "EngineHost", "compile_config", "engine_host"]

log = logging.getLogger(__name__)

#: Epoch tick period. A deadline of n ticks lands within ((n-1)·tick, n·tick].
TICK_SECONDS = 0.010
#: Wasm stack per invocation; deep recursion traps STACK_OVERFLOW instead of growing.
MAX_WASM_STACK = 512 * 1024
#: Bump when the on-disk artifact format or the engine settings below change.
_CACHE_FORMAT = 3

#: Pooling allocator: instances (and, apart, memories and tables) alive at once across every Store of
#: the process. A Runtime runs at most ``max_concurrent`` core invocations (one instance each) on the
#: loop plus one component (up to POOL_COMPONENT_INSTANCES) on its worker, so the default Runtime needs
#: at most 96; the rest is headroom for more Runtimes in the process. When the pool is exhausted,
#: instantiation fails (the invocation reports an error); it never waits. Each memory slot reserves
#: 4 GiB + guard of address space, no RAM.
POOL_SLOTS = 256
#: Per component: core instances, memories and tables (match the Store limits in ``component``).
POOL_COMPONENT_INSTANCES = 64
POOL_COMPONENT_MEMORIES = 8
POOL_COMPONENT_TABLES = 32
#: Per core module: tables and memories (core guests are held to 1 memory by their Store limits).
POOL_MODULE_TABLES = 4
POOL_MODULE_MEMORIES = 8
#: Elements per table slot (= the Store limit in ``invocation``).
POOL_TABLE_ELEMENTS = 100_000
#: Largest memory a slot holds: all of a 32-bit memory, so the pool never refuses a module the
#: Store limits and `module.validate` would take (those apply the platform maximum, with reasons).
POOL_MEMORY_BYTES = 1 << 32
#: Largest vmctx of one instance / component instance (wasmtime's default is 1 MiB; big guests such
#: as componentize-py's have many imports and functions).
POOL_INSTANCE_SIZE = 4 << 20


def _config(pooling: bool) -> Config:
    cfg = Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    cfg.cranelift_opt_level = "speed"
    cfg.max_wasm_stack = MAX_WASM_STACK
    cfg.wasm_threads = False  # shared memories would escape the per-Store memory cap
    pooling_settings = {
        "total_core_instances": POOL_SLOTS,
        "total_memories": POOL_SLOTS,
        "total_tables": POOL_SLOTS,
        "total_stacks": POOL_SLOTS,
        "total_component_instances": POOL_SLOTS,
        "max_core_instances_per_component": POOL_COMPONENT_INSTANCES,
        "max_memories_per_component": POOL_COMPONENT_MEMORIES,
        "max_tables_per_component": POOL_COMPONENT_TABLES,
        "max_tables_per_module": POOL_MODULE_TABLES,
        "max_memories_per_module": POOL_MODULE_MEMORIES,
        "table_elements": POOL_TABLE_ELEMENTS,
        "max_memory_size": POOL_MEMORY_BYTES,
        "max_core_instance_size": POOL_INSTANCE_SIZE,
        "max_component_instance_size": POOL_INSTANCE_SIZE,
    }
    configure(cfg, MAX_WASM_STACK + HOST_STACK_BYTES, pooling_settings if pooling else None)
    return cfg


def compile_config() -> Config:
    """The settings compiled code depends on, for a compiler process: one thread, no instance pool.

    Neither changes the compiled code, so its artifacts load into the serving engine (pooled or not).
    """
    cfg = _config(pooling=False)
    cfg.parallel_compilation = False
    return cfg


def _on_loop_wanted() -> bool:
    # CPython 3.14 checks recursion against the thread's stack addresses, which a fiber's stack is
    # not within; until that is verified, guests there run on the worker thread as before.
    return env_flag("WASMHOST_WASM_ON_LOOP", True) and sys.version_info < (3, 14)


class EngineHost:
    def __init__(self) -> None:
        self.pooling = env_flag("WASMHOST_WASM_POOLING", True)
        #: Core modules run on the event loop's thread as fibers (see `ffi`), else on the worker.
        self.on_loop = _on_loop_wanted()
        try:
            self.engine = Engine(_config(self.pooling))
        except WasmtimeError as exc:
            if not self.pooling:
                raise
            log.warning("wasm pooling allocator unavailable (%s); allocating instances on demand", exc)
            self.pooling = False
            self.engine = Engine(_config(False))
        i32 = ValType.i32()
        #: (i32 × n) -> i32, built for this Engine only.
        self.functypes = {n: FuncType([i32] * n, [i32]) for n in range(5)}
        self.linker = Linker(self.engine)
        define_host_functions(self.linker, self.functypes, on_loop=self.on_loop)
        #: For guests run on threads: the blocking flavours of the host calls that suspend on the loop.
        self.thread_linker = self.linker
        if self.on_loop:
            self.thread_linker = Linker(self.engine)
            define_host_functions(self.thread_linker, self.functypes, on_loop=False)
        self.fingerprint = self._fingerprint()
        self._lock = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None
        self._ticker: threading.Thread | None = None

    def _fingerprint(self) -> str:
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
            # The allocator does not change compiled code, but keep artifacts apart to be safe.
            "pooling": self.pooling,
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
