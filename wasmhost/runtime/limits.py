"""Per-invocation sandbox limits, with the platform maxima no caller can exceed.

======================  ===========  ==============  ==================================================
field                   default      maximum         enforced by
======================  ===========  ==============  ==================================================
``fuel``                100,000,000  1,000,000,000   wasmtime fuel (~1 unit per wasm operator)
``timeout_ms``          5,000        60,000          epoch deadline (10 ms ticks) + host-wait timeouts
``memory_mb``           32           256             ``Store.set_limits``: ``memory.grow`` returns -1
``max_output_bytes``    1 MiB        1 MiB           ``output_write`` / WASI stdout (then LIMIT)
``max_log_lines``       100          10,000          ``log`` / WASI stderr lines (then LIMIT)
``max_log_line_bytes``  4 KiB        64 KiB          longer lines are truncated (and LIMIT returned)
``max_sends``           64           1,000           ``push_send_to_user`` calls per invocation
======================  ===========  ==============  ==================================================

Whatever the limits, the logs of one invocation hold at most `MAX_LOG_BYTES` (1 MiB) of text in all:
lines past it are dropped (LIMIT) and counted. With the output's maximum this bounds the invoke
response (and the memory one invocation's results take in the gateway) to a few MiB.

A request that is not a positive integer or is over its maximum is refused with a ``ValueError``
naming the field, rather than silently clamped: a tenant asking for 10 minutes should learn that
the platform gives 60 s at most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["MAX_LOG_BYTES", "Limits"]

#: Platform maximum of log text (all lines, bytes) kept per invocation, whatever the limits.
MAX_LOG_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    fuel: int = 100_000_000
    timeout_ms: int = 5_000
    memory_mb: int = 32
    max_output_bytes: int = 1 << 20
    max_log_lines: int = 100
    max_log_line_bytes: int = 4096
    max_sends: int = 64

    MAXIMA: ClassVar[Mapping[str, int]] = {
        "fuel": 1_000_000_000,
        "timeout_ms": 60_000,
        "memory_mb": 256,
        "max_output_bytes": 1 << 20,
        "max_log_lines": 10_000,
        "max_log_line_bytes": 64 << 10,
        "max_sends": 1_000,
    }

    def validated(self) -> Limits:
        """Return self if every field is a positive int within its platform maximum; else ValueError."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"limits.{f.name} must be an integer, not {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"limits.{f.name} must be greater than 0 (got {value})")
            maximum = self.MAXIMA[f.name]
            if value > maximum:
                raise ValueError(f"limits.{f.name}={value} exceeds the platform maximum of {maximum}")
        return self

    @classmethod
    def maximum(cls) -> Limits:
        """The most any invocation may be given."""
        return cls(**cls.MAXIMA)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Limits:
        """Defaults overridden by ``doc`` (e.g. from a function's config or a request), validated."""
        doc = dict(doc or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**doc).validated()

    def replace(self, **changes: int) -> Limits:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes).validated()

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb << 20
