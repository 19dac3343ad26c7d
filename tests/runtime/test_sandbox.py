"""Hostile guests: every case ends with a code or a classified error, and the host keeps working.

No timed assertions beyond generous upper bounds (the machines running this are shared)."""

from __future__ import annotations

import struct

import pytest

from wasmhost.push.errors import PushNotConfigured, PushUnavailable, QueueFull, SendConflict
from wasmhost.runtime import (
    FAULT,
    INVAL,
    LIMIT,
    NOT_CONFIGURED,
    RATE_LIMITED,
    TIMEOUT,
    TOO_BIG,
    UNAVAILABLE,
    InvocationResult,
    Limits,
    Runtime,
)

from .helpers import FakeSender, i32s, sandbox

USER, MSG, BAD_UTF8, BAD_JSON, ARRAY = 16, 64, 128, 160, 192
PAGE = 65536


def rec(fn: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> bytes:
    return struct.pack("<5i", fn, a, b, c, d)


def send(up: int = USER, ul: int = 5, mp: int = MSG, ml: int = 14) -> bytes:
    return rec(4, up, ul, mp, ml)


async def probe(runtime: Runtime, *records: bytes, limits: Limits | None = None) -> tuple[list[int], InvocationResult]:
    result = await runtime.invoke("acme", sandbox("probe.wat"), b"".join(records), limits)
    assert result.error is None, result.error
    codes = i32s(result.output_bytes[-4 * len(records) :])
    return codes, result


async def assert_healthy(runtime: Runtime) -> None:
    """The next invocation after a hostile one works normally."""
    codes, result = await probe(runtime, rec(0), rec(6, 0))
    assert result.ok and codes == [20 * 2, 1]


async def test_infinite_loop_runs_out_of_fuel(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("loop.wat"), limits=Limits(fuel=2_000_000))
    assert not result.ok and result.code is None
    assert result.error is not None and result.error.kind == "out_of_fuel"
    assert "2,000,000 fuel" in result.error.message
    assert result.fuel_used == 2_000_000
    assert result.duration_ms < 5_000
    await assert_healthy(runtime)


async def test_infinite_loop_hits_the_deadline(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("loop.wat"), limits=Limits(fuel=1_000_000_000, timeout_ms=50))
    assert result.error is not None and result.error.kind in ("timeout", "out_of_fuel")
    assert result.duration_ms < 5_000
    await assert_healthy(runtime)


async def test_memory_grow_past_the_cap_returns_minus_one(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("grow.wat"), limits=Limits(memory_mb=2))
    assert result.ok, result.error
    grow_huge, pages = i32s(result.output_bytes)
    assert grow_huge == -1
    assert pages == 2 * 16  # 2 MiB of 64 KiB pages, and not one more
    await assert_healthy(runtime)


async def test_bad_pointers_to_every_host_function_fault(runtime: Runtime, sender: FakeSender) -> None:
    result = await runtime.invoke("acme", sandbox("badptr.wat"))
    assert result.ok, result.error
    codes = i32s(result.output_bytes)
    assert len(codes) == 16
    assert codes == [FAULT] * 16
    # the one well-formed send in there went out, and is reported
    assert [s["ticket"] for s in result.sends] == [1] and result.sends[0]["ok"]
    await assert_healthy(runtime)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (rec(1, -1, 4), FAULT),
        (rec(1, PAGE - 4, 8), FAULT),
        (rec(1, 0, -1), FAULT),
        (rec(2, PAGE, 1), FAULT),
        (rec(2, 0x7FFFFFFF, 0x7FFFFFFF), FAULT),
        (rec(3, 1, -5, 3), FAULT),
        (rec(3, 9, USER, 5), INVAL),  # level out of range
        (send(up=PAGE - 2, ul=5), FAULT),
        (send(mp=-1), FAULT),
        (send(ml=PAGE), FAULT),
        (rec(5, 1, -1, 10), FAULT),
        (rec(5, 1, PAGE - 1, 2), FAULT),
        (rec(7, PAGE, 0), 0),  # a zero-length write at the very end is in range
    ],
)
async def test_pointer_and_length_bounds(runtime: Runtime, record: bytes, expected: int) -> None:
    codes, _ = await probe(runtime, record)
    assert codes == [expected]


async def test_invalid_user_and_message_are_refused_with_a_logged_reason(runtime: Runtime, sender: FakeSender) -> None:
    codes, result = await probe(
        runtime,
        send(up=BAD_UTF8, ul=2),  # user not UTF-8
        send(ul=0),  # empty user
        send(mp=BAD_JSON, ml=9),  # message not JSON
        send(mp=ARRAY, ml=9),  # JSON but not an object
        send(mp=BAD_UTF8, ml=2),  # message not UTF-8
        send(mp=0, ml=16 * 1024 + 1),  # over 16 KiB
        send(ul=513),  # user id over 512 bytes
    )
    assert codes == [INVAL, INVAL, INVAL, INVAL, INVAL, TOO_BIG, TOO_BIG]
    assert sender.calls == [] and result.sends == []
    text = "\n".join(entry.message for entry in result.logs)
    assert "not valid UTF-8" in text
    assert "user id is empty" in text
    assert "not valid JSON" in text
    assert "must be a JSON object" in text
    assert "16385 bytes; the limit is 16384" in text


async def test_push_wait_tickets_and_buffers(runtime: Runtime) -> None:
    codes, result = await probe(
        runtime,
        rec(5, 1, 0, 0),  # no such ticket yet
        send(),
        rec(5, 0, 0, 0),  # ticket 0 never exists
        rec(5, 2, 0, 0),  # nor does ticket 2
        rec(5, 1, 20000, 10),  # small buffer: full length returned, 10 bytes written
        rec(7, 20000, 12),  # ... and not one byte more
        rec(5, 1, 24000, 4096),  # waiting again is free; now it all fits
    )
    full = codes[4]
    assert codes[:4] == [INVAL, 1, INVAL, INVAL]
    assert full > 10 and codes[6] == full
    assert result.output_bytes[:12] == b'{"ok":true' + b"\0\0"
    assert result.sends[0]["devices_succeeded"] == 1


async def test_more_sends_than_the_cap_get_limit(runtime: Runtime, sender: FakeSender) -> None:
    result = await runtime.invoke("acme", sandbox("spam_sends.wat"), limits=Limits(max_sends=5))
    accepted, code = i32s(result.output_bytes)
    assert (accepted, code) == (5, LIMIT)
    assert [s["ticket"] for s in result.sends] == [1, 2, 3, 4, 5]
    assert len(sender.calls) == 5
    assert any("max_sends" in entry.message for entry in result.logs)


async def test_output_and_log_caps_return_limit(runtime: Runtime) -> None:
    limits = Limits(max_output_bytes=1000, max_log_lines=10)
    result = await runtime.invoke("acme", sandbox("flood.wat"), limits=limits)
    assert result.ok
    assert len(result.output) == 1000  # 15 whole writes of 64 bytes, then 40 bytes of the 16th
    guest_lines = [e for e in result.logs if not e.message.startswith("[host]")]
    # the 10-line budget is shared with the host's own "output truncated" note
    assert len(guest_lines) == 9
    assert any("output truncated" in e.message for e in result.logs)
    assert any("dropped" in e.message for e in result.logs)


async def test_long_log_line_is_truncated_and_reported(runtime: Runtime) -> None:
    codes, result = await probe(runtime, rec(3, 2, 0, 5000), limits=Limits(max_log_line_bytes=100))
    assert codes == [LIMIT]
    assert result.logs[0].level == "notice" and result.logs[0].message.endswith("[truncated]")


async def test_send_that_never_finishes_times_out_within_the_deadline() -> None:
    sender = FakeSender(hang=True)
    runtime = Runtime(sender)
    try:
        codes, result = await probe(runtime, send(), rec(5, 1, 1024, 100), limits=Limits(timeout_ms=300))
        assert codes == [1, TIMEOUT]
        assert result.duration_ms < 5_000
        assert result.sends[0]["error"]["kind"] == "timeout" and result.sends[0]["ok"] is False
        assert sender.cancelled == 1  # not left running after the invocation
    finally:
        await runtime.aclose()


async def test_unwaited_sends_are_awaited_after_handle_returns() -> None:
    sender = FakeSender(delay=0.05, devices=2)
    runtime = Runtime(sender)
    try:
        codes, result = await probe(runtime, send(), send())
        assert codes == [1, 2]
        assert [s["ok"] for s in result.sends] == [True, True]
        assert result.sends[1]["devices_attempted"] == 2
    finally:
        await runtime.aclose()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PushNotConfigured("acme"), NOT_CONFIGURED),
        (PushUnavailable("store is down"), UNAVAILABLE),
        (QueueFull("namespace has 10 deliveries queued (max_queued)"), RATE_LIMITED),
        (SendConflict("message_id order-1 was used for another message"), INVAL),
        (RuntimeError("bug"), UNAVAILABLE),
    ],
)
async def test_a_refused_send_answers_push_send_to_user_with_its_code(
    executor: str, error: BaseException, code: int
) -> None:
    runtime = Runtime(FakeSender(error=error, accept_delay=0.02), executor=executor)  # type: ignore[arg-type]
    try:
        codes, result = await probe(runtime, send(), rec(5, 1, 1024, 100))
        assert codes == [code, INVAL]  # no ticket: nothing was accepted, there is nothing to wait for
        assert result.sends == []
        assert "bug" not in str(result.to_dict())  # internal errors are not echoed
    finally:
        await runtime.aclose()


async def test_the_ticket_comes_only_once_the_send_is_accepted(executor: str) -> None:
    sender = FakeSender(accept_delay=0.2, delay=0.0)
    runtime = Runtime(sender, executor=executor)  # type: ignore[arg-type]
    try:
        codes, result = await probe(runtime, send())
        assert codes == [1]
        assert result.guest_ms >= 190  # the guest waited inside push_send_to_user for the acceptance
        assert result.sends[0]["ok"] is True
    finally:
        await runtime.aclose()


async def test_a_send_not_accepted_by_the_deadline_answers_timeout(executor: str) -> None:
    sender = FakeSender(hang_accept=True)
    runtime = Runtime(sender, executor=executor)  # type: ignore[arg-type]
    try:
        codes, result = await probe(runtime, send(), rec(5, 1, 1024, 100), limits=Limits(timeout_ms=300))
        assert codes[0] == TIMEOUT
        assert result.duration_ms < 5_000
        # It may still have been accepted: the result keeps it, as timed out.
        assert result.sends[0]["error"]["kind"] == "timeout"
        assert sender.cancelled == 1
    finally:
        await runtime.aclose()


NAMESPACE_PROBE = """(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tenant-b/alice")
  (data (i32.const 64) "{\\"title\\":\\"hi\\",\\"data\\":{\\"namespace\\":\\"tenant-b\\"}}")
  (func (export "handle") (result i32)
    (call $send (i32.const 16) (i32.const 14) (i32.const 64) (i32.const 46))))"""


async def test_namespace_is_the_one_bound_at_invoke(runtime: Runtime, sender: FakeSender) -> None:
    # The guest can only name a user and a message; whatever it puts there, the namespace is ours.
    compiled = runtime.compile(NAMESPACE_PROBE, namespace="acme")
    for namespace in ("tenant-a", "tenant-c"):
        result = await runtime.invoke(namespace, compiled)
        assert result.code == 1, result.logs  # ticket 1
    seen = [(ns, user) for ns, user, *_ in sender.calls]
    assert seen == [("tenant-a", "tenant-b/alice"), ("tenant-c", "tenant-b/alice")]


async def test_rate_limiter_refuses_with_rate_limited(sender: FakeSender) -> None:
    class Limiter:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def try_acquire(self, namespace: str) -> bool:
            self.seen.append(namespace)
            return len(self.seen) <= 1

    limiter = Limiter()
    runtime = Runtime(sender, send_limiter=limiter)
    try:
        codes, result = await probe(runtime, send(), send())
        assert codes == [1, RATE_LIMITED]
        assert limiter.seen == ["acme", "acme"] and len(result.sends) == 1
    finally:
        await runtime.aclose()


@pytest.mark.parametrize(
    ("selector", "name", "says"),
    [(0, "UNREACHABLE", "unreachable code was reached"), (1, "MEMORY_OUT_OF_BOUNDS", "out-of-bounds memory access"),
     (2, "INTEGER_DIVISION_BY_ZERO", "integer division by zero"), (3, "STACK_OVERFLOW", "guest frames: recurse ×")],
)
async def test_guest_traps_are_classified(runtime: Runtime, selector: int, name: str, says: str) -> None:
    result = await runtime.invoke("acme", sandbox("traps.wat"), bytes([selector]))
    assert result.error is not None and result.error.kind == "trap"
    message = result.error.message
    assert message.startswith(f"wasm trap {name} in handle: ") and says in message, message
    # Words for the tenant, not for whoever runs the server.
    assert "WASMTIME_BACKTRACE_DETAILS" not in message and "wasm backtrace" not in message, message
    assert result.to_dict()["ok"] is False and result.to_dict()["code"] is None
    await assert_healthy(runtime)


async def test_nonzero_return_is_the_code(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("traps.wat"), bytes([4]))
    assert result.to_dict()["ok"] is False and result.code == 7 and result.error is None


async def test_start_function_and_initialize_can_call_the_host(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("init_and_start.wat"))
    assert result.ok and result.output == "handle"
    assert [(e.level, e.message) for e in result.logs] == [("debug", "start"), ("info", "init")]


async def test_initial_memory_over_the_invocation_cap_is_a_memory_error(runtime: Runtime) -> None:
    wat = '(module (memory (export "memory") 64) (func (export "handle") (result i32) (i32.const 0)))'
    result = await runtime.invoke("acme", wat, limits=Limits(memory_mb=2))
    assert result.error is not None and result.error.kind == "memory"
    assert (await runtime.invoke("acme", wat, limits=Limits(memory_mb=4))).ok


async def test_caller_errors_raise(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="namespace"):
        await runtime.invoke("", sandbox("loop.wat"))
    with pytest.raises(ValueError, match="maximum"):
        await runtime.invoke("acme", sandbox("loop.wat"), limits=Limits(timeout_ms=10**6))


async def test_many_invocations_do_not_leak_stores(runtime: Runtime) -> None:
    compiled = runtime.compile(sandbox("probe.wat"), namespace="acme")
    for _ in range(300):
        result = await runtime.invoke("acme", compiled, rec(0))
        assert result.ok


async def test_not_configured_is_logged_once_naming_the_cli_and_the_route() -> None:
    runtime = Runtime(FakeSender(error=PushNotConfigured("acme")))
    try:
        codes, result = await probe(runtime, send(), send())
        assert codes == [NOT_CONFIGURED, NOT_CONFIGURED]
        host = [e.message for e in result.logs if e.message.startswith("[host]")]
        assert len(host) == 1, result.logs
        assert "wasmhost credentials set --namespace acme" in host[0]
        assert "PUT /v1/namespace/push-credentials/{provider}" in host[0]
    finally:
        await runtime.aclose()
