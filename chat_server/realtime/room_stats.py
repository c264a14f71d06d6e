"""Coalesced ``room_stats``: at most about one per interval per room, across all nodes.

Activity marks a room dirty; a ticker on every node tries to take the room's gate (a
Redis ``SET NX PX`` when Redis is configured, a local timestamp otherwise).  Whoever
takes it computes fresh stats and publishes them; the others keep the room dirty and try
again, so the last change is always announced (trailing edge) and a busy room yields
one event per interval however many messages or nodes it has.

The ticker runs ``TICKS_PER_INTERVAL`` times per interval and takes about that share of
the dirty rooms each time, and hands the event loop back every ``ANNOUNCE_SLICE``
announcements.  Rooms that became busy together would otherwise all come due in the same
tick, every interval: with 250 busy rooms one tick announced 250 events in one go, a
stall of tens of milliseconds every second that held up every message's ack behind it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from ..storage.resilient import OutageLog

log = logging.getLogger(__name__)


class Gate(Protocol):
    async def try_acquire(self, key: str, interval_ms: int) -> bool: ...


class MemoryGate:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock

    async def try_acquire(self, key: str, interval_ms: int) -> bool:
        now = self._clock()
        if self._until.get(key, 0.0) > now:
            return False
        self._until[key] = now + interval_ms / 1000
        if len(self._until) > 10_000:  # forget rooms that went quiet
            self._until = {k: v for k, v in self._until.items() if v > now}
        return True


class RedisGate:
    """Shared across nodes; while Redis fails, gates locally (stats keep flowing on this
    node, at most one per interval) and logs the outage."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._local = MemoryGate()
        self._outage = OutageLog("Redis (stats gate)")

    async def try_acquire(self, key: str, interval_ms: int) -> bool:
        try:
            return bool(await self._redis.set(f"{self._prefix}:gate:{key}", "1", nx=True, px=interval_ms))
        except RedisError as exc:
            self._outage.failed("room_stats gate", exc)
            return await self._local.try_acquire(key, interval_ms)


#: Ticks per interval, and the fewest rooms a tick takes (when that many are due).
TICKS_PER_INTERVAL = 4
MIN_ROOMS_PER_TICK = 16
#: Announcements between two turns of the event loop.
ANNOUNCE_SLICE = 8

#: The stats of several rooms at once (room id -> stats): one database round trip for all
#: the rooms due in a tick, not one per room.
StatsSource = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
StatsSink = Callable[[str, dict[str, Any]], Awaitable[None]]


class RoomStatsCoalescer:
    def __init__(self, gate: Gate, source: StatsSource, *, interval_s: float = 1.0) -> None:
        self._gate = gate
        self._source = source
        self._interval = interval_s
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def touch(self, room_id: str) -> None:
        self._dirty.add(room_id)
        self._wake.set()

    async def flush(self, sink: StatsSink) -> None:
        interval_ms = max(1, int(self._interval * 1000))
        budget = max(MIN_ROOMS_PER_TICK, math.ceil(len(self._dirty) / TICKS_PER_INTERVAL))
        due: list[str] = []
        for room_id in list(self._dirty):
            if len(due) >= budget:
                break  # the rest stay dirty: the next ticks take them
            try:
                if not await self._gate.try_acquire(f"stats:{room_id}", interval_ms):
                    continue
            except Exception:
                log.exception("room_stats gate for %s failed; will retry", room_id)
                continue
            self._dirty.discard(room_id)
            due.append(room_id)
        if not due:
            return
        try:
            stats = await self._source(due)
        except Exception:
            log.exception("room_stats of %d rooms failed; will retry", len(due))
            self._dirty.update(due)
            return
        for n, room_id in enumerate(due):
            if n and n % ANNOUNCE_SLICE == 0:
                await asyncio.sleep(0)  # let acks and inserts through between slices
            try:
                await sink(room_id, stats[room_id])
            except Exception:
                log.exception("room_stats for %s failed", room_id)

    async def run(self, sink: StatsSink) -> None:
        tick = self._interval / TICKS_PER_INTERVAL
        while True:
            await self._wake.wait()
            await self.flush(sink)
            if not self._dirty:
                self._wake.clear()
            await asyncio.sleep(tick)
