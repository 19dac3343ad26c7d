"""A guest must not park the one wasm worker thread in a host call: WASI ``poll_oneoff`` with a clock
subscription sleeps inside wasmtime, where neither fuel nor the epoch deadline can stop it, so one tenant
could stall every tenant's invocations (and outlive its own ``timeout_ms``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.runtime.helpers import FakeSender
from wasmhost.runtime import Limits, Runtime

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
ENOTSUP = 58


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    rt = Runtime(FakeSender())
    try:
        yield rt
    finally:
        await rt.aclose()


async def test_poll_oneoff_cannot_sleep_on_the_worker_thread(runtime: Runtime) -> None:
    start = time.monotonic()
    result = await asyncio.wait_for(runtime.invoke("acme", SLEEPER, b"", Limits(timeout_ms=200)), 60)
    elapsed = time.monotonic() - start
    assert result.code == ENOTSUP, (result.code, result.error)
    assert elapsed < 10, f"the guest held the worker thread for {elapsed:.1f} s"  # generous: it asked for 20 s
