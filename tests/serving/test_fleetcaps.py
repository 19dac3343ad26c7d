"""The gateway's side of the fleet's per-namespace caps (`gateway/fleetcaps.py`) against the in-memory ledger:
grants and leases are asked rarely, spent locally, and never add up to more than the fleet's counters."""

from __future__ import annotations

import asyncio

import pytest

from wasmhost.gateway.fleetcaps import FleetSends, FleetSlots, grant_size
from wasmhost.store import StoreError
from wasmhost.testing.caps import MemoryCapLedger


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock) -> MemoryCapLedger:
    return MemoryCapLedger(clock)


async def _settle() -> None:
    """Let background refills (scheduled with call_soon_threadsafe, then a task) finish."""
    for _ in range(5):
        await asyncio.sleep(0)


def _sends(ledger: MemoryCapLedger, clock: Clock, per_minute: int) -> FleetSends:
    sends = FleetSends(ledger, per_minute, clock=clock)
    sends.start()
    return sends


# -- sends per minute ---------------------------------------------------------------------------------


async def test_a_grant_is_spent_locally_and_refilled_in_the_background(ledger: MemoryCapLedger, clock: Clock) -> None:
    sends = _sends(ledger, clock, 600)
    assert sends.grant == grant_size(600) == 30
    assert await sends.take("acme")  # the first send waits for the first grant
    assert ledger.calls == ["take_sends"] and sends.held("acme") == 29
    for _ in range(13):
        assert sends.try_take("acme")
    await _settle()
    assert ledger.calls == ["take_sends"]  # 16 left: above half a grant, nothing asked
    assert sends.try_take("acme")  # 15 left: the next grant is fetched in the background
    await _settle()
    assert ledger.calls == ["take_sends"] * 2 and sends.held("acme") == 45


async def test_two_processes_never_start_more_than_the_fleets_bucket(ledger: MemoryCapLedger, clock: Clock) -> None:
    a, b = _sends(ledger, clock, 20), _sends(ledger, clock, 20)
    results = []
    for i in range(40):  # alternately, with the clock standing still: the bucket never refills
        results.append(await (a if i % 2 else b).take("acme"))
        await _settle()
    assert 18 <= sum(results) <= 20  # at most one grant (one token at 20/min) left unspent in each
    asked = len(ledger.calls)
    for _ in range(10):  # over the cap: refused from memory, no round trip per refused request
        assert not await a.take("acme") and not a.try_take("acme")
    assert len(ledger.calls) == asked
    assert a.retry_after("acme") == 3  # one token at 20 a minute


async def test_a_drained_bucket_is_asked_again_once_it_holds_a_grant(ledger: MemoryCapLedger, clock: Clock) -> None:
    sends = _sends(ledger, clock, 20)
    while await sends.take("acme"):
        await _settle()
    clock.now += 2.9
    assert not await sends.take("acme")
    clock.now += 0.2  # 3 s: one token refilled
    assert await sends.take("acme")


async def test_other_namespaces_have_their_own_buckets(ledger: MemoryCapLedger, clock: Clock) -> None:
    sends = _sends(ledger, clock, 1)
    assert await sends.take("acme") and not await sends.take("acme")
    assert await sends.take("globex")


async def test_guests_never_wait_and_find_tokens_after_prepare(ledger: MemoryCapLedger, clock: Clock) -> None:
    sends = _sends(ledger, clock, 600)
    assert not sends.try_take("acme")  # cold: refused, and a grant is on its way
    await _settle()
    assert sends.try_take("acme")
    cold = _sends(ledger, clock, 600)
    await cold.ensure("acme")  # what an invocation does before its guest runs
    assert cold.held("acme") == 30 and cold.try_take("acme")
    calls = len(ledger.calls)
    await cold.ensure("acme")  # tokens held: nothing asked
    assert len(ledger.calls) == calls


async def test_an_unreachable_ledger_is_an_error_then_a_pause(ledger: MemoryCapLedger, clock: Clock) -> None:
    sends = _sends(ledger, clock, 600)
    ledger.failure = StoreError("postgresql: ConnectionDoesNotExistError")
    with pytest.raises(StoreError):
        await sends.take("acme")
    with pytest.raises(StoreError):  # within the backoff: the same answer, without asking
        await sends.take("acme")
    with pytest.raises(StoreError):  # a guest's send: UNAVAILABLE, not RATE_LIMITED
        sends.try_take("acme")
    assert ledger.calls == ["take_sends"]
    ledger.failure = None
    clock.now += 1.0
    assert await sends.take("acme")


async def test_unspent_tokens_go_back_when_a_process_stops(ledger: MemoryCapLedger, clock: Clock) -> None:
    sends = _sends(ledger, clock, 600)
    assert await sends.take("acme")
    await sends.aclose()
    assert ledger.buckets["acme"].tokens == 599.0


# -- invocations in progress ----------------------------------------------------------------------------


def _slots(ledger: MemoryCapLedger, clock: Clock, cap: int, holder: str, ttl: float = 30.0) -> FleetSlots:
    return FleetSlots(ledger, cap, ttl=ttl, holder=holder, clock=clock)


async def test_a_leased_slot_is_reused_without_asking(ledger: MemoryCapLedger, clock: Clock) -> None:
    a = _slots(ledger, clock, 2, "a")
    for _ in range(100):
        assert await a.acquire("acme")
        a.release("acme")
    assert ledger.calls == ["lease_slots"] and a.leased("acme") == 1


async def test_the_cap_holds_across_processes_and_idle_slots_go_back(ledger: MemoryCapLedger, clock: Clock) -> None:
    a, b = _slots(ledger, clock, 2, "a"), _slots(ledger, clock, 2, "b")
    assert await a.acquire("acme") and await a.acquire("acme")
    assert not await b.acquire("acme")
    a.release("acme")
    await a.maintain()  # it ran two since the last tick: it keeps both
    assert not await b.acquire("acme")
    await a.maintain()  # one unused for a whole tick: given back
    assert a.leased("acme") == 1 and ledger.live("acme") == {"a": 1}
    assert await b.acquire("acme")
    assert not await b.acquire("acme") and not await a.acquire("acme")  # one running on each: the cap


async def test_concurrent_acquires_in_one_process_lease_one_slot_each(ledger: MemoryCapLedger, clock: Clock) -> None:
    ledger.delay = 0.01
    a = _slots(ledger, clock, 3, "a")
    got = await asyncio.gather(*(a.acquire("acme") for _ in range(5)))
    assert sorted(got) == [False, False, True, True, True]
    assert a.leased("acme") == 3 and ledger.live("acme") == {"a": 3}


async def test_a_crashed_holders_slots_come_back_after_its_lease(ledger: MemoryCapLedger, clock: Clock) -> None:
    a, b = _slots(ledger, clock, 2, "a", ttl=5.0), _slots(ledger, clock, 2, "b", ttl=5.0)
    assert await a.acquire("acme") and await a.acquire("acme")
    del a  # crashed: never renews, never gives back
    assert not await b.acquire("acme")
    clock.now += 5.01
    assert await b.acquire("acme") and await b.acquire("acme")


async def test_leases_are_renewed_while_held_and_a_lapsed_one_is_not_revived(ledger: MemoryCapLedger,
                                                                             clock: Clock) -> None:
    a, b = _slots(ledger, clock, 1, "a", ttl=6.0), _slots(ledger, clock, 1, "b", ttl=6.0)
    assert await a.acquire("acme")  # running the whole time
    for _ in range(4):
        clock.now += 2.5
        await a.maintain()
    assert ledger.calls.count("renew_slots") >= 2 and not await b.acquire("acme")
    clock.now += 7.0  # cut off: the lease lapses, and b takes the slot
    assert await b.acquire("acme")
    await a.maintain()
    assert a.leased("acme") == 0 and ledger.live("acme") == {"b": 1}


async def test_a_stopping_process_gives_its_slots_back(ledger: MemoryCapLedger, clock: Clock) -> None:
    a, b = _slots(ledger, clock, 1, "a"), _slots(ledger, clock, 1, "b")
    a.start()
    assert await a.acquire("acme")
    await a.aclose()
    assert await b.acquire("acme")


async def test_an_unreachable_ledger_raises_on_a_new_slot(ledger: MemoryCapLedger, clock: Clock) -> None:
    a = _slots(ledger, clock, 2, "a")
    assert await a.acquire("acme")
    a.release("acme")
    ledger.failure = StoreError("postgresql: ConnectionDoesNotExistError")
    assert await a.acquire("acme")  # a leased slot needs no database
    with pytest.raises(StoreError):
        await a.acquire("acme")


# -- cancellations and races ----------------------------------------------------------------------------


async def test_a_cancelled_sender_does_not_cancel_the_grant_others_wait_for(ledger: MemoryCapLedger,
                                                                           clock: Clock) -> None:
    ledger.delay = 0.02
    sends = _sends(ledger, clock, 600)
    first = asyncio.ensure_future(sends.take("acme"))
    second = asyncio.ensure_future(sends.take("acme"))
    await asyncio.sleep(0.005)
    first.cancel()
    assert await second and ledger.calls == ["take_sends"] and sends.held("acme") == 29
    await sends.aclose()  # a refill cut short by the stop leaves nothing stuck behind it
    again = _sends(ledger, clock, 600)
    refill = asyncio.ensure_future(again.take("globex"))
    await asyncio.sleep(0.005)
    for task in list(again._tasks):
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await refill
    ledger.delay = 0.0
    assert await again.take("globex")


async def test_a_cancelled_invocation_gives_back_the_slot_its_lease_got(ledger: MemoryCapLedger,
                                                                       clock: Clock) -> None:
    ledger.delay = 0.02
    a = _slots(ledger, clock, 1, "a")
    waiting = asyncio.ensure_future(a.acquire("acme"))
    await asyncio.sleep(0.005)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.03)  # the lease change finished and recorded its answer
    assert a.leased("acme") == 1 and await a.acquire("acme")  # the slot is free for the next invocation


async def test_an_invocation_starting_during_a_return_does_not_use_a_returned_slot(ledger: MemoryCapLedger,
                                                                                   clock: Clock) -> None:
    a, b = _slots(ledger, clock, 1, "a"), _slots(ledger, clock, 1, "b")
    assert await a.acquire("acme")
    a.release("acme")
    await a.maintain()  # used during this tick: kept
    ledger.delay = 0.02
    giving_back = asyncio.ensure_future(a.maintain())  # unused for a tick: given back
    await asyncio.sleep(0.005)
    starting = asyncio.ensure_future(a.acquire("acme"))
    await asyncio.sleep(0)
    assert not starting.done()  # no free slot while it is being given back: it waits to ask the ledger
    await giving_back
    assert ledger.live("acme") == {}
    ledger.delay = 0.0
    assert await starting  # leased again, after the return
    assert not await b.acquire("acme")  # one slot, one holder
