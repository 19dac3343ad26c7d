"""Guest ABI v1 for core modules: names, signatures, status codes and log levels.

One table that the validator, the linker and the SDKs agree on. Every host function returns an
``i32``: ``>= 0`` is success (the meaning depends on the function), ``< 0`` is one of the codes
below. Host functions never trap the guest for a guest mistake.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ABI_VERSION",
    "CODE_NAMES",
    "FAULT",
    "HOST_FUNCTIONS",
    "HOST_MODULE",
    "INVAL",
    "LIMIT",
    "LOG_LEVELS",
    "MAX_USER_ID_BYTES",
    "NOT_CONFIGURED",
    "OK",
    "RATE_LIMITED",
    "TIMEOUT",
    "TOO_BIG",
    "UNAVAILABLE",
    "WASI_MODULE",
    "strerror",
]

ABI_VERSION: Final = 1
HOST_MODULE: Final = "wasmhost"
WASI_MODULE: Final = "wasi_snapshot_preview1"

OK: Final = 0
INVAL: Final = -1  # bad argument, unknown ticket, invalid JSON or UTF-8
FAULT: Final = -2  # pointer or length outside guest memory
TOO_BIG: Final = -3  # message (or user id) over its size limit
NOT_CONFIGURED: Final = -4  # the namespace has no push provider
RATE_LIMITED: Final = -5  # the namespace's send limiter said no
TIMEOUT: Final = -6  # the invocation deadline passed while waiting
UNAVAILABLE: Final = -7  # store or internal failure
LIMIT: Final = -8  # per-invocation cap on sends, logs or output reached

CODE_NAMES: Final[dict[int, str]] = {
    OK: "ok",
    INVAL: "invalid_argument",
    FAULT: "fault",
    TOO_BIG: "too_big",
    NOT_CONFIGURED: "not_configured",
    RATE_LIMITED: "rate_limited",
    TIMEOUT: "timeout",
    UNAVAILABLE: "unavailable",
    LIMIT: "limit",
}

#: ``log`` levels 0..4; the index is the level the guest passes.
LOG_LEVELS: Final = ("debug", "info", "notice", "warn", "error")

#: Longest user id a guest may name; longer ones get TOO_BIG rather than reaching the store.
MAX_USER_ID_BYTES: Final = 512

#: name -> (number of i32 params, number of i32 results). Every import is i32-only.
HOST_FUNCTIONS: Final[dict[str, tuple[int, int]]] = {
    "input_len": (0, 1),
    "input_read": (2, 1),
    "output_write": (2, 1),
    "log": (3, 1),
    "push_send_to_user": (4, 1),
    "push_wait": (3, 1),
}


def strerror(code: int) -> str:
    """The short name of a status code (``"fault"``), or ``"unknown"``."""
    return CODE_NAMES.get(code, "unknown")
