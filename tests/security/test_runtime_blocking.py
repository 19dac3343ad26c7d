"""A guest's sleep must not park a thread or outlive its deadline: WASI ``poll_oneoff`` with a clock
subscription inside wasmtime would sleep where neither fuel nor the epoch deadline reaches, so one tenant
could stall every tenant's invocations. On the loop it suspends only that guest, cut at its deadline; on
a guest thread (components, modules with bulk-memory steps, or ``WASMHOST_WASM_ON_LOOP=0``) it sleeps
on that thread, cut at its deadline, and a namespace holds at most half the threads, so another
namespace's guests still run."""

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


async def test_on_guest_threads_a_long_sleep_ends_at_the_deadline_and_blocks_no_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wasmhost.runtime import engine

    monkeypatch.setattr(engine, "_HOST", None)  # a fresh EngineHost, built with guests on threads
    monkeypatch.setenv("WASMHOST_WASM_ON_LOOP", "0")
    rt = Runtime(FakeSender())
    try:
        sleeper_module = await rt.compile_async(SLEEPER, namespace="acme")
        quick_module = await rt.compile_async(QUICK, namespace="other")
        start = time.monotonic()
        sleepers = [asyncio.ensure_future(rt.invoke("acme", sleeper_module, b"", Limits(timeout_ms=300)))
                    for _ in range(4)]  # as many as there are guest threads: acme gets half of them
        await asyncio.sleep(0.05)
        quick = await asyncio.wait_for(rt.invoke("other", quick_module), 2.0)
        assert quick.code == 7 and not any(s.done() for s in sleepers)
        for result in await asyncio.wait_for(asyncio.gather(*sleepers), 60):
            assert result.error is not None and result.error.kind == "timeout", (result.code, result.error)
        assert time.monotonic() - start < 10  # each asked for 20 s
    finally:
        await rt.aclose()
