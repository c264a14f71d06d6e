"""``RoomStatsCoalescer``: the rooms due in a tick are read together (one source call, so
one database round trip, for all of them) and each is announced with its own stats."""

from __future__ import annotations

from typing import Any

from chat_server.realtime.room_stats import MemoryGate, RoomStatsCoalescer, StatsSource
from tests.conftest import FakeClock


class Announced:
    """A sink that records each announcement, in order."""

    def __init__(self) -> None:
        self.rooms: list[str] = []
        self.stats: dict[str, dict[str, Any]] = {}

    async def __call__(self, room_id: str, stats: dict[str, Any]) -> None:
        self.rooms.append(room_id)
        self.stats[room_id] = stats


def coalescer_of(source: StatsSource) -> tuple[FakeClock, RoomStatsCoalescer]:
    """A coalescer with a one-second interval on a hand-driven clock."""
    clock = FakeClock()
    return clock, RoomStatsCoalescer(MemoryGate(clock), source, interval_s=1.0)


async def test_rooms_due_together_are_read_in_one_call_and_announced_each() -> None:
    calls: list[list[str]] = []

    async def source(room_ids: list[str]) -> dict[str, dict[str, Any]]:
        calls.append(sorted(room_ids))
        return {room_id: {"message_count": len(room_id)} for room_id in room_ids}

    sink = Announced()
    clock, coalescer = coalescer_of(source)
    for room_id in ("a", "bb", "ccc"):
        coalescer.touch(room_id)
    await coalescer.flush(sink)
    assert calls == [["a", "bb", "ccc"]]
    assert sink.stats == {"a": {"message_count": 1}, "bb": {"message_count": 2}, "ccc": {"message_count": 3}}

    coalescer.touch("a")  # within the interval: held back, announced once the gate opens
    await coalescer.flush(sink)
    assert len(calls) == 1
    clock.advance(1.1)
    await coalescer.flush(sink)
    assert calls[-1] == ["a"]


async def test_a_failed_read_is_retried() -> None:
    failures = [RuntimeError("database down")]

    async def source(room_ids: list[str]) -> dict[str, dict[str, Any]]:
        if failures:
            raise failures.pop()
        return {room_id: {"message_count": 7} for room_id in room_ids}

    sink = Announced()
    clock, coalescer = coalescer_of(source)
    coalescer.touch("room")
    await coalescer.flush(sink)
    assert sink.rooms == []
    clock.advance(1.1)
    await coalescer.flush(sink)
    assert sink.rooms == ["room"]


async def test_many_rooms_due_together_are_spread_over_the_ticks_of_an_interval() -> None:
    """250 rooms that became busy together are not all announced in one tick (a stall of
    the event loop every interval): each tick takes about a quarter, each room still once."""
    from chat_server.realtime import room_stats

    calls: list[int] = []

    async def source(room_ids: list[str]) -> dict[str, dict[str, Any]]:
        calls.append(len(room_ids))
        return {room_id: {"message_count": 1} for room_id in room_ids}

    sink = Announced()
    clock, coalescer = coalescer_of(source)
    rooms = [f"r{i}" for i in range(250)]
    for room_id in rooms:
        coalescer.touch(room_id)
    for _ in range(room_stats.TICKS_PER_INTERVAL + 1):
        await coalescer.flush(sink)
        clock.advance(0.25)
        for room_id in rooms:  # still busy: touched again between ticks
            coalescer.touch(room_id)
    assert max(calls[:4]) <= 63 and sum(calls[:4]) == 250
    assert sorted(sink.rooms[:250]) == sorted(rooms)  # each room once in the interval
