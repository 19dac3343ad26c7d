"""TLS client contexts, shared: one per (trusted roots, ALPN protocols), not one per provider.

Loading a CA store is slow and each loaded store stays in memory as long as its context, so every
provider of every namespace that trusts the same roots uses the same `ssl.SSLContext`. A context is
never mutated after it is built, except by httpcore, which sets the ALPN protocols on each connect:
the ALPN list is part of the key, so what it sets is what the context already has.

SSL_CERT_FILE / SSL_CERT_DIR are ignored: the public roots are certifi's, as for httpx with trust_env off.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict

import certifi

__all__ = ["ALPN_H1", "ALPN_H2", "ALPN_H2_ONLY", "MAX_TLS_CONTEXTS", "TLSContexts"]

#: ALPN lists, exactly as httpcore sets them for HTTP/1.1-only and HTTP/2-capable pools.
ALPN_H1 = ("http/1.1",)
ALPN_H2 = ("http/1.1", "h2")
#: Our own HTTP/2 client (APNs) speaks HTTP/2 only.
ALPN_H2_ONLY = ("h2",)
#: Distinct (roots, ALPN) contexts kept for reuse; tenants' pinned bundles beyond it are rebuilt when used.
MAX_TLS_CONTEXTS = 64


class TLSContexts:
    """Builds client contexts on first use and hands out the same one for the same key.

    One instance is shared by every provider spec (`default_specs`). Bounded: the least recently used
    context leaves the cache (clients still holding it keep it alive until they close).
    """

    def __init__(self, max_contexts: int = MAX_TLS_CONTEXTS) -> None:
        if max_contexts < 1:
            raise ValueError("max_contexts must be at least 1")
        self.max_contexts = max_contexts
        self._contexts: OrderedDict[tuple[str, tuple[str, ...]], ssl.SSLContext] = OrderedDict()
        self.built = 0  # contexts constructed; tests read it

    def get(self, ca_bundle: str = "", *, alpn: tuple[str, ...] = ALPN_H1) -> ssl.SSLContext:
        """TLS 1.2+ trusting `ca_bundle` (PEM) instead of the public roots when one is given."""
        key = (ca_bundle, alpn)
        context = self._contexts.get(key)
        if context is not None:
            self._contexts.move_to_end(key)
            return context
        if ca_bundle:
            context = ssl.create_default_context(cadata=ca_bundle)
        else:
            context = ssl.create_default_context(cafile=certifi.where())
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(list(alpn))
        self.built += 1
        self._contexts[key] = context
        if len(self._contexts) > self.max_contexts:
            self._contexts.popitem(last=False)
        return context
