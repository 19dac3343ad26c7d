"""ABI v1 host functions for core modules, plus the two WASI calls we take over (stdin/stdout/stderr).

They are defined once per Engine on a shared Linker, so they cannot close over an invocation: they
find it in a thread-local, set by whoever resumes the guest (the event loop's driver between polls,
or the worker thread) for exactly as long as the guest runs. Each one bounds-checks every (ptr, len)
itself (``i32`` arrives signed, and wasmtime-py's ``Memory.read`` would clamp silently), validates,
hands off to the context, and returns a code. None of them raises: an unexpected host error becomes
UNAVAILABLE, and one rate-limited line in the log (`faults`), never a traceback.

WASI: ``fd_write`` on fd 1 appends to the output and on fd 2 to the logs (one entry per line);
``fd_read`` on fd 0 reads the input. Caps apply exactly as for the native calls. ``poll_oneoff`` on
the loop suspends only the guest (see `wasi_poll`); on a guest thread it sleeps that thread (one of
its namespace's share); either way never past the deadline (wasmtime's would sleep past it, where
neither fuel nor the epoch deadline reaches). ``random_get`` on the loop fills in chunks, suspending
in between; on a thread it is wasmtime's own (it does not hold the GIL). Every other WASI function is
wasmtime's own, with no preopened directories, no environment and no arguments.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import Store

from wasmhost.push.message import MAX_MESSAGE_BYTES, MessageError, MessageTooBig, PushMessage, parse_message

from . import abi, ffi, wasi_poll
from .context import InvocationContext, SendRecord
from .faults import host_failure
from .ffi import (
    HOST_CALLBACK,
    Export,
    caller_context,
    caller_memory,
    define_raw_func,
    end_slice,
    memory_data,
    memory_size,
)

__all__ = ["CoreContext", "current", "define_host_functions", "set_current"]

_local = threading.local()
_string_at = ctypes.string_at
_memmove = ctypes.memmove
_urandom = os.urandom
_clock = time.perf_counter
_NEVER = float("inf")

# WASI errno values we return.
_ESUCCESS, _EBADF, _EFAULT, _EFBIG, _EINVAL = 0, 8, 21, 22, 28
_IOV_MAX = 1024
_U32 = 0xFFFFFFFF


class CoreContext(InvocationContext):
    """An invocation of a core module: adds the guest's memory and the WASI stdio state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memory: Export | None = None
        self.suspended_key = 0
        #: ``time.monotonic()`` when the guest's WASI context was made: where its monotonic clock starts.
        self.monotonic_origin = 0.0
        self.stdin_pos = 0
        self.stderr_buf = bytearray()
        #: ``time.perf_counter()`` after which the guest should yield at its next host call (set by the
        #: scheduler for each slice on the loop; never on a thread).
        self.slice_end = _NEVER
        #: The slice was cut short from a host call: restore the yield interval before resuming.
        self.slice_cut = False
        #: The guest's Store while it runs on the loop (to restore a slice cut short).
        self.store: Store | None = None

    def write_stderr(self, data: bytes) -> None:
        buf = self.stderr_buf
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            self.add_log(1, bytes(buf[:nl]))
            del buf[: nl + 1]
        if len(buf) > self.limits.max_log_line_bytes:  # an endless line: emit it truncated
            self.add_log(1, bytes(buf))
            buf.clear()

    def finish_stderr(self) -> None:
        if self.stderr_buf:
            self.add_log(1, bytes(self.stderr_buf))
            self.stderr_buf.clear()


def set_current(ctx: CoreContext | None) -> None:
    _local.ctx = ctx


def current() -> CoreContext | None:
    return getattr(_local, "ctx", None)


def _memory(ctx: CoreContext, caller: int) -> tuple[int, int]:
    """(base address, byte length) of the caller's memory, re-read on every call (it may grow)."""
    mem = ctx.memory
    if mem is None:
        mem = ctx.memory = caller_memory(caller)
        if mem is None:
            return 0, 0
    c = caller_context(caller)
    return memory_data(c, mem.addr) or 0, memory_size(c, mem.addr)


def _guarded(fn: Callable[[CoreContext, int, Any], int]) -> Any:
    """Wrap ``fn(ctx, caller, slots) -> code`` as an unchecked callback that cannot raise."""

    def cb(env: int, caller: int, slots: Any, n: int) -> int:
        try:
            ctx = _local.ctx
            if ctx is None:
                code = abi.UNAVAILABLE
            else:
                code = fn(ctx, caller, slots)
                # Fuel does not count time in host calls: a guest looping on a cheap one would run
                # until the next epoch tick. Past its slice, it yields as soon as it is back in wasm.
                if _clock() > ctx.slice_end:
                    ctx.slice_end = _NEVER
                    ctx.slice_cut = True
                    end_slice(caller_context(caller))
        except BaseException as exc:  # never let an exception cross into wasmtime
            host_failure(fn.__name__, exc)
            code = abi.UNAVAILABLE
        slots[0] = code
        slots[1] = 0
        return 0

    cb.__name__ = fn.__name__
    return HOST_CALLBACK(cb)


def input_len(ctx: CoreContext, caller: int, a: Any) -> int:
    return len(ctx.input)


def input_read(ctx: CoreContext, caller: int, a: Any) -> int:
    buf, cap = a[0], a[4]
    base, size = _memory(ctx, caller)
    if buf < 0 or cap < 0 or buf + cap > size:
        return abi.FAULT
    n = min(cap, len(ctx.input))
    if n:
        _memmove(base + buf, ctx.input, n)
    return n


def output_write(ctx: CoreContext, caller: int, a: Any) -> int:
    ptr, ln = a[0], a[4]
    base, size = _memory(ctx, caller)
    if ptr < 0 or ln < 0 or ptr + ln > size:
        return abi.FAULT
    room = ctx.output_room()
    if ln <= room:
        ctx.output += _string_at(base + ptr, ln)
        return abi.OK
    return ctx.write_output(_string_at(base + ptr, max(room, 0)), total=ln)


def log_(ctx: CoreContext, caller: int, a: Any) -> int:
    level, ptr, ln = a[0], a[4], a[8]
    base, size = _memory(ctx, caller)
    if ptr < 0 or ln < 0 or ptr + ln > size:
        return abi.FAULT
    if not 0 <= level < len(abi.LOG_LEVELS):
        return abi.INVAL
    if ctx.logs_full():  # nothing is copied for a line that cannot be kept
        return ctx.drop_log()
    cap = ctx.limits.max_log_line_bytes
    data = _string_at(base + ptr, ln if ln <= cap else cap + 1)
    return ctx.add_log(level, data)


log_.__name__ = "log"


def _checked_send(ctx: CoreContext, caller: int, up: int, ul: int, mp: int, ml: int) -> tuple[str, PushMessage] | int:
    """``push_send_to_user``'s checks: the user id and the parsed message, or the code refusing them."""
    base, size = _memory(ctx, caller)
    if up < 0 or ul < 0 or up + ul > size or mp < 0 or ml < 0 or mp + ml > size:
        return abi.FAULT
    admitted = ctx.admit_send()
    if admitted != abi.OK:
        return admitted
    if ul == 0:
        ctx.note(3, "push_send_to_user: the user id is empty")
        return abi.INVAL
    if ul > abi.MAX_USER_ID_BYTES:
        ctx.note(3, f"push_send_to_user: the user id is {ul} bytes; the limit is {abi.MAX_USER_ID_BYTES}")
        return abi.TOO_BIG
    if ml > MAX_MESSAGE_BYTES:
        ctx.note(3, f"push_send_to_user: message is {ml} bytes; the limit is {MAX_MESSAGE_BYTES}")
        return abi.TOO_BIG
    try:
        user = _string_at(base + up, ul).decode()
    except UnicodeDecodeError:
        ctx.note(3, "push_send_to_user: the user id is not valid UTF-8")
        return abi.INVAL
    try:
        message = parse_message(_string_at(base + mp, ml))
    except MessageTooBig as exc:
        ctx.note(3, f"push_send_to_user: {exc}")
        return abi.TOO_BIG
    except MessageError as exc:
        ctx.note(3, f"push_send_to_user: {exc}")
        return abi.INVAL
    return user, message


def push_send_to_user(ctx: CoreContext, caller: int, a: Any) -> int:
    """Worker-thread flavour: blocks the thread (never the loop) until the send is accepted."""
    checked = _checked_send(ctx, caller, a[0], a[4], a[8], a[12])
    return checked if isinstance(checked, int) else ctx.send(*checked)


def push_send_to_user_on_loop(ctx: CoreContext, caller: int, args: Any, results: Any, cont: Any) -> int | None:
    """Event-loop flavour: the accept starts here; if it must wait, the guest is suspended (see `ffi`)
    until the send is accepted or refused."""
    checked = _checked_send(ctx, caller, *(args[i].of.i32 for i in range(4)))
    if isinstance(checked, int):
        return checked
    record = ctx.submit_send(*checked)
    if ctx.accept_now(record):  # accepted (or refused) without waiting: no suspension
        return ctx.ticket_for(record)

    def check() -> bool:
        if not ctx.accept_settled(record):
            return False
        ffi.set_i32_result(results, ctx.ticket_for(record))
        return True

    _suspend(ctx, cont, check)
    return None


def _report(record: SendRecord, base: int, out: int, cap: int) -> int:
    """``push_wait``'s answer once ``record`` is done or its time is up (``out``/``cap`` already checked)."""
    if not record.done:
        return abi.TIMEOUT
    if record.code:
        return record.code
    data = record.report_json
    n = min(cap, len(data))
    if n:
        _memmove(base + out, data, n)
    return len(data)


def push_wait(ctx: CoreContext, caller: int, a: Any) -> int:
    """Worker-thread flavour: blocks the thread (never the loop) until the send is done."""
    ticket, out, cap = a[0], a[4], a[8]
    base, size = _memory(ctx, caller)
    if out < 0 or cap < 0 or out + cap > size:
        return abi.FAULT
    record = ctx.find_send(ticket)
    if record is None:
        return abi.INVAL
    ctx.wait_send(record)
    return _report(record, base, out, cap)


# Guests suspended in a host call (on the loop): continuation key -> a check that writes the answer
# and returns True once the call can return.
_SUSPENDED: dict[int, Callable[[], bool]] = {}
_keys = itertools.count(1)


def _resume(key: int) -> bool:
    """Continuation of a suspended host call: True (and the answer written) once it can return."""
    check = _SUSPENDED.get(key)
    if check is None:  # forgotten by `forget_suspended`; never polled again in practice
        return True
    try:
        done = check()
    except BaseException as exc:  # never let an exception cross into wasmtime
        host_failure("(resuming a suspended call)", exc)
        done = True
    if done:
        del _SUSPENDED[key]
    return done


_RESUME = ffi.continuation(_resume)
_READY = ffi.continuation(lambda _key: True)


def _suspend(ctx: CoreContext, cont: Any, check: Callable[[], bool]) -> None:
    key = next(_keys)
    _SUSPENDED[key] = check
    ctx.suspended_key = key
    ffi.set_continuation(cont, _RESUME, key)


def _guarded_async(fn: Callable[[CoreContext, int, Any, Any, Any], int | None], failure: int) -> Any:
    """Wrap ``fn(ctx, caller, args, results, cont) -> code, or None once it has suspended the guest``
    (through `_suspend`) as an async callback that cannot raise; ``failure`` answers when it does."""

    def cb(env: int, caller: int, args: Any, nargs: int, results: Any, nresults: int, trap: Any, cont: Any) -> None:
        code = failure
        try:
            ctx = _local.ctx
            if ctx is not None:
                answer = fn(ctx, caller, args, results, cont)
                if answer is None:
                    return
                code = answer
        except BaseException as exc:  # never let an exception cross into wasmtime
            host_failure(fn.__name__, exc)
            code = failure
        ffi.set_i32_result(results, code)
        ffi.set_continuation(cont, _READY)

    return ffi.ASYNC_CALLBACK(cb)


def push_wait_on_loop(ctx: CoreContext, caller: int, args: Any, results: Any, cont: Any) -> int | None:
    """Event-loop flavour: a send not yet done suspends the guest (see `ffi`) instead of a thread."""
    ticket, out, cap = args[0].of.i32, args[1].of.i32, args[2].of.i32
    base, size = _memory(ctx, caller)
    if out < 0 or cap < 0 or out + cap > size:
        return abi.FAULT
    record = ctx.find_send(ticket)
    if record is None:
        return abi.INVAL
    if record.done or time.monotonic() >= ctx.deadline:
        return _report(record, base, out, cap)

    def check() -> bool:
        if not record.done and time.monotonic() < ctx.deadline:
            return False
        # The guest could not run (or grow its memory) meanwhile, so base is still valid.
        ffi.set_i32_result(results, _report(record, base, out, cap))
        return True

    ctx.waiting = record
    _suspend(ctx, cont, check)
    return None


def _start_poll(ctx: CoreContext, caller: int, sub_ptr: int, out: int, n: int,
                nevents_ptr: int) -> tuple[int, wasi_poll.Poll | None, int]:
    """Check and parse a ``poll_oneoff``; (errno, the poll to finish, memory base) — errno alone
    when it is answered already (a bad argument, or events ready, or nothing to wait for)."""
    base, size = _memory(ctx, caller)
    if n == 0 or n > wasi_poll.MAX_SUBSCRIPTIONS:
        return _EINVAL, None, base
    if (sub_ptr + n * wasi_poll.SUBSCRIPTION_BYTES > size or out + n * wasi_poll.EVENT_BYTES > size
            or nevents_ptr + 4 > size):
        return _EFAULT, None, base
    subs = wasi_poll.parse(_string_at(base + sub_ptr, n * wasi_poll.SUBSCRIPTION_BYTES))
    if subs is None:
        return _EINVAL, None, base
    poll = wasi_poll.Poll(subs, len(ctx.input) - ctx.stdin_pos, ctx.monotonic_origin)
    events = poll.ready()
    if events or poll.wake_at() is None:
        poll.write(base, out, nevents_ptr, events)
        return _ESUCCESS, None, base
    return _ESUCCESS, poll, base


def poll_oneoff_on_loop(ctx: CoreContext, caller: int, args: Any, results: Any, cont: Any) -> int | None:
    """WASI ``poll_oneoff`` on the loop: a guest waiting on clocks is suspended, bounded by its deadline."""
    sub_ptr, out, n, nevents_ptr = (args[i].of.i32 & _U32 for i in range(4))
    errno, poll, base = _start_poll(ctx, caller, sub_ptr, out, n, nevents_ptr)
    if poll is None:
        return errno
    wake = poll.wake_at()
    assert wake is not None

    def check() -> bool:
        now = time.monotonic()
        if now < wake and now < ctx.deadline:
            ctx.sleep_until = wake  # woken early: sleep again
            return False
        if now < wake:  # cut short by the deadline: the invocation has timed out
            ctx.timed_out_in_host = True
        poll.write(base, out, nevents_ptr, poll.ready())
        ffi.set_i32_result(results, _ESUCCESS)
        return True

    ctx.sleep_until = wake
    _suspend(ctx, cont, check)
    return None


#: Bytes ``random_get`` fills per step on the loop: well under a millisecond, so a guest asking for its
#: whole memory at once suspends between steps like any other long guest.
RANDOM_CHUNK = 128 << 10


def random_get_on_loop(ctx: CoreContext, caller: int, args: Any, results: Any, cont: Any) -> int | None:
    """WASI ``random_get`` on the loop: filled `RANDOM_CHUNK` bytes at a time, suspending in between
    (wasmtime's own fills the whole buffer in one uninterruptible call)."""
    buf, ln = args[0].of.i32 & _U32, args[1].of.i32 & _U32
    base, size = _memory(ctx, caller)
    if buf + ln > size:
        return _EFAULT
    first = min(ln, RANDOM_CHUNK)
    _memmove(base + buf, _urandom(first), first)
    if first == ln:
        return _ESUCCESS
    pos = buf + first
    end = buf + ln
    fresh = True  # wasmtime runs the continuation once straight away: let the loop run first

    def check() -> bool:
        nonlocal pos, fresh
        if fresh:
            fresh = False
            return False
        n = min(end - pos, RANDOM_CHUNK)
        _memmove(base + pos, _urandom(n), n)  # the guest cannot run or grow meanwhile: base is valid
        pos += n
        if pos < end:
            return False
        ffi.set_i32_result(results, _ESUCCESS)
        return True

    _suspend(ctx, cont, check)
    return None


def forget_suspended(ctx: CoreContext) -> None:
    """The invocation ended while suspended (cancelled): drop what `_resume` would have needed."""
    key = ctx.suspended_key
    if key:
        _SUSPENDED.pop(key, None)
        ctx.suspended_key = 0


def _iovecs(base: int, size: int, iovs: int, count: int) -> list[tuple[int, int]] | None:
    if iovs + 8 * count > size:
        return None
    raw = _string_at(base + iovs, 8 * count)
    vecs = [struct.unpack_from("<II", raw, 8 * i) for i in range(count)]
    for p, ln in vecs:
        if p + ln > size:
            return None
    return vecs


def fd_write(ctx: CoreContext, caller: int, a: Any) -> int:
    fd, iovs, count, nwritten = a[0] & _U32, a[4] & _U32, a[8] & _U32, a[12] & _U32
    if fd not in (1, 2):
        return _EBADF
    if count > _IOV_MAX:
        return _EINVAL
    base, size = _memory(ctx, caller)
    vecs = _iovecs(base, size, iovs, count)
    if vecs is None or nwritten + 4 > size:
        return _EFAULT
    total = sum(ln for _, ln in vecs)
    # Copy no more than the sink can keep (both are bounded by platform maxima): a guest must not make
    # us copy its whole memory per call.
    if fd == 1:
        budget = ctx.output_room() + 1
    else:
        budget = 0 if ctx.logs_full() else ctx.limits.max_log_line_bytes * 2
    chunks = []
    for p, ln in vecs:
        if budget <= 0:
            break
        take = min(ln, budget)
        chunks.append(_string_at(base + p, take))
        budget -= take
    data = b"".join(chunks)
    errno = _ESUCCESS
    written = total
    if fd == 1:
        before = len(ctx.output)
        if ctx.write_output(data) != abi.OK and len(data) > 0:
            written = len(ctx.output) - before
            errno = _EFBIG
    else:
        ctx.write_stderr(data)
    _memmove(base + nwritten, struct.pack("<I", written & _U32), 4)
    return errno


def fd_read(ctx: CoreContext, caller: int, a: Any) -> int:
    fd, iovs, count, nread = a[0] & _U32, a[4] & _U32, a[8] & _U32, a[12] & _U32
    if fd != 0:
        return _EBADF
    if count > _IOV_MAX:
        return _EINVAL
    base, size = _memory(ctx, caller)
    vecs = _iovecs(base, size, iovs, count)
    if vecs is None or nread + 4 > size:
        return _EFAULT
    data, pos, done = ctx.input, ctx.stdin_pos, 0
    for p, ln in vecs:
        take = min(ln, len(data) - pos)
        if take <= 0:
            break
        _memmove(base + p, data[pos : pos + take], take)
        pos += take
        done += take
    ctx.stdin_pos = pos
    _memmove(base + nread, struct.pack("<I", done), 4)
    return _ESUCCESS


def poll_oneoff(ctx: CoreContext, caller: int, a: Any) -> int:
    """Guest-thread flavour: sleep on the thread (one of the namespace's share of the guest threads,
    never the loop), never past the deadline."""
    sub_ptr, out, n, nevents_ptr = a[0] & _U32, a[4] & _U32, a[8] & _U32, a[12] & _U32
    errno, poll, base = _start_poll(ctx, caller, sub_ptr, out, n, nevents_ptr)
    if poll is None:
        return errno
    wake = poll.wake_at()
    assert wake is not None
    now = time.monotonic()
    while now < wake and now < ctx.deadline:
        time.sleep(min(wake, ctx.deadline) - now)
        now = time.monotonic()
    if now < wake:  # cut short by the deadline: the invocation has timed out
        ctx.timed_out_in_host = True
    poll.write(base, out, nevents_ptr, poll.ready())
    return _ESUCCESS


_ABI_FUNCS: dict[str, Callable[[CoreContext, int, Any], int]] = {
    "input_len": input_len,
    "input_read": input_read,
    "output_write": output_write,
    "log": log_,
    "push_send_to_user": push_send_to_user,
    "push_wait": push_wait,
}
_WASI_FUNCS: dict[str, Callable[[CoreContext, int, Any], int]] = {
    "fd_write": fd_write, "fd_read": fd_read, "poll_oneoff": poll_oneoff,
}


def define_host_functions(linker: wasmtime.Linker, functypes: dict[int, wasmtime.FuncType], *, on_loop: bool) -> None:
    """Define ABI v1 and WASI preview 1 (with our stdio) on ``linker``; ``functypes[n]`` is (i32 × n) -> i32.

    ``on_loop``: guests run on the event loop (see `ffi`), so ``push_send_to_user`` and ``push_wait``
    suspend rather than block.
    """
    for name, fn in _ABI_FUNCS.items():
        nparams, _ = abi.HOST_FUNCTIONS[name]
        define_raw_func(linker, abi.HOST_MODULE, name, functypes[nparams], _guarded(fn))
    linker.define_wasi()
    linker.allow_shadowing = True
    for name, fn in _WASI_FUNCS.items():
        define_raw_func(linker, abi.WASI_MODULE, name, functypes[4], _guarded(fn))
    if on_loop:
        ffi.define_async_func(linker, abi.HOST_MODULE, "push_send_to_user", functypes[4],
                                _guarded_async(push_send_to_user_on_loop, abi.UNAVAILABLE))
        ffi.define_async_func(linker, abi.HOST_MODULE, "push_wait", functypes[3],
                                _guarded_async(push_wait_on_loop, abi.UNAVAILABLE))
        ffi.define_async_func(linker, abi.WASI_MODULE, "poll_oneoff", functypes[4],
                                _guarded_async(poll_oneoff_on_loop, _EINVAL))
        ffi.define_async_func(linker, abi.WASI_MODULE, "random_get", functypes[2],
                                _guarded_async(random_get_on_loop, _EINVAL))
    linker.allow_shadowing = False
