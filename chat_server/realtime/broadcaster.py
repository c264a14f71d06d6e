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

from ..domain import Message, Room
from .manager import skip_user
from .room_stats import RoomStatsCoalescer

log = logging.getLogger(__name__)


def room_channel(room_id: str) -> str:
    """Socket.IO room that carries a chat room's events (prefixed so that a chat room
    named like a user channel cannot collide with it)."""
    return f"r:{room_id}"


#: Socket.IO room that no connection joins: events sent to it only reach each node's
#: local delivery hook (control messages on the same bus, in order with everything else).
MODERATION_CHANNEL = "sys:moderation"


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
        if message.metadata.get("shadow"):
            # Shadow ban: only the author's own sockets see it, as if it had been sent.
            await self._emit("new_message", message.to_dict(), to=user_channel(message.user_id))
            return
        await self._emit("new_message", message.to_dict(), to=room_channel(message.room_id))
        self.room_activity(message.room_id)

    async def mentioned(self, user_id: str, message: Message) -> None:
        if message.metadata.get("shadow"):
            return
        await self._emit("mentioned", message.to_dict(), to=user_channel(user_id))

    async def message_reaction(self, message: Message, reactions: dict[str, int], *, user_id: str, reaction: str, action: str) -> None:
        payload = {"room_id": message.room_id, "message_id": message.message_id, "reactions": reactions,
                   "user_id": user_id, "reaction": reaction, "action": action}
        to = user_channel(message.user_id) if message.metadata.get("shadow") else room_channel(message.room_id)
        await self._emit("message_reaction", payload, to=to)

    async def room_updated(self, room: Room) -> None:
        # The room's term lists are moderation configuration, not something every viewer
        # needs (or should learn to evade): they stay out of the event.
        settings = {k: v for k, v in room.settings.items() if k not in ("blocked_terms", "allowed_terms")}
        await self._emit("room_updated", {"room_id": room.id, "name": room.name, "settings": settings}, to=room_channel(room.id))

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

    # --- moderation (services/moderation.py; node-local effects in moderation_relay.py) ---

    async def message_updated(self, message: Message) -> None:
        to = user_channel(message.user_id) if message.metadata.get("shadow") else room_channel(message.room_id)
        await self._emit("message_updated", message.to_dict(), to=to)

    async def message_deleted(self, room_id: str, message_id: str, seq: int, *, only_user: str | None = None) -> None:
        payload = {"room_id": room_id, "message_id": message_id, "seq": seq}
        await self._emit("message_deleted", payload, to=user_channel(only_user) if only_user else room_channel(room_id))

    async def banned(self, user_id: str, payload: dict[str, Any]) -> None:
        """``banned {room_id, until, reason}`` to every socket of the user, on every node;
        each node removes its sockets of the user from the room before delivering it."""
        await self._emit("banned", payload, to=user_channel(user_id))

    async def unbanned(self, user_id: str, payload: dict[str, Any]) -> None:
        await self._emit("unbanned", payload, to=user_channel(user_id))

    async def moderation_changed(self, change: dict[str, Any]) -> None:
        """A ban or block changed: every node's local delivery hook sees this (ban-cache
        invalidation, block index); no connection joins the channel, so no client does."""
        await self._emit("moderation_changed", change, to=MODERATION_CHANNEL)
