"""Compiling in a child process with bounded CPU time, memory and wall-clock time.

Compiling is the one step a module's author controls that wasmtime cannot interrupt: its cost grows
with the number and size of functions, and it allocates freely. So every compile (core modules,
components, and WAT-to-binary conversion) runs in a child forked from a small fork server that has
already imported wasmtime (a fork costs milliseconds; importing would cost hundreds). The child
lowers its priority, sets ``RLIMIT_CPU`` and ``RLIMIT_AS`` (address space on top of what it
inherited), compiles on one thread with the gateway's engine settings, and sends back wasmtime's
serialized artifact, which the parent loads with ``deserialize``. A child that runs past the CPU
limit is killed by the kernel (SIGXCPU); one that runs out of memory fails its allocation; one that
outlives the wall-clock bound is killed by the parent. Each becomes a `CompileRefused` naming the
limit. Refusals other than the wall-clock one are deterministic for the module's bytes, so callers
may cache them (see `cache`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal

from .module import InvalidModule

__all__ = ["CompileLimits", "CompileRefused", "compile_isolated"]

Job = Literal["wat", "module", "component"]

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class CompileLimits:
    """Bounds on one compile. Operators set them with ``WASMHOST_*`` (see `from_env` and docs/gateway.md)."""

    #: Functions (and types, imports, exports) one core module may declare (``WASMHOST_MAX_MODULE_FUNCTIONS``).
    max_functions: int = 50_000
    #: Largest compiled artifact kept (``WASMHOST_MAX_COMPILED_MB``); it lives in memory and on disk.
    max_artifact_bytes: int = 64 * MIB
    #: CPU seconds one compile may use (``WASMHOST_COMPILE_CPU_SECONDS``).
    cpu_seconds: int = 60
    #: Memory one compile may allocate beyond the compiler's own (``WASMHOST_COMPILE_MEMORY_MB``).
    memory_bytes: int = 2048 * MIB
    #: Wall-clock seconds before the compile is killed (``WASMHOST_COMPILE_TIMEOUT_SECONDS``); it
    #: exceeds the CPU limit so a busy machine slows a compile down without refusing it.
    wall_seconds: float = 180.0

    def __post_init__(self) -> None:
        for name in ("max_functions", "max_artifact_bytes", "cpu_seconds", "memory_bytes", "wall_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"compile limit {name} must be positive")

    @property
    def fingerprint(self) -> str:
        """Identifies the limits a refusal was made under: a refusal cached under others is not reused."""
        return f"f{self.max_functions}-a{self.max_artifact_bytes}-c{self.cpu_seconds}-m{self.memory_bytes}"

    @classmethod
    def from_env(cls) -> CompileLimits:
        from .._env import env_float, env_int

        d = cls()
        return cls(
            max_functions=env_int("WASMHOST_MAX_MODULE_FUNCTIONS", d.max_functions),
            max_artifact_bytes=env_int("WASMHOST_MAX_COMPILED_MB", d.max_artifact_bytes // MIB) * MIB,
            cpu_seconds=env_int("WASMHOST_COMPILE_CPU_SECONDS", d.cpu_seconds),
            memory_bytes=env_int("WASMHOST_COMPILE_MEMORY_MB", d.memory_bytes // MIB) * MIB,
            wall_seconds=env_float("WASMHOST_COMPILE_TIMEOUT_SECONDS", d.wall_seconds, minimum=1.0),
        )


class CompileRefused(InvalidModule):
    """A compile went beyond a limit. ``cacheable``: the same bytes would be refused again."""

    def __init__(self, message: str, *, cacheable: bool = True) -> None:
        super().__init__(message)
        self.cacheable = cacheable


# -- the child -----------------------------------------------------------------------------------


def _address_space() -> int:
    """Bytes of address space this process has mapped now (Linux), or 0 if unknown."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<Q", len(payload)) + payload


def _child(chan: socket.socket, job: Job, limits: CompileLimits) -> None:
    """In the forked child: bound itself, read the input, compile, answer with a result frame."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # wasmtime's allocation-failure report is not the gateway's log
    os.close(devnull)
    chan.sendall(_frame(b"P", str(os.getpid()).encode()))
    try:
        os.nice(10)  # serving requests comes first
    except OSError:
        pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    inherited = _address_space()
    if inherited:
        cap = inherited + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        chunks = []
        while chunk := chan.recv(1 << 20):
            chunks.append(chunk)
        kind, payload = _compile(job, b"".join(chunks), limits)
    except MemoryError:
        kind, payload = b"M", b""
    chan.sendall(_frame(b"R", kind + payload))


def _compile(job: Job, data: bytes, limits: CompileLimits) -> tuple[bytes, bytes]:
    import wasmtime
    from wasmtime import component as wc

    from .engine import compile_config

    try:
        if job == "wat":
            return b"K", bytes(wasmtime.wat2wasm(data.decode("utf-8")))
        engine = wasmtime.Engine(compile_config())
        if job == "module":
            blob = bytes(wasmtime.Module(engine, data).serialize())
        else:
            blob = bytes(wc.Component(engine, data).serialize())
    except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
        text = str(exc).strip()
        return b"I", (text.splitlines()[0] if text else type(exc).__name__).encode()
    if len(blob) > limits.max_artifact_bytes:
        return b"B", str(len(blob)).encode()
    return b"K", blob


def serve(ctl: socket.socket) -> None:
    """The fork server's loop: fork a child per job; report each child's exit status on its channel."""
    children: dict[int, socket.socket] = {}
    while True:
        ready, _, _ = select.select([ctl], [], [], 0.05)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            chan = children.pop(pid, None)
            if chan is not None:
                try:
                    chan.sendall(_frame(b"X", str(os.waitstatus_to_exitcode(status)).encode()))
                except OSError:
                    pass
                chan.close()
        if not ready:
            continue
        try:
            header, fds, _, _ = socket.recv_fds(ctl, 4096, 1)
        except OSError:
            header, fds = b"", []
        if not header:
            return  # the parent is gone
        chan = socket.socket(fileno=fds[0])
        job, raw = json.loads(header)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ctl.close()
                for other in children.values():
                    other.close()
                _child(chan, job, CompileLimits(**raw))
            except BaseException:
                code = 1
            os._exit(code)
        children[pid] = chan


# -- the parent ----------------------------------------------------------------------------------


class _ForkServer:
    """A child process that has imported wasmtime and forks a compiler per job (started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None

    def _ensure(self) -> socket.socket:
        if self._proc is not None and self._proc.poll() is None and self._ctl is not None:
            return self._ctl
        if self._ctl is not None:
            self._ctl.close()
        mine, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}._forkserver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True,
        )
        theirs.close()
        self._ctl = mine
        return mine

    def start(self, job: Job, limits: CompileLimits) -> socket.socket:
        """A channel to a new compiler child for ``job``."""
        header = json.dumps([job, dataclasses.asdict(limits)]).encode()
        mine, theirs = socket.socketpair()
        try:
            with self._lock:
                for attempt in (0, 1):
                    ctl = self._ensure()
                    try:
                        socket.send_fds(ctl, [header], [theirs.fileno()])
                        break
                    except OSError:
                        if attempt:
                            raise
                        self._proc = None  # restart it
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return mine


_SERVER = _ForkServer()

_WHAT = {"wat": "converting the WAT text", "module": "compiling the module", "component": "compiling the component"}


def _read_frames(chan: socket.socket, deadline: float) -> tuple[dict[bytes, bytes], bool]:
    """Frames until EOF, or until ``deadline`` (then False)."""
    frames: dict[bytes, bytes] = {}
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return frames, False
        chan.settimeout(left)
        try:
            chunk = chan.recv(1 << 20)
        except TimeoutError:
            return frames, False
        if not chunk:
            return frames, True
        buf += chunk
        while len(buf) >= 9:
            (size,) = struct.unpack_from("<Q", buf, 1)
            if len(buf) < 9 + size:
                break
            frames[bytes(buf[:1])] = bytes(buf[9 : 9 + size])
            del buf[: 9 + size]


def compile_isolated(job: Job, data: bytes, limits: CompileLimits) -> bytes:
    """``job`` done in a bounded child: the binary (``wat``) or the serialized artifact.

    Raises `InvalidModule` for input wasmtime refuses and `CompileRefused` beyond a limit. Blocks
    the calling thread until the child is done (call it off the event loop).
    """
    what = _WHAT[job]
    chan = _SERVER.start(job, limits)
    try:
        try:
            chan.sendall(data)
            chan.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the child died early; its exit status says why
        frames, finished = _read_frames(chan, time.monotonic() + limits.wall_seconds)
        if not finished:
            pid = frames.get(b"P")
            if pid is not None and b"X" not in frames:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise CompileRefused(
                f"{what} took longer than {limits.wall_seconds:g} s (WASMHOST_COMPILE_TIMEOUT_SECONDS); "
                "try again later, or make the module smaller",
                cacheable=False,
            )
    finally:
        chan.close()
    result = frames.get(b"R")
    if result is None or result[:1] == b"M":
        exit_text = frames.get(b"X")
        return _died(what, int(exit_text) if exit_text else None, limits, memory=result is not None)
    kind, payload = result[:1], result[1:]
    if kind == b"K":
        return payload
    if kind == b"I":
        noun = "WAT text does not parse" if job == "wat" else f"not a valid WebAssembly {job}"
        raise InvalidModule(f"{noun}: {payload.decode('utf-8', 'replace')}")
    raise CompileRefused(
        f"the compiled {job} would be {int(payload) / MIB:.1f} MiB; the limit is "
        f"{limits.max_artifact_bytes / MIB:g} MiB (WASMHOST_MAX_COMPILED_MB); make it smaller"
    )


def _died(what: str, exitcode: int | None, limits: CompileLimits, *, memory: bool) -> bytes:
    if not memory and exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise CompileRefused(
            f"{what} used more than {limits.cpu_seconds} s of CPU time (WASMHOST_COMPILE_CPU_SECONDS); "
            "make it smaller (fewer or smaller functions)"
        )
    if memory or exitcode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS):
        # Out of address space: Python raises MemoryError; wasmtime's allocator aborts the process.
        raise CompileRefused(
            f"{what} needed more than {limits.memory_bytes // MIB} MiB of memory (WASMHOST_COMPILE_MEMORY_MB); "
            "make it smaller (fewer or smaller functions)"
        )
    raise CompileRefused(f"{what} failed unexpectedly (exit status {exitcode}); try again later", cacheable=False)

