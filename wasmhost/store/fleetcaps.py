"""The fleet's share of the per-namespace caps: what every gateway on one PostgreSQL draws from.

Two tables (migration 7), each touched by one statement per call, never per request (the gateway's side,
`gateway/fleetcaps.py`, spends what it draws here locally and comes back only when it runs out):

- ``namespace_send_tokens``: one token bucket per namespace — capacity ``per_minute``, refilled evenly
  over a minute on the database's clock, so gateways on different machines agree on time. A gateway takes
  a *grant* of several tokens in one upsert (`take_sends`); every token spent anywhere was taken from this
  bucket first, so the fleet can never start more sends than one bucket allows, except for tokens a
  gateway took earlier and spends later (the bound is in docs/fleet.md).
- ``namespace_slot_leases``: one row per namespace holding every holder's lease — ``{holder: {"n": slots,
  "until": epoch}}`` — so a lease change is one upsert on one row. PostgreSQL serialises concurrent upserts
  of a row and evaluates the new value from the newest version, so the sum of live leases can never pass
  the cap however many gateways ask at once (rows per holder would need a lock and a transaction: several
  round trips). A lease not renewed by its ``until`` is ignored and dropped by the next change: a crashed
  gateway's slots come back after one lease period.

`CapLedger` is the seam: `PgCapLedger` is the fleet's, `wasmhost.testing.MemoryCapLedger` the unit tests'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # asyncpg is loaded only when a fleet uses PostgreSQL
    from .postgres import PgDriver

__all__ = ["CapLedger", "PgCapLedger", "SendGrant"]


@dataclass(frozen=True)
class SendGrant:
    #: Tokens given to the caller (0 when the bucket holds less than one).
    granted: int
    #: Tokens left in the fleet's bucket after this grant (fractional: it refills continuously).
    level: float


class CapLedger(Protocol):
    """Fleet-wide counters behind the per-namespace caps. Every method is one exchange with the database."""

    async def take_sends(self, namespace: str, want: int, per_minute: int) -> SendGrant:
        """Take up to ``want`` whole tokens from the namespace's bucket (capacity and rate: ``per_minute``)."""
        ...

    async def return_sends(self, namespace: str, count: int, per_minute: int) -> None:
        """Put ``count`` unspent tokens back (never above the bucket's capacity)."""
        ...

    async def lease_slots(self, namespace: str, holder: str, target: int, cap: int, ttl: float) -> int:
        """Set ``holder``'s lease of the namespace's invocation slots to ``target`` for ``ttl`` seconds and
        return what it now holds: a decrease is always granted, an increase only as far as the live leases
        of every holder stay within ``cap`` (never below what the holder still held)."""
        ...

    async def renew_slots(self, holder: str, namespaces: Sequence[str], ttl: float) -> dict[str, int]:
        """Extend ``holder``'s live leases of ``namespaces`` by ``ttl`` from now; the slots each still holds
        (a lease that had already lapsed is not revived: absent from the answer)."""
        ...

    async def release_slots(self, holder: str, namespaces: Sequence[str]) -> None:
        """Drop ``holder``'s leases of ``namespaces`` (a gateway that stops)."""
        ...


_NOW = "extract(epoch FROM now())"  # the statement's start on the server's clock: one instant per statement

# The bucket's level at this statement, refilled since its last change and capped at its capacity.
_LEVEL = f"LEAST($2::float8, b.tokens + GREATEST(0, {_NOW} - b.stamp) * $2::float8 / 60.0)"

_TAKE_SENDS = f"""
INSERT INTO namespace_send_tokens AS b (namespace, tokens, stamp, granted)
VALUES ($1, $2::float8 - LEAST($3::int, $2::int), {_NOW}, LEAST($3::int, $2::int))
ON CONFLICT (namespace) DO UPDATE SET
    granted = LEAST($3::int, floor({_LEVEL})::int),
    tokens = {_LEVEL} - LEAST($3::int, floor({_LEVEL})::int),
    stamp = {_NOW}
RETURNING granted, tokens"""

_RETURN_SENDS = f"""
UPDATE namespace_send_tokens AS b SET tokens = LEAST($2::float8, {_LEVEL} + $3::int), stamp = {_NOW}
WHERE namespace = $1"""

# $1 namespace, $2 holder, $3 target, $4 cap, $5 ttl. `live` drops lapsed leases (a crashed holder's);
# `mine` is the holder's live lease and everyone else's sum; `new` what the holder gets.
_LEASE_SLOTS = f"""
INSERT INTO namespace_slot_leases AS s (namespace, leases)
SELECT $1, CASE WHEN n > 0 THEN jsonb_build_object($2::text, jsonb_build_object('n', n, 'until', {_NOW} + $5::float8))
                ELSE '{{}}'::jsonb END
FROM (SELECT LEAST($3::int, $4::int) AS n) AS first
ON CONFLICT (namespace) DO UPDATE SET leases = (
    WITH live AS (
        SELECT e.key, e.value FROM jsonb_each(s.leases) AS e WHERE (e.value->>'until')::float8 > {_NOW}
    ), mine AS (
        SELECT COALESCE((SELECT (value->>'n')::int FROM live WHERE key = $2::text), 0) AS n,
               COALESCE((SELECT sum((value->>'n')::int) FROM live WHERE key <> $2::text), 0)::int AS others
    ), new AS (
        SELECT CASE WHEN $3::int <= mine.n THEN $3::int
                    ELSE GREATEST(mine.n, LEAST($3::int, $4::int - mine.others)) END AS n FROM mine
    )
    SELECT COALESCE(jsonb_object_agg(kept.key, kept.value), '{{}}'::jsonb) FROM (
        SELECT key, value FROM live WHERE key <> $2::text
        UNION ALL
        SELECT $2::text, jsonb_build_object('n', new.n, 'until', {_NOW} + $5::float8) FROM new WHERE new.n > 0
    ) AS kept)
RETURNING COALESCE((s.leases -> $2::text ->> 'n')::int, 0)"""

_RENEW_SLOTS = f"""
UPDATE namespace_slot_leases AS s
SET leases = jsonb_set(s.leases, ARRAY[$1::text, 'until'], to_jsonb({_NOW} + $3::float8))
WHERE s.namespace = ANY($2::text[]) AND (s.leases -> $1::text ->> 'until')::float8 > {_NOW}
RETURNING s.namespace, (s.leases -> $1::text ->> 'n')::int"""

_RELEASE_SLOTS = """
UPDATE namespace_slot_leases AS s SET leases = s.leases - $1::text
WHERE s.namespace = ANY($2::text[]) AND jsonb_exists(s.leases, $1::text)"""


class PgCapLedger:
    """`CapLedger` on the fleet's PostgreSQL. Its writes use the driver's connections that do not wait for
    the disk: a grant or lease lost in a crash of the database server is at worst a few tokens or slots
    counted as free again, and the statements are on the path of the request that ran out."""

    def __init__(self, driver: PgDriver) -> None:
        self.driver = driver

    async def take_sends(self, namespace: str, want: int, per_minute: int) -> SendGrant:
        rows = await self.driver.fetch_unflushed(_TAKE_SENDS, (namespace, per_minute, want))
        granted, level = rows[0]
        return SendGrant(int(granted), float(level))

    async def return_sends(self, namespace: str, count: int, per_minute: int) -> None:
        await self.driver.fetch_unflushed(_RETURN_SENDS, (namespace, per_minute, count))

    async def lease_slots(self, namespace: str, holder: str, target: int, cap: int, ttl: float) -> int:
        rows = await self.driver.fetch_unflushed(_LEASE_SLOTS, (namespace, holder, target, cap, ttl))
        return int(rows[0][0])

    async def renew_slots(self, holder: str, namespaces: Sequence[str], ttl: float) -> dict[str, int]:
        rows = await self.driver.fetch_unflushed(_RENEW_SLOTS, (holder, list(namespaces), ttl))
        return {str(ns): int(n) for ns, n in rows}

    async def release_slots(self, holder: str, namespaces: Sequence[str]) -> None:
        await self.driver.fetch_unflushed(_RELEASE_SLOTS, (holder, list(namespaces)))

