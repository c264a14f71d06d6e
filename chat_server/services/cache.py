"""Refresh-ahead for the send path's per-node read caches (room rows, ban state).

Those caches are kept right by invalidation (every node forgets an entry when the room or
ban changes); their TTL only bounds staleness if an invalidation was lost.  Expiring an
entry on read made every busy entry expire at once: the entries a burst of traffic loaded
together all ran out together, and the next message of each user then waited for its own
database read while the message inserts queued behind those reads for pool connections
(at 5,000 messages/s, 200 users: ~60 ms of stalled acks every TTL).

So an entry has two times.  Until ``refresh_at`` it is simply served.  From ``refresh_at``
until ``expires_at`` (the TTL) it is still served, and the first read after ``refresh_at``
starts one background reload (``Refresher``: at most one per key at a time, at most two
per cache at once, so a burst of them never takes the database pool from the writes);
nobody waits.  Only an entry nobody read for a whole TTL expires, and its next read waits
for the database as before.  ``refresh_at`` falls at a random point between half and four
fifths of the TTL, so entries loaded together are refreshed apart.  Staleness stays
bounded by the TTL: an entry is never served after ``expires_at``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

V = TypeVar("V")

log = logging.getLogger(__name__)

#: Where ``refresh_at`` may fall, as fractions of the TTL.
REFRESH_FROM = 0.5
REFRESH_TO = 0.8

#: What a read finds (``Freshness.state``).
FRESH, DUE, EXPIRED = 0, 1, 2


class Freshness:
    """When a cached entry should be reloaded and when it must no longer be served
    (``clock`` is monotonic; ``rng`` returns a float in [0, 1))."""

    __slots__ = ("ttl_s", "_clock", "_rng")

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._rng = rng

    def stamp(self) -> tuple[float, float]:
        """``(refresh_at, expires_at)`` for an entry loaded now."""
        now = self._clock()
        ttl = self.ttl_s
        return now + ttl * (REFRESH_FROM + (REFRESH_TO - REFRESH_FROM) * self._rng()), now + ttl

    def state(self, refresh_at: float, expires_at: float) -> int:
        now = self._clock()
        if now < refresh_at:
            return FRESH
        return DUE if now < expires_at else EXPIRED

    def entry(self, value: V) -> tuple[float, float, V]:
        """A cache entry for ``value`` loaded now: ``(refresh_at, expires_at, value)``."""
        return (*self.stamp(), value)

    def read(self, entry: tuple[float, float, V] | None) -> tuple[V | None, bool]:
        """What a read of ``entry`` (None: not cached) gives: the value (None when missing
        or expired) and whether it is due a reload."""
        if entry is None:
            return None, False
        state = self.state(entry[0], entry[1])
        if state == EXPIRED:
            return None, False
        return entry[2], state == DUE


class Refresher:
    """Background reloads, at most one per key at a time and at most ``max_running`` at once
    (the others wait their turn, still served from the cache meanwhile); a failed reload is
    logged and leaves the entry to expire (its next read after that reads the database).

    The bound matters after a pause in traffic: every entry read again is due at once, and
    hundreds of reloads started together took the database pool from the message inserts
    (at 5,000 messages/s after a 2.5 s pause: acks 150 ms late on average for ~0.5 s)."""

    def __init__(self, what: str, *, max_running: int = 2) -> None:
        self._what = what
        self._max_running = max_running
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._waiting: dict[Hashable, Callable[[], Awaitable[object]]] = {}  # in arrival order

    def start(self, key: Hashable, reload: Callable[[], Awaitable[object]]) -> None:
        if key in self._running or key in self._waiting:
            return
        if len(self._running) >= self._max_running:
            self._waiting[key] = reload
            return
        self._running[key] = asyncio.ensure_future(self._run(key, reload))

    async def _run(self, key: Hashable, reload: Callable[[], Awaitable[object]]) -> None:
        try:
            await reload()
        except Exception as exc:  # the database is down or the node is stopping
            log.debug("background reload of %s %r failed: %s", self._what, key, exc)
        finally:
            self._running.pop(key, None)
            if self._waiting and len(self._running) < self._max_running:
                next_key = next(iter(self._waiting))
                self._running[next_key] = asyncio.ensure_future(self._run(next_key, self._waiting.pop(next_key)))

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def wait(self) -> None:
        """Wait for the reloads under way and queued (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
