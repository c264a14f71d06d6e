"""The one module that emits server events (PROTOCOL.md §2 "Server → client events").

Every event reaches the clients of a room (or a user) on every node: the Socket.IO
client manager (in-process, or Redis when configured) carries it.  Services call the
methods here after their writes commit; nothing else calls ``emit``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import socketio

from ..domain import Message
from .manager import skip_user
from .room_stats import RoomStatsCoalescer

log = logging.getLogger(__name__)


def room_channel(room_id: str) -> str:
    """Socket.IO room that carries a chat room's events (prefixed so that a chat room
    named like a user channel cannot collide with it)."""
    return f"r:{room_id}"


def user_channel(user_id: str) -> str:
    """Socket.IO room joined by every socket of a user, on every node."""
    return f"u:{user_id}"


class Broadcaster:
    def __init__(self, sio: socketio.AsyncServer, stats: RoomStatsCoalescer) -> None:
        self._sio = sio
        self._stats = stats

    async def _emit(self, event: str, payload: Any, *, to: str, skip_sid: str | list[str] | None = None) -> None:
        await self._sio.emit(event, payload, to=to, skip_sid=skip_sid)

    def room_activity(self, room_id: str) -> None:
        """Something that changes a room's stats happened; a coalesced update will follow."""
        self._stats.touch(room_id)

    async def message_created(self, message: Message) -> None:
        await self._emit("new_message", message.to_dict(), to=room_channel(message.room_id))
        self.room_activity(message.room_id)

    async def mentioned(self, user_id: str, message: Message) -> None:
        await self._emit("mentioned", message.to_dict(), to=user_channel(user_id))

    async def message_reaction(self, message: Message, reactions: dict[str, int], *, user_id: str, reaction: str, action: str) -> None:
        payload = {"room_id": message.room_id, "message_id": message.message_id, "reactions": reactions,
                   "user_id": user_id, "reaction": reaction, "action": action}
        await self._emit("message_reaction", payload, to=room_channel(message.room_id))

    async def user_joined(self, room_id: str, user: dict[str, Any]) -> None:
        payload = {"room_id": room_id, "user_id": user["user_id"], "username": user["username"], "avatar": user.get("avatar")}
        await self._emit("user_joined", payload, to=room_channel(room_id))
        self.room_activity(room_id)

    async def user_left(self, room_id: str, user: dict[str, Any]) -> None:
        payload = {"room_id": room_id, "user_id": user["user_id"], "username": user["username"]}
        await self._emit("user_left", payload, to=room_channel(room_id))
        self.room_activity(room_id)

    async def user_typing(self, room_id: str, user: dict[str, Any], is_typing: bool) -> None:
        """To the room except every connection of the typist (all tabs, all nodes)."""
        payload = {"room_id": room_id, "user_id": user["user_id"], "username": user["username"], "is_typing": is_typing}
        await self._emit("user_typing", payload, to=room_channel(room_id), skip_sid=[skip_user(user["user_id"])])

    async def room_stats(self, room_id: str, stats: dict[str, Any]) -> None:
        await self._emit("room_stats", {"room_id": room_id, **stats}, to=room_channel(room_id))

    async def presence(self, user_id: str, status: str, room_ids: Iterable[str]) -> None:
        payload = {"user_id": user_id, "status": status}
        for room_id in room_ids:
            await self._emit("presence", payload, to=room_channel(room_id))

    async def to_user(self, user_id: str, event: str, payload: Any) -> None:
        await self._emit(event, payload, to=user_channel(user_id))
