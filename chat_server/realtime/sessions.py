"""What a live connection does, independent of its transport (Socket.IO or /ws).

Joining, leaving, sending, typing and disconnecting go through here, so a rule applies
to every transport without being copied.  Business rules stay in the services; this
module adds what only exists for live connections: room channels and presence.
"""

from __future__ import annotations

import logging
from typing import Any

from ..domain import Message, Principal
from ..errors import NotInRoom, Unauthorized
from ..services.messages import MessageService
from ..services.presence import GLOBAL, PresenceStore
from ..services.rooms import RoomService, check_room_id
from .broadcaster import Broadcaster
from .connections import ConnectionRegistry, ConnState

log = logging.getLogger(__name__)

ONLINE_LIST_LIMIT = 100


class ChatSessions:
    def __init__(
        self,
        *,
        rooms: RoomService,
        messages: MessageService,
        presence: PresenceStore,
        broadcaster: Broadcaster,
        registry: ConnectionRegistry,
    ) -> None:
        self._rooms = rooms
        self._messages = messages
        self._presence = presence
        self._broadcaster = broadcaster
        self._registry = registry

    @property
    def registry(self) -> ConnectionRegistry:
        return self._registry

    async def connected(self, conn: ConnState) -> None:
        self._registry.add(conn)
        await self._presence.add(GLOBAL, conn.user.public(), conn.conn_id)

    async def join(self, conn: ConnState, room_id: str, *, since_seq: int | None = None, token_user: Principal | None = None) -> dict[str, Any]:
        if token_user is not None and token_user.user_id != conn.user.user_id:
            raise Unauthorized()
        room = await self._rooms.join(conn.user, room_id)
        # Enter the fan-out channel before reading history: a message committed in
        # between arrives both live and in history, and clients dedupe by message_id.
        await conn.transport.enter(conn, room.id)
        try:
            page = await self._messages.recent(conn.user, room.id, since_seq=since_seq)
        except Exception:
            if room.id not in conn.rooms:
                await conn.transport.leave(conn, room.id)
            raise
        if room.id not in conn.rooms:
            conn.rooms.add(room.id)
            first = await self._presence.add(room.id, conn.user.public(), conn.conn_id)
            if first:
                await self._broadcaster.user_joined(room.id, conn.user.public())
        self._broadcaster.room_activity(room.id)
        online = await self._presence.online(room.id, limit=ONLINE_LIST_LIMIT)
        return {
            "room": room.to_dict(),
            "history": [m.to_dict() for m in page.messages],
            "has_more": page.has_more,
            "online_users": online,
        }

    async def leave(self, conn: ConnState, room_id: str) -> None:
        check_room_id(room_id)
        if room_id not in conn.rooms:
            raise NotInRoom(f"You are not in room {room_id!r}")
        await self._leave(conn, room_id)

    async def _leave(self, conn: ConnState, room_id: str) -> None:
        conn.rooms.discard(room_id)
        await conn.transport.leave(conn, room_id)
        if room_id in conn.typing_in:
            conn.typing_in.discard(room_id)
            await self._broadcaster.user_typing(room_id, conn.user.public(), False, [conn.sid])
        if await self._presence.remove(room_id, conn.user.user_id, conn.conn_id):
            await self._broadcaster.user_left(room_id, conn.user.public())
        else:
            self._broadcaster.room_activity(room_id)

    async def send(self, conn: ConnState, room_id: str, *, content: str, type: str = "text", client_msg_id: str | None = None, reply_to: str | None = None) -> Message:
        check_room_id(room_id)
        if room_id not in conn.rooms:
            raise NotInRoom(f"Join room {room_id!r} before sending to it")
        message = await self._messages.send(conn.user, room_id, content=content, type=type, client_msg_id=client_msg_id, reply_to=reply_to)
        if room_id in conn.typing_in:
            # Sending ends typing; tell the room once instead of waiting for expiry.
            conn.typing_in.discard(room_id)
            await self._broadcaster.user_typing(room_id, conn.user.public(), False, [conn.sid])
        return message

    async def typing(self, conn: ConnState, room_id: str, is_typing: bool) -> None:
        check_room_id(room_id)
        if room_id not in conn.rooms:
            raise NotInRoom(f"Join room {room_id!r} first")
        if is_typing:
            conn.typing_in.add(room_id)
        else:
            conn.typing_in.discard(room_id)
        await self._broadcaster.user_typing(room_id, conn.user.public(), is_typing, [conn.sid])

    async def disconnected(self, conn: ConnState) -> None:
        self._registry.remove(conn.sid)
        rooms = list(conn.rooms)
        for room_id in rooms:
            try:
                await self._leave(conn, room_id)
            except Exception:
                log.exception("cleanup of %s in room %s failed", conn.conn_id, room_id)
        try:
            if await self._presence.remove(GLOBAL, conn.user.user_id, conn.conn_id):
                await self._broadcaster.presence(conn.user.user_id, "offline", rooms)
        except Exception:
            log.exception("presence cleanup of %s failed", conn.conn_id)
