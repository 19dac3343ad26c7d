"""Per-invocation state shared by every guest flavour (core modules and components).

Host functions only validate and hand off; the context is where they hand off to. It owns the
invocation's output, logs and sends.

A guest gets its ticket only once the push manager has accepted the send — with durable delivery,
once the send and its delivery rows are committed — so a refused send (not configured, a full queue, a
reused ``message_id``, the store down) answers ``push_send_to_user`` itself with its code, and a ticket
is a promise the store keeps. The delivery then goes on concurrently with the guest. A guest runs in
one of two places, and sends follow it:

* On the event loop's thread (core modules, see `ffi`): ``admit_send`` checks the caps and the
  limiter (before the message is parsed, so a refused message counts too); ``accept_now`` runs the
  sender's accept in place, inside the host call, so an accept that never waits (a commit on the
  loop's own SQLite connection) answers without a task or a turn of the loop. One that must wait
  suspends the guest (``_stepped``), and ``pause`` — run whenever the guest suspends (a fuel slice or
  an epoch tick ended, or ``push_send_to_user``/``push_wait``/``poll_oneoff`` must wait) — finishes it
  in the invocation's task, or waits for what the guest waits for, within the deadline. An accepted
  send's delivery runs as a task of its own. No thread is crossed.
* On a worker thread (components, core modules on guest threads): ``submit_send`` wakes the loop
  (``_flush`` starts a task there that accepts, then delivers) and ``wait_accepted``/``wait_send``
  block the worker on a condition, never touching the loop, so it cannot deadlock it.

Either way deliveries run concurrently with each other and with the guest, and ``drain`` (after the
guest returned) awaits what is still in flight within the deadline; anything unfinished is cancelled
and reported as a timeout, never dropped.

The namespace is fixed when the context is made; nothing the guest passes can change it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from wasmhost.push.accepted import Accepted
from wasmhost.push.errors import PushNotConfigured, PushUnavailable, QueueFull, SendConflict
from wasmhost.push.message import PushMessage
from wasmhost.push.report import SendReport

from . import abi
from .faults import host_failure
from .limits import MAX_LOG_BYTES, Limits
from .result import InvocationError, InvocationResult, LogEntry

__all__ = ["InvocationContext", "SendLimiter", "SendRecord", "Sender"]

log = logging.getLogger(__name__)

_TOO_LATE = "the send did not finish before the invocation deadline"
_TIMER_RESOLUTION = 0.001
#: Control characters a log line may not hold (JSON would escape each as six bytes): all of C0 but tab.
#: (As bytes: each becomes 0xFF, never valid UTF-8, which decoding turns into U+FFFD at C speed.)
_SCRUB = bytes(0xFF if b < 32 and b != 9 or b == 127 else b for b in range(256))
_IN_FLIGHT: set[asyncio.Task[None]] = set()


class Sender(Protocol):
    """What the runtime needs from push: `wasmhost.push.Manager` implements it.

    ``accept`` takes the send on — commits it, for a durable sender — or raises to refuse it; the guest
    gets its ticket then, and the rest (`Accepted.deliver`) runs as a task of its own. The runtime
    starts it in place, inside the host call, within the invocation's task; an invocation cancelled
    meanwhile hands it to another task to finish, so it should not hold a timeout or cancel scope
    across an await (the push manager's does not)."""

    async def accept(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None
    ) -> Accepted: ...


class SendLimiter(Protocol):
    """Optional per-namespace rate limit. Called where the guest runs (the event loop's thread, or the
    worker thread for components): must not block."""

    def try_acquire(self, namespace: str) -> bool: ...


@dataclass(slots=True, eq=False)
class SendRecord:
    ticket: int
    user_id: str
    message: PushMessage
    #: The sender accepted it (the guest may have its ticket); ``done`` may come much later.
    accepted: bool = False
    done: bool = False
    code: int = abi.OK
    report: SendReport | None = None
    error: str = ""
    task: asyncio.Task[None] | None = None
    _json: bytes | None = None

    @property
    def report_json(self) -> bytes:
        """The report as the guest reads it; encoded on first ``push_wait`` (on the worker, not the loop)."""
        if self._json is None:
            self._json = self.report.to_json().encode() if self.report is not None else b""
        return self._json

    def to_dict(self) -> dict[str, Any]:
        base: dict[str, Any] = {"ticket": self.ticket, "user_id": self.user_id}
        if self.code == abi.OK and self.report is not None:
            base.update(self.report.to_dict())
            base["error"] = None
        else:
            base.update(ok=False, devices_attempted=0, devices_succeeded=0, results=[])
            base["error"] = {"code": self.code, "kind": abi.strerror(self.code), "message": self.error}
        return base


class InvocationContext:
    """State of one invocation. Subclasses add what their guest flavour needs (e.g. a memory)."""

    def __init__(
        self,
        namespace: str,
        input: bytes,
        limits: Limits,
        *,
        loop: asyncio.AbstractEventLoop,
        sender: Sender,
        send_limiter: SendLimiter | None = None,
        on_loop: bool = False,
    ) -> None:
        self.namespace = namespace
        self.input = input
        self.limits = limits
        self.loop = loop
        self.sender = sender
        self.send_limiter = send_limiter
        self.started = time.monotonic()
        self.deadline = self.started + limits.timeout_ms / 1000
        self.output = bytearray()
        self.output_truncated = False
        self.logs: list[LogEntry] = []
        self.logs_dropped = 0
        self._not_configured_noted = False
        #: Bytes of log text kept so far (bounded by `MAX_LOG_BYTES`).
        self.log_bytes = 0
        self.sends: list[SendRecord] = []
        #: ``push_send_to_user`` calls admitted by `admit_send`, accepted or not: what ``max_sends`` caps.
        self.send_attempts = 0
        self.guest_ms = 0.0
        #: The guest runs on ``loop``'s own thread (a fiber, see `ffi`) rather than on the worker.
        self.on_loop = on_loop
        #: On the loop: the send whose ``push_wait`` has suspended the guest.
        self.waiting: SendRecord | None = None
        #: On the loop: when the guest's ``poll_oneoff`` wants to be woken (monotonic seconds).
        self.sleep_until: float | None = None
        #: A host wait (a sleep) was cut short by the deadline: the invocation is a timeout even if
        #: the guest returned before its epoch deadline could trap it.
        self.timed_out_in_host = False
        #: Worker threads' sends, for the loop to start.
        self._queue: deque[SendRecord] = deque()
        #: On the loop: an accept `accept_now` started that had to wait, its guest suspended in
        #: ``push_send_to_user``: (record, its coroutine, what it awaits).
        self._stepped: tuple[SendRecord, Coroutine[Any, Any, None], Any] | None = None
        self._scheduled = False
        self._cond = None if on_loop else threading.Condition(threading.Lock())

    def start_clock(self) -> None:
        """Restart the deadline when the worker actually starts (queueing time is not the guest's)."""
        self.started = time.monotonic()
        self.deadline = self.started + self.limits.timeout_ms / 1000

    def stop_clock(self) -> None:
        """The guest is done (sends may still be in flight)."""
        self.guest_ms = (time.monotonic() - self.started) * 1000

    # -- output and logs (where the guest runs: the loop, or the worker for components) ----------

    def output_room(self) -> int:
        return self.limits.max_output_bytes - len(self.output)

    def write_output(self, data: bytes, total: int | None = None) -> int:
        """Append to the output; over the cap, keep what fits and return LIMIT.

        ``total`` is the length the guest asked to write when the caller copied only what fits.
        """
        room = self.limits.max_output_bytes - len(self.output)
        if (len(data) if total is None else total) <= room:
            self.output += data
            return abi.OK
        if room > 0:
            self.output += data[:room]
        if not self.output_truncated:
            self.output_truncated = True
            self.note(3, f"output truncated at {self.limits.max_output_bytes} bytes (max_output_bytes)")
        return abi.LIMIT

    def logs_full(self) -> bool:
        """No further line can be kept: the line count or the total bytes are used up."""
        return len(self.logs) >= self.limits.max_log_lines or self.log_bytes >= MAX_LOG_BYTES

    def drop_log(self) -> int:
        """Count a line that could not be kept; LIMIT."""
        self.logs_dropped += 1
        return abi.LIMIT

    def add_log(self, level: int, data: bytes) -> int:
        """Record a guest log line; LIMIT when the line count or `MAX_LOG_BYTES` is used up (the line is
        dropped) or the line was truncated.

        The line is kept as text: invalid UTF-8 and control characters (but tab) become U+FFFD, so a
        line cannot grow sixfold when the result is sent as JSON; `MAX_LOG_BYTES` counts the text."""
        if self.logs_full():
            return self.drop_log()
        cap = self.limits.max_log_line_bytes
        code = abi.OK
        if len(data) > cap:
            data = data[:cap]
            code = abi.LIMIT
        text = data.decode("utf-8", "replace")
        if not text.isprintable():  # cheap check first: most lines have nothing to replace
            text = data.translate(_SCRUB).decode("utf-8", "replace")
        size = len(data) if text.isascii() else len(text.encode())
        if self.log_bytes + size > MAX_LOG_BYTES:  # full: later lines are dropped without decoding
            self.log_bytes = MAX_LOG_BYTES
            return self.drop_log()
        self.log_bytes += size
        if code:
            text += " …[truncated]"
        self.logs.append(LogEntry(abi.LOG_LEVELS[level], text))
        return code

    def note(self, level: int, text: str) -> None:
        """A line the host adds (a rejected message, a cap reached); counts against the same cap."""
        if len(self.logs) >= self.limits.max_log_lines:
            self.logs_dropped += 1
            return
        self.logs.append(LogEntry(abi.LOG_LEVELS[level], f"[host] {text}"))

    # -- sends (where the guest runs: the loop, or the worker for components) --------------------

    def admit_send(self) -> int:
        """Count one ``push_send_to_user`` call against ``max_sends`` and the rate limit, before its
        message is checked: OK, or the code to answer. Malformed sends cost what good ones cost."""
        if self.send_attempts >= self.limits.max_sends:
            self.note(3, f"push_send_to_user: more than {self.limits.max_sends} sends (max_sends)")
            return abi.LIMIT
        self.send_attempts += 1
        limiter = self.send_limiter
        if limiter is not None:
            try:
                allowed = limiter.try_acquire(self.namespace)
            except Exception as exc:
                log.error("send limiter failed: %s", type(exc).__name__)
                return abi.UNAVAILABLE
            if not allowed:
                return abi.RATE_LIMITED
        return abi.OK

    def submit_send(self, user_id: str, message: PushMessage) -> SendRecord:
        """A send `admit_send` admitted, to be accepted: on the loop the host function starts that in
        place (`accept_now`); on a worker thread it is queued for the loop and the guest blocks in
        `wait_accepted`. Either way the guest answers with `ticket_for` once `accept_settled`."""
        record = SendRecord(len(self.sends) + 1, user_id, message)
        self.sends.append(record)
        if self.on_loop:
            return record
        self._queue.append(record)
        # Append first, then check the flag; _flush clears the flag first, then drains: no send is lost.
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # the loop is closed: nothing can deliver it
                self._scheduled = False
                self._queue.pop()
                record.code, record.error = abi.UNAVAILABLE, "the gateway is shutting down"
                self._complete(record)
        return record

    def send(self, user_id: str, message: PushMessage) -> int:
        """``push_send_to_user`` on a worker thread: queue, block until accepted, the ticket or a code."""
        record = self.submit_send(user_id, message)
        self.wait_accepted(record)
        return self.ticket_for(record)

    def accept_settled(self, record: SendRecord) -> bool:
        """Whether ``push_send_to_user`` can answer for ``record``: accepted, refused, or out of time."""
        return record.accepted or record.done or time.monotonic() >= self.deadline

    def ticket_for(self, record: SendRecord) -> int:
        """``push_send_to_user``'s answer once `accept_settled`: the ticket, the code of a refusal (the
        send is then forgotten: nothing was sent and the guest has no ticket to ask about it), or
        TIMEOUT when the deadline came first (the send stays in the result: it may still be accepted)."""
        if record.accepted or (record.done and not record.code):
            return record.ticket
        if record.done and record.code != abi.TIMEOUT:
            if self.sends and self.sends[-1] is record:
                self.sends.pop()
            return record.code
        return abi.TIMEOUT

    def find_send(self, ticket: int) -> SendRecord | None:
        if 1 <= ticket <= len(self.sends):
            return self.sends[ticket - 1]
        return None

    def wait_accepted(self, record: SendRecord) -> None:
        """Block until `accept_settled` (worker thread)."""
        self._wait_for(lambda: record.accepted or record.done)

    def wait_send(self, record: SendRecord) -> bool:
        """Block until ``record`` is done or the deadline passes; True if it is done (worker thread)."""
        return self._wait_for(lambda: record.done)

    def _wait_for(self, ready: Callable[[], bool]) -> bool:
        if ready():
            return True
        assert self._cond is not None, "a guest on the loop waits through `pause`"
        with self._cond:
            while not ready():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- sends (loop thread) ---------------------------------------------------------------------

    def accept_now(self, record: SendRecord) -> bool:
        """Start accepting ``record`` right here (loop thread, inside ``push_send_to_user``): True once
        `accept_settled`. No task and no turn of the loop when the accept never has to wait (a commit
        on the loop's own SQLite connection); otherwise it is left half-way for `pause` to finish."""
        if time.monotonic() >= self.deadline:
            record.code, record.error = abi.TIMEOUT, _TOO_LATE
            self._complete(record)
            return True
        coro = self._accept_on_loop(record)
        if asyncio.current_task() is None:
            # A poll the scheduler granted from a loop callback: start it in the invocation's task instead
            # (`pause`), where a timeout inside the store's driver (asyncpg's connect) finds its task.
            self._stepped = (record, coro, None)
            return False
        try:
            step = coro.send(None)
        except StopIteration:
            return True
        except BaseException as exc:  # `_accept` maps every Exception; this is only a guard
            log.error("send failed to start: %s", type(exc).__name__)
            record.code, record.error = abi.UNAVAILABLE, "internal error"
            self._complete(record)
            return True
        self._stepped = (record, coro, step)
        return False

    async def _finish_stepped(self, record: SendRecord, coro: Coroutine[Any, Any, None], step: Any, *,
                              handoff: bool = True) -> None:
        """Drive an accept `accept_now` started to its end, the way a Task would, bounded by the
        deadline. (It starts in the invocation's task; see `Sender` for the hand-over.)
        When the deadline passes, the accept is cancelled where it waits. When the invocation is cancelled
        (with `handoff`), the accept may be committing: a task of its own finishes it, and starts its
        delivery, as `abandon` does."""
        stop: asyncio.CancelledError | None = None
        cancelled: asyncio.CancelledError | None = None
        try:
            while True:
                if stop is not None:  # it went on waiting after being cancelled: stop it
                    coro.close()
                    break
                remaining = self.deadline - time.monotonic()
                try:
                    if step is None:  # a bare yield (or not started yet): one turn of the loop
                        await asyncio.sleep(0)
                    elif remaining > 0:
                        step._asyncio_future_blocking = False
                        await asyncio.wait((step,), timeout=remaining)
                except asyncio.CancelledError as exc:
                    if not handoff:
                        stop = exc
                    else:
                        self._track(record, self._finish_stepped(record, coro, step, handoff=False))
                        cancelled = exc
                        break
                if stop is None and (remaining <= 0 or (step is not None and not step.done())):
                    stop = asyncio.CancelledError()
                step = coro.send(None) if stop is None else coro.throw(stop)
        except (StopIteration, asyncio.CancelledError):
            pass
        except BaseException as exc:  # `_accept` maps every Exception; this is only a guard
            log.error("send failed: %s", type(exc).__name__)
            record.code, record.error = abi.UNAVAILABLE, "internal error"
        if cancelled is not None:  # handed over, unfinished: the invocation's own cancellation goes on
            raise cancelled
        if not (record.accepted or record.done):
            if not record.code:
                record.code, record.error = abi.TIMEOUT, _TOO_LATE
            self._complete(record)

    def _flush(self) -> None:
        """(Worker threads' sends.) Start each queued send as a task: accept, then deliver."""
        self._scheduled = False
        queue = self._queue
        while queue:
            record = queue.popleft()
            self._track(record, self._accept_then_deliver(record))

    def _track(self, record: SendRecord, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        record.task = task = self.loop.create_task(coro)
        # The loop holds tasks weakly: keep each one until it ends, whoever still awaits it.
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)
        return task

    def abandon(self) -> None:
        """The caller stopped waiting (cancelled): the guest has stopped; a send it was accepting is
        finished in a task of its own, and accepted sends go on."""
        if self._stepped is not None:
            record, coro, step = self._stepped
            self._stepped = None
            self._track(record, self._finish_stepped(record, coro, step, handoff=False))

    async def _accept_then_deliver(self, record: SendRecord) -> None:
        try:
            accepted = await self._accept(record)
            if accepted is not None:
                await self._deliver(record, accepted)
        except asyncio.CancelledError:
            record.code, record.error = abi.TIMEOUT, _TOO_LATE
            self._complete(record)

    async def _accept_on_loop(self, record: SendRecord) -> None:
        accepted = await self._accept(record)
        if accepted is not None:  # its delivery goes on in a task, concurrently with the guest
            task = self._track(record, self._deliver(record, accepted))
            task.add_done_callback(lambda _: accepted.release())  # if cancelled before it started

    async def _accept(self, record: SendRecord) -> Accepted | None:
        """Have the sender accept ``record``: the delivery left to do, or None when the record is done
        (delivered by the accept itself, or refused: its code set)."""
        try:
            accepted = await self.sender.accept(self.namespace, record.user_id, record.message, deadline=self.deadline)
        except Exception as exc:
            self._refused(record, exc)
            self._complete(record)
            return None
        self._accepted(record)
        if accepted.report is None:
            return accepted
        record.report = accepted.report
        accepted.release()
        self._complete(record)
        return None

    async def _deliver(self, record: SendRecord, accepted: Accepted) -> None:
        """An accepted send's delivery, accounting for every ending (a cancelled one was too late)."""
        try:
            record.report = await accepted.deliver()
        except asyncio.CancelledError:
            record.code, record.error = abi.TIMEOUT, _TOO_LATE
        except Exception as exc:
            self._refused(record, exc)
        self._complete(record)

    def _refused(self, record: SendRecord, exc: Exception) -> None:
        """The code and text for a send that failed as a whole (refused, or its delivery failed)."""
        if isinstance(exc, PushNotConfigured):
            record.code, record.error = abi.NOT_CONFIGURED, str(exc)
            if not self._not_configured_noted:  # one line per invocation, however many sends hit it
                self._not_configured_noted = True
                self.note(3, f"push_send_to_user: {exc}")
        elif isinstance(exc, SendConflict):
            record.code, record.error = abi.INVAL, str(exc)
            self.note(3, f"push_send_to_user: {exc}")
        elif isinstance(exc, QueueFull):
            record.code, record.error = abi.RATE_LIMITED, str(exc)
        elif isinstance(exc, PushUnavailable):
            record.code, record.error = abi.UNAVAILABLE, str(exc) or "push is unavailable"
        else:  # a bug, but one a guest may hit in a loop: one line a minute, no traceback
            host_failure("push_send_to_user (delivery)", exc)
            record.code, record.error = abi.UNAVAILABLE, f"internal error ({type(exc).__name__})"

    def _accepted(self, record: SendRecord) -> None:
        self._mark(record, "accepted")

    def _complete(self, record: SendRecord) -> None:
        self._mark(record, "done")

    def _mark(self, record: SendRecord, flag: str) -> None:
        """Set ``record.<flag>``; a worker thread waiting on it (`_wait_for`) is woken."""
        if self._cond is None:
            setattr(record, flag, True)
            return
        with self._cond:
            setattr(record, flag, True)
            self._cond.notify_all()

    def in_host_wait(self) -> bool:
        """The guest is suspended in a host call (``push_send_to_user``, ``push_wait``, ``poll_oneoff``),
        not by a slice."""
        return self.waiting is not None or self._stepped is not None or self.sleep_until is not None

    def must_pause(self) -> bool:
        """The guest suspended for something `pause` does: start sends, or wait in a host call."""
        return bool(self._queue) or self.in_host_wait()

    async def pause(self) -> None:
        """The guest suspended (loop thread): finish what it waits for, or let the loop run.

        If it waits in ``push_send_to_user``, return when that send is accepted (or refused) or the
        deadline has passed; in ``push_wait``, when that send is done or the deadline has passed; if it
        sleeps in ``poll_oneoff``, when it is due (or the deadline has passed); otherwise (a slice
        ended, or a host call works in chunks) at once: `scheduler` decides when it runs again.
        """
        if self._queue:
            self._flush()
        record, self.waiting = self.waiting, None
        wake, self.sleep_until = self.sleep_until, None
        if wake is not None:  # WASI poll_oneoff: sleep, but never past the deadline
            delay = min(wake, self.deadline) - time.monotonic()
            # The loop's timers round up to whole milliseconds (epoll): a shorter sleep (Go's scheduler
            # naps for microseconds) takes turns of the loop instead, until it is due.
            await asyncio.sleep(delay if delay >= _TIMER_RESOLUTION else 0)
            return
        if self._stepped is not None:  # push_send_to_user: its accept had to wait
            stepped, self._stepped = self._stepped, None
            await self._finish_stepped(*stepped)
            return
        if record is None:  # a slice ended: the scheduler gives the loop its turn
            return
        remaining = self.deadline - time.monotonic()
        if remaining > 0 and not record.done and record.task is not None:
            await asyncio.wait((record.task,), timeout=remaining)

    async def drain(self, grace: float = 1.0) -> None:
        """Await in-flight sends until the deadline; cancel and mark the rest as timed out."""
        self._flush()
        pending = [r.task for r in self.sends if not r.done and r.task is not None]
        if not pending:
            return
        remaining = self.deadline - time.monotonic()
        if remaining > 0:
            _, still = await asyncio.wait(pending, timeout=remaining)
        else:
            still = set(pending)
        if still:
            for task in still:
                task.cancel()
            # Cancelled sends become TIMEOUT records; bound a sender that ignores the cancellation.
            await asyncio.wait(still, timeout=grace)
        for record in self.sends:
            if not record.done:
                record.code, record.error = abi.TIMEOUT, _TOO_LATE
                self._complete(record)

    # -- result ----------------------------------------------------------------------------------

    def result(self, code: int | None, error: InvocationError | None, fuel_used: int) -> InvocationResult:
        if self.logs_dropped:
            self.logs.append(LogEntry("warn", f"[host] {self.logs_dropped} log line(s) dropped (max_log_lines, "
                                              f"or {MAX_LOG_BYTES >> 20} MiB of logs in all)"))
            self.logs_dropped = 0
        return InvocationResult(
            code=code,
            error=error,
            output=self.output.decode("utf-8", "replace"),
            output_bytes=bytes(self.output),
            logs=self.logs,
            sends=[r.to_dict() for r in self.sends],
            fuel_used=fuel_used,
            duration_ms=(time.monotonic() - self.started) * 1000,
            guest_ms=self.guest_ms,
        )
