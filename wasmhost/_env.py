"""The one parser of ``WASMHOST_*`` environment variables.

A value that does not parse is an error naming the variable (a `ValueError`, which the CLI prints as
one line), never a silent default: ``WASMHOST_ALLOW_PRIVATE_ENDPOINTS=ture`` must not quietly mean off.
An unset or blank variable means the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["env_flag", "env_float", "env_int", "env_str"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_str(name: str, default: str = "", env: Mapping[str, str] | None = None) -> str:
    """The variable with surrounding whitespace removed, or `default` when unset or blank."""
    text = (os.environ if env is None else env).get(name, "").strip()
    return text or default


def env_flag(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    text = env_str(name, env=env).lower()
    if not text:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be one of 1, true, yes, on, 0, false, no, off (got {text[:32]!r})")


def env_int(name: str, default: int, *, minimum: int = 1, env: Mapping[str, str] | None = None) -> int:
    """A decimal integer of at least `minimum`."""
    text = env_str(name, env=env)
    if not text:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise ValueError(f"{name} must be {what}, not {text[:32]!r}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0, env: Mapping[str, str] | None = None) -> float:
    """A finite number of at least `minimum`."""
    text = env_str(name, env=env)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text[:32]!r}") from None
    if not minimum <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number of at least {minimum} (got {text[:32]!r})")
    return value
