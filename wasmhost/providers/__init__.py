"""Push providers, one module each, and the factory that builds them per namespace."""

from .factory import ProviderFactoryImpl
from .outbox import OutboxProvider, OutboxSpec
from .registry import default_specs

__all__ = ["OutboxProvider", "OutboxSpec", "ProviderFactoryImpl", "default_specs"]
