"""History reads as one viewer sees them: keyset pages around a seq, and numbered pages.

These are the hottest reads of the service (every REST history page, every join), so each
is ONE statement (one round trip through aiopg) whose rows come back as plain tuples in
``Message`` field order (``Database.fetch_tuples``: a dict per row costs more than the
query).  Reactions are aggregated per message at read time from the reactions table (one
row per user and emoji, so a user counts once and the counts never drift); most messages
have none, so an index probe comes first and the aggregate only runs when there are some.

Numbered pages (``page``) are served without OFFSET when that is exact.  A room's seq is
gapless (1 … its highest, numbered in the statement that inserts, and messages are only
ever soft-deleted), so the only difference between seq positions and the positions a viewer
sees is the messages hidden from that viewer: deleted ones, other users' shadow-banned ones
(both in the small partial index ``messages_room_hidden_idx``) and those of the users the
viewer blocks.  Take the hidden seqs newest first, ``h_1 > h_2 > …``, and
``top = max(seq) - offset`` (where the page would start if nothing were hidden).  The page
starts at ``top - k``, where ``k`` is the number of ``j`` with ``h_j + j - 1 >= top``: each
hidden message at or above the running start pushes it down by one, and ``h_j + j`` never
grows with ``j``, so those ``j`` are a prefix.  Every hidden message above ``top`` counts, so
those (``a`` of them) are only counted, from indexes alone; the ones at or below ``top`` that
still count lie less than ``L = a + PAGE_WINDOW`` seqs below ``top - a`` (when fewer than
``L`` count) and are read as one index range.  The page is then the
keyset read ``seq <= top - k`` with the same visibility filter as the OFFSET query, so the
rows are the same rows.  When the count or the window reaches its cap, the page is read
with OFFSET instead (a second statement).

Every read comes in two shapes over the same statements (``HistoryReads``): ``MESSAGES``
gives ``Message`` objects (tools, tests, anything that needs the fields), ``WIRE`` gives each
message already in its wire form (PROTOCOL.md §2 "Message", what ``Message.to_dict``
returns), built by PostgreSQL as JSON text and decoded by orjson in one call per page.  The
REST history page and the history of a join only ever wanted the wire form, and building it
in Python was most of a history request's CPU: the driver converting 17 columns per row
(timestamps, a JSON column), a ``Message`` per row, ``to_dict`` and two timestamp formats
per message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import orjson

from ..domain import HistoryPage, Message, WireMessage, build
from .db import Database
from .prepared import Prepared

# A numbered page is served from a seq bound when fewer than PAGE_HIDDEN_CAP messages hidden
# from the viewer lie above where it would start if nothing were hidden, and fewer than that
# count plus PAGE_WINDOW hidden messages below it move the start further (always, unless
# half the messages there are hidden); all read from indexes alone, in bulk (see
# ``_statements``).  Past that, the page is so deep in a room with so much removed that
# OFFSET is the honest answer.
PAGE_HIDDEN_CAP = 100_000
PAGE_WINDOW = 2_000

# A message's reaction counts as jsonb, NULL when it has none: most messages have none, so
# an index probe comes first and the aggregate runs only when there are some.
REACTION_COUNTS = """CASE WHEN (SELECT true FROM reactions r WHERE r.message_id = m.message_id LIMIT 1) THEN
        (SELECT jsonb_object_agg(x.reaction, x.n)
         FROM (SELECT r.reaction, count(*) AS n FROM reactions r WHERE r.message_id = m.message_id GROUP BY r.reaction) x)
    END"""

# ``Message`` field order (``_message``).  ``metadata`` is NULL when empty: the common case
# then costs no JSON decoding per row.
_COLUMNS = f"""m.message_id, m.room_id, m.seq, m.user_id, m.username, m.avatar, m.content, m.content_html, m.type,
    m.created_at, m.edited_at, m.deleted_at, {REACTION_COUNTS},
    m.mentions, m.reply_to, m.client_msg_id, NULLIF(m.metadata, '{{}}'::jsonb)"""

# ``Message.to_dict`` in SQL: the seq, and the message's wire form as JSON text (``::text``:
# the driver hands text over as it is instead of decoding JSON with the standard library).
# Keys in ``to_dict``'s order; ``to_char``'s ``MS`` truncates to milliseconds as
# ``utc_iso`` does; reactions in the same (jsonb) order as the ``Message`` read gives them.
_UTC_ISO = """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"""
_WIRE_COLUMNS = f"""m.seq, json_build_object(
    'message_id', m.message_id, 'room_id', m.room_id, 'seq', m.seq,
    'user', json_build_object('user_id', m.user_id, 'username', m.username, 'avatar', m.avatar),
    'content', m.content, 'content_html', m.content_html, 'type', m.type,
    'timestamp', to_char(m.created_at AT TIME ZONE 'UTC', {_UTC_ISO}),
    'edited_at', to_char(m.edited_at AT TIME ZONE 'UTC', {_UTC_ISO}),
    'reactions', coalesce({REACTION_COUNTS}, '{{}}'::jsonb),
    'mentions', to_json(m.mentions), 'reply_to', m.reply_to, 'client_msg_id', m.client_msg_id)::text"""

# What a viewer sees: not deleted, not another user's shadow-banned message, not from a user
# they block (NOT IN over their blocks is hashed once per statement, not probed per row;
# both columns are NOT NULL, so NOT IN has no NULL surprise).
_SEEN_BY_VIEWER = """m.deleted_at IS NULL AND (m.user_id = %(viewer)s OR (m.metadata ->> 'shadow') IS NULL)
    AND m.user_id NOT IN (SELECT b.blocked_user_id FROM blocks b WHERE b.user_id = %(viewer)s)"""
# Without a viewer (the store's own view: tools and tests): everything not deleted.
_SEEN_BY_ANYONE = "m.deleted_at IS NULL"

# What a viewer does not see, in two parts: deleted and other users' shadow-banned messages
# (``_HIDDEN``: read through messages_room_hidden_idx, whose predicate is repeated word for
# word so the planner uses it, and which carries user_id and deleted_at so the index alone
# answers), and the messages of the users they block (from (room_id, user_id, seq)).
_HIDDEN = "(m.deleted_at IS NOT NULL OR (m.metadata ->> 'shadow') IS NOT NULL)"
_HIDDEN_FROM_VIEWER = f"{_HIDDEN} AND (m.deleted_at IS NOT NULL OR m.user_id <> %(viewer)s)"
_HIDDEN_FROM_ANYONE = f"{_HIDDEN} AND m.deleted_at IS NOT NULL"


def _hidden_from_viewer(seq_range: str) -> str:
    """The seqs hidden from the viewer within ``seq_range`` (SQL on ``m.seq``)."""
    return f"""(SELECT m.seq FROM messages m WHERE m.room_id = %(room)s AND {_HIDDEN_FROM_VIEWER} AND {seq_range})
        UNION
        (SELECT m.seq FROM blocks b JOIN messages m ON m.room_id = %(room)s AND m.user_id = b.blocked_user_id
         WHERE b.user_id = %(viewer)s AND {seq_range})"""


def _hidden_from_anyone(seq_range: str) -> str:
    return f"SELECT m.seq FROM messages m WHERE m.room_id = %(room)s AND {_HIDDEN_FROM_ANYONE} AND {seq_range}"


class _Generic(Prepared):
    """A ``Prepared`` statement always run with its generic plan (planned once per
    connection), without JIT.  With ``LIMIT $n`` PostgreSQL estimates a tenth of the room
    instead of one page, so on its own it would plan every call (the generic plan looks
    dearer than it is), and in a room of a million messages that estimate passes
    ``jit_above_cost``: every call would compile the plan (15 ms, measured) to read 51 rows.
    The plans of these reads do not depend on the values (an index walk in one room).  SET
    LOCAL in the same query string lasts for that one implicit transaction."""

    def __new__(cls, sql: str, params: Sequence[tuple[str, str]], *, label: str) -> _Generic:
        self = cast(_Generic, super().__new__(cls, sql, params, label=label))
        self.execute_sql = f"SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL jit = off; {self.execute_sql}"
        return self


@dataclass(frozen=True)
class _Statements:
    latest: Prepared
    before: Prepared
    after: Prepared
    page: Prepared
    offset: str


def _statements(columns: str, seen: str, hidden: Callable[[str], str], *, viewer: bool, shape: str) -> _Statements:
    """The reads of ``columns`` for one visibility rule (composed once, at import)."""
    newest_first = f"SELECT {columns} FROM messages m WHERE m.room_id = %(room)s AND {seen}"
    # ``top``: where the page would start if nothing were hidden (NULL in an empty room).
    # ``above``: the hidden messages above it, all counted (up to the cap); each moves the
    #     start down by one, to ``top - above`` at least.
    # ``near``: the hidden messages at or below top, newest first (``i``): each with
    #     ``seq + i - 1 >= top - above`` moves it further.  The first L = above + window of
    #     them are read, from the range where such ones can be (above ``top - above - L``):
    #     as long as under half the messages there are hidden, fewer than L move it.
    # ``bound``: where the page starts, and whether that is exact: past the end, or the count
    #     stayed under its cap and ``near`` held every hidden message that moves the start
    #     (fewer than L were there, or one that does not move it was seen).
    # The answer is ``exact`` and the page's rows, or one row of ``exact`` and NULLs when the
    # page is empty or not exact (the caller then reads ``offset``).
    page = f"""
WITH top AS (
    SELECT max(m.seq) - %(offset)s AS seq FROM messages m WHERE m.room_id = %(room)s
), above AS (
    SELECT count(*) AS n FROM ({hidden("m.seq > (SELECT seq FROM top)")} LIMIT %(hidden_cap)s) h
    WHERE (SELECT seq FROM top) > 0
), near AS (
    SELECT h.seq, row_number() OVER (ORDER BY h.seq DESC) AS i
    FROM ({hidden("m.seq <= (SELECT seq FROM top) AND m.seq > (SELECT seq FROM top) - 2 * (SELECT n FROM above) - %(window)s")}
          ORDER BY 1 DESC LIMIT (SELECT n FROM above) + %(window)s) h
    WHERE (SELECT seq FROM top) > 0
), bound AS (
    SELECT t.seq - a.n - count(h.i) FILTER (WHERE h.seq + h.i - 1 >= t.seq - a.n) AS seq,
           t.seq <= 0 OR (a.n < %(hidden_cap)s
                          AND (count(h.i) < a.n + %(window)s OR coalesce(bool_or(h.seq + h.i - 1 < t.seq - a.n), false))) AS exact
    FROM top t CROSS JOIN above a LEFT JOIN near h ON true GROUP BY t.seq, a.n
)
SELECT bound.exact, p.* FROM bound LEFT JOIN LATERAL (
    {newest_first} AND bound.exact AND m.seq <= bound.seq ORDER BY m.seq DESC LIMIT %(limit)s
) p ON true
ORDER BY p.seq DESC"""
    who = [("room", "text"), ("viewer", "text")] if viewer else [("room", "text")]
    label = f"history{shape}_viewer" if viewer else f"history{shape}"
    return _Statements(
        latest=_Generic(f"{newest_first} ORDER BY m.seq DESC LIMIT %(limit)s", [*who, ("limit", "int")], label=f"{label}_latest"),
        before=_Generic(f"{newest_first} AND m.seq < %(seq)s ORDER BY m.seq DESC LIMIT %(limit)s",
                        [*who, ("seq", "bigint"), ("limit", "int")], label=f"{label}_before"),
        after=_Generic(f"{newest_first} AND m.seq > %(seq)s ORDER BY m.seq ASC LIMIT %(limit)s",
                       [*who, ("seq", "bigint"), ("limit", "int")], label=f"{label}_after"),
        page=_Generic(page, [*who, ("offset", "bigint"), ("hidden_cap", "int"), ("window", "int"), ("limit", "int")],
                      label=f"{label}_page"),
        # The pages the bound cannot settle, as text: planned for their offset.  The cost
        # estimate of an OFFSET read grows with the offset and passes ``jit_above_cost`` on
        # deep pages of a big room, where compiling the plan takes longer than running it
        # (0.6 s measured): no JIT for it.  Several statements in one query string are one
        # transaction, so SET LOCAL covers the read.
        offset=f"SET LOCAL jit = off; {newest_first} ORDER BY m.seq DESC LIMIT %(limit)s OFFSET %(offset)s",
    )


def _message(row: tuple[Any, ...]) -> Message:
    (message_id, room_id, seq, user_id, username, avatar, content, content_html, type_, created_at, edited_at,
     deleted_at, reactions, mentions, reply_to, client_msg_id, metadata) = row
    # ``build``: a page of 50 built through the frozen dataclass's __init__ was the largest
    # single cost left in the request (about 80 µs of 1.2 ms).
    return build(Message, {
        "message_id": message_id, "room_id": room_id, "seq": seq, "user_id": user_id, "username": username,
        "avatar": avatar, "content": content, "content_html": content_html, "type": type_, "created_at": created_at,
        "edited_at": edited_at, "deleted_at": deleted_at, "reactions": reactions or {},  # NULL: no reactions
        "mentions": tuple(mentions) if mentions else (), "reply_to": reply_to, "client_msg_id": client_msg_id,
        "metadata": metadata or {},  # NULL: empty
    })


def _messages(rows: list[tuple[Any, ...]]) -> list[Message]:
    return [_message(r) for r in rows]


def _wire_messages(rows: list[tuple[Any, ...]]) -> list[WireMessage]:
    # One decode for the page: the rows' JSON texts joined into one array.
    return orjson.loads("[" + ",".join([r[1] for r in rows]) + "]")  # type: ignore[no-any-return]


T = TypeVar("T")


class HistoryReads(Generic[T]):
    """The history reads, each page's rows turned into items by ``items`` (oldest first)."""

    def __init__(self, columns: str, items: Callable[[list[tuple[Any, ...]]], list[T]], *, shape: str) -> None:
        self._for_viewer = _statements(columns, _SEEN_BY_VIEWER, _hidden_from_viewer, viewer=True, shape=shape)
        self._for_anyone = _statements(columns, _SEEN_BY_ANYONE, _hidden_from_anyone, viewer=False, shape=shape)
        self._items = items

    def _newest_first(self, rows: list[tuple[Any, ...]], limit: int) -> HistoryPage[T]:
        """Rows read newest first (``limit + 1`` of them at most) as a page, oldest first."""
        return HistoryPage(self._items(rows[:limit][::-1]), len(rows) > limit)

    async def before(self, db: Database, room_id: str, before_seq: int | None, limit: int, *,
                     viewer: str | None = None) -> HistoryPage[T]:
        """The ``limit`` newest visible messages below ``before_seq`` (the newest of all when
        None), oldest first."""
        sql = self._for_viewer if viewer is not None else self._for_anyone
        params = {"room": room_id, "viewer": viewer, "seq": before_seq, "limit": limit + 1}
        rows = await db.fetch_tuples(sql.latest if before_seq is None else sql.before, params)
        return self._newest_first(rows, limit)

    async def after(self, db: Database, room_id: str, after_seq: int, limit: int, *,
                    viewer: str | None = None) -> HistoryPage[T]:
        """The ``limit`` oldest visible messages above ``after_seq``, oldest first."""
        sql = self._for_viewer if viewer is not None else self._for_anyone
        rows = await db.fetch_tuples(sql.after, {"room": room_id, "viewer": viewer, "seq": after_seq, "limit": limit + 1})
        return HistoryPage(self._items(rows[:limit]), len(rows) > limit)

    async def page(self, db: Database, room_id: str, page: int, limit: int, *, viewer: str | None = None,
                   hidden_cap: int = PAGE_HIDDEN_CAP, window: int = PAGE_WINDOW) -> HistoryPage[T]:
        """Numbered page ``page`` of ``limit`` visible messages (1: the newest), oldest first:
        exactly what ``ORDER BY seq DESC LIMIT limit OFFSET (page - 1) * limit`` returns."""
        sql = self._for_viewer if viewer is not None else self._for_anyone
        params = {"room": room_id, "viewer": viewer, "offset": (page - 1) * limit, "limit": limit + 1,
                  "hidden_cap": hidden_cap, "window": window}
        rows = await db.fetch_tuples(sql.page, params)
        if rows and not rows[0][0]:
            return self._newest_first(await db.fetch_tuples(sql.offset, params), limit)
        return self._newest_first([r[1:] for r in rows if r[1] is not None], limit)


MESSAGES: HistoryReads[Message] = HistoryReads(_COLUMNS, _messages, shape="")
WIRE: HistoryReads[WireMessage] = HistoryReads(_WIRE_COLUMNS, _wire_messages, shape="_wire")

# The ``Message`` reads as functions (the store's own view, tools and tests).
before = MESSAGES.before
after = MESSAGES.after
page = MESSAGES.page
