"""The invocation fast path keeps every guarantee: pooled instance slots never leak state between
invocations, the wasm worker behaves like the executor it replaced, and a guest blocked in
push_wait is woken by the delivery itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from wasmhost.runtime import Runtime
from wasmhost.runtime.engine import engine_host
from wasmhost.runtime.worker import Worker

from .helpers import FakeSender

# Reports what the previous invocation could have left behind (a memory cell, a data-segment byte
# and a mutable global), then dirties all three: a reused slot that was not reset shows it.
DIRTY_WAT = r"""(module
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $g (mut i32) (i32.const 7))
  (data (i32.const 100) "A")
  (func (export "handle") (result i32)
    (i32.store (i32.const 0) (i32.load (i32.const 70000)))
    (i32.store (i32.const 4) (i32.load8_u (i32.const 100)))
    (i32.store (i32.const 8) (global.get $g))
    (drop (call $out (i32.const 0) (i32.const 12)))
    (i32.store (i32.const 70000) (i32.const 0x5ec12e7))
    (i32.store8 (i32.const 100) (i32.const 0x5a))
    (global.set $g (i32.const 99))
    (i32.const 0)))"""


async def test_pooled_slots_start_clean_for_every_invocation(runtime: Runtime) -> None:
    assert engine_host().pooling, "the pooling allocator should be on by default"
    compiled = runtime.compile(DIRTY_WAT, namespace="acme")
    for namespace in ("acme", "globex", "acme"):
        result = await runtime.invoke(namespace, compiled)
        assert result.ok, result.error
        assert list(memoryview(result.output_bytes).cast("i")) == [0, ord("A"), 7]


def test_pooling_can_be_turned_off() -> None:
    code = "from wasmhost.runtime.engine import engine_host; print(engine_host().pooling)"
    env = {**os.environ, "WASMHOST_WASM_POOLING": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_worker_runs_every_job_on_its_one_thread_and_returns_results() -> None:
    worker = Worker("test-wasm")
    try:
        idents = {await worker.run(threading.get_ident) for _ in range(20)}
        assert idents == {worker.thread.ident}
        assert worker.thread.ident != threading.get_ident()
        assert await worker.run(lambda a, b: a + b, 2, 3) == 5
    finally:
        worker.close()


async def test_worker_hands_exceptions_back_and_keeps_going() -> None:
    worker = Worker("test-wasm")

    def boom() -> None:
        raise KeyError("nope")

    try:
        with pytest.raises(KeyError, match="nope"):
            await worker.run(boom)
        assert await worker.run(lambda: "alive") == "alive"
    finally:
        worker.close()


async def test_worker_finishes_a_job_whose_caller_gave_up() -> None:
    worker = Worker("test-wasm")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    try:
        fut = worker.run(slow)
        await asyncio.to_thread(started.wait, 10)
        fut.cancel()
        release.set()
        assert await worker.run(lambda: finished.is_set()) is True  # queued after it: it ran to the end
    finally:
        worker.close()


async def test_worker_close_runs_queued_jobs_then_refuses_new_ones() -> None:
    worker = Worker("test-wasm")
    ran: list[int] = []
    futs = [worker.run(ran.append, i) for i in range(5)]
    await asyncio.to_thread(worker.close)
    assert ran == [0, 1, 2, 3, 4] and not worker.thread.is_alive()
    await asyncio.gather(*futs)
    with pytest.raises(RuntimeError, match="closed"):
        worker.run(ran.append, 6)


async def test_a_slow_delivery_wakes_the_waiting_guest() -> None:
    # The guest blocks in push_wait while the delivery is still running on the loop.
    from .helpers import WELCOME

    rt = Runtime(FakeSender(devices=2, delay=0.05))
    try:
        result = await rt.invoke("acme", (WELCOME / "welcome.wasm").read_bytes(), b'{"user": "alice"}')
        assert result.ok and result.output == "welcomed alice: 2/2 devices"
        assert result.sends[0]["error"] is None and result.sends[0]["devices_succeeded"] == 2
    finally:
        await rt.aclose()
