"""The change ring that lets processes sharing a SQLite file hear each other's writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from wasmhost.store import Change, ChangeRelay, LocalChangeFeed
from wasmhost.store import relay as relay_module


def _pair(tmp_path: Path) -> tuple[ChangeRelay, list[Change], ChangeRelay, list[Change]]:
    ring = tmp_path / "db-changes"
    feed_a, feed_b = LocalChangeFeed(), LocalChangeFeed()
    seen_a: list[Change] = []
    seen_b: list[Change] = []
    feed_a.subscribe(seen_a.append)
    feed_b.subscribe(seen_b.append)
    return ChangeRelay(ring, feed_a), seen_a, ChangeRelay(ring, feed_b), seen_b


def test_a_change_reaches_the_other_process_once_and_is_not_echoed(tmp_path: Path) -> None:
    a, seen_a, b, seen_b = _pair(tmp_path)
    a.feed.publish(Change("acme", "api_key", "key_1"))
    a.feed.publish(Change("acme", "function", "f" * 600))  # too long for a slot: the namespace's functions
    assert b.poll() == 2
    assert seen_b == [Change("acme", "api_key", "key_1"), Change("acme", "function", "")]
    assert a.poll() == 0 and len(seen_a) == 2  # its own entries are skipped
    assert b.poll() == 0  # nothing new; and b did not append what it relayed
    assert a.poll() == 0
    b.close()
    a.close()


def test_the_device_counter_moves_on_device_changes_only_in_every_process(tmp_path: Path) -> None:
    a, _, b, _ = _pair(tmp_path)
    start = b.device_sequence()
    a.feed.publish(Change("acme", "deliveries"))
    a.feed.publish(Change("acme", "api_key", "key_1"))
    assert b.device_sequence() == start and b.sequence() == a.sequence()
    a.feed.publish(Change("acme", "device", "row-1"))
    assert b.device_sequence() == start + 1  # at once: no poll needed
    a.feed.publish(Change.everything())
    assert b.device_sequence() == start + 2
    a.feed.publish(Change("n" * 300, "webhook"))  # too long for a slot: announced as everything
    assert b.device_sequence() == start + 3
    b.close()
    a.close()


def test_a_reader_that_fell_behind_drops_everything(tmp_path: Path) -> None:
    a, _, b, seen_b = _pair(tmp_path)
    for i in range(relay_module.SLOTS + 5):
        a.feed.publish(Change("acme", "device", str(i)))
    assert b.poll() == 1 and seen_b == [Change.everything()]
    a.feed.publish(Change("acme", "auth"))
    assert b.poll() == 1 and seen_b[-1] == Change("acme", "auth")
    a.close()
    b.close()


def test_a_new_process_starts_at_the_end_and_a_corrupt_file_is_reset(tmp_path: Path) -> None:
    ring = tmp_path / "db-changes"
    ring.write_bytes(b"garbage")
    feed = LocalChangeFeed()
    first = ChangeRelay(ring, feed)
    feed.publish(Change("acme", "auth"))
    late_feed = LocalChangeFeed()
    late = ChangeRelay(ring, late_feed)
    assert late.poll() == 0  # history before it opened is not its business
    first.close()
    late.close()


def test_a_ring_started_again_moves_every_counter_forward_and_its_readers_drop_everything(tmp_path: Path) -> None:
    """An earlier release's ring (format WHC1: no device counter) is started again past its counter; a
    process still reading a ring whose counter went back (an earlier release started it again) drops
    everything rather than skip what was written meanwhile."""
    import struct

    ring = tmp_path / "db-changes"
    ring.write_bytes(struct.pack("<IIQ", 0x57484331, relay_module.SLOTS, 5000).ljust(relay_module.SIZE, b"\0"))
    feed = LocalChangeFeed()
    seen: list[Change] = []
    feed.subscribe(seen.append)
    reader = ChangeRelay(ring, feed)
    assert reader.sequence() > 5000 + relay_module.SLOTS and reader.device_sequence() > 5000
    with open(ring, "r+b") as f:  # an earlier release opens the file and starts it again at 1
        f.write(struct.pack("<IIQ", 0x57484331, relay_module.SLOTS, 1))
    assert reader.poll() == 1 and seen == [Change.everything()]
    reader.close()


async def test_the_poller_publishes_within_a_few_polls(tmp_path: Path) -> None:
    a, _, b, seen_b = _pair(tmp_path)
    b.start()
    a.feed.publish(Change("acme", "credentials", "apns"))
    for _ in range(100):
        if seen_b:
            break
        await asyncio.sleep(relay_module.POLL_SECONDS)
    assert seen_b == [Change("acme", "credentials", "apns")]
    b.close()
    a.close()
