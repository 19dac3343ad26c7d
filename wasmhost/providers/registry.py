"""The providers this build supports, as `ProviderSpec`s ready for the factory and the HTTP handlers."""

from __future__ import annotations

from ..push.credentials import ProviderSpec
from ..store.base import Store
from ._tls import TLSContexts
from .apns import apns_specs
from .expo import ExpoSpec
from .fcm import FcmSpec
from .ntfy import NtfySpec
from .outbox import OutboxSpec
from .webpush import WebPushSpec

__all__ = ["default_specs"]


def default_specs(store: Store, *, allow_private_endpoints: bool = False) -> list[ProviderSpec]:
    """One spec per supported provider. Specs own process-wide state (e.g. the APNs JWT cache).

    `allow_private_endpoints` lets tenant URLs reach private and loopback addresses (private
    deployments and tests; ``WASMHOST_ALLOW_PRIVATE_ENDPOINTS=1``)."""
    tls = TLSContexts()  # one context per trusted roots for every provider of every namespace
    specs: list[ProviderSpec] = [OutboxSpec(store)]
    specs.append(NtfySpec(allow_private_endpoints=allow_private_endpoints, tls=tls))
    specs.append(WebPushSpec(allow_private_endpoints=allow_private_endpoints, tls=tls))
    specs.append(ExpoSpec(store, allow_private_endpoints=allow_private_endpoints, tls=tls))
    specs += apns_specs(allow_private_endpoints=allow_private_endpoints, tls=tls)  # apns + apns_voip, one JWT cache
    specs.append(FcmSpec(allow_private_endpoints=allow_private_endpoints, tls=tls))
    return specs
