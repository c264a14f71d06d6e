"""Moderation on the live path of one node: ban removal, ban-cache invalidation and
personal blocks, applied where the affected connections are.

The Socket.IO client manager delivers every emitted event on every node (directly on the
emitting node, through Redis on the others) and calls :meth:`LiveModeration.before_delivery`
(a ``LocalDeliveryHook.local_filters`` entry) just before it hands the event to this node's
sockets (and to the ``/ws`` listener).  That one hook does three jobs, all node-local:

* ``moderation_changed`` (emitted to a channel no connection ever joins, so it reaches no
  client): forget cached ban state of the user, or apply a block/unblock of a user with
  connections here;
* ``banned`` addressed to ``u:<user>``: before the event is delivered, every local
  connection of that user leaves the room (its Socket.IO room channel, the session's room
  set, presence, typing) through the session layer, exactly as an explicit
  ``leave_room`` would.  So when a client sees ``banned``, it has already been removed,
  on whichever node it is connected, and nothing of the room reaches it afterwards;
* events authored by a user (``new_message``, ``message_updated``, ``mentioned``,
  ``user_typing``, ``message_reaction``): the local connections of users who block the
  author are added to ``skip_sid``.  Only users with a connection on this node are
  indexed (their block list is loaded when their first connection arrives), so the cost
  for everyone else is one dict lookup per event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..domain import Message, Principal, Removed
from ..services.moderation import BanChecks, ModerationService
from .connections import ConnectionRegistry, ConnState

log = logging.getLogger(__name__)

#: Control event: ban-cache invalidation and block changes for every node.
MODERATION_CHANGED = "moderation_changed"


def _message_author(data: Any) -> str | None:
    user = data.get("user") if isinstance(data, dict) else None
    return user.get("user_id") if isinstance(user, dict) else None


def _actor(data: Any) -> str | None:
    return data.get("user_id") if isinstance(data, dict) else None


# Event -> who authored it (whose blockers must not receive it).
AUTHORED: dict[str, Callable[[Any], str | None]] = {
    "new_message": _message_author,
    "message_updated": _message_author,
    "mentioned": _message_author,
    "user_typing": _actor,
    "message_reaction": _actor,
}


class Evictor(Protocol):
    async def evict(self, conn: ConnState, room_id: str) -> None: ...


def _skips(skip_sid: Any) -> list[str]:
    if skip_sid is None:
        return []
    if isinstance(skip_sid, str):
        return [skip_sid]
    return list(skip_sid)


class LiveModeration:
    def __init__(self, moderation: ModerationService, bans: BanChecks, registry: ConnectionRegistry) -> None:
        self._moderation = moderation
        self._bans = bans
        self._registry = registry
        self._sessions: Evictor | None = None
        # Users with connections on this node: how many, and whom they block.
        self._conns: dict[str, int] = {}
        self._blocks: dict[str, set[str]] = {}
        # blocked user -> local users who block them (the index the hot path reads)
        self._blocked_by: dict[str, set[str]] = {}
        # block changes that arrived while a user's list was being loaded
        self._pending: dict[str, list[tuple[str, bool]]] = {}

    def bind(self, sessions: Evictor) -> None:
        self._sessions = sessions

    # --- the session layer's hooks ----------------------------------------------------------

    async def connected(self, conn: ConnState) -> None:
        user_id = conn.user.user_id
        self._conns[user_id] = self._conns.get(user_id, 0) + 1
        if self._conns[user_id] > 1 or user_id in self._pending:
            return
        self._pending[user_id] = []
        try:
            blocked = await self._moderation.blocked_by(user_id)
        except Exception:
            log.warning("could not load the block list of %s; not filtering for now", user_id)
            blocked = set()
        changes = self._pending.pop(user_id, [])
        if user_id not in self._conns:  # gone while loading
            return
        for other, on in changes:
            (blocked.add if on else blocked.discard)(other)
        self._set_blocks(user_id, blocked)

    async def disconnected(self, conn: ConnState) -> None:
        user_id = conn.user.user_id
        left = self._conns.get(user_id, 0) - 1
        if left > 0:
            self._conns[user_id] = left
            return
        self._conns.pop(user_id, None)
        self._set_blocks(user_id, set())

    async def check_join(self, user: Principal, room_id: str) -> None:
        await self._bans.check_join(user, room_id)

    async def check_post(self, user: Principal, room_id: str) -> bool:
        return await self._bans.check_post(user, room_id)

    async def edit_message(self, user: Principal, message_id: str, content: str) -> Message:
        return await self._moderation.edit_message(user, message_id, content)

    async def delete_message(self, user: Principal, message_id: str) -> Removed:
        return await self._moderation.delete_message(user, message_id)

    # --- block index --------------------------------------------------------------------------

    def _set_blocks(self, user_id: str, blocked: set[str]) -> None:
        for other in self._blocks.pop(user_id, set()):
            blockers = self._blocked_by.get(other)
            if blockers is not None:
                blockers.discard(user_id)
                if not blockers:
                    del self._blocked_by[other]
        if blocked:
            self._blocks[user_id] = set(blocked)
            for other in blocked:
                self._blocked_by.setdefault(other, set()).add(user_id)

    def _apply_block(self, user_id: str, other: str, on: bool) -> None:
        pending = self._pending.get(user_id)
        if pending is not None:
            pending.append((other, on))
            return
        if user_id not in self._conns:
            return  # no connection of the blocker here: nothing to filter
        blocked = set(self._blocks.get(user_id, set()))
        (blocked.add if on else blocked.discard)(other)
        self._set_blocks(user_id, blocked)

    def blockers_here(self, author: str) -> set[str]:
        return set(self._blocked_by.get(author, ()))

    # --- LocalDeliveryHook filter --------------------------------------------------------------

    async def before_delivery(self, event: str, data: Any, room: str, skip_sid: Any) -> Any:
        """Called on every node for every event, before local delivery; returns the
        ``skip_sid`` to deliver with."""
        author_of = AUTHORED.get(event)
        if author_of is not None:
            if not self._blocked_by:
                return skip_sid
            author = author_of(data)
            blockers = self._blocked_by.get(author) if author else None
            if not blockers:
                return skip_sid
            extra = [sid for blocker in blockers for sid in self._registry.sids_of(blocker)]
            return _skips(skip_sid) + extra if extra else skip_sid
        if event == MODERATION_CHANGED and isinstance(data, dict):
            self._changed(data)
        elif event == "banned" and room.startswith("u:") and isinstance(data, dict):
            await self._evict(room[2:], data.get("room_id"))
        return skip_sid

    def _changed(self, change: dict[str, Any]) -> None:
        kind = change.get("kind")
        user_id = change.get("user_id")
        if not isinstance(user_id, str):
            return
        if kind in ("ban", "unban"):
            self._bans.forget(user_id)
        elif kind == "block" and isinstance(change.get("blocked_user_id"), str):
            self._apply_block(user_id, change["blocked_user_id"], bool(change.get("blocked")))

    async def _evict(self, user_id: str, room_id: Any) -> None:
        """Remove every local connection of ``user_id`` from ``room_id`` (every room for a
        global ban)."""
        self._bans.forget(user_id)
        if self._sessions is None:
            return
        for sid in self._registry.sids_of(user_id):
            conn = self._registry.get(sid)
            if conn is None:
                continue
            rooms = list(conn.rooms) if room_id is None else [room_id]
            for joined in rooms:
                if joined in conn.rooms:
                    try:
                        await self._sessions.evict(conn, joined)
                    except Exception:
                        log.exception("removing %s from %s after a ban failed", conn.conn_id, joined)
