"""Refresh-ahead for the send path's per-node read caches (room rows, ban state).

Those caches are kept right by invalidation (every node forgets an entry when the room or
ban changes); their TTL only bounds staleness if an invalidation was lost.  Expiring an
entry on read made every busy entry expire at once: the entries a burst of traffic loaded
together all ran out together, and the next message of each user then waited for its own
database read while the message inserts queued behind those reads for pool connections
(at 5,000 messages/s, 200 users: ~60 ms of stalled acks every TTL).

So an entry has two times.  Until ``refresh_at`` it is simply served.  From ``refresh_at``
until ``expires_at`` (the TTL) it is still served, and the first read after ``refresh_at``
queues the key for a background reload (``Refresher``: one read at a time per cache for
all the keys due, so a burst of them never takes the database pool from the writes);
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
from itertools import islice
from typing import Generic, TypeVar

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)

#: Where ``refresh_at`` may fall, as fractions of the TTL.
REFRESH_FROM = 0.5
REFRESH_TO = 0.8

#: How long a reload waits for more keys to come due (``Refresher``).
GATHER_S = 0.25

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


class Refresher(Generic[K]):
    """Background reloads of due keys, many keys per database read.

    ``start(key)`` queues a key (once: a key already queued or being reloaded is not
    queued again).  One reload runs at a time and takes every queued key, at most
    ``max_batch``, in one ``reload_many`` call: the keys that come due while a read is
    under way share the next one.  Nobody waits for it (the entries are served meanwhile);
    a failed reload is logged and leaves its entries to expire (their next read after that
    reads the database).

    After a pause in traffic every busy entry is due at once.  One read per key (~300 at
    5,000 messages/s from 500 users in 250 rooms) cost the node ~150 µs of CPU each and
    kept several PostgreSQL backends busy next to the message inserts: acks 100-250 ms late
    for the first half second.  Batched, that is a few reads.

    In steady traffic the keys come due one at a time (their ``refresh_at`` are spread on
    purpose), so a reload starts ``gather_s`` after the first key is queued: the keys due
    meanwhile share its read.  Without it, 100 busy rooms and 200 senders cost ~100 reads
    a second, 2% of the node's CPU at 5,000 messages/s; with it, four.  An entry is due at
    least a fifth of the TTL before it expires, far more than ``gather_s``."""

    def __init__(self, what: str, reload_many: Callable[[list[K]], Awaitable[object]], *, max_batch: int = 500,
                 gather_s: float = GATHER_S) -> None:
        self._what = what
        self._reload_many = reload_many
        self._max_batch = max_batch
        self._gather_s = gather_s
        self._queued: dict[K, None] = {}  # in arrival order
        self._loading: set[K] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, key: K) -> None:
        if key in self._queued or key in self._loading:
            return
        self._queued[key] = None
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            # The keys due in this event-loop turn, and within gather_s, share the read.
            if self._gather_s > 0:
                await asyncio.sleep(self._gather_s)
            while self._queued:
                keys = list(islice(self._queued, self._max_batch))
                for key in keys:
                    del self._queued[key]
                self._loading.update(keys)
                try:
                    await self._reload_many(keys)
                except Exception as exc:  # the database is down or the node is stopping
                    log.debug("background reload of %d %s entries failed: %s", len(keys), self._what, exc)
                finally:
                    self._loading.difference_update(keys)
        finally:
            self._task = None

    @property
    def running(self) -> int:
        """Keys being reloaded now."""
        return len(self._loading)

    @property
    def waiting(self) -> int:
        """Keys queued for the next reload."""
        return len(self._queued)

    async def wait(self) -> None:
        """Wait for the reloads under way and queued (tests, shutdown)."""
        while self._task is not None:
            await asyncio.shield(self._task)
