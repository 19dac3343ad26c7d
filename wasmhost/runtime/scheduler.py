"""The per-loop guest scheduler: which suspended guest runs next, and when the loop gets a turn.

Guests on the loop (see `ffi`) run in slices: a poll of their future returns when they finish or
suspend (a fuel slice or an epoch tick ended, a host call must wait or is done in chunks). Polling
each one from its own task would run a slice of every busy guest in every turn of the loop, so eight
spinning guests of one tenant would hold the loop for eight slices between two HTTP callbacks, and
every other tenant's guest would queue behind them. Instead every poll is granted here:

* At most `BUDGET` of guest time runs per turn of the loop (plus the slice in progress when it runs
  out): then the loop polls its sockets and runs its callbacks before any guest runs again.
* The next guest is taken from the namespace that has used the least guest time while it had
  invocations in progress (first come, first served within a namespace). A namespace that starts
  an invocation joins at the least time of those already running, so it neither waits behind a busy
  one nor banks time while idle.
* When no guest is waiting for a turn and the budget is not spent, a poll runs in place: an
  invocation on an idle loop costs no extra turn of the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .engine import TICK_SECONDS
from .ffi import SLICE_FUEL, CallFuture, context_address, set_yield_interval
from .hostfuncs import CoreContext, forget_suspended, set_current

__all__ = ["BUDGET", "SLICE", "DeadlinePassed", "GuestScheduler"]

#: Guest time run per turn of the loop before the loop's own callbacks (HTTP) get a turn.
BUDGET = 0.0005

#: Longest a guest runs in one poll through host calls (it yields at the first host call after).
SLICE = 0.001

_clock = time.perf_counter


class DeadlinePassed(Exception):
    """The guest was still running (not waiting in a host call) at its deadline."""


class _Turn:
    __slots__ = ("future", "ctx", "waiter")

    def __init__(self, future: CallFuture, ctx: CoreContext, waiter: asyncio.Future[bool]):
        self.future: CallFuture | None = future
        self.ctx = ctx
        self.waiter = waiter


class GuestScheduler:
    """Grants polls to the guests of one event loop (create and use it on that loop only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget: float = BUDGET) -> None:
        self._loop = loop
        self._budget = budget
        #: Namespaces with guests waiting for a turn, each in arrival order.
        self._ready: dict[str, deque[_Turn]] = {}
        #: Guest seconds per namespace, for namespaces with invocations in progress.
        self._used: dict[str, float] = {}
        self._members: dict[str, int] = {}
        #: Guest seconds run in this turn of the loop (reset at the next turn).
        self._spent = 0.0
        self._reset_pending = False
        self._run_pending = False

    def usage(self) -> dict[str, float]:
        """Guest seconds per namespace with invocations in progress (for tests and metrics)."""
        return dict(self._used)

    def join(self, namespace: str) -> None:
        """An invocation of ``namespace`` starts (pair with `leave`)."""
        n = self._members.get(namespace, 0)
        if not n:
            self._used[namespace] = min(self._used.values(), default=0.0)
        self._members[namespace] = n + 1

    def leave(self, namespace: str) -> None:
        n = self._members[namespace] - 1
        if n:
            self._members[namespace] = n
        else:
            del self._members[namespace]
            del self._used[namespace]

    async def drive(self, future: CallFuture, ctx: CoreContext) -> None:
        """Poll ``future`` until the guest finishes, in the turns this scheduler grants, letting the
        guest wait whenever it suspends in a host call; raise its failure.

        A guest still running at its deadline (plus one tick of grace, as the epoch deadline gives on
        a thread) raises `DeadlinePassed`; one waiting in a host call is answered (TIMEOUT) and
        stopped at its next suspension. Leaving early (the deadline, or the awaiting task was
        cancelled) drops the future, which stops the guest.
        """
        namespace = ctx.namespace
        try:
            while True:
                if self._ready or self._spent >= self._budget:
                    waiter = self._loop.create_future()
                    turn = _Turn(future, ctx, waiter)
                    self._ready.setdefault(namespace, deque()).append(turn)
                    self._schedule_run()
                    try:
                        done = await waiter
                    finally:
                        turn.future = None  # never polled after this
                else:
                    done = self._poll(future, ctx)
                if done:
                    break
                if not ctx.in_host_wait() and time.monotonic() >= ctx.deadline + TICK_SECONDS:
                    raise DeadlinePassed
                await ctx.pause()
        finally:
            future.close()
            forget_suspended(ctx)
        future.raise_for_failure()

    def _poll(self, future: CallFuture, ctx: CoreContext) -> bool:
        if ctx.slice_cut:  # the last slice was cut short from a host call (see `hostfuncs`)
            ctx.slice_cut = False
            assert ctx.store is not None
            set_yield_interval(context_address(ctx.store), SLICE_FUEL)
        start = _clock()
        ctx.slice_end = start + SLICE
        set_current(ctx)
        try:
            done = future.poll()
        finally:
            set_current(None)
        spent = _clock() - start
        used = self._used
        used[ctx.namespace] = used.get(ctx.namespace, 0.0) + spent
        self._spent += spent
        if not self._reset_pending:
            self._reset_pending = True
            self._loop.call_soon(self._reset)
        return done

    def _reset(self) -> None:
        self._reset_pending = False
        self._spent = 0.0

    def _schedule_run(self) -> None:
        if not self._run_pending:
            self._run_pending = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        """Grant turns, least-used namespace first, until the budget of this turn of the loop is spent."""
        self._run_pending = False
        ready = self._ready
        used = self._used
        while ready and self._spent < self._budget:
            namespace = min(ready, key=lambda ns: used.get(ns, 0.0))
            queue = ready[namespace]
            turn = queue.popleft()
            if not queue:
                del ready[namespace]
            future = turn.future
            if turn.waiter.done() or future is None:  # its invocation was cancelled meanwhile
                continue
            ctx = turn.ctx
            # A poll granted here runs outside its invocation's task: host calls never await here (an
            # accept they would start waits for `InvocationContext.pause`, which runs in the task).
            done = self._poll(future, ctx)
            if done or ctx.must_pause() or time.monotonic() >= ctx.deadline:
                turn.waiter.set_result(done)
            else:  # a slice ended: it waits for its next turn here, not in its task
                ready.setdefault(namespace, deque()).append(turn)
        if ready:
            self._schedule_run()
