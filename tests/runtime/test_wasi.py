"""WASI preview 1 guests: stdin is the input, stdout the output, stderr the log, clocks can be slept on;
nothing else."""

from __future__ import annotations

import struct
import time

import pytest

from wasmhost.runtime import Limits, Runtime
from wasmhost.runtime.engine import engine_host

from .helpers import sandbox


async def test_stdin_stdout_stderr(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("wasi_echo.wat"), b"h\xc3\xa9llo")
    assert result.ok, (result.code, result.error)
    assert result.output == "echo: héllo"
    assert [(e.level, e.message) for e in result.logs] == [("info", "hello from stderr"), ("info", "partial")]


async def test_stdout_is_capped_like_output(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("wasi_echo.wat"), b"x" * 100, Limits(max_output_bytes=50))
    assert result.code == 10  # fd_write reported an error (EFBIG) past the cap
    assert result.output == "echo: " + "x" * 44


async def test_proc_exit_status_is_the_code(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("wasi_exit.wat"))
    assert result.error is None and result.code == 3 and not result.ok


async def test_no_filesystem(runtime: Runtime) -> None:
    # path_open on fd 3 (the first preopen, if there were one) must fail with EBADF (8).
    wat = """(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "etc/passwd")
      (func (export "handle") (result i32)
        (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 0)
                    (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64))))"""
    result = await runtime.invoke("acme", wat)
    assert result.code == 8


def _poller(subscriptions: str, n: int, clock_first: bool = False) -> str:
    """A guest that fills subscriptions at 0 (48 bytes each) with ``subscriptions`` (WAT statements),
    calls poll_oneoff(0, 1024, n, 2048) and writes errno, nevents and the events (32 bytes each) out."""
    read_clock = "(drop (call $clock (i32.const 1) (i64.const 1) (i32.const 4096)))" if clock_first else ""
    return f"""(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32)
    {read_clock}
    {subscriptions}
    (i32.store (i32.const 3072) (call $poll (i32.const 0) (i32.const 1024) (i32.const {n}) (i32.const 2048)))
    (i32.store (i32.const 3076) (i32.load (i32.const 2048)))
    (drop (call $out (i32.const 3072) (i32.const 8)))
    (drop (call $out (i32.const 1024) (i32.mul (i32.load (i32.const 2048)) (i32.const 32))))
    (i32.const 0)))"""


def _clock(index: int, userdata: int, timeout: str, absolute: bool = False, clock_id: int = 1) -> str:
    at = index * 48
    return (f"(i64.store (i32.const {at}) (i64.const {userdata})) (i32.store8 (i32.const {at + 8}) (i32.const 0))"
            f" (i32.store (i32.const {at + 16}) (i32.const {clock_id})) (i64.store (i32.const {at + 24}) {timeout})"
            f" (i32.store16 (i32.const {at + 40}) (i32.const {1 if absolute else 0}))")


def _fd(index: int, userdata: int, tag: int, fd: int) -> str:
    at = index * 48
    return (f"(i64.store (i32.const {at}) (i64.const {userdata})) (i32.store8 (i32.const {at + 8}) (i32.const {tag}))"
            f" (i32.store (i32.const {at + 16}) (i32.const {fd}))")


def _events(output: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
    errno, count = struct.unpack_from("<iI", output)
    return errno, [struct.unpack_from("<QHBxxxxxQ", output, 8 + 32 * i) for i in range(count)]


on_loop_only = pytest.mark.skipif(not engine_host().on_loop, reason="poll_oneoff is refused on the worker thread")


@on_loop_only
@pytest.mark.parametrize("nanoseconds", [30_000_000, 200_000])  # a nap under the loop's 1 ms timer resolution too
async def test_a_guest_can_sleep_and_is_never_woken_early(runtime: Runtime, nanoseconds: int) -> None:
    start = time.monotonic()
    result = await runtime.invoke("acme", _poller(_clock(0, 7, f"(i64.const {nanoseconds})"), 1))
    elapsed = time.monotonic() - start
    assert result.ok, result.error
    assert _events(result.output_bytes) == (0, [(7, 0, 0, 0)])
    assert nanoseconds / 1e9 <= elapsed < 5


@on_loop_only
async def test_absolute_deadlines_on_both_clocks(runtime: Runtime) -> None:
    # monotonic: 30 ms after the guest's own clock reading; realtime: already past
    due = "(i64.add (i64.load (i32.const 4096)) (i64.const 30000000))"
    start = time.monotonic()
    mono = await runtime.invoke("acme", _poller(_clock(0, 1, due, absolute=True), 1, clock_first=True))
    assert _events(mono.output_bytes) == (0, [(1, 0, 0, 0)]) and time.monotonic() - start >= 0.025
    past = await runtime.invoke("acme", _poller(_clock(0, 2, "(i64.const 1)", absolute=True, clock_id=0), 1))
    assert _events(past.output_bytes) == (0, [(2, 0, 0, 0)])


@on_loop_only
async def test_ready_fds_return_at_once_and_bad_ones_get_ebadf(runtime: Runtime) -> None:
    subs = " ".join([_clock(0, 1, "(i64.const 20000000000)"), _fd(1, 2, 1, 0), _fd(2, 3, 2, 1), _fd(3, 4, 1, 5)])
    start = time.monotonic()
    result = await runtime.invoke("acme", _poller(subs, 4), b"abc")
    assert time.monotonic() - start < 5  # the 20 s clock was not waited for
    assert _events(result.output_bytes) == (0, [(2, 0, 1, 3), (3, 0, 2, 0), (4, 8, 1, 0)])


@on_loop_only
async def test_bad_arguments(runtime: Runtime) -> None:
    none = await runtime.invoke("acme", _poller("", 0))
    assert _events(none.output_bytes)[0] == 28  # EINVAL: nothing to wait for
    too_many = await runtime.invoke("acme", _poller("", 5000))
    assert _events(too_many.output_bytes)[0] in (21, 28)  # past memory (EFAULT) or over the cap (EINVAL)
    unknown_clock = await runtime.invoke("acme", _poller(_clock(0, 9, "(i64.const 1)", clock_id=3), 1))
    assert _events(unknown_clock.output_bytes) == (0, [(9, 28, 0, 0)])


@on_loop_only
async def test_more_subscriptions_than_the_cap_are_refused(runtime: Runtime) -> None:
    from wasmhost.runtime.wasi_poll import MAX_SUBSCRIPTIONS

    # 1025 zeroed subscriptions fit in the guest's memory: only the cap refuses them (EINVAL, not EFAULT).
    result = await runtime.invoke("acme", _poller("", MAX_SUBSCRIPTIONS + 1))
    assert _events(result.output_bytes) == (28, [])
