"""What a live connection does, independent of its transport (Socket.IO or /ws).

Joining, leaving, sending, typing, reacting and disconnecting go through here, so a rule
applies to every transport without being copied.  Business rules stay in the services;
this module adds what only exists for live connections: room channels, presence, typing
state and the big-room policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..domain import Message, Principal
from ..errors import NotInRoom, Unauthorized, ValidationFailed
from ..services.messages import MessageService
from ..services.presence import GLOBAL, PresenceStore
from ..services.reactions import ReactionChange, ReactionService
from ..services.rooms import RoomService, check_room_id
from .broadcaster import Broadcaster
from .connections import ConnectionRegistry, ConnState, TypingState

log = logging.getLogger(__name__)

ONLINE_LIST_LIMIT = 100


@dataclass(frozen=True)
class LivePolicy:
    # Repeated "typing: true" from one connection is relayed at most this often.
    typing_throttle_s: float = 2.0
    # A typist who stops sending "typing: true" is announced as stopped after this.
    typing_ttl_s: float = 5.0
    # Above this many online users a room sends counts only: no per-user join/leave,
    # presence or typing events (what hosted chat APIs recommend for livestreams).
    big_room_threshold: int = 1000
    # How long a room's online count is trusted for the big-room decision.
    size_cache_s: float = 1.0


class SessionModeration(Protocol):
    """Moderation on the live path (``realtime.moderation_relay.LiveModeration``)."""

    async def connected(self, conn: ConnState) -> None: ...
    async def disconnected(self, conn: ConnState) -> None: ...
    async def check_join(self, user: Principal, room_id: str) -> None: ...
    async def check_post(self, user: Principal, room_id: str) -> bool: ...
    async def edit_message(self, user: Principal, message_id: str, content: str) -> Message: ...
    async def delete_message(self, user: Principal, message_id: str) -> Any: ...


class ChatSessions:
    def __init__(
        self,
        *,
        rooms: RoomService,
        messages: MessageService,
        reactions: ReactionService,
        presence: PresenceStore,
        broadcaster: Broadcaster,
        registry: ConnectionRegistry,
        policy: LivePolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        moderation: SessionModeration | None = None,
    ) -> None:
        self._moderation = moderation
        self._rooms = rooms
        self._messages = messages
        self._reactions = reactions
        self._presence = presence
        self._broadcaster = broadcaster
        self._registry = registry
        self._policy = policy or LivePolicy()
        self._clock = clock
        self._sizes: dict[str, tuple[float, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def registry(self) -> ConnectionRegistry:
        return self._registry

    # --- connection lifecycle ---------------------------------------------------------

    async def connected(self, conn: ConnState) -> None:
        self._registry.add(conn)
        await self._presence.add(GLOBAL, conn.user.public(), conn.conn_id)
        if self._moderation is not None:
            await self._moderation.connected(conn)

    async def disconnected(self, conn: ConnState) -> None:
        self._registry.remove(conn.sid)
        if self._moderation is not None:
            await self._moderation.disconnected(conn)
        for room_id in list(conn.rooms):
            try:
                await self._leave(conn, room_id)
            except Exception:
                log.exception("cleanup of %s in room %s failed", conn.conn_id, room_id)
        try:
            await self._presence.remove(GLOBAL, conn.user.user_id, conn.conn_id)
        except Exception:
            log.exception("presence cleanup of %s failed", conn.conn_id)

    async def keep_presence(self) -> None:
        """The presence heartbeat: keep this node's connections alive in the shared store;
        put back those another node took for gone (this node stalled past the TTL, and
        their departure was announced: their return is announced too); then announce the
        departures of dead nodes' users."""
        gone = await self._presence.refresh(self._registry.presence_entries())
        if gone:
            held = {conn.conn_id: conn for conn in self._registry}
            for entry in gone:
                conn = held.get(entry.conn_id)
                if conn is None or (entry.room_id != GLOBAL and entry.room_id not in conn.rooms):
                    continue  # disconnected or left meanwhile: rightly gone
                if await self._presence.add(entry.room_id, conn.user.public(), conn.conn_id) and entry.room_id != GLOBAL:
                    await self._arrived(entry.room_id, conn.user.public())
        await self.announce_departed()

    async def announce_departed(self) -> None:
        """Announce ``user_left`` (and ``presence`` offline) for users whose node died
        without removing them: their connections expired in the shared presence store.
        The store hands each to exactly one node."""
        for room_id, user in await self._presence.sweep():
            if room_id == GLOBAL or "user_id" not in user:
                continue
            try:
                await self._departed(room_id, user)
            except Exception:
                log.exception("announcing that %s left %s failed", user.get("user_id"), room_id)

    async def _arrived(self, room_id: str, user: dict[str, Any]) -> None:
        """A user's first connection is in the room: tell it (not in big rooms)."""
        if not await self._is_big(room_id, fresh=True):
            await self._broadcaster.user_joined(room_id, user)
            await self._broadcaster.presence(user["user_id"], "online", [room_id])

    async def _departed(self, room_id: str, user: dict[str, Any]) -> None:
        """A user's last connection left the room: tell it (big rooms: only their stats)."""
        if not await self._is_big(room_id, fresh=True):
            await self._broadcaster.user_left(room_id, user)
            await self._broadcaster.presence(user["user_id"], "offline", [room_id])
        else:
            self._broadcaster.room_activity(room_id)

    # --- rooms ---------------------------------------------------------------------------

    async def _is_big(self, room_id: str, *, fresh: bool = False) -> bool:
        """Whether the room is above the big-room threshold.  Joins and leaves ask for a
        fresh count (they are rare next to typing, which uses a cached one)."""
        cached = self._sizes.get(room_id)
        now = self._clock()
        if fresh or cached is None or now - cached[0] > self._policy.size_cache_s:
            count = await self._presence.count(room_id)
            self._sizes[room_id] = (now, count)
            if len(self._sizes) > 10_000:
                self._sizes = {k: v for k, v in self._sizes.items() if now - v[0] <= self._policy.size_cache_s}
            return count > self._policy.big_room_threshold
        return cached[1] > self._policy.big_room_threshold

    async def join(self, conn: ConnState, room_id: str, *, since_seq: int | None = None, token_user: Principal | None = None) -> dict[str, Any]:
        if token_user is not None and token_user.user_id != conn.user.user_id:
            raise Unauthorized()
        if self._moderation is not None:
            await self._moderation.check_join(conn.user, room_id)  # banned users stay out
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
            if await self._presence.add(room.id, conn.user.public(), conn.conn_id):
                await self._arrived(room.id, conn.user.public())
        self._broadcaster.room_activity(room.id)
        online = await self._presence.online(room.id, limit=ONLINE_LIST_LIMIT)
        return {
            "room": room.to_dict(),
            "history": page.messages,  # already in the wire form
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
        await self._stop_typing(conn, room_id)
        if await self._presence.remove(room_id, conn.user.user_id, conn.conn_id):
            await self._departed(room_id, conn.user.public())
        else:
            self._broadcaster.room_activity(room_id)

    async def evict(self, conn: ConnState, room_id: str) -> None:
        """Take a connection out of a room it did not ask to leave (a ban): the same
        cleanup as ``leave_room``, on the node that holds the connection."""
        if room_id in conn.rooms:
            await self._leave(conn, room_id)

    def _require_joined(self, conn: ConnState, room_id: str) -> None:
        check_room_id(room_id)
        if room_id not in conn.rooms:
            raise NotInRoom(f"Join room {room_id!r} first")

    # --- messages and reactions ----------------------------------------------------------

    async def send(self, conn: ConnState, room_id: str, *, content: str, type: str = "text", client_msg_id: str | None = None, reply_to: str | None = None) -> Message:
        if self._moderation is not None and room_id not in conn.rooms:
            await self._moderation.check_post(conn.user, room_id)  # a removed banned user hears "banned"
        self._require_joined(conn, room_id)
        message = await self._messages.send(conn.user, room_id, content=content, type=type, client_msg_id=client_msg_id, reply_to=reply_to,
                                             address=conn.address)
        # Sending ends typing; tell the room now instead of waiting for the expiry.
        if room_id in conn.typing:
            await self._stop_typing(conn, room_id)
        return message

    async def edit_message(self, conn: ConnState, message_id: str, content: str) -> Message:
        return await self._require_moderation().edit_message(conn.user, message_id, content)

    async def delete_message(self, conn: ConnState, message_id: str) -> None:
        await self._require_moderation().delete_message(conn.user, message_id)

    def _require_moderation(self) -> SessionModeration:
        if self._moderation is None:
            raise ValidationFailed("Message edits and deletes are not available on this server")
        return self._moderation

    async def react(self, conn: ConnState, message_id: str, reaction: str, *, remove: bool | None = None) -> ReactionChange:
        return await self._reactions.react(conn.user, message_id, reaction, remove=remove, address=conn.address)

    # --- typing ----------------------------------------------------------------------------

    async def typing(self, conn: ConnState, room_id: str, is_typing: bool) -> None:
        self._require_joined(conn, room_id)
        if not is_typing:
            await self._stop_typing(conn, room_id)
            return
        state = conn.typing.setdefault(room_id, TypingState())
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(self._policy.typing_ttl_s, self._expire_typing, conn, room_id)
        now = self._clock()
        if state.active and now - state.sent_at < self._policy.typing_throttle_s:
            return  # still typing; already announced recently
        state.active = True
        state.sent_at = now
        if not await self._is_big(room_id):
            await self._broadcaster.user_typing(room_id, conn.user.public(), True)

    def _expire_typing(self, conn: ConnState, room_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._stop_typing(conn, room_id))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def _stop_typing(self, conn: ConnState, room_id: str) -> None:
        state = conn.typing.pop(room_id, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if state.active and not await self._is_big(room_id):
            await self._broadcaster.user_typing(room_id, conn.user.public(), False)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("typing expiry failed: %s", task.exception())
