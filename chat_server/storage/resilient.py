"""Keep serving when Redis is down.

Redis carries presence, stats gates and fan-out; PostgreSQL carries what users must not
lose.  While Redis is unreachable, sends are still stored and acknowledged (the Socket.IO
manager keeps delivering on this node and logs its publish failures); what Redis backs
degrades instead of failing the request: presence answers from this node's last known
view, and every failure is logged (rate-limited so an outage does not flood the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from ..services.presence import Connection, MemoryPresenceStore, PresenceStore

log = logging.getLogger(__name__)


class OutageLog:
    """Logs a dependency failure at most once per ``every_s`` (with a count)."""

    def __init__(self, what: str, every_s: float = 10.0) -> None:
        self._what = what
        self._every = every_s
        self._last = 0.0
        self._suppressed = 0

    def failed(self, operation: str, exc: BaseException) -> None:
        """Record a failure (logged now, or counted into the next report)."""
        now = time.monotonic()
        if now - self._last >= self._every:
            extra = f" ({self._suppressed} more failures since last report)" if self._suppressed else ""
            log.error("%s unavailable during %s: %s%s; degrading", self._what, operation, exc, extra)
            self._last = now
            self._suppressed = 0
        else:
            self._suppressed += 1


class FailSoftPresence:
    """A Redis presence store that falls back to a node-local mirror while Redis fails.

    Every change is applied to the local mirror as well, so during an outage this node
    still knows its own users; when Redis answers again, the heartbeat re-registers all
    live connections there (``refresh`` re-adds what Redis lost).
    """

    def __init__(self, primary: PresenceStore, mirror: MemoryPresenceStore) -> None:
        self._primary = primary
        self._mirror = mirror
        self._outage = OutageLog("Redis (presence)")
        self._info: dict[tuple[str, str], dict[str, Any]] = {}
        self._degraded = False  # set by a failure: the next heartbeat re-registers everything

    async def add(self, room_id: str, user: dict[str, Any], conn_id: str) -> bool:
        local_first = await self._mirror.add(room_id, user, conn_id)
        self._info[(room_id, conn_id)] = dict(user)
        try:
            return await self._primary.add(room_id, user, conn_id)
        except RedisError as exc:
            self._degraded = True
            self._outage.failed("presence add", exc)
            return local_first

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        local_last = await self._mirror.remove(room_id, user_id, conn_id)
        self._info.pop((room_id, conn_id), None)
        try:
            return await self._primary.remove(room_id, user_id, conn_id)
        except RedisError as exc:
            self._degraded = True
            self._outage.failed("presence remove", exc)
            return local_last

    async def refresh(self, connections: Iterable[Connection]) -> list[Connection]:
        entries = list(connections)
        await self._mirror.refresh(entries)
        try:
            if self._degraded:
                # After an outage: re-adding is idempotent and restores what Redis lost
                # (a restarted Redis keeps nothing).
                for c in entries:
                    info = self._info.get((c.room_id, c.conn_id))
                    if info is not None:
                        await self._primary.add(c.room_id, info, c.conn_id)
                self._degraded = False
                log.info("Redis (presence) is back; re-registered %d connection entries", len(entries))
            return await self._primary.refresh(entries)
        except RedisError as exc:
            self._degraded = True
            self._outage.failed("presence heartbeat", exc)
            return []

    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        try:
            return await self._primary.online(room_id, limit)
        except RedisError as exc:
            self._outage.failed("presence online", exc)
            return await self._mirror.online(room_id, limit)

    async def count(self, room_id: str) -> int:
        try:
            return await self._primary.count(room_id)
        except RedisError as exc:
            self._outage.failed("presence count", exc)
            return await self._mirror.count(room_id)

    async def is_online(self, room_id: str, user_id: str) -> bool:
        try:
            return await self._primary.is_online(room_id, user_id)
        except RedisError as exc:
            self._outage.failed("presence lookup", exc)
            return await self._mirror.is_online(room_id, user_id)

    async def sweep(self, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
        # Only the shared store knows other nodes' users; the mirror holds this node's own,
        # which its heartbeat keeps alive.  While Redis fails there is nothing to sweep.
        try:
            return await self._primary.sweep(limit)
        except RedisError as exc:
            self._outage.failed("presence sweep", exc)
            return []
