"""`Accepted`: a send the push manager has taken on, and what is left of it to deliver.

Accepting and delivering are two steps so a caller can act between them: a guest gets its ticket once
the send is accepted (committed, with durable delivery), and its delivery then runs as a task of its
own. `Manager.accept` answers one; `Manager.send_to_user` is both steps in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from .report import SendReport

__all__ = ["Accepted"]


class Accepted:
    """`report` is set when nothing is left to deliver; otherwise `deliver()` (await it once) delivers
    and returns it. `release()` gives back what the send holds (its dispatcher) without delivering: a
    caller that will never await `deliver()` calls it; it is idempotent, and `deliver()` calls it too."""

    __slots__ = ("_deliver", "_release", "report", "send_id")

    def __init__(self, report: SendReport | None = None, *, send_id: str | None = None,
                 deliver: Callable[[], Coroutine[Any, Any, SendReport]] | None = None,
                 release: Callable[[], None] | None = None) -> None:
        if (report is None) == (deliver is None):
            raise ValueError("an accepted send has either its report or a delivery left")
        self.report = report
        self.send_id = send_id if send_id is not None else (report.send_id if report is not None else None)
        self._deliver = deliver
        self._release = release

    async def deliver(self) -> SendReport:
        if self.report is not None:
            self.release()
            return self.report
        assert self._deliver is not None
        deliver, self._deliver = self._deliver, None
        try:
            self.report = await deliver()
        finally:
            self.release()
        return self.report

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()
