"""MessageStore / RoomStore on a real, migrated PostgreSQL database."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chat_server.domain import NewMessage, Principal
from chat_server.storage.db import Database
from chat_server.storage.messages import MessageStore
from chat_server.storage.rooms import RoomStore
from tests.conftest import unique

ALICE = Principal("alice", "Alice", avatar="https://cdn.example/a.png")
BOB = Principal("bob", "Bob")


@pytest.fixture
def messages(db: Database) -> MessageStore:
    return MessageStore(db)


@pytest.fixture
async def room(db: Database) -> str:
    room_id = unique()
    await RoomStore(db).ensure(room_id, name=room_id, type="public")
    return room_id


def new(room_id: str, content: str = "hi", *, user: Principal = ALICE, client_msg_id: str | None = None) -> NewMessage:
    return NewMessage(
        message_id=uuid.uuid4().hex, room_id=room_id, user=user, content=content,
        content_html=content, type="text", client_msg_id=client_msg_id, reply_to=None,
    )


async def fill(messages: MessageStore, room_id: str, n: int) -> list[int]:
    seqs = []
    for i in range(1, n + 1):
        message, _ = await messages.insert(new(room_id, f"m{i}"))
        seqs.append(message.seq)
    return seqs


def seqs(page) -> list[int]:
    return [m.seq for m in page.messages]


async def test_insert_returns_the_stored_message(messages, room):
    message, created = await messages.insert(new(room, "hello", client_msg_id="c-1"))
    assert created is True
    assert (message.seq, message.content, message.user_id, message.username) == (1, "hello", "alice", "Alice")
    assert message.avatar == "https://cdn.example/a.png"
    stored = await messages.get(message.message_id)
    assert stored is not None
    assert (stored.seq, stored.content, stored.client_msg_id, stored.room_id) == (1, "hello", "c-1", room)
    assert stored.created_at == message.created_at


async def test_concurrent_inserts_get_gapless_seq(db, messages, room):
    results = await asyncio.gather(*(messages.insert(new(room, f"m{i}")) for i in range(50)))
    assert all(created for _, created in results)
    assert sorted(m.seq for m, _ in results) == list(range(1, 51))
    page = await messages.before(room, None, 100)
    assert seqs(page) == list(range(1, 51))
    assert len({m.message_id for m in page.messages}) == 50
    stored_room = await RoomStore(db).get(room)
    assert (stored_room.last_seq, stored_room.message_count) == (50, 50)


async def test_rooms_have_independent_seqs(db, messages):
    a, b = unique(), unique()
    rooms = RoomStore(db)
    await rooms.ensure(a, name=a, type="public")
    await rooms.ensure(b, name=b, type="public")
    results = await asyncio.gather(*(messages.insert(new(a if i % 2 else b, f"m{i}")) for i in range(20)))
    assert sorted(m.seq for m, _ in results if m.room_id == a) == list(range(1, 11))
    assert sorted(m.seq for m, _ in results if m.room_id == b) == list(range(1, 11))


async def test_insert_into_missing_room_fails(messages):
    with pytest.raises(LookupError):
        await messages.insert(new(unique("missing")))


async def test_idempotent_by_client_msg_id(messages, room):
    first, created = await messages.insert(new(room, "once", client_msg_id="dup"))
    assert created is True
    again, created_again = await messages.insert(new(room, "once (retry)", client_msg_id="dup"))
    assert created_again is False
    assert again.message_id == first.message_id
    assert (again.seq, again.content) == (1, "once")
    # Same id from another user, or in another room, is another message.
    other_user, created_other = await messages.insert(new(room, "bob's", user=BOB, client_msg_id="dup"))
    assert created_other is True and other_user.seq == 2
    nxt, _ = await messages.insert(new(room, "next"))
    assert nxt.seq == 3  # no gap from the refused duplicate
    assert seqs(await messages.before(room, None, 10)) == [1, 2, 3]


async def test_concurrent_duplicates_store_one(messages, room):
    results = await asyncio.gather(*(messages.insert(new(room, f"try {i}", client_msg_id="race")) for i in range(5)))
    assert sum(created for _, created in results) == 1
    assert len({m.message_id for m, _ in results}) == 1
    assert {m.seq for m, _ in results} == {1}
    nxt, _ = await messages.insert(new(room, "after the race"))
    assert nxt.seq == 2
    assert seqs(await messages.before(room, None, 10)) == [1, 2]


async def test_duplicate_race_past_the_precheck(messages, room):
    """Both inserts miss the pre-check and reach the INSERT: the unique index decides,
    the loser's counter bump rolls back with it and it returns the winner's message."""
    real_lookup = messages.by_client_msg_id
    prechecks = 0

    async def lookup(room_id: str, user_id: str, client_msg_id: str):
        nonlocal prechecks
        if prechecks < 2:  # the first two calls are the two pre-checks
            prechecks += 1
            return None
        return await real_lookup(room_id, user_id, client_msg_id)

    messages.by_client_msg_id = lookup  # type: ignore[method-assign]
    (m1, c1), (m2, c2) = await asyncio.gather(
        messages.insert(new(room, "first", client_msg_id="race-2")),
        messages.insert(new(room, "second", client_msg_id="race-2")),
    )
    assert prechecks == 2
    assert sorted([c1, c2]) == [False, True]
    assert m1.message_id == m2.message_id
    assert m1.seq == m2.seq == 1
    nxt, _ = await messages.insert(new(room, "next"))
    assert nxt.seq == 2
    assert seqs(await messages.before(room, None, 10)) == [1, 2]


async def test_before_cursor(messages, room):
    await fill(messages, room, 10)
    latest = await messages.before(room, None, 3)
    assert seqs(latest) == [8, 9, 10] and latest.has_more is True
    assert [m.content for m in latest.messages] == ["m8", "m9", "m10"]  # oldest first
    older = await messages.before(room, 8, 3)
    assert seqs(older) == [5, 6, 7] and older.has_more is True
    oldest = await messages.before(room, 4, 3)
    assert seqs(oldest) == [1, 2, 3] and oldest.has_more is False
    assert seqs(await messages.before(room, 2, 3)) == [1]
    everything = await messages.before(room, None, 10)
    assert seqs(everything) == list(range(1, 11)) and everything.has_more is False
    assert seqs(await messages.latest(room, 2)) == [9, 10]


async def test_after_cursor(messages, room):
    await fill(messages, room, 10)
    catch_up = await messages.after(room, 5, 3)
    assert seqs(catch_up) == [6, 7, 8] and catch_up.has_more is True
    rest = await messages.after(room, 7, 3)
    assert seqs(rest) == [8, 9, 10] and rest.has_more is False
    nothing = await messages.after(room, 10, 3)
    assert seqs(nothing) == [] and nothing.has_more is False
    assert seqs(await messages.after(room, 0, 100)) == list(range(1, 11))


async def test_numbered_pages(messages, room):
    await fill(messages, room, 10)
    first = await messages.page(room, 1, 4)
    assert seqs(first) == [7, 8, 9, 10] and first.has_more is True
    second = await messages.page(room, 2, 4)
    assert seqs(second) == [3, 4, 5, 6] and second.has_more is True
    third = await messages.page(room, 3, 4)
    assert seqs(third) == [1, 2] and third.has_more is False
    assert seqs(await messages.page(room, 4, 4)) == []


async def test_empty_room_history(messages, room):
    for page in (await messages.before(room, None, 5), await messages.after(room, 0, 5), await messages.page(room, 1, 5)):
        assert page.messages == [] and page.has_more is False


async def test_other_rooms_do_not_leak_into_history(db, messages, room):
    other = unique()
    await RoomStore(db).ensure(other, name=other, type="public")
    await fill(messages, room, 3)
    await fill(messages, other, 5)
    assert [m.room_id for m in (await messages.before(room, None, 100)).messages] == [room] * 3


async def test_deleted_messages_hidden_from_history(db, messages, room):
    await fill(messages, room, 10)
    await db.execute("UPDATE messages SET deleted_at = now(), deleted_by = 'mod' WHERE room_id = %s AND seq IN (9, 5)", (room,))
    latest = await messages.before(room, None, 3)
    assert seqs(latest) == [7, 8, 10] and latest.has_more is True
    assert seqs(await messages.before(room, 7, 3)) == [3, 4, 6]
    assert seqs(await messages.after(room, 4, 3)) == [6, 7, 8]
    assert seqs(await messages.after(room, 0, 100)) == [1, 2, 3, 4, 6, 7, 8, 10]
    assert seqs(await messages.page(room, 1, 4)) == [6, 7, 8, 10]
    assert seqs(await messages.page(room, 2, 4)) == [1, 2, 3, 4]
    last_two_deleted = await messages.before(room, 3, 2)
    assert seqs(last_two_deleted) == [1, 2] and last_two_deleted.has_more is False
    # A deleted message keeps its seq (no renumbering): the next one continues the sequence.
    nxt, _ = await messages.insert(new(room, "after deletes"))
    assert nxt.seq == 11
