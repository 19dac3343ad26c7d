"""Push providers, one module each, and the factory that builds them per namespace."""

from .factory import ProviderPool
from .outbox import OutboxProvider, OutboxSpec
from .registry import default_specs

__all__ = ["OutboxProvider", "OutboxSpec", "ProviderPool", "default_specs"]
