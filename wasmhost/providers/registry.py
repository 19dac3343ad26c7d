"""The providers this build supports, as `ProviderSpec`s ready for the factory and the HTTP handlers."""

from __future__ import annotations

from ..push.credentials import ProviderSpec
from ..store.base import OutboxStore
from .outbox import OutboxSpec

__all__ = ["default_specs"]


def default_specs(store: OutboxStore) -> list[ProviderSpec]:
    """One spec per supported provider. Specs own process-wide state (e.g. the APNs JWT cache)."""
    specs: list[ProviderSpec] = [OutboxSpec(store)]
    return specs
