"""`wasmhost serve`: the gateway on every core — N uvicorn worker processes sharing one listening socket.

Why processes sharing the socket (and not one front process handing guests to workers): a request then
costs one process's HTTP parsing plus the invocation, with no hand-off between processes; the kernel
spreads connections over the workers. Each worker is a whole gateway (event loop, `Services`, caches);
what must hold for the gateway as a whole lives outside them: the per-namespace caps in a shared
`CapTable` (on PostgreSQL in the fleet's counters, `fleetcaps`, which hold across gateways too), the state
in the store (whose change feed keeps every worker's caches in step).

The supervisor (this process) binds the socket, prepares the state once (migrations, master key) so
workers never race on a fresh state folder, then forks the workers before it has started any thread. A
worker that dies is replaced (its invocation slots are given back first); on SIGINT/SIGTERM the
supervisor tells every worker to stop: each stops accepting, lets in-flight requests finish for up to
``shutdown_grace_seconds``, then closes its runtime and provider connections. Workers run in their own
process group, so a terminal's Ctrl-C reaches them once, through the supervisor.

uvicorn runs on uvloop with the httptools parser (both are dependencies, not extras).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp

from ..services import Settings
from ..store import load_keyring, open_store
from .app import create_app
from .config import GatewayConfig
from .sharedcaps import MAX_WORKERS, WorkerGroup

__all__ = ["default_workers", "run", "serve"]

LOG = logging.getLogger("wasmhost.server")

PR_SET_PDEATHSIG = 1
#: A worker that dies sooner than this after its start is crash-looping: wait before the next one.
CRASH_WINDOW_SECONDS = 2.0
MAX_RESTART_DELAY_SECONDS = 10.0


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening socket
    # says TCP; without it a response can wait ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def _prepare_state(settings: Settings) -> None:
    """Migrate the store and create the master key once, before any worker opens them."""
    keyring = load_keyring(settings.state_dir)
    store = await open_store(settings.db_url, keyring)
    await store.aclose()


def _join_helper_threads(timeout: float = 5.0) -> None:
    """Wait for threads the preparation left (aiosqlite's, the default executor's) to end: a fork copies
    only the forking thread, so no lock another thread holds may be copied into a worker."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


AppFactory = Callable[[WorkerGroup], ASGIApp]


def _uvicorn_config(app: ASGIApp, config: GatewayConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=config.shutdown_grace_seconds,
        server_header=False,
        proxy_headers=False,
        access_log=config.access_log,
    )


def _run_worker(
    index: int, sock: socket.socket, group: WorkerGroup, app_factory: AppFactory, config: GatewayConfig
) -> None:
    group.caps.attach(index)
    uvicorn.Server(_uvicorn_config(app_factory(group), config)).run(sockets=[sock])


def _die_with(parent: int) -> None:
    """Have the kernel stop this worker when the supervisor dies, however it dies (even ``kill -9``):
    an orphaned worker would go on serving the port, holding the state and its caps' slots."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a worker also checks its parent below
        pass
    if os.getppid() != parent:  # the supervisor died before the request took effect
        os._exit(1)


@dataclass
class _Worker:
    index: int
    pid: int
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Forks ``workers`` gateway processes on one socket, replaces any that dies, drains all on a signal."""

    def __init__(self, workers: int, sock: socket.socket, group: WorkerGroup, app_factory: AppFactory,
                 config: GatewayConfig) -> None:
        self.workers = workers
        self.sock = sock
        self.group = group
        self.app_factory = app_factory
        self.config = config
        self.running: dict[int, _Worker] = {}
        self.stopping = False
        self._delay = 0.0

    def _spawn(self, index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                _die_with(parent)
                os.setpgid(0, 0)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _run_worker(index, self.sock, self.group, self.app_factory, self.config)
            except BaseException:  # noqa: BLE001 - report and leave the fork, never return into the supervisor
                LOG.exception("wasmhost: worker %d failed", index)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.running[pid] = _Worker(index, pid)

    def _signal(self, signum: int, _frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        for pid in self.running:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        if threading.active_count() != 1:
            raise RuntimeError("the supervisor must not fork while other threads run")
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for index in range(self.workers):
            self._spawn(index)
        kill_at: float | None = None
        while self.running:
            if self.stopping and kill_at is None:
                kill_at = time.monotonic() + self.config.shutdown_grace_seconds + 10
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if kill_at is not None and time.monotonic() > kill_at:
                    for left in self.running:
                        os.kill(left, signal.SIGKILL)
                time.sleep(0.05)
                continue
            worker = self.running.pop(pid, None)
            if worker is None:
                continue
            freed = self.group.caps.reap(worker.index)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            print(f"wasmhost: worker {worker.index} (pid {pid}) exited ({code}); {freed} invocation slot(s) "
                  "given back; starting a new one", file=sys.stderr, flush=True)
            lived = time.monotonic() - worker.started
            self._delay = min(MAX_RESTART_DELAY_SECONDS, max(0.5, self._delay * 2)) if lived < CRASH_WINDOW_SECONDS \
                else 0.0
            if self._delay:
                time.sleep(self._delay)
            if not self.stopping:
                self._spawn(worker.index)


def run(app_factory: AppFactory, host: str, port: int, workers: int, config: GatewayConfig) -> None:
    """Serve the app ``app_factory(group)`` builds in each of ``workers`` processes until SIGINT/SIGTERM."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be between 1 and {MAX_WORKERS}")
    sock = _bind(host, port)
    group = WorkerGroup.create()
    try:
        print(f"wasmhost: serving on http://{host}:{sock.getsockname()[1]} with {workers} worker process(es)",
              file=sys.stderr, flush=True)
        if workers == 1:
            _run_worker(0, sock, group, app_factory, config)
        else:
            Supervisor(workers, sock, group, app_factory, config).run()
    finally:
        group.remove()
        sock.close()


def serve(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None, workers: int | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM. `db_url` falls back to ``WASMHOST_DB``, then the SQLite
    default; `workers` to ``WASMHOST_WORKERS``, then one per core."""
    config = GatewayConfig.from_env()
    settings = Settings.from_env(db_url)
    workers = workers or config.workers or default_workers()
    asyncio.run(_prepare_state(settings))
    _join_helper_threads()
    run(lambda group: create_app(settings, config, group=group), host, port, workers, config)
