"""Messages: the gapless per-room insert (one message, or a batch in one statement) and
keyset history reads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ..domain import HistoryPage, Message, NewMessage, WireMessage, build
from ..errors import Unavailable
from ..pipelining import next_event_may_start
from . import history
from .db import Database, Json, TransactionRollbackError, UniqueViolation
from .group_commit import BatchStats, GroupCommit, one_by_one
from .prepared import Prepared

log = logging.getLogger(__name__)

# Reactions are aggregated per emoji at read time from the reactions table (one row per
# user and emoji), so a user counts once and the counts can never drift.
_REACTIONS = f"""COALESCE({history.REACTION_COUNTS}, '{{}}'::jsonb) AS reactions"""

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

# A batch of messages (any rooms) in ONE statement, so one round trip and one implicit
# transaction: all of it is stored or none of it.  Two versions of it:
#
# * ``_INSERT_BATCH`` (every batch first): stores every row.  A row whose client_msg_id is
#   already stored (a client's retry, or another node's writer winning a race) makes the
#   unique index refuse the whole statement: nothing of the batch is stored, and the batch
#   is sent again as
# * ``_INSERT_BATCH_CHECKED``: looks each client_msg_id up first; a row already stored
#   gets the original message back, stores nothing and takes no seq.
# Looking up every message costs an index probe per message, and which index serves the
# probe is the planner's choice: without statistics on how users and rooms go together
# (a new or not yet analysed table) it picks (room_id, user_id, seq) and reads every
# message the sender ever wrote in the room, a cost that grows with the room.  Retries are
# rare; the unique index finds them at no extra cost.
#
# The parts, in the order PostgreSQL runs them:
# * ``input``: the batch as JSON rows; ``i`` is the position in the batch (callers'
#   arrival order).  Repeats of a (room, user, client_msg_id) inside the batch are
#   removed before it is sent (``MessageStore.insert_many``).
# * ``replayed`` (checked version): rows whose client_msg_id is already stored.
#   (Correlated lookups and ``= ANY(ARRAY(…))`` keep the plan on the indexes whatever the
#   planner guesses about the JSON's row count.)
# * ``fresh``: the rows to store, numbered per room in arrival order (``rn``).
# * ``locked``: the rooms' rows, locked in id order, so two batches (on this node or
#   another) that share rooms queue up behind each other instead of deadlocking.  The
#   row lock is what serialises a room's writers, as for the single insert.
# * ``bumped``: each room's last_seq/message_count moves on by its count of fresh rows;
#   ``base`` is the last seq before the batch, so the room's rows get base+1 … base+n
#   (a join of the rows with their room's ``bumped`` row; an earlier version looked the
#   base up in a ``jsonb_object_agg`` of ``bumped``, which cost PostgreSQL about 20 µs per
#   message).
# * a room that does not exist gets no ``bumped`` row, so its messages are not inserted
#   (the caller gets ``LookupError``, like the single insert).
# A unique violation rolls all of it back, counters included: seq stays gapless either way.
# Both are prepared once per pooled connection (storage/prepared.py): planning the text
# cost PostgreSQL about 0.4 ms per batch.
_BATCH_INPUT = """input AS (
    SELECT * FROM jsonb_to_recordset(%(batch)s::jsonb) AS x(
        i int, message_id text, room_id text, user_id text, username text, avatar text, type text,
        content text, content_html text, metadata jsonb, mentions text[], reply_to text, client_msg_id text)
)"""
_BATCH_STORE = """counts AS (SELECT room_id, count(*) AS n FROM fresh GROUP BY room_id),
locked AS (SELECT r.id FROM rooms r WHERE r.id = ANY(ARRAY(SELECT room_id FROM counts)) ORDER BY r.id FOR UPDATE),
bumped AS (
    UPDATE rooms r SET last_seq = r.last_seq + c.n, message_count = r.message_count + c.n
    FROM counts c
    WHERE r.id = ANY(ARRAY(SELECT id FROM locked)) AND c.room_id = r.id
    RETURNING r.id, r.last_seq - c.n AS base
),
inserted AS (
    INSERT INTO messages (message_id, room_id, seq, user_id, username, avatar, type, content,
                          content_html, metadata, mentions, reply_to, client_msg_id)
    SELECT f.message_id, f.room_id, b.base + f.rn, f.user_id, f.username, f.avatar, f.type,
           f.content, f.content_html, f.metadata, f.mentions, f.reply_to, f.client_msg_id
    FROM fresh f JOIN bumped b ON b.id = f.room_id
    ORDER BY f.room_id, f.rn
    RETURNING message_id, seq, created_at
)"""
_INSERT_BATCH = Prepared(f"""
WITH {_BATCH_INPUT},
fresh AS (SELECT i.*, row_number() OVER (PARTITION BY i.room_id ORDER BY i.i) AS rn FROM input i),
{_BATCH_STORE}
SELECT i.i, ins.seq AS new_seq, ins.created_at AS new_created_at, NULL::text AS replayed_id
FROM input i
LEFT JOIN inserted ins ON ins.message_id = i.message_id
""", [("batch", "jsonb")], label="insert_messages")
_INSERT_BATCH_CHECKED = Prepared(f"""
WITH {_BATCH_INPUT},
lookups AS MATERIALIZED (
    SELECT i.i, (SELECT m.message_id FROM messages m
                 WHERE m.room_id = i.room_id AND m.user_id = i.user_id AND m.client_msg_id = i.client_msg_id
                       AND m.client_msg_id IS NOT NULL) AS message_id
    FROM input i WHERE i.client_msg_id IS NOT NULL
),
replayed AS (SELECT i, message_id FROM lookups WHERE message_id IS NOT NULL),
fresh AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.room_id ORDER BY i.i) AS rn
    FROM input i WHERE NOT EXISTS (SELECT 1 FROM replayed r WHERE r.i = i.i)
),
{_BATCH_STORE}
SELECT i.i, ins.seq AS new_seq, ins.created_at AS new_created_at, r.message_id AS replayed_id
FROM input i
LEFT JOIN inserted ins ON ins.message_id = i.message_id
LEFT JOIN replayed r ON r.i = i.i
""", [("batch", "jsonb")], label="insert_messages_checked")

# How often a batch the unique index refused is sent again (checked: ``_INSERT_BATCH_CHECKED``)
# before its messages are stored one by one instead: once for a retried client_msg_id, and
# again if another writer keeps storing the same client_msg_ids meanwhile.
_BATCH_RACE_RETRIES = 2


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


def _stored(new: NewMessage, seq: int, created_at: Any) -> Message:
    user = new.user
    return build(Message, {
        "message_id": new.message_id, "room_id": new.room_id, "seq": seq, "user_id": user.user_id,
        "username": user.username, "avatar": user.avatar, "content": new.content, "content_html": new.content_html,
        "type": new.type, "created_at": created_at, "edited_at": None, "deleted_at": None, "reactions": {},
        "mentions": new.mentions, "reply_to": new.reply_to, "client_msg_id": new.client_msg_id, "metadata": new.metadata,
    })


def _row_values(new: NewMessage) -> dict[str, Any]:
    """The stored columns of ``new`` (both insert paths; ``metadata`` as a plain dict)."""
    return {
        "message_id": new.message_id,
        "room_id": new.room_id,
        "user_id": new.user.user_id,
        "username": new.user.username,
        "avatar": new.user.avatar,
        "type": new.type,
        "content": new.content,
        "content_html": new.content_html,
        "metadata": dict(new.metadata),
        "mentions": list(new.mentions),
        "reply_to": new.reply_to,
        "client_msg_id": new.client_msg_id,
    }


def _batch_row(i: int, new: NewMessage) -> dict[str, Any]:
    row = _row_values(new)
    row["i"] = i  # the position in the batch (jsonb_to_recordset reads columns by name)
    return row


InsertResult = tuple[Message, bool]


class MessageStore:
    """``batching``: concurrent ``insert`` calls are written together, one statement per
    batch (``storage.group_commit``); without it, one statement per message."""

    def __init__(
        self,
        db: Database,
        *,
        batching: bool = False,
        max_batch: int = 256,
        max_in_flight: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._db = db
        # Batches sent again after the unique index refused them (a retried client_msg_id,
        # or a race with another writer), and batches stored one message at a time after
        # PostgreSQL refused one of their values (for tests and metrics).
        self.batch_retries = 0
        self.batch_fallbacks = 0
        self._writer: GroupCommit[NewMessage, InsertResult] | None = (
            GroupCommit(self.insert_many, max_batch=max_batch, max_in_flight=max_in_flight, on_batch=on_batch) if batching else None
        )

    @property
    def batch_stats(self) -> BatchStats | None:
        """Batch counters when batching is on (sizes > 1 mean writes were grouped)."""
        return self._writer.stats if self._writer is not None else None

    async def insert(self, new: NewMessage) -> InsertResult:
        """Store ``new``; returns ``(message, created)`` once it is committed.

        ``created`` is False when the same user already sent ``client_msg_id`` in this
        room: the original message is returned and nothing new is stored.
        """
        if self._writer is not None:
            placed = self._writer.enqueue(new)
            # Its place in the commit order is fixed: the sender's next message may go
            # through its checks meanwhile (chat_server/pipelining.py).
            next_event_may_start()
            return await placed
        return await self.insert_one(new)

    async def insert_many(self, batch: Sequence[NewMessage]) -> list[InsertResult | BaseException]:
        """Store a batch in one statement: per item ``(message, created)``, or
        ``LookupError`` when its room does not exist.  Gapless per room in batch order;
        idempotent on client_msg_id against what is stored and within the batch.

        Raises ``Unavailable`` (nothing stored) when the database cannot be reached.  Any
        other failure of the batch statement (a value PostgreSQL refuses in one message)
        stores the batch one message at a time, so each caller gets its own outcome.
        """
        # The first of several items with the same (room, user, client_msg_id) is the one
        # written; the others get its outcome with created=False.
        first_of: dict[tuple[str, str, str], int] = {}
        unique: list[int] = []
        repeat_of: dict[int, int] = {}
        for index, new in enumerate(batch):
            if new.client_msg_id is not None:
                key = (new.room_id, new.user.user_id, new.client_msg_id)
                first = first_of.setdefault(key, index)
                if first != index:
                    repeat_of[index] = first
                    continue
            unique.append(index)
        results: list[InsertResult | BaseException | None] = [None] * len(batch)
        outcome = await self._write_batch([batch[i] for i in unique])
        for position, index in enumerate(unique):
            results[index] = outcome[position]
        for index, first in repeat_of.items():
            original = results[first]
            results[index] = (original[0], False) if isinstance(original, tuple) else original
        return results  # type: ignore[return-value]

    async def _write_batch(self, batch: list[NewMessage]) -> list[InsertResult | BaseException]:
        payload = orjson.dumps([_batch_row(i, new) for i, new in enumerate(batch)]).decode()
        statement = _INSERT_BATCH
        for _attempt in range(1 + _BATCH_RACE_RETRIES):
            try:
                # Rows as tuples (i, new_seq, new_created_at, replayed_id): no dict per row.
                rows = await self._db.fetch_tuples(statement, {"batch": payload})
            except (UniqueViolation, TransactionRollbackError):
                # One of these client_msg_ids is already stored (a client's retry), or
                # another writer stored it after this statement took its snapshot (or,
                # defensively, a deadlock/serialisation failure): nothing of the batch was
                # stored.  The checked statement finds that message and returns it as the
                # original.
                self.batch_retries += 1
                statement = _INSERT_BATCH_CHECKED
                continue
            except Unavailable:
                raise
            except Exception:
                log.warning("batch insert of %d messages failed; storing them one by one", len(batch), exc_info=True)
                break
            return await self._batch_results(batch, rows)
        self.batch_fallbacks += 1
        # Each in its own statement: if the database goes away half-way, some are stored and
        # every caller hears its own outcome.
        return await one_by_one(batch, self.insert_one)

    async def _batch_results(self, batch: list[NewMessage], rows: list[tuple[Any, ...]]) -> list[InsertResult | BaseException]:
        results: list[InsertResult | BaseException | None] = [None] * len(batch)
        replayed: dict[int, str] = {}
        for i, new_seq, new_created_at, replayed_id in rows:
            if new_seq is not None:
                results[i] = (_stored(batch[i], int(new_seq), new_created_at), True)
            elif replayed_id is not None:
                replayed[i] = replayed_id
            else:
                results[i] = LookupError(f"room {batch[i].room_id!r} does not exist")
        if replayed:
            # Rare (client retries): the originals, with their reactions, in one more read.
            # The batch is committed by now: if this read fails, only the retries fail.
            try:
                originals = await self._db.fetch(f"SELECT {_COLUMNS} FROM messages m WHERE m.message_id = ANY(%s)",
                                                 (list(set(replayed.values())),))
            except Exception as exc:
                for i in replayed:
                    results[i] = exc
            else:
                by_id = {row["message_id"]: message_from_row(row) for row in originals}
                for i, message_id in replayed.items():
                    original = by_id.get(message_id)
                    results[i] = (original, False) if original is not None else LookupError(f"message {message_id!r} vanished")
        return [r if r is not None else LookupError("message missing from the batch result") for r in results]

    async def insert_one(self, new: NewMessage) -> InsertResult:
        """Store one message in its own statement (the path without batching)."""
        if new.client_msg_id is not None:
            existing = await self.by_client_msg_id(new.room_id, new.user.user_id, new.client_msg_id)
            if existing is not None:
                return existing, False
        params = _row_values(new)
        params["metadata"] = Json(params["metadata"])
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
        return _stored(new, int(row["seq"]), row["created_at"]), True

    async def get(self, message_id: str) -> Message | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM messages m WHERE m.message_id = %s", (message_id,))
        return message_from_row(row) if row else None

    async def by_client_msg_id(self, room_id: str, user_id: str, client_msg_id: str) -> Message | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM messages m WHERE m.room_id = %s AND m.user_id = %s AND m.client_msg_id = %s",
            (room_id, user_id, client_msg_id),
        )
        return message_from_row(row) if row else None

    async def latest(self, room_id: str, limit: int) -> HistoryPage[Message]:
        """The newest ``limit`` visible messages, oldest first."""
        return await self.before(room_id, None, limit)

    def for_viewer(self, viewer: str) -> _ViewerHistory:
        """History reads as ``viewer`` sees them, in the wire form (``storage.history``)."""
        return _ViewerHistory(self._db, viewer)

    # History reads: one statement each, in storage/history.py.
    async def before(self, room_id: str, before_seq: int | None, limit: int, *, viewer: str | None = None) -> HistoryPage[Message]:
        return await history.before(self._db, room_id, before_seq, limit, viewer=viewer)

    async def after(self, room_id: str, after_seq: int, limit: int, *, viewer: str | None = None) -> HistoryPage[Message]:
        """Visible messages with ``seq > after_seq``, oldest first."""
        return await history.after(self._db, room_id, after_seq, limit, viewer=viewer)

    async def page(self, room_id: str, page: int, limit: int, *, viewer: str | None = None) -> HistoryPage[Message]:
        """Numbered pages, page 1 the newest, each oldest first (the source design's paging)."""
        return await history.page(self._db, room_id, page, limit, viewer=viewer)


class _ViewerHistory:
    """History as one viewer sees it, each message in its wire form (``MessageService``
    reads a viewer's history through it)."""

    def __init__(self, db: Database, viewer: str) -> None:
        self._db = db
        self._viewer = viewer

    async def before(self, room_id: str, before_seq: int | None, limit: int) -> HistoryPage[WireMessage]:
        return await history.WIRE.before(self._db, room_id, before_seq, limit, viewer=self._viewer)

    async def after(self, room_id: str, after_seq: int, limit: int) -> HistoryPage[WireMessage]:
        return await history.WIRE.after(self._db, room_id, after_seq, limit, viewer=self._viewer)

    async def page(self, room_id: str, page: int, limit: int) -> HistoryPage[WireMessage]:
        return await history.WIRE.page(self._db, room_id, page, limit, viewer=self._viewer)
