"""The reads the per-node caches reload with (one statement for many keys), on a real,
migrated PostgreSQL database: each key gets what its own single read would give."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from chat_server.storage.db import Database
from chat_server.storage.moderation import ModerationStore
from chat_server.storage.rooms import RoomStore
from tests.conftest import unique


async def test_rooms_by_id_in_one_read(db: Database) -> None:
    store = RoomStore(db)
    first, second, missing = unique(), unique(), unique()
    for room_id in (first, second):
        await store.ensure(room_id, name=f"name of {room_id}", type="public")
    found = await store.get_many([first, missing, second])
    assert set(found) == {first, second}
    for room_id in (first, second):
        assert found[room_id] == await store.get(room_id)
    assert await store.get_many([]) == {}


async def test_bans_of_many_user_room_pairs_in_one_read(db: Database) -> None:
    rooms = RoomStore(db)
    r1, r2, r3 = unique(), unique(), unique()
    for room_id in (r1, r2, r3):
        await rooms.ensure(room_id, name=room_id, type="public")
    ann, ben, cat = unique(), unique(), unique()
    now = datetime.now(UTC)
    for room_id, user_id, expires_at, lifted in (
        (r1, ann, None, False),                          # ann: banned in r1
        (None, ben, None, False),                        # ben: banned everywhere
        (r2, cat, now - timedelta(minutes=1), False),    # cat: a timeout that is over
        (r3, cat, None, True),                           # cat: a lifted ban
        (r2, ann, now + timedelta(minutes=5), False),    # ann: timed out in r2
    ):
        await db.execute(
            "INSERT INTO bans (room_id, user_id, reason, created_by, expires_at, lifted_at) VALUES (%s, %s, 'x', 'mod', %s, %s)",
            (room_id, user_id, expires_at, now if lifted else None),
        )
    store = ModerationStore(db)
    # ann is asked about r1 and r3 only: her r2 timeout (r2 is asked about for others) is not r3's.
    keys = [(ann, r1), (ann, r3), (ben, r2), (cat, r2), (cat, r3)]
    found = await store.active_bans_for_many(keys, now)
    assert set(found) == set(keys)
    for user_id, room_id in keys:
        single = await store.active_bans_for(user_id, room_id, now)
        assert sorted(b.id for b in found[(user_id, room_id)]) == sorted(b.id for b in single)
    assert [b.room_id for b in found[(ann, r1)]] == [r1]
    assert found[(ann, r3)] == [] and found[(cat, r2)] == [] and found[(cat, r3)] == []
    assert [b.room_id for b in found[(ben, r2)]] == [None]


class CountingDatabase(Database):
    statements = 0

    async def fetch_tuples(self, sql, params=None):  # type: ignore[no-untyped-def]
        self.statements += 1
        return await super().fetch_tuples(sql, params)


async def test_block_lists_loaded_together_share_one_read(database_url: str) -> None:
    db = CountingDatabase(database_url, pool_size=2, timeout_s=10.0)
    await db.connect()
    try:
        store = ModerationStore(db)
        ann, ben, cat, dan = unique(), unique(), unique(), unique()
        for user_id, blocked in ((ann, ben), (ann, cat), (ben, ann)):
            await store.add_block(user_id, blocked)
        before = db.statements
        # A wave of connections: the first load leaves alone, the rest wait for it and go together.
        lists = await asyncio.gather(*(store.blocked_ids(u) for u in (ann, ben, cat, ann, dan, ben)))
        assert lists == [{ben, cat}, {ann}, set(), {ben, cat}, set(), {ann}]
        assert db.statements - before <= 2
        lists[0].add("changed by its caller")
        assert lists[3] == {ben, cat}  # each caller has a set of its own
        for user_id in (ann, ben, cat, dan):
            assert await store.blocked_ids(user_id) == {b.blocked_user_id for b in await store.blocks(user_id)}
    finally:
        await db.close()
