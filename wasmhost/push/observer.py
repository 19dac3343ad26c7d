"""Hooks the push layer calls so the gateway can count what happens, without push importing metrics."""

from __future__ import annotations

__all__ = ["PushObserver"]


class PushObserver:
    """No-op base; override what you count. Never raise from these."""

    def dispatcher_cache(self, namespace: str, event: str) -> None:
        """`event` is ``hit``, ``miss`` or ``build``."""

    def delivery(self, namespace: str, provider: str, outcome: str) -> None:
        """`outcome` is ``success``, or a failure kind (``transient``, ``permanent``, ``dead_target`` …)."""

    def pruned(self, namespace: str, provider: str) -> None:
        """A dead device token was removed from the store."""
