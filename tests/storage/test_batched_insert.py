"""Group commit of new messages (``MessageStore(batching=True)``) on a real PostgreSQL.

Concurrent inserts share one statement per batch; per room, seq stays gapless in commit
order; client_msg_id stays idempotent (within a batch, across batches and against another
node); a failed batch fails exactly its callers and stores nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from typing import Any

import psycopg2
import pytest

from chat_server.domain import Message, NewMessage, Principal
from chat_server.errors import Unavailable
from chat_server.services.messages import MessageLimits, MessageService
from chat_server.services.rooms import RoomPolicy, RoomService
from chat_server.storage.db import Database
from chat_server.storage.messages import MessageStore
from chat_server.storage.rooms import RoomStore
from tests.conftest import unique

ALICE = Principal("alice", "Alice")
BOB = Principal("bob", "Bob")
USERS = [Principal(f"user{i}", f"User {i}") for i in range(8)]


@pytest.fixture
def store(db: Database) -> MessageStore:
    return MessageStore(db, batching=True)


async def new_room(db: Database) -> str:
    room_id = unique()
    await RoomStore(db).ensure(room_id, name=room_id, type="public")
    return room_id


def new(room_id: str, content: str = "hi", *, user: Principal = ALICE, client_msg_id: str | None = None) -> NewMessage:
    return NewMessage(
        message_id=uuid.uuid4().hex, room_id=room_id, user=user, content=content,
        content_html=content, type="text", client_msg_id=client_msg_id, reply_to=None,
    )


async def stored_seqs(db: Database, room_id: str) -> list[int]:
    rows = await db.fetch("SELECT seq FROM messages WHERE room_id = %s ORDER BY seq", (room_id,))
    return [r["seq"] for r in rows]


async def counters(db: Database, room_id: str) -> tuple[int, int]:
    row = await db.fetchrow("SELECT last_seq, message_count FROM rooms WHERE id = %s", (room_id,))
    assert row is not None
    return row["last_seq"], row["message_count"]


# --- throughput shape: many callers, few statements -------------------------------------------


async def test_240_concurrent_inserts_over_4_rooms_are_gapless_batched_and_each_caller_gets_its_own(db, store):
    rooms = [await new_room(db) for _ in range(4)]
    news = [new(rooms[i % 4], f"m{i}", user=USERS[i % len(USERS)], client_msg_id=f"c{i}" if i % 3 else None) for i in range(240)]
    results = await asyncio.gather(*(store.insert(n) for n in news))

    for n, (message, created) in zip(news, results, strict=True):
        assert created is True
        assert (message.message_id, message.content, message.room_id, message.user_id) == (n.message_id, n.content, n.room_id, n.user.user_id)
        assert message.client_msg_id == n.client_msg_id
    by_room: dict[str, list[int]] = defaultdict(list)
    for message, _ in results:
        by_room[message.room_id].append(message.seq)
    for room in rooms:
        assert sorted(by_room[room]) == list(range(1, 61))
        assert await stored_seqs(db, room) == list(range(1, 61))
        assert await counters(db, room) == (60, 60)
    stats = store.batch_stats
    assert stats is not None
    assert stats.items == 240 and stats.largest > 1 and stats.batches < 240, stats
    assert stats.failed_batches == 0


async def test_within_a_batch_a_room_is_numbered_in_arrival_order(db, store):
    room = await new_room(db)
    news = [new(room, f"m{i}") for i in range(30)]
    results = await asyncio.gather(*(store.insert(n) for n in news))  # all submitted in one turn: one batch
    assert [m.seq for m, _ in results] == list(range(1, 31))
    assert store.batch_stats is not None and store.batch_stats.batches == 1


async def test_stored_rows_match_what_the_callers_were_told(db, store):
    room = await new_room(db)
    results = await asyncio.gather(*(store.insert(new(room, f"text {i}", user=USERS[i % 3], client_msg_id=f"k{i}")) for i in range(20)))
    for message, _ in results:
        stored = await store.get(message.message_id)
        assert stored is not None
        assert (stored.seq, stored.content, stored.user_id, stored.client_msg_id, stored.created_at) == (
            message.seq, message.content, message.user_id, message.client_msg_id, message.created_at)


async def test_a_lone_message_is_written_at_once(db, store):
    room = await new_room(db)
    started = time.perf_counter()
    message, created = await store.insert(new(room, "alone"))
    elapsed = time.perf_counter() - started
    assert created and message.seq == 1
    assert store.batch_stats is not None and (store.batch_stats.batches, store.batch_stats.largest) == (1, 1)
    assert elapsed < 1.0  # no batching timer; (tests/unit/test_group_commit.py checks "no wait" exactly)


# --- idempotency -----------------------------------------------------------------------------------


async def test_repeats_of_a_client_msg_id_inside_one_batch_store_one_and_take_one_seq(db, store):
    room = await new_room(db)
    attempts = [new(room, f"try {i}", client_msg_id="dup") for i in range(5)]
    others = [new(room, f"other {i}") for i in range(3)]
    results = await asyncio.gather(*(store.insert(n) for n in [attempts[0], others[0], *attempts[1:], *others[1:]]))
    dup_results = [results[0], *results[2:6]]
    assert [created for _, created in dup_results] == [True, False, False, False, False]
    assert {m.message_id for m, _ in dup_results} == {attempts[0].message_id}
    assert {m.content for m, _ in dup_results} == {"try 0"}
    assert sorted(m.seq for m, _ in results) == [1, 1, 1, 1, 1, 2, 3, 4]
    assert await stored_seqs(db, room) == [1, 2, 3, 4]
    assert await counters(db, room) == (4, 4)


async def test_repeats_across_batches_return_the_original_and_take_no_seq(db, store):
    room = await new_room(db)
    first, created = await store.insert(new(room, "original", client_msg_id="once"))
    assert created and first.seq == 1
    await db.execute("INSERT INTO reactions (message_id, user_id, reaction) VALUES (%s, 'bob', 'like')", (first.message_id,))
    results = await asyncio.gather(
        store.insert(new(room, "retry 1", client_msg_id="once")),
        store.insert(new(room, "fresh 1")),
        store.insert(new(room, "retry 2", client_msg_id="once")),
        store.insert(new(room, "bob's once", user=BOB, client_msg_id="once")),  # another user: another message
        store.insert(new(room, "fresh 2")),
    )
    (r1, c1), (f1, cf1), (r2, c2), (b, cb), (f2, cf2) = results
    assert (c1, c2, cf1, cb, cf2) == (False, False, True, True, True)
    for retry in (r1, r2):
        assert (retry.message_id, retry.seq, retry.content) == (first.message_id, 1, "original")
        assert retry.reactions == {"like": 1}  # the original as stored, reactions included
    assert sorted([f1.seq, b.seq, f2.seq]) == [2, 3, 4]
    assert await stored_seqs(db, room) == [1, 2, 3, 4]
    assert await counters(db, room) == (4, 4)


async def test_same_client_msg_id_on_two_nodes_at_once_stores_one(database_url, db):
    room = await new_room(db)
    other_db = Database(database_url, pool_size=5, timeout_s=10.0)
    await other_db.connect()
    try:
        node_a, node_b = MessageStore(db, batching=True), MessageStore(other_db, batching=True)
        results = await asyncio.gather(*(
            (node_a if i % 2 else node_b).insert(new(room, f"try {i}", client_msg_id=f"c{i // 2}")) for i in range(40)
        ))
        assert sum(created for _, created in results) == 20
        by_id: dict[str | None, set[str]] = defaultdict(set)
        for message, _ in results:
            by_id[message.client_msg_id].add(message.message_id)
        assert all(len(ids) == 1 for ids in by_id.values()) and len(by_id) == 20
        assert await stored_seqs(db, room) == list(range(1, 21))
        assert await counters(db, room) == (20, 20)
    finally:
        await other_db.close()


async def _wait_until_blocked(db: Database, marker: str) -> None:
    """Until a statement containing ``marker`` waits for a lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = await db.fetchrow(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            (f"%{marker}%",))
        if row and row["n"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the batch statement never waited for the room lock")


async def test_client_msg_id_stored_by_another_writer_after_the_batch_snapshot(database_url, db, store):
    """Another node commits the same client_msg_id while this batch waits for the room's
    lock (its snapshot predates that commit): the unique index refuses the batch, which
    is retried, finds the message and returns it as the original.  No seq is lost."""
    room = await new_room(db)
    await store.insert(new(room, "before"))
    marker = uuid.uuid4().hex
    other = psycopg2.connect(database_url)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT last_seq FROM rooms WHERE id = %s FOR UPDATE", (room,))  # hold the room
            batch = asyncio.gather(
                store.insert(new(room, marker, client_msg_id="contested")),
                store.insert(new(room, "bystander " + marker)),
            )
            await _wait_until_blocked(db, "insert_messages")
            winner = uuid.uuid4().hex
            cur.execute("UPDATE rooms SET last_seq = last_seq + 1, message_count = message_count + 1 WHERE id = %s", (room,))
            cur.execute("""INSERT INTO messages (message_id, room_id, seq, user_id, username, content, client_msg_id)
                           VALUES (%s, %s, 2, 'alice', 'Alice', 'from the other node', 'contested')""", (winner, room))
        other.commit()
        (contested, created), (bystander, by_created) = await batch
    finally:
        other.close()
    assert store.batch_retries == 1  # the unique index refused the first attempt
    assert created is False and contested.message_id == winner and contested.seq == 2
    assert contested.content == "from the other node"
    assert by_created is True and bystander.seq == 3
    assert await stored_seqs(db, room) == [1, 2, 3]
    assert await counters(db, room) == (3, 3)


# --- failures ------------------------------------------------------------------------------------


async def test_database_outage_mid_batch_fails_exactly_that_batch_and_stores_nothing_of_it(database_url, db, store):
    room = await new_room(db)
    await store.insert(new(room, "before"))
    holder = psycopg2.connect(database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT last_seq FROM rooms WHERE id = %s FOR UPDATE", (room,))
            doomed = [asyncio.ensure_future(store.insert(new(room, f"doomed {i}"))) for i in range(5)]
            await _wait_until_blocked(db, "insert_messages")
            # Queued behind the batch in flight: the next batch.
            survivors = [asyncio.ensure_future(store.insert(new(room, f"next {i}"))) for i in range(3)]
            await asyncio.sleep(0.05)
            # The database goes away under the batch: its connection is killed mid-statement.
            cur.execute("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                           WHERE wait_event_type = 'Lock' AND query LIKE '%%insert_messages%%'""")
        holder.commit()
        outcomes = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        assert all(o.code == "unavailable" for o in outcomes)  # type: ignore[union-attr]
        nexts = await asyncio.gather(*survivors)
    finally:
        holder.close()
    assert sorted(m.seq for m, _ in nexts) == [2, 3, 4]
    assert [r["content"] for r in await db.fetch("SELECT content FROM messages WHERE room_id = %s ORDER BY seq", (room,))] == [
        "before", "next 0", "next 1", "next 2"]
    assert await counters(db, room) == (4, 4)
    assert store.batch_stats is not None and store.batch_stats.failed_batches == 1


async def test_a_message_postgresql_refuses_fails_alone(db, store):
    room = await new_room(db)
    results = await asyncio.gather(
        store.insert(new(room, "fine 1")),
        store.insert(new(room, "nul \x00 inside")),  # PostgreSQL text cannot hold NUL
        store.insert(new(room, "fine 2")),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert store.batch_fallbacks == 1
    assert [m.seq for m, _ in (results[0], results[2])] == [1, 2]  # type: ignore[misc]
    assert await stored_seqs(db, room) == [1, 2]


async def test_a_missing_room_fails_only_its_message(db, store):
    room = await new_room(db)
    results = await asyncio.gather(
        store.insert(new(room, "fine")),
        store.insert(new(unique("missing"), "nowhere")),
        store.insert(new(room, "fine too")),
        return_exceptions=True,
    )
    assert isinstance(results[1], LookupError)
    assert [m.seq for m, _ in (results[0], results[2])] == [1, 2]  # type: ignore[misc]


async def test_concurrent_batches_on_two_nodes_sharing_rooms_do_not_deadlock(database_url, db):
    rooms = [await new_room(db) for _ in range(5)]
    other_db = Database(database_url, pool_size=5, timeout_s=10.0)
    await other_db.connect()
    try:
        nodes = [MessageStore(db, batching=True, max_in_flight=3), MessageStore(other_db, batching=True, max_in_flight=3)]
        # Each node's batches touch the rooms in different orders.
        news = [(i % 2, new(rooms[(i * 7 if i % 2 else -i) % 5], f"m{i}")) for i in range(300)]
        results = await asyncio.wait_for(asyncio.gather(*(nodes[n].insert(m) for n, m in news)), 60)
    finally:
        await other_db.close()
    assert all(created for _, created in results)
    for room in rooms:
        count = sum(1 for m, _ in results if m.room_id == room)
        assert await stored_seqs(db, room) == list(range(1, count + 1))


# --- the service on top: acks after commit, broadcasts in seq order ------------------------------


class SlowEvents:
    """Records broadcasts; each takes a different (small) time, which would reorder them
    if nothing kept a room's broadcasts in seq order."""

    def __init__(self) -> None:
        self.created: list[Message] = []
        self.calls = 0

    async def message_created(self, message: Message) -> None:
        self.calls += 1
        await asyncio.sleep((self.calls * 7 % 5) / 1000)
        self.created.append(message)

    async def mentioned(self, user_id: str, message: Message) -> None:
        pass


async def test_broadcasts_of_a_room_follow_seq_order(db, store):
    rooms = RoomService(RoomStore(db), _NoPresence(), RoomPolicy())
    events = SlowEvents()
    service = MessageService(store, rooms, events, MessageLimits())
    room_ids = [await new_room(db) for _ in range(3)]
    sent = await asyncio.gather(*(service.send(USERS[i % len(USERS)], room_ids[i % 3], content=f"hello {i}") for i in range(150)))
    assert len(events.created) == 150
    for room in room_ids:
        seqs = [m.seq for m in events.created if m.room_id == room]
        assert seqs == list(range(1, 51))
    assert {m.message_id for m in sent} == {m.message_id for m in events.created}
    assert store.batch_stats is not None and store.batch_stats.largest > 1


class _NoPresence:
    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return []

    async def count(self, room_id: str) -> int:
        return 0
