"""The fleet's cap counters on a real PostgreSQL (`store/fleetcaps.py`): several gateways' stores asking at
once never get more than the bucket holds or more slots than the cap, and a lapsed lease frees its slots."""

from __future__ import annotations

import asyncio

from tests.store.conftest import Backend
from wasmhost.store import KeyRing
from wasmhost.store.fleetcaps import PgCapLedger
from wasmhost.store.postgres import PostgresStore


async def _ledgers(pg_backend: Backend, keyring: KeyRing, n: int) -> list[PgCapLedger]:
    stores: list[PostgresStore] = [await pg_backend.open(keyring) for _ in range(n)]
    return [store.cap_ledger() for store in stores]


async def test_grants_from_every_gateway_come_out_of_one_bucket(pg_backend: Backend, keyring: KeyRing) -> None:
    ledgers = await _ledgers(pg_backend, keyring, 3)
    grants = await asyncio.gather(*(ledgers[i % 3].take_sends("acme", 3, 20) for i in range(12)))
    assert sum(g.granted for g in grants) == 20  # 36 asked, the bucket held 20
    assert all(0 <= g.level < 1 for g in grants if g.granted < 3)
    first = await ledgers[0].take_sends("globex", 3, 20)  # a namespace's first grant creates its bucket
    assert (first.granted, first.level) == (3, 17.0)
    await ledgers[1].return_sends("globex", 3, 20)
    assert (await ledgers[2].take_sends("globex", 30, 20)).granted == 20  # never above the capacity


async def test_the_bucket_refills_on_the_databases_clock(pg_backend: Backend, keyring: KeyRing) -> None:
    (ledger,) = await _ledgers(pg_backend, keyring, 1)
    assert (await ledger.take_sends("acme", 600, 600)).granted == 600
    await asyncio.sleep(0.25)  # 10 a second
    again = await ledger.take_sends("acme", 600, 600)
    assert 2 <= again.granted <= 4 and again.level < 1


async def test_leases_never_add_up_to_more_than_the_cap(pg_backend: Backend, keyring: KeyRing) -> None:
    ledgers = await _ledgers(pg_backend, keyring, 4)
    got = await asyncio.gather(*(ledgers[i % 4].lease_slots("acme", f"g{i}", 2, 3, 30.0) for i in range(10)))
    assert sum(got) == 3
    holder, held = next((f"g{i}", n) for i, n in enumerate(got) if n)
    # A holder lowers its lease: always granted, and the freed slot goes to the next to ask.
    assert await ledgers[0].lease_slots("acme", holder, held - 1, 3, 30.0) == held - 1
    assert await ledgers[1].lease_slots("acme", "late", 5, 3, 30.0) == 1
    assert await ledgers[2].lease_slots("acme", "later", 1, 3, 30.0) == 0


async def test_a_lapsed_lease_frees_its_slots_and_is_not_renewed(pg_backend: Backend, keyring: KeyRing) -> None:
    a, b = await _ledgers(pg_backend, keyring, 2)
    assert await a.lease_slots("acme", "crashed", 2, 2, 0.3) == 2
    assert await a.lease_slots("acme", "alive", 2, 2, 30.0) == 0
    assert await a.renew_slots("crashed", ["acme"], 0.3) == {"acme": 2}  # still live: extended
    await asyncio.sleep(0.4)
    assert await b.renew_slots("crashed", ["acme", "nothing"], 30.0) == {}  # lapsed: not revived
    assert await b.lease_slots("acme", "alive", 2, 2, 30.0) == 2
    await b.release_slots("alive", ["acme"])
    assert await a.lease_slots("acme", "next", 2, 2, 30.0) == 2
