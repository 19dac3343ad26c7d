"""One line, at most once a minute per host function, for host errors a guest might trigger at will.

A host function never raises into wasmtime; when one fails unexpectedly the guest gets a code and the
operator gets a line naming the function, the exception type and where it was raised. Never a
traceback, never the exception's text (it may quote guest data), and never one line per call: a guest
calling in a loop must not be able to flood the log.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

__all__ = ["INTERVAL_SECONDS", "host_failure"]

log = logging.getLogger("wasmhost.runtime")

#: Least time between two lines about the same host function.
INTERVAL_SECONDS = 60.0

_lock = threading.Lock()
#: host function -> (when its last line was written, failures since then not written)
_last: dict[str, tuple[float, int]] = {}


def _origin(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


def host_failure(function: str, exc: BaseException) -> None:
    """Record that host function `function` raised `exc` (rate-limited, one line)."""
    now = time.monotonic()
    with _lock:
        last, suppressed = _last.get(function, (float("-inf"), 0))
        if now - last < INTERVAL_SECONDS:
            _last[function] = (last, suppressed + 1)
            return
        _last[function] = (now, 0)
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    log.error("host function %s failed: %s at %s%s", function, type(exc).__name__, _origin(exc), more)
