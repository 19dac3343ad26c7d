"""Core guests run on the event loop as fibers: they share it fairly, and can be stopped.

Timing bounds are generous (shared machines); each test would fail outright under the old design
(one worker thread: a busy guest queued every other invocation and could not be cancelled) or
without fuel slicing (a busy guest would hold the loop for its whole deadline).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from wasmhost.push.report import SendReport
from wasmhost.runtime import Limits, Runtime, hostfuncs
from wasmhost.runtime.engine import engine_host

from .helpers import FakeSender, sandbox

pytestmark = pytest.mark.skipif(not engine_host().on_loop, reason="guests run on the worker thread here")

QUICK = '(module (memory (export "memory") 1) (func (export "handle") (result i32) (i32.const 7)))'

#: What the sending guests below share: the two push imports, "alice" at 16, {"title":"hi"} (14 bytes) at 64.
SENDER = """(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "push_wait" (func $wait (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "alice")
  (data (i32.const 64) "{\\"title\\":\\"hi\\"}")
"""

#: Sends to "alice", optionally waits for it, then spins until stopped.
SEND_THEN_SPIN = SENDER + """  (func (export "handle") (result i32) (local $t i32)
    (local.set $t (call $send (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 14)))
    (if (i32.eqz (i32.const WAIT)) (then) (else (drop (call $wait (local.get $t) (i32.const 1024) (i32.const 256)))))
    (loop $forever (br $forever))
    (i32.const 0)))"""

SPIN = Limits(timeout_ms=1_500, fuel=Limits.MAXIMA["fuel"])


def send_then_spin(wait: bool) -> str:
    return SEND_THEN_SPIN.replace("WAIT", "1" if wait else "0")


#: Calls a cheap host function forever: fuel barely moves, so only the epoch ticks make it yield.
HOST_CALL_LOOP = """(module
  (import "wasmhost" "input_len" (func $len (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (loop $l (drop (call $len)) (br $l)) (i32.const 0)))"""


@pytest.mark.parametrize("guest", ["fuel", "host calls"])
async def test_a_busy_guest_lets_the_loop_run(guest: str) -> None:
    runtime = Runtime(FakeSender())
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    try:
        module = sandbox("loop.wat") if guest == "fuel" else HOST_CALL_LOOP
        result = await runtime.invoke("acme", module, b"", Limits(timeout_ms=500, fuel=10**9))
        assert result.error is not None and result.error.kind in ("timeout", "out_of_fuel")
        assert len(gaps) > 5 and max(gaps) < 0.15, f"the loop stalled for {max(gaps) * 1000:.0f} ms"
    finally:
        tick.cancel()
        await runtime.aclose()


async def test_a_quick_invocation_is_not_queued_behind_a_busy_one() -> None:
    runtime = Runtime(FakeSender())
    try:
        loop_module = await runtime.compile_async(sandbox("loop.wat"), namespace="acme")
        quick_module = await runtime.compile_async(QUICK, namespace="acme")
        busy = asyncio.ensure_future(runtime.invoke("acme", loop_module, b"", SPIN))
        await asyncio.sleep(0.05)
        quick = await asyncio.wait_for(runtime.invoke("acme", quick_module), 1.0)
        assert quick.code == 7 and not busy.done()
        assert (await busy).error is not None
    finally:
        await runtime.aclose()


async def test_max_concurrent_queues_the_rest() -> None:
    runtime = Runtime(FakeSender(), max_concurrent=1)
    try:
        loop_module = await runtime.compile_async(sandbox("loop.wat"), namespace="acme")
        quick_module = await runtime.compile_async(QUICK, namespace="acme")
        busy = asyncio.ensure_future(runtime.invoke("acme", loop_module, b"", Limits(timeout_ms=300)))
        await asyncio.sleep(0.05)
        quick = await runtime.invoke("acme", quick_module)
        assert quick.code == 7 and busy.done()  # it waited for the one slot
    finally:
        await runtime.aclose()
    with pytest.raises(ValueError, match="max_concurrent"):
        Runtime(FakeSender(), max_concurrent=0)


async def test_cancelling_an_invocation_stops_its_guest_and_keeps_its_accepted_sends() -> None:
    sender = FakeSender(delay=0.05)
    runtime = Runtime(sender)
    try:
        module = await runtime.compile_async(send_then_spin(wait=False), namespace="acme")
        started = time.monotonic()
        task = asyncio.ensure_future(runtime.invoke("acme", module, b"", SPIN))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < SPIN.timeout_ms / 1000  # stopped, not run to its deadline
        await asyncio.sleep(0.2)
        assert len(sender.calls) == 1 and sender.cancelled == 0  # the send it was promised still went out
        assert (await runtime.invoke("acme", QUICK)).code == 7
    finally:
        await runtime.aclose()


async def test_cancelling_a_guest_suspended_in_push_wait() -> None:
    sender = FakeSender(delay=0.2)
    runtime = Runtime(sender)
    try:
        module = await runtime.compile_async(send_then_spin(wait=True), namespace="acme")
        task = asyncio.ensure_future(runtime.invoke("acme", module, b"", SPIN))
        await asyncio.sleep(0.05)
        assert sender.accepted == 1  # delivering, the guest suspended on it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        assert sender.cancelled == 0  # accepted: it is delivered whatever becomes of the guest
        assert hostfuncs._SUSPENDED == {}
        assert (await runtime.invoke("acme", QUICK)).code == 7
    finally:
        await runtime.aclose()


async def test_cancelling_a_guest_suspended_in_push_send_to_user_finishes_the_accept() -> None:
    sender = FakeSender(accept_delay=0.2, delay=0.05)
    runtime = Runtime(sender)
    try:
        module = await runtime.compile_async(send_then_spin(wait=False), namespace="acme")
        task = asyncio.ensure_future(runtime.invoke("acme", module, b"", SPIN))
        await asyncio.sleep(0.05)
        assert len(sender.calls) == 1 and sender.accepted == 0  # the guest waits for its ticket
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.4)
        # It may have been committing: it was not cut off, and its delivery went out.
        assert sender.accepted == 1 and sender.cancelled == 0 and sender.delivered == 1
        assert hostfuncs._SUSPENDED == {}
    finally:
        await runtime.aclose()


async def test_many_guests_interleave_and_all_deliver() -> None:
    sender = FakeSender(delay=0.01)
    runtime = Runtime(sender)
    try:
        results = await asyncio.gather(*(
            runtime.invoke("acme", send_then_spin(wait=True), b"", Limits(timeout_ms=200)) for _ in range(20)
        ))
        assert all(r.error is not None and r.error.kind in ("timeout", "out_of_fuel") for r in results)
        assert all(r.sends[0]["ok"] for r in results) and len(sender.calls) == 20
    finally:
        await runtime.aclose()


#: Spins for a few milliseconds (many slices), then sends to "alice" and waits for it.
SPIN_THEN_SEND = SENDER + """  (func (export "handle") (result i32) (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 3000000))))
    (drop (call $wait (call $send (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 14))
                      (i32.const 1024) (i32.const 256)))
    (i32.const 0)))"""


async def test_an_accept_always_runs_in_a_task_even_when_the_scheduler_grants_the_poll() -> None:
    class TimedAccept(FakeSender):
        async def accept(self, *args: Any, **kwargs: Any) -> Any:
            async with asyncio.timeout(5):  # needs the current task (asyncpg's connect does this)
                await asyncio.sleep(0)
            return await super().accept(*args, **kwargs)

    sender = TimedAccept(delay=0.01)
    runtime = Runtime(sender)
    try:
        results = await asyncio.gather(*(  # busy guests: most polls are granted from the scheduler's callback
            runtime.invoke("acme", SPIN_THEN_SEND, b"", Limits(timeout_ms=5_000, fuel=10**9)) for _ in range(8)
        ))
        assert all(r.sends and r.sends[0]["ok"] for r in results), [r.sends for r in results]
    finally:
        await runtime.aclose()


async def test_aclose_lets_invocations_in_progress_finish() -> None:
    sender = FakeSender(delay=0.05)
    runtime = Runtime(sender)
    module = await runtime.compile_async(send_then_spin(wait=True), namespace="acme")
    running = asyncio.ensure_future(runtime.invoke("acme", module, b"", Limits(timeout_ms=300)))
    await asyncio.sleep(0.02)
    await runtime.aclose()
    assert running.done()  # it ended (at its deadline) before the runtime let go of the epoch ticker
    result = running.result()
    assert result.error is not None and result.error.kind in ("timeout", "out_of_fuel") and result.sends[0]["ok"]
    with pytest.raises(RuntimeError, match="closed"):
        await runtime.invoke("acme", QUICK)


async def test_sends_are_delivered_while_the_guest_is_still_running() -> None:
    started: list[float] = []

    class Stamping(FakeSender):
        async def _deliver(self) -> SendReport:
            started.append(time.monotonic())
            return await super()._deliver()

    runtime = Runtime(Stamping())
    try:
        module = await runtime.compile_async(send_then_spin(wait=False), namespace="acme")
        begin = time.monotonic()
        result = await runtime.invoke("acme", module, b"", Limits(timeout_ms=400, fuel=10**9))
        ended = begin + result.duration_ms / 1000
        assert result.error is not None and result.sends[0]["ok"]
        assert started and started[0] < ended - 0.2  # a fuel slice later, not when the guest stopped
    finally:
        await runtime.aclose()
