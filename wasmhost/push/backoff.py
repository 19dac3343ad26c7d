"""Retry timing shared by the delivery queue and the webhook worker."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempts: int, retry_after: float | None, base: float, most: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from `base`, at most `most`,
    jittered over its upper half (so retries of one outage spread out), never sooner than `retry_after`."""
    delay = min(most, base * 2 ** max(0, attempts - 1))
    return max(random.uniform(delay / 2, delay), retry_after or 0.0)
