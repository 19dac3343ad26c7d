"""No guest can hold the loop: long host calls work in chunks, output and logs are bounded in bytes,
and the per-loop scheduler shares guest time between namespaces and with the loop's own callbacks.

Timing bounds are generous (shared machines); each test fails without the mechanism it names (one
`random_get` call or a turn of eight spinning guests held the loop for tens of milliseconds, a log
flood produced hundreds of megabytes, and every busy guest ran a slice in every turn of the loop).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench.attacks import ATTACKS
from wasmhost.runtime import LIMIT, CompiledModule, Limits, Runtime
from wasmhost.runtime.engine import engine_host
from wasmhost.runtime.hostfuncs import RANDOM_CHUNK
from wasmhost.runtime.limits import MAX_LOG_BYTES
from wasmhost.runtime.scheduler import GuestScheduler

from .helpers import FakeSender, i32s

on_loop = pytest.mark.skipif(not engine_host().on_loop, reason="guests run on the worker thread here")

#: Fills `LEN` bytes at 0 with random_get, writes them to the output and returns random_get's errno.
RANDOM = """(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") PAGES)
  (func (export "handle") (result i32) (local $e i32)
    (local.set $e (call $random_get (i32.const 0) (i32.const LEN)))
    (drop (call $out (i32.const 0) (i32.const OUT)))
    (local.get $e)))"""


def random_guest(length: int, out: int) -> str:
    pages = max(1, -(-length // 65536))
    return RANDOM.replace("PAGES", str(pages)).replace("LEN", str(length)).replace("OUT", str(out))


class Gaps:
    """Records how long the loop went without running a 1 ms timer."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            self.gaps.append(now - last)
            last = now

    def __enter__(self) -> Gaps:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
async def runtime() -> Any:
    rt = Runtime(FakeSender())
    yield rt
    await rt.aclose()


@pytest.mark.parametrize("length", [16, RANDOM_CHUNK, RANDOM_CHUNK * 3 + 5])
async def test_random_get_fills_the_whole_buffer(runtime: Runtime, length: int) -> None:
    result = await runtime.invoke("acme", random_guest(length, min(length, 4096)), b"")
    assert result.ok and result.code == 0, result.to_dict()
    data = result.output_bytes
    assert len(data) == min(length, 4096) and len(set(data)) > min(length, 4096) // 64
    if length > RANDOM_CHUNK:  # the end of the buffer is filled too (output the last bytes)
        tail = await runtime.invoke("acme", random_guest(length, length), b"", Limits(max_output_bytes=1 << 20))
        assert tail.code == 0 and tail.output_bytes[-16:] != b"\0" * 16


async def test_random_get_out_of_bounds_is_efault(runtime: Runtime) -> None:
    guest = random_guest(65536, 0).replace("(i32.const 65536)", "(i32.const 65537)")
    result = await runtime.invoke("acme", guest, b"")
    assert result.code == 21  # EFAULT, nothing written past the memory


@on_loop
async def test_a_large_random_get_lets_the_loop_run(runtime: Runtime) -> None:
    length = 64 << 20
    guest = random_guest(length, 0)
    with Gaps() as gaps:
        result = await runtime.invoke("acme", guest, b"", Limits(memory_mb=64, timeout_ms=20_000))
    assert result.code == 0, result.to_dict()
    # One call fills 64 MiB: in one piece it held the loop for hundreds of milliseconds.
    assert len(gaps.gaps) > 10 and sorted(gaps.gaps)[len(gaps.gaps) // 2] < 0.05, gaps.gaps


async def test_logs_are_bounded_in_bytes_whatever_the_limits(runtime: Runtime) -> None:
    attack = ATTACKS["log_flood"]
    limits = Limits.from_dict({**attack.limits, "timeout_ms": 10_000})
    result = await runtime.invoke("acme", attack.wasm(), b"", limits)
    assert result.code == 0, result.to_dict()
    kept = sum(len(entry.message.encode()) for entry in result.logs)
    assert kept <= MAX_LOG_BYTES + 4096  # plus the host's own note
    assert "log line(s) dropped" in result.logs[-1].message
    assert len(result.logs) < 100


async def test_a_full_log_answers_limit_without_copying(runtime: Runtime) -> None:
    guest = """(module
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "handle") (result i32) (local $i i32)
    (loop $l
      (i32.store (i32.const 70000) (call $log (i32.const 1) (i32.const 0) (i32.const 65536)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 40))))
    (drop (call $out (i32.const 70000) (i32.const 4)))
    (i32.const 0)))"""
    limits = Limits(max_log_lines=10_000, max_log_line_bytes=65_536)
    result = await runtime.invoke("acme", guest, b"", limits)
    assert i32s(result.output_bytes) == [LIMIT]  # the 40th line could not be kept
    assert sum(len(e.message) for e in result.logs) <= MAX_LOG_BYTES + 4096


def test_output_has_a_platform_maximum() -> None:
    assert Limits.MAXIMA["max_output_bytes"] == 1 << 20
    with pytest.raises(ValueError, match="max_output_bytes"):
        Limits(max_output_bytes=(1 << 20) + 1).validated()


# -- the scheduler, with fake guests ------------------------------------------------------------


class FakeFuture:
    """A guest that needs ``slices`` polls of ``seconds`` each (busy-waiting, like wasm would)."""

    def __init__(self, slices: int, seconds: float, log: list[str], name: str) -> None:
        self.left = slices
        self.seconds = seconds
        self.log = log
        self.name = name

    def poll(self) -> bool:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        self.log.append(self.name)
        self.left -= 1
        return self.left <= 0

    def close(self) -> None:
        pass

    def raise_for_failure(self) -> None:
        pass


class FakeContext:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.deadline = time.monotonic() + 60
        self.suspended_key = 0
        self.slice_cut = False
        self.slice_end = 0.0

    def in_host_wait(self) -> bool:
        return False

    def must_pause(self) -> bool:
        return False

    async def pause(self) -> None:
        pass


async def _drive(scheduler: GuestScheduler, namespace: str, future: FakeFuture) -> None:
    scheduler.join(namespace)
    try:
        await scheduler.drive(future, FakeContext(namespace))  # type: ignore[arg-type]
    finally:
        scheduler.leave(namespace)


async def test_namespaces_share_guest_time_not_guests() -> None:
    scheduler = GuestScheduler(asyncio.get_running_loop())
    log: list[str] = []
    busy = [asyncio.ensure_future(_drive(scheduler, "busy", FakeFuture(10_000, 0.0002, log, "busy")))
            for _ in range(8)]
    await asyncio.sleep(0.02)
    start = len(log)
    await _drive(scheduler, "other", FakeFuture(40, 0.0002, log, "other"))
    window = log[start:]
    for task in busy:
        task.cancel()
    await asyncio.gather(*busy, return_exceptions=True)
    # Eight guests of one namespace against one of another: the other still gets about half of
    # the polls (one in nine if every guest got an equal share; preemption skews the clock).
    assert window.count("other") == 40
    assert window.count("busy") < 40 * 4, (window.count("busy"), len(window))
    assert scheduler.usage() == {}


async def test_guest_time_per_turn_of_the_loop_is_bounded() -> None:
    scheduler = GuestScheduler(asyncio.get_running_loop(), budget=0.002)
    log: list[str] = []
    busy = [asyncio.ensure_future(_drive(scheduler, f"ns{i}", FakeFuture(10_000, 0.0005, log, "x")))
            for i in range(8)]
    per_turn: list[int] = []
    for _ in range(50):
        before = len(log)
        await asyncio.sleep(0)
        per_turn.append(len(log) - before)
    for task in busy:
        task.cancel()
    await asyncio.gather(*busy, return_exceptions=True)
    # Eight busy guests each ran a 0.5 ms slice in every turn of the loop; the budget lets about
    # 2 ms of slices (+ the one in progress) run per turn. (Counted, not timed: a preempted slice
    # only makes the count smaller.)
    per_turn.sort()
    assert sum(per_turn) > 50 and per_turn[len(per_turn) // 2] <= 5 and max(per_turn) <= 6, per_turn


async def test_a_cancelled_guest_is_never_polled_again() -> None:
    scheduler = GuestScheduler(asyncio.get_running_loop())
    log: list[str] = []
    busy = asyncio.ensure_future(_drive(scheduler, "a", FakeFuture(10_000, 0.003, log, "a")))
    victim_future = FakeFuture(10_000, 0.0001, log, "b")
    victim = asyncio.ensure_future(_drive(scheduler, "b", victim_future))
    await asyncio.sleep(0.01)
    victim.cancel()
    polled = victim_future.left
    await asyncio.sleep(0.03)
    assert victim_future.left == polled
    busy.cancel()
    await asyncio.gather(busy, victim, return_exceptions=True)


# -- guests off the loop ------------------------------------------------------------------------


def test_the_bulk_scan_finds_bulk_instructions_and_only_them() -> None:
    from wasmhost.runtime.bulk import may_use_bulk_ops

    from .helpers import WELCOME

    assert may_use_bulk_ops(ATTACKS["memory_fill"].wasm())
    copy = """(module (memory 1) (func (memory.copy (i32.const 0) (i32.const 1) (i32.const 2))))"""
    assert may_use_bulk_ops(_wasm(copy))
    assert not may_use_bulk_ops(ATTACKS["spin"].wasm())
    assert not may_use_bulk_ops((WELCOME / "welcome.wasm").read_bytes())
    assert may_use_bulk_ops(b"\0asm\x01\x00\x00\x00\x0a\xff")  # truncated: not known, so assumed
    assert may_use_bulk_ops(b"not wasm")


def _wasm(wat: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(wat))


async def test_a_guest_that_may_fill_a_large_memory_runs_off_the_loop(runtime: Runtime) -> None:
    attack = ATTACKS["memory_fill"]
    compiled = runtime.compile(attack.wasm(), namespace="acme")
    limits = Limits.from_dict({**attack.limits, "timeout_ms": 1_500})
    with Gaps() as gaps:
        results = await asyncio.gather(*(runtime.invoke("evil", compiled, b"", limits) for _ in range(2)))
    assert all(r.error is not None and r.error.kind in ("timeout", "out_of_fuel") for r in results)
    # On the loop each memory.fill of 256 MiB held it for tens to hundreds of milliseconds.
    gaps.gaps.sort()
    assert len(gaps.gaps) > 20 and gaps.gaps[len(gaps.gaps) * 9 // 10] < 0.05, gaps.gaps[-10:]


async def test_a_small_memory_keeps_a_bulk_guest_on_the_loop() -> None:
    from wasmhost.runtime.runtime import LOOP_BULK_MEMORY_MB

    rt = Runtime(FakeSender())
    try:
        guest = """(module (memory (export "memory") 1)
          (func (export "handle") (result i32)
            (memory.fill (i32.const 0) (i32.const 1) (i32.const 100)) (i32.const 0)))"""
        compiled = rt.compile(guest, namespace="acme")
        assert compiled.bulk_ops
        small = Limits(memory_mb=LOOP_BULK_MEMORY_MB)
        assert rt._executor_for(compiled, small).on_loop == engine_host().on_loop
        assert not rt._executor_for(compiled, Limits(memory_mb=LOOP_BULK_MEMORY_MB + 1)).on_loop
        assert (await rt.invoke("acme", compiled, b"", small)).code == 0
    finally:
        await rt.aclose()


async def test_one_namespace_holds_at_most_its_share_of_the_guest_threads() -> None:
    from wasmhost.runtime.threads import GuestThreads

    threads = GuestThreads(4)
    running: dict[str, int] = {"busy": 0, "other": 0}
    most = {"busy": 0, "other": 0}

    def job(ns: str, seconds: float) -> float:
        running[ns] += 1
        most[ns] = max(most[ns], running[ns])
        time.sleep(seconds)
        running[ns] -= 1
        return time.monotonic()

    try:
        busy = [asyncio.ensure_future(threads.run("busy", job, "busy", 0.2)) for _ in range(8)]
        await asyncio.sleep(0.05)
        start = time.monotonic()
        finished = await threads.run("other", job, "other", 0.0)
        # The other namespace got a free thread at once, not after the busy one's eight jobs.
        assert finished - start < 0.15
        await asyncio.gather(*busy)
        assert most["busy"] == threads.share == 2
        assert threads.busy() == {}
    finally:
        threads.close()


async def test_a_thread_is_released_only_when_its_job_ends() -> None:
    from wasmhost.runtime.threads import GuestThreads

    threads = GuestThreads(2, share=1)
    try:
        first = asyncio.ensure_future(threads.run("a", time.sleep, 0.2))
        await asyncio.sleep(0.02)
        first.cancel()
        await asyncio.sleep(0.02)
        assert threads.busy() == {"a": 1}  # the job still runs: its thread is still held
        await threads.run("a", time.sleep, 0)
        assert threads.busy() == {}
    finally:
        threads.close()


COMPONENT_TIMEOUT = Limits(timeout_ms=3_000, fuel=Limits.MAXIMA["fuel"])


async def test_spinning_components_do_not_queue_another_namespaces_component() -> None:
    from bench.attacks import VICTIM_COMPONENT

    rt = Runtime(FakeSender())
    try:
        spin = rt.compile(ATTACKS["component_spin"].wasm(), namespace="acme")
        quick = rt.compile(VICTIM_COMPONENT.wasm(), namespace="acme")
        attackers = [asyncio.ensure_future(rt.invoke("evil", spin, b"", COMPONENT_TIMEOUT)) for _ in range(8)]
        await asyncio.sleep(0.1)
        start = time.monotonic()
        result = await rt.invoke("good", quick)
        # One thread for every component made this wait for all eight spinners (seconds each).
        assert result.code == 0 and time.monotonic() - start < 1.0
        for r in await asyncio.gather(*attackers):
            assert r.error is not None and r.error.kind in ("timeout", "out_of_fuel")
    finally:
        await rt.aclose()


def test_log_text_has_no_control_characters_and_counts_its_encoded_bytes() -> None:
    from wasmhost.runtime.context import InvocationContext

    ctx = InvocationContext("acme", b"", Limits(max_log_lines=10_000, max_log_line_bytes=65_536),
                            loop=asyncio.new_event_loop(), sender=FakeSender())
    assert ctx.add_log(1, b"a\tb\x00c\x1b[31m\x7f") == 0
    assert ctx.logs[0].message == "a\tb\ufffdc\ufffd[31m\ufffd"
    # Each zero byte is three bytes of text: a 64 KiB line of them counts as 192 KiB.
    for _ in range(10):
        ctx.add_log(1, b"\0" * 65_536)
    kept = sum(len(e.message.encode()) for e in ctx.logs)
    assert kept <= MAX_LOG_BYTES and ctx.logs_full() and ctx.logs_dropped == 10 - (MAX_LOG_BYTES // (3 * 65_536))


@pytest.mark.parametrize("name", ["memory_fill", "spin"])
async def test_the_bulk_flag_survives_the_disk_cache(tmp_path: Any, name: str) -> None:
    wasm = ATTACKS[name].wasm()
    first = Runtime(FakeSender(), cache_dir=tmp_path)
    try:
        compiled = first.compile(wasm, namespace="acme")
    finally:
        await first.aclose()
    second = Runtime(FakeSender(), cache_dir=tmp_path)  # a new process would load it from disk
    try:
        loaded = second.compile(wasm, namespace="acme")
    finally:
        await second.aclose()
    assert isinstance(loaded, CompiledModule) and loaded.origin == "disk"
    assert loaded.bulk_ops == compiled.bulk_ops == (name == "memory_fill")


async def test_guest_threads_yield_the_cpu_to_the_loop() -> None:
    import os
    import threading

    from wasmhost.runtime.threads import GUEST_THREAD_NICE, GuestThreads

    threads = GuestThreads(2)
    try:
        nice = await threads.run("acme", lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    finally:
        threads.close()
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + GUEST_THREAD_NICE)
