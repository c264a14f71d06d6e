"""This node's live connections (Socket.IO sockets and, later, /ws sockets).

Only what belongs to a connection lives here: who it is and which rooms it joined.
Anything other nodes need (presence, bans, limits) lives in the shared stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..domain import Principal
from ..services.presence import GLOBAL, Connection


class Transport(Protocol):
    """How a connection enters and leaves a room's fan-out channel."""

    async def enter(self, conn: ConnState, room_id: str) -> None: ...
    async def leave(self, conn: ConnState, room_id: str) -> None: ...


@dataclass
class TypingState:
    active: bool = False
    sent_at: float = 0.0
    timer: Any = None  # asyncio.TimerHandle of the automatic stop


@dataclass
class ConnState:
    conn_id: str  # globally unique: node id + transport id
    sid: str  # transport-local id (Socket.IO sid)
    user: Principal
    transport: Transport
    address: str | None = None
    rooms: set[str] = field(default_factory=set)
    typing: dict[str, TypingState] = field(default_factory=dict)


class ConnectionRegistry:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._by_sid: dict[str, ConnState] = {}
        self._by_user: dict[str, set[str]] = {}

    def conn_id(self, sid: str) -> str:
        return f"{self.node_id}:{sid}"

    def add(self, conn: ConnState) -> None:
        self._by_sid[conn.sid] = conn
        self._by_user.setdefault(conn.user.user_id, set()).add(conn.sid)

    def get(self, sid: str) -> ConnState | None:
        return self._by_sid.get(sid)

    def remove(self, sid: str) -> ConnState | None:
        conn = self._by_sid.pop(sid, None)
        if conn is not None:
            sids = self._by_user.get(conn.user.user_id)
            if sids is not None:
                sids.discard(sid)
                if not sids:
                    del self._by_user[conn.user.user_id]
        return conn

    def __len__(self) -> int:
        return len(self._by_sid)

    def __iter__(self) -> Iterator[ConnState]:
        return iter(list(self._by_sid.values()))

    def sids_of(self, user_id: str) -> list[str]:
        """This node's connection ids of ``user_id`` (all transports)."""
        return list(self._by_user.get(user_id, ()))

    def presence_entries(self) -> list[Connection]:
        """Every (room, user, connection) this node holds, for the presence heartbeat."""
        entries: list[Connection] = []
        for conn in self._by_sid.values():
            entries.append(Connection(GLOBAL, conn.user.user_id, conn.conn_id))
            entries.extend(Connection(room, conn.user.user_id, conn.conn_id) for room in conn.rooms)
        return entries
