"""A guest's sleep must not park a thread or outlive its deadline: WASI ``poll_oneoff`` with a clock
subscription inside wasmtime would sleep where neither fuel nor the epoch deadline reaches, so one tenant
could stall every tenant's invocations. On the loop it suspends only that guest, cut at its deadline; on
the worker thread (components, or ``WASMHOST_WASM_ON_LOOP=0``) it is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.runtime.helpers import FakeSender
from wasmhost.runtime import Limits, Runtime
from wasmhost.runtime.engine import engine_host

#: A clock subscription of 20 s (subscription layout: userdata u64 @0, tag u8 @8, clock id u32 @16,
#: timeout u64 @24, precision u64 @32, flags u16 @40); `handle` returns poll_oneoff's errno.
SLEEPER = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 20000000000))
    (call $poll (i32.const 0) (i32.const 128) (i32.const 1) (i32.const 256))))"""
QUICK = '(module (memory (export "memory") 1) (func (export "handle") (result i32) (i32.const 7)))'
ENOTSUP = 58


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime(FakeSender())
    try:
        yield rt
    finally:
        await rt.aclose()


async def test_a_long_sleep_ends_at_the_deadline_as_a_timeout_and_blocks_no_one(runtime: Runtime) -> None:
    if not engine_host().on_loop:
        pytest.skip("guests run on the worker thread here (see the test below)")
    sleeper_module = await runtime.compile_async(SLEEPER, namespace="acme")  # compiles are not what is timed
    quick_module = await runtime.compile_async(QUICK, namespace="acme")
    start = time.monotonic()
    sleeper = asyncio.ensure_future(runtime.invoke("acme", sleeper_module, b"", Limits(timeout_ms=300)))
    await asyncio.sleep(0.05)
    quick = await asyncio.wait_for(runtime.invoke("acme", quick_module), 1.0)  # not queued behind the sleeper
    assert quick.code == 7 and not sleeper.done()
    result = await asyncio.wait_for(sleeper, 60)
    elapsed = time.monotonic() - start
    assert result.error is not None and result.error.kind == "timeout", (result.code, result.error)
    assert 0.25 < elapsed < 10, f"the guest slept {elapsed:.1f} s"  # it asked for 20 s


async def test_on_the_worker_thread_poll_oneoff_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from wasmhost.runtime import engine

    monkeypatch.setattr(engine, "_HOST", None)  # a fresh EngineHost, built with guests on the worker
    monkeypatch.setenv("WASMHOST_WASM_ON_LOOP", "0")
    rt = Runtime(FakeSender())
    try:
        start = time.monotonic()
        result = await asyncio.wait_for(rt.invoke("acme", SLEEPER, b"", Limits(timeout_ms=200)), 60)
        assert result.code == ENOTSUP, (result.code, result.error)
        assert time.monotonic() - start < 10
    finally:
        await rt.aclose()
