"""History in the wire form, built by PostgreSQL (``history.WIRE``), is exactly what
``Message.to_dict`` makes of the ``Message`` reads, for every viewer, cursor and numbered
page, whatever the content holds and whatever time zone the database session is in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from chat_server.domain import HistoryPage, Message, NewMessage, Principal
from chat_server.storage import history
from chat_server.storage.db import Database
from chat_server.storage.messages import MessageStore
from chat_server.storage.reactions import ReactionStore
from chat_server.storage.rooms import RoomStore
from tests.conftest import unique

ALICE = Principal("hw_alice", "Alice Ünïcode", avatar="https://example.test/a.png?x=1&y=\"2\"")
BOB = Principal("hw_bob", "Bob \\ \"quoted\"")  # no avatar: null
CONTENTS = [
    "plain",
    "quotes \" and backslashes \\ and a slash /",
    "control \x01\x1f chars, a tab\tand a\nnewline\r",
    "line separators \u2028\u2029 and a BOM \ufeff",
    "emoji 👍🏽 🇫🇷 and a family 👨‍👩‍👧",
    "<b>html</b> &amp; entities",
    "",
]


def as_wire(page: HistoryPage[Message]) -> HistoryPage[dict[str, Any]]:
    return HistoryPage([m.to_dict() for m in page.messages], page.has_more)


@pytest.fixture
async def odd_db(database_url: str) -> AsyncIterator[Database]:
    """A pool whose sessions are in a time zone half an hour off UTC, in the past."""
    sep = "&" if "?" in database_url else "?"
    database = Database(f"{database_url}{sep}options=-c%20TimeZone%3DAmerica/St_Johns", pool_size=4, timeout_s=10.0)
    await database.connect()
    yield database
    await database.close()


@pytest.fixture
async def odd_room(db: Database) -> str:
    """Messages with every kind of content, an edit, replies, mentions, client ids,
    reactions (several emoji, several users), a deleted one, a shadow-banned one, a user
    blocked by another, and timestamps whose microseconds must be cut, not rounded."""
    room_id = unique()
    await RoomStore(db).ensure(room_id, name=room_id, type="public")
    store = MessageStore(db)
    ids = []
    for i, content in enumerate(CONTENTS * 3):
        user = ALICE if i % 3 else BOB
        message, _ = await store.insert(NewMessage(
            message_id=uuid.uuid4().hex, room_id=room_id, user=user, content=content, content_html=None if i % 2 else f"<p>{i}</p>",
            type="encrypted" if i == 4 else "text", client_msg_id=f"c{i}" if i % 4 == 0 else None,
            reply_to=ids[-1] if i % 5 == 1 and ids else None, mentions=("hw_bob", "hw_alice") if i % 6 == 0 else (),
            metadata={"shadow": True} if i == 7 else {},
        ))
        ids.append(message.message_id)
    await db.execute("UPDATE messages SET created_at = '2026-03-01 23:59:59.999999+00' WHERE message_id = %s", (ids[2],))
    await db.execute("UPDATE messages SET created_at = '1999-12-31 23:30:00.0005+00', edited_at = '2026-01-02 03:04:05.678901+00' "
                     "WHERE message_id = %s", (ids[3],))
    await db.execute("UPDATE messages SET deleted_at = now(), deleted_by = 'mod' WHERE message_id = %s", (ids[5],))
    reactions = ReactionStore(db)
    for message_id in ids[::4]:
        await reactions.add(message_id, ALICE.user_id, "👍")
        await reactions.add(message_id, BOB.user_id, "👍")
        await reactions.add(message_id, BOB.user_id, "party")
        await reactions.add(message_id, BOB.user_id, "❤️")
    await db.execute("INSERT INTO blocks (user_id, blocked_user_id) VALUES ('hw_carol', 'hw_bob') ON CONFLICT DO NOTHING")
    return room_id


@pytest.mark.parametrize("viewer", [None, ALICE.user_id, BOB.user_id, "hw_carol"])
async def test_wire_pages_are_the_messages_to_dict(db, odd_db, odd_room, viewer):
    total = len(CONTENTS) * 3
    checked = 0
    for reader_db in (db, odd_db):
        for limit in (1, 4, 50):
            for seq in (None, 1, 2, 3, 4, 9, total, total + 1):
                want = as_wire(await history.before(db, odd_room, seq, limit, viewer=viewer))
                assert await history.WIRE.before(reader_db, odd_room, seq, limit, viewer=viewer) == want
                checked += len(want.messages)
            for seq in (0, 1, 3, 9, total - 1, total):
                want = as_wire(await history.after(db, odd_room, seq, limit, viewer=viewer))
                assert await history.WIRE.after(reader_db, odd_room, seq, limit, viewer=viewer) == want
            for number in (1, 2, 3, 30):
                want = as_wire(await history.page(db, odd_room, number, limit, viewer=viewer))
                assert await history.WIRE.page(reader_db, odd_room, number, limit, viewer=viewer) == want
                # and when the bound cannot be settled (the OFFSET read)
                assert await history.WIRE.page(reader_db, odd_room, number, limit, viewer=viewer, hidden_cap=0) == want
    assert checked > 100


async def test_wire_form_details(db, odd_db, odd_room):
    """The fields a client reads, spelled out (not only compared with ``to_dict``)."""
    page = await history.WIRE.after(odd_db, odd_room, 0, 50, viewer=ALICE.user_id)
    by_seq = {m["seq"]: m for m in page.messages}
    assert by_seq[3]["timestamp"] == "2026-03-01T23:59:59.999Z"  # cut, not rounded to the next day
    assert by_seq[4]["timestamp"] == "1999-12-31T23:30:00.000Z"
    assert by_seq[4]["edited_at"] == "2026-01-02T03:04:05.678Z"
    assert by_seq[1]["edited_at"] is None
    assert 6 not in by_seq  # deleted
    assert by_seq[8]["content"] == CONTENTS[0]  # the author sees their own shadow-banned message
    assert by_seq[1]["user"] == {"user_id": "hw_bob", "username": BOB.username, "avatar": None}
    assert by_seq[2]["user"]["avatar"] == ALICE.avatar
    assert by_seq[1]["reactions"] == {"👍": 2, "party": 1, "❤️": 1}
    assert by_seq[2]["reactions"] == {}
    assert by_seq[1]["mentions"] == ["hw_bob", "hw_alice"] and by_seq[2]["mentions"] == []
    assert by_seq[1]["client_msg_id"] == "c0" and by_seq[2]["client_msg_id"] is None
    assert by_seq[5]["type"] == "encrypted"
    assert [by_seq[s]["content"] for s in (1, 2, 3, 4, 5)] == CONTENTS[:5]
    assert list(by_seq[1]) == [
        "message_id", "room_id", "seq", "user", "content", "content_html", "type", "timestamp", "edited_at",
        "reactions", "mentions", "reply_to", "client_msg_id",
    ]
    # The REST body's bytes are the same as from the Message reads.
    want = as_wire(await history.after(db, odd_room, 0, 50, viewer=ALICE.user_id))
    assert orjson.dumps(page.messages) == orjson.dumps(want.messages)
