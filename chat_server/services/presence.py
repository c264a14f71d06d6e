"""Presence: who is online in a room, counted per connection.

A user is online in a room while any of their connections (on any node) is there.
``add`` reports the first connection and ``remove`` the last, so several tabs do not
make ``user_joined``/``user_left`` flap.  Every connection entry carries an expiry
that the owning node refreshes (heartbeat); a node that dies stops counting once its
entries expire.  The in-memory store here and the Redis store
(``storage.presence_redis``) implement the same protocol and pass one contract test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

GLOBAL = "*"  # pseudo-room: presence across the whole service (for `presence` events)


def public_info_of(user_id: str) -> dict[str, Any]:
    """What a departure is announced with when the user's stored public info is gone."""
    return {"user_id": user_id, "username": user_id, "avatar": None}


@dataclass(frozen=True)
class Connection:
    room_id: str
    user_id: str
    conn_id: str


class PresenceStore(Protocol):
    async def add(self, room_id: str, user: dict[str, Any], conn_id: str) -> bool:
        """Register a connection; True when it is the user's first live one in the room."""

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        """Unregister a connection; True when it was the user's last live one."""

    async def refresh(self, connections: Iterable[Connection]) -> list[Connection]:
        """Extend the expiry of connections this node still holds (heartbeat); returns those
        the store no longer has (removed meanwhile, or swept while this node stalled)."""

    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Public info of online users (at most ``limit``)."""

    async def count(self, room_id: str) -> int:
        """How many distinct users are online in the room."""

    async def is_online(self, room_id: str, user_id: str) -> bool: ...

    async def sweep(self, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
        """Take out users none of whose connections is live any more although none was
        removed (their node stopped refreshing them: it died) and return ``(room_id,
        public info)`` of each, at most ``limit``: once across all nodes, so exactly one
        node announces each departure."""


class MemoryPresenceStore:
    """Single-node presence; same semantics as the Redis store."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._clock = clock
        # room -> user -> conn -> expiry
        self._conns: dict[str, dict[str, dict[str, float]]] = {}
        self._info: dict[str, dict[str, dict[str, Any]]] = {}
        # room -> (users online, until when that is exact: the earliest moment one of them
        # can go offline).  Every join asks for the count (and the online list); scanning
        # the room each time made a wave of joins quadratic (a third of the server's CPU
        # for 1,000 clients joining one room).  ``add`` and ``remove`` keep it exact; a
        # refresh or a sweep makes the next ``count`` scan again.
        self._counts: dict[str, tuple[int, float]] = {}

    def _live(self, room_id: str, user_id: str) -> dict[str, float]:
        now = self._clock()
        users = self._conns.get(room_id, {})
        conns = users.get(user_id, {})
        for conn_id in [c for c, exp in conns.items() if exp <= now]:
            del conns[conn_id]
        return conns

    async def add(self, room_id: str, user: dict[str, Any], conn_id: str) -> bool:
        user_id = user["user_id"]
        conns = self._live(room_id, user_id)
        first = not any(c != conn_id for c in conns)
        was_live = bool(conns)
        conns = self._conns.setdefault(room_id, {}).setdefault(user_id, {})
        conns[conn_id] = self._clock() + self._ttl
        self._info.setdefault(room_id, {})[user_id] = dict(user)
        self._recount(room_id, was_live, conns)
        return first

    def _recount(self, room_id: str, was_live: bool, conns: dict[str, float]) -> None:
        """Keep the room's count exact after one user's connections changed."""
        counted = self._counts.get(room_id)
        if counted is None:
            return
        now = self._clock()
        live = [exp for exp in conns.values() if exp > now]
        self._counts[room_id] = (counted[0] + bool(live) - was_live, min(counted[1], max(live)) if live else counted[1])

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        users = self._conns.get(room_id, {})
        conns = users.get(user_id)
        if not conns or conn_id not in conns:
            return False
        was_live = bool(self._live(room_id, user_id))
        conns.pop(conn_id, None)
        self._recount(room_id, was_live, conns)
        if self._live(room_id, user_id):
            return False
        users.pop(user_id, None)
        self._info.get(room_id, {}).pop(user_id, None)
        if not users:
            self._conns.pop(room_id, None)
            self._info.pop(room_id, None)
            self._counts.pop(room_id, None)
        return True

    async def refresh(self, connections: Iterable[Connection]) -> list[Connection]:
        expiry = self._clock() + self._ttl
        gone: list[Connection] = []
        for c in connections:
            self._counts.pop(c.room_id, None)  # a lapsed connection may live again
            conns = self._conns.get(c.room_id, {}).get(c.user_id)
            if conns is not None and c.conn_id in conns:
                conns[c.conn_id] = expiry
            else:
                gone.append(c)
        return gone

    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        now = self._clock()
        info = self._info.get(room_id, {})
        found: list[dict[str, Any]] = []
        for user_id, conns in self._conns.get(room_id, {}).items():
            if len(found) >= limit:
                break
            if user_id in info and any(exp > now for exp in conns.values()):
                found.append(dict(info[user_id]))
        return found

    async def count(self, room_id: str) -> int:
        now = self._clock()
        counted = self._counts.get(room_id)
        if counted is not None and now < counted[1]:
            return counted[0]
        # Each user is online until the last of their connections expires.
        until = [u for u in (max(conns.values(), default=0.0) for conns in self._conns.get(room_id, {}).values()) if u > now]
        if room_id in self._conns:
            self._counts[room_id] = (len(until), min(until, default=math.inf))
        return len(until)

    async def is_online(self, room_id: str, user_id: str) -> bool:
        return bool(self._live(room_id, user_id))

    async def sweep(self, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
        # Runs on every heartbeat over every entry of the node: the newest expiry per user,
        # without pruning each user's list (a single node refreshed its own entries just
        # before, so usually none is due).
        now = self._clock()
        departed: list[tuple[str, dict[str, Any]]] = []
        self._counts.clear()
        for room_id, users in list(self._conns.items()):
            due = [user_id for user_id, conns in users.items() if not conns or max(conns.values()) <= now]
            for user_id in due:
                if len(departed) >= limit:
                    return departed
                del users[user_id]
                info = self._info.get(room_id, {}).pop(user_id, None) or public_info_of(user_id)
                departed.append((room_id, dict(info)))
            if not users:
                self._conns.pop(room_id, None)
                self._info.pop(room_id, None)
        return departed
