"""The credentials breaker: stop sending with credentials the service refused, for a while."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..push.provider import FailureKind, Outcome

__all__ = ["CREDENTIALS_COOLDOWN", "CredentialsBreaker"]

#: How long a provider whose credentials were refused answers without a request (don't hammer the service).
CREDENTIALS_COOLDOWN = 60.0


class CredentialsBreaker:
    """After the service refuses our credentials, answer CREDENTIALS without a request for a cooldown.

    One per provider instance: a tenant who fixes its credentials gets a new provider (and a closed breaker).
    `key` scopes a trip where the refusal is per service (Web Push: per push-service origin).
    """

    def __init__(self, cooldown: float = CREDENTIALS_COOLDOWN, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._open: dict[str, tuple[float, Outcome]] = {}
        self.trips = 0

    def check(self, key: str = "") -> Outcome | None:
        """The outcome to return instead of sending, while the breaker is open for `key`."""
        entry = self._open.get(key)
        if entry is None:
            return None
        until, outcome = entry
        if self._clock() >= until:
            del self._open[key]
            return None
        return Outcome.failed(
            FailureKind.CREDENTIALS, outcome.reason,
            f"{outcome.message} (not retried for {self.cooldown:g} s; fix the credentials)".strip(),
            outcome.status,
        )

    def trip(self, outcome: Outcome, key: str = "") -> None:
        self.trips += 1
        self._open[key] = (self._clock() + self.cooldown, outcome)
