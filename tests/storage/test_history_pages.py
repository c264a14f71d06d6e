"""Numbered history pages served from a seq bound (``storage.history.page``) are the very
pages the OFFSET query returns, for every viewer, with deleted messages, shadow-banned
messages, blocked users and reactions in the room, and when the bound cannot be settled
(the OFFSET fallback)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
import pytest

from chat_server.domain import HistoryPage, NewMessage, Principal
from chat_server.storage import history
from chat_server.storage.db import Database
from chat_server.storage.messages import _COLUMNS, MessageStore, message_from_row
from chat_server.storage.reactions import ReactionStore
from chat_server.storage.rooms import RoomStore
from tests.conftest import unique

USERS = [Principal(name, name.title()) for name in ("hp_alice", "hp_bob", "hp_carol", "hp_dave", "hp_erin")]


async def offset_page(db: Database, room_id: str, page: int, limit: int, viewer: str | None) -> HistoryPage:
    """The numbered page as the OFFSET query (the implementation before seq bounds) reads it."""
    hidden, params = "", ()
    if viewer is not None:
        hidden = """ AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = %s AND b.blocked_user_id = m.user_id)
                     AND (m.user_id = %s OR m.metadata->>'shadow' IS NULL)"""
        params = (viewer, viewer)
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM messages m WHERE m.room_id = %s AND m.deleted_at IS NULL{hidden}
            ORDER BY m.seq DESC LIMIT %s OFFSET %s""",
        (room_id, *params, limit + 1, (page - 1) * limit),
    )
    return HistoryPage([message_from_row(r) for r in reversed(rows[:limit])], len(rows) > limit)


def wire(page: HistoryPage) -> bytes:
    """What the REST answer is made of: the messages' wire form and has_more, as bytes."""
    return orjson.dumps({"messages": [m.to_dict() for m in page.messages], "has_more": page.has_more})


async def fill(db: Database, room_id: str, n: int, rng: random.Random) -> list[str]:
    store = MessageStore(db)
    ids = []
    for i in range(n):
        user = rng.choice(USERS)
        shadow = user.user_id == "hp_carol" and rng.random() < 0.5  # some of carol's messages: shadow-banned
        message, _ = await store.insert(NewMessage(
            message_id=uuid.uuid4().hex, room_id=room_id, user=user, content=f"m{i} ünïcode", content_html=f"m{i}",
            type="text", client_msg_id=None, reply_to=None, mentions=("hp_bob",) if i % 7 == 0 else (),
            metadata={"shadow": True} if shadow else {},
        ))
        ids.append(message.message_id)
    return ids


async def delete(db: Database, message_ids: list[str]) -> None:
    await db.execute("UPDATE messages SET deleted_at = now(), deleted_by = 'mod' WHERE message_id = ANY(%s)", (message_ids,))


async def block(db: Database, user_id: str, blocked: str) -> None:
    await db.execute("INSERT INTO blocks (user_id, blocked_user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (user_id, blocked))


@pytest.fixture
async def busy_room(db: Database) -> str:
    """60 messages by five users: deletions (the newest, the oldest and some between),
    shadow-banned messages of carol, reactions, and dave blocking bob and erin."""
    rng = random.Random(5)
    room_id = unique()
    await RoomStore(db).ensure(room_id, name=room_id, type="public")
    ids = await fill(db, room_id, 60, rng)
    await delete(db, [ids[-1], ids[-2], ids[0], ids[10], ids[11], ids[12], ids[30]])
    reactions = ReactionStore(db)
    for message_id in ids[::5]:
        await reactions.add(message_id, "hp_alice", "👍")
        await reactions.add(message_id, "hp_bob", "👍")
        await reactions.add(message_id, "hp_bob", "party")
    await block(db, "hp_dave", "hp_bob")
    await block(db, "hp_dave", "hp_erin")
    return room_id


class CountingDatabase(Database):
    """Counts statements, and the OFFSET reads among them."""

    statements = 0
    offset_reads = 0

    async def fetch_tuples(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        self.statements += 1
        self.offset_reads += " OFFSET " in sql
        return await super().fetch_tuples(sql, params)


@pytest.fixture
async def counting_db(database_url: str) -> Any:
    database = CountingDatabase(database_url, pool_size=2, timeout_s=10.0)
    await database.connect()
    yield database
    await database.close()


@pytest.mark.parametrize("viewer", [None, "hp_alice", "hp_bob", "hp_carol", "hp_dave"])
@pytest.mark.parametrize("limit", [1, 4, 7, 50])
async def test_pages_are_the_offset_pages(counting_db, busy_room, viewer, limit):
    db = counting_db
    last = 60 // limit + 2  # and some pages past the end
    for number in range(1, last + 1):
        expected = await offset_page(db, busy_room, number, limit, viewer)
        db.statements = 0
        got = await history.page(db, busy_room, number, limit, viewer=viewer)
        assert got == expected, (number, [m.seq for m in got.messages], [m.seq for m in expected.messages])
        assert wire(got) == wire(expected)
        assert (db.statements, db.offset_reads) == (1, 0)  # one statement, no OFFSET


async def test_past_the_caps_pages_are_read_with_offset(counting_db, busy_room):
    # carol sees every message but the deleted ones: seqs 60, 59, 31, 13, 12, 11 and 1.
    db = counting_db
    # Page 1 would start at 60; 60 and 59 move it to 58, which takes reading 60, 59 and the
    # next hidden seq below (or knowing there is none within reach): a window of three.
    first = await history.page(db, busy_room, 1, 4, viewer="hp_carol", window=3)
    assert [m.seq for m in first.messages] == [55, 56, 57, 58] and db.offset_reads == 0
    assert await history.page(db, busy_room, 1, 4, viewer="hp_carol", window=2) == first
    assert db.offset_reads == 1
    # Page 13 (after 48 visible messages) would start at 12: 60, 59, 31 and 13 lie above
    # (counted), then 12 and 11 move it to 6.
    deep = await history.page(db, busy_room, 13, 4, viewer="hp_carol", hidden_cap=5, window=1)
    assert [m.seq for m in deep.messages] == [3, 4, 5, 6] and db.offset_reads == 1
    assert await history.page(db, busy_room, 13, 4, viewer="hp_carol", hidden_cap=4) == deep
    assert db.offset_reads == 2


@pytest.mark.parametrize(("hidden_cap", "window"), [(0, 1000), (1, 1000), (3, 1000), (1000, 0), (1000, 1), (1000, 3), (2, 2)])
async def test_small_caps_give_the_same_pages(db, busy_room, hidden_cap, window):
    for viewer in (None, "hp_carol", "hp_dave"):
        for number in range(1, 20):
            expected = await offset_page(db, busy_room, number, 4, viewer)
            got = await history.page(db, busy_room, number, 4, viewer=viewer, hidden_cap=hidden_cap, window=window)
            assert wire(got) == wire(expected), (viewer, number)


async def test_a_room_without_hidden_messages_pages_by_seq(db):
    room_id = unique()
    await RoomStore(db).ensure(room_id, name=room_id, type="public")
    store = MessageStore(db)
    for i in range(25):
        await store.insert(NewMessage(uuid.uuid4().hex, room_id, USERS[0], f"m{i}", f"m{i}", "text", None, None))
    pages = [await history.page(db, room_id, n, 10, viewer="hp_bob") for n in (1, 2, 3, 4)]
    assert [[m.seq for m in p.messages] for p in pages] == [list(range(16, 26)), list(range(6, 16)), list(range(1, 6)), []]
    assert [p.has_more for p in pages] == [True, True, False, False]


async def test_a_missing_room_has_empty_pages(db):
    page = await history.page(db, unique("missing"), 1, 10, viewer="hp_bob")
    assert page.messages == [] and page.has_more is False


async def test_random_rooms_match_the_offset_query(db):
    """Rooms of random shapes (many deletions in a row, everything hidden, a blocked user
    who wrote most messages) against the OFFSET query, page by page."""
    rng = random.Random(11)
    for _round in range(6):
        room_id = unique()
        await RoomStore(db).ensure(room_id, name=room_id, type="public")
        ids = await fill(db, room_id, rng.randrange(1, 45), rng)
        await delete(db, rng.sample(ids, rng.randrange(0, len(ids) + 1)))
        viewer = rng.choice(["hp_alice", "hp_dave", "hp_frank"])
        await db.execute("DELETE FROM blocks WHERE user_id = %s", (viewer,))
        for blocked in rng.sample(["hp_bob", "hp_carol", "hp_erin"], rng.randrange(0, 3)):
            await block(db, viewer, blocked)
        limit = rng.choice([1, 2, 3, 5, 8])
        caps: dict[str, int] = rng.choice([{}, {"hidden_cap": 2}, {"window": 2}, {"hidden_cap": 5, "window": 3}])
        for number in range(1, len(ids) // limit + 3):
            expected = await offset_page(db, room_id, number, limit, viewer)
            got = await history.page(db, room_id, number, limit, viewer=viewer, **caps)
            assert wire(got) == wire(expected), (room_id, viewer, limit, caps, number)


async def test_keyset_reads_return_what_they_did(db, busy_room):
    """before / after / latest (the cursors) against the statements they replaced."""
    async def old(viewer: str | None, where: str, params: tuple[Any, ...], order: str, limit: int) -> list[Any]:
        hidden, hidden_params = "", ()
        if viewer is not None:
            hidden = """ AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = %s AND b.blocked_user_id = m.user_id)
                         AND (m.user_id = %s OR m.metadata->>'shadow' IS NULL)"""
            hidden_params = (viewer, viewer)
        rows = await db.fetch(f"""SELECT {_COLUMNS} FROM messages m WHERE m.room_id = %s AND m.deleted_at IS NULL{where}{hidden}
                                  ORDER BY m.seq {order} LIMIT %s""", (busy_room, *params, *hidden_params, limit + 1))
        return [message_from_row(r) for r in rows]

    for viewer in (None, "hp_alice", "hp_carol", "hp_dave"):
        for limit in (1, 5, 50):
            rows = await old(viewer, "", (), "DESC", limit)
            assert await history.before(db, busy_room, None, limit, viewer=viewer) == HistoryPage(rows[:limit][::-1], len(rows) > limit)
            for seq in (1, 2, 17, 33, 59, 60, 61, 1000):
                rows = await old(viewer, " AND m.seq < %s", (seq,), "DESC", limit)
                assert await history.before(db, busy_room, seq, limit, viewer=viewer) == HistoryPage(rows[:limit][::-1], len(rows) > limit)
            for seq in (0, 1, 17, 33, 58, 59, 60):
                rows = await old(viewer, " AND m.seq > %s", (seq,), "ASC", limit)
                assert await history.after(db, busy_room, seq, limit, viewer=viewer) == HistoryPage(rows[:limit], len(rows) > limit)
