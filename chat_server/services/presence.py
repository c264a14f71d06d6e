"""Presence: who is online in a room, counted per connection.

A user is online in a room while any of their connections (on any node) is there.
``add`` reports the first connection and ``remove`` the last, so several tabs do not
make ``user_joined``/``user_left`` flap.  Every connection entry carries an expiry
that the owning node refreshes (heartbeat); a node that dies stops counting once its
entries expire.  The in-memory store here and the Redis store
(``storage.presence_redis``) implement the same protocol and pass one contract test.
"""

from __future__ import annotations

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
        self._conns.setdefault(room_id, {}).setdefault(user_id, {})[conn_id] = self._clock() + self._ttl
        self._info.setdefault(room_id, {})[user_id] = dict(user)
        return first

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        users = self._conns.get(room_id, {})
        conns = users.get(user_id)
        if not conns or conn_id not in conns:
            return False
        del conns[conn_id]
        if self._live(room_id, user_id):
            return False
        users.pop(user_id, None)
        self._info.get(room_id, {}).pop(user_id, None)
        if not users:
            self._conns.pop(room_id, None)
            self._info.pop(room_id, None)
        return True

    async def refresh(self, connections: Iterable[Connection]) -> list[Connection]:
        expiry = self._clock() + self._ttl
        gone: list[Connection] = []
        for c in connections:
            conns = self._conns.get(c.room_id, {}).get(c.user_id)
            if conns is not None and c.conn_id in conns:
                conns[c.conn_id] = expiry
            else:
                gone.append(c)
        return gone

    def _online_ids(self, room_id: str) -> list[str]:
        return [u for u in list(self._conns.get(room_id, {})) if self._live(room_id, u)]

    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        info = self._info.get(room_id, {})
        return [dict(info[u]) for u in self._online_ids(room_id)[:limit] if u in info]

    async def count(self, room_id: str) -> int:
        return len(self._online_ids(room_id))

    async def is_online(self, room_id: str, user_id: str) -> bool:
        return bool(self._live(room_id, user_id))

    async def sweep(self, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
        # Runs on every heartbeat over every entry of the node: the newest expiry per user,
        # without pruning each user's list (a single node refreshed its own entries just
        # before, so usually none is due).
        now = self._clock()
        departed: list[tuple[str, dict[str, Any]]] = []
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
