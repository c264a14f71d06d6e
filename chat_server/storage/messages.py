"""Messages: the gapless per-room insert and keyset history reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..domain import HistoryPage, Message, NewMessage
from .db import Database, Json, UniqueViolation

# Reactions are aggregated per emoji at read time from the reactions table (one row per
# user and emoji), so a user counts once and the counts can never drift.
_REACTIONS = """COALESCE((SELECT jsonb_object_agg(x.reaction, x.n) FROM
                  (SELECT reaction, count(*) AS n FROM reactions r WHERE r.message_id = m.message_id
                   GROUP BY reaction) x), '{}'::jsonb) AS reactions"""

_COLUMNS = f"""m.message_id, m.room_id, m.seq, m.user_id, m.username, m.avatar, m.type, m.content,
               m.content_html, m.metadata, m.mentions, m.reply_to, m.client_msg_id, m.created_at,
               m.edited_at, m.deleted_at, {_REACTIONS}"""

# One statement, so one implicit transaction: bump the room's counter (taking its row
# lock, which serialises writers of the room) and insert with the new value.  If the
# insert fails (duplicate client_msg_id) the whole statement rolls back, counter
# included, so seq stays gapless.
_INSERT = """
WITH bumped AS (
    UPDATE rooms SET last_seq = last_seq + 1, message_count = message_count + 1
    WHERE id = %(room_id)s
    RETURNING last_seq
)
INSERT INTO messages (message_id, room_id, seq, user_id, username, avatar, type, content,
                      content_html, metadata, mentions, reply_to, client_msg_id)
SELECT %(message_id)s, %(room_id)s, bumped.last_seq, %(user_id)s, %(username)s, %(avatar)s,
       %(type)s, %(content)s, %(content_html)s, %(metadata)s, %(mentions)s, %(reply_to)s,
       %(client_msg_id)s
FROM bumped
RETURNING seq, created_at
"""


def _hidden_from(viewer: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL (and its parameters) leaving out what ``viewer`` must not see in history: the
    messages of users they block and other users' shadow-banned messages."""
    if viewer is None:
        return "", ()
    return (
        """ AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = %s AND b.blocked_user_id = m.user_id)
            AND (m.user_id = %s OR m.metadata->>'shadow' IS NULL)""",
        (viewer, viewer),
    )


def message_from_row(row: Mapping[str, Any]) -> Message:
    return Message(
        message_id=row["message_id"],
        room_id=row["room_id"],
        seq=int(row["seq"]),
        user_id=row["user_id"],
        username=row["username"],
        avatar=row["avatar"],
        content=row["content"],
        content_html=row["content_html"],
        type=row["type"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        deleted_at=row["deleted_at"],
        reactions=row.get("reactions") or {},
        mentions=tuple(row["mentions"] or ()),
        reply_to=row["reply_to"],
        client_msg_id=row["client_msg_id"],
        metadata=row["metadata"] or {},
    )


class MessageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, new: NewMessage) -> tuple[Message, bool]:
        """Store ``new``; returns ``(message, created)``.

        ``created`` is False when the same user already sent ``client_msg_id`` in this
        room: the original message is returned and nothing new is stored.
        """
        if new.client_msg_id is not None:
            existing = await self.by_client_msg_id(new.room_id, new.user.user_id, new.client_msg_id)
            if existing is not None:
                return existing, False
        params = {
            "message_id": new.message_id,
            "room_id": new.room_id,
            "user_id": new.user.user_id,
            "username": new.user.username,
            "avatar": new.user.avatar,
            "type": new.type,
            "content": new.content,
            "content_html": new.content_html,
            "metadata": Json(dict(new.metadata)),
            "mentions": list(new.mentions),
            "reply_to": new.reply_to,
            "client_msg_id": new.client_msg_id,
        }
        try:
            row = await self._db.fetchrow(_INSERT, params)
        except UniqueViolation:
            # A concurrent retry of the same client_msg_id won the race.
            if new.client_msg_id is None:
                raise
            existing = await self.by_client_msg_id(new.room_id, new.user.user_id, new.client_msg_id)
            assert existing is not None
            return existing, False
        if row is None:
            raise LookupError(f"room {new.room_id!r} does not exist")
        message = Message(
            message_id=new.message_id,
            room_id=new.room_id,
            seq=int(row["seq"]),
            user_id=new.user.user_id,
            username=new.user.username,
            avatar=new.user.avatar,
            content=new.content,
            content_html=new.content_html,
            type=new.type,
            created_at=row["created_at"],
            mentions=new.mentions,
            reply_to=new.reply_to,
            client_msg_id=new.client_msg_id,
            metadata=new.metadata,
        )
        return message, True

    async def get(self, message_id: str) -> Message | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM messages m WHERE m.message_id = %s", (message_id,))
        return message_from_row(row) if row else None

    async def by_client_msg_id(self, room_id: str, user_id: str, client_msg_id: str) -> Message | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM messages m WHERE m.room_id = %s AND m.user_id = %s AND m.client_msg_id = %s",
            (room_id, user_id, client_msg_id),
        )
        return message_from_row(row) if row else None

    async def latest(self, room_id: str, limit: int) -> HistoryPage:
        """The newest ``limit`` visible messages, oldest first."""
        return await self.before(room_id, None, limit)

    def for_viewer(self, viewer: str) -> _ViewerHistory:
        """History reads as ``viewer`` sees them (see ``_hidden_from``)."""
        return _ViewerHistory(self, viewer)

    async def before(self, room_id: str, before_seq: int | None, limit: int, *, viewer: str | None = None) -> HistoryPage:
        hidden, hidden_params = _hidden_from(viewer)
        rows = await self._db.fetch(
            f"""SELECT {_COLUMNS} FROM messages m
                WHERE m.room_id = %s AND m.deleted_at IS NULL AND (%s::bigint IS NULL OR m.seq < %s::bigint){hidden}
                ORDER BY m.seq DESC LIMIT %s""",
            (room_id, before_seq, before_seq, *hidden_params, limit + 1),
        )
        has_more = len(rows) > limit
        return HistoryPage([message_from_row(r) for r in reversed(rows[:limit])], has_more)

    async def after(self, room_id: str, after_seq: int, limit: int, *, viewer: str | None = None) -> HistoryPage:
        """Visible messages with ``seq > after_seq``, oldest first."""
        hidden, hidden_params = _hidden_from(viewer)
        rows = await self._db.fetch(
            f"""SELECT {_COLUMNS} FROM messages m
                WHERE m.room_id = %s AND m.deleted_at IS NULL AND m.seq > %s{hidden}
                ORDER BY m.seq ASC LIMIT %s""",
            (room_id, after_seq, *hidden_params, limit + 1),
        )
        has_more = len(rows) > limit
        return HistoryPage([message_from_row(r) for r in rows[:limit]], has_more)

    async def page(self, room_id: str, page: int, limit: int, *, viewer: str | None = None) -> HistoryPage:
        """Numbered pages, page 1 the newest, each oldest first (the source design's paging)."""
        hidden, hidden_params = _hidden_from(viewer)
        rows = await self._db.fetch(
            f"""SELECT {_COLUMNS} FROM messages m
                WHERE m.room_id = %s AND m.deleted_at IS NULL{hidden}
                ORDER BY m.seq DESC LIMIT %s OFFSET %s""",
            (room_id, *hidden_params, limit + 1, (page - 1) * limit),
        )
        has_more = len(rows) > limit
        return HistoryPage([message_from_row(r) for r in reversed(rows[:limit])], has_more)


class _ViewerHistory:
    """``MessageStore`` history reads for one viewer (``MessageService`` uses it as the
    repository for that viewer's history)."""

    def __init__(self, store: MessageStore, viewer: str) -> None:
        self._store = store
        self._viewer = viewer

    async def before(self, room_id: str, before_seq: int | None, limit: int) -> HistoryPage:
        return await self._store.before(room_id, before_seq, limit, viewer=self._viewer)

    async def after(self, room_id: str, after_seq: int, limit: int) -> HistoryPage:
        return await self._store.after(room_id, after_seq, limit, viewer=self._viewer)

    async def page(self, room_id: str, page: int, limit: int) -> HistoryPage:
        return await self._store.page(room_id, page, limit, viewer=self._viewer)
