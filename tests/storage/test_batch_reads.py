"""Statements shared by many keys, on a real, migrated PostgreSQL database: the reads the
per-node caches reload with, and the block lists, ban reads and membership writes of a wave
of connections and joins.  Each key gets what its own single statement would give."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from chat_server.domain import Principal
from chat_server.storage.db import Database
from chat_server.storage.moderation import ModerationStore
from chat_server.storage.rooms import RoomStore
from tests.conftest import unique


async def forget_bans(db: Database, *user_ids: str) -> None:
    """Bans outlive a test in the run's database, and a global one shows in every ban list
    (the moderation tests list them): remove what a test added."""
    await db.execute("DELETE FROM bans WHERE user_id = ANY(%s)", (list(user_ids),))


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
    try:
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
    finally:
        await forget_bans(db, ann, ben, cat)


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


async def test_bans_read_together_share_one_read_and_match_single_reads(database_url: str) -> None:
    db = CountingDatabase(database_url, pool_size=2, timeout_s=10.0)
    await db.connect()
    try:
        rooms, store = RoomStore(db), ModerationStore(db)
        r1, r2 = unique(), unique()
        for room_id in (r1, r2):
            await rooms.ensure(room_id, name=room_id, type="public")
        ann, ben, cat = unique(), unique(), unique()
        now = datetime.now(UTC)
        for room_id, user_id in ((r1, ann), (None, ben)):
            await db.execute("INSERT INTO bans (room_id, user_id, reason, created_by) VALUES (%s, %s, 'x', 'mod')", (room_id, user_id))
        asks = [(ann, r1), (ann, r2), (ben, r2), (cat, r1), (ann, r1), (ben, None), (cat, None)]
        # A wave of joins: the first read leaves alone, the rest wait for it and go together.
        together = await asyncio.gather(*(store.active_bans_for(u, r, now) for u, r in asks))
        assert store._ban_reads.stats.batches <= 2 and store._ban_reads.stats.largest >= len(asks) - 1
        alone = [await store.active_bans_for(u, r, now) for u, r in asks]
        assert [sorted(b.id for b in bans) for bans in together] == [sorted(b.id for b in bans) for bans in alone]
        assert [[b.room_id for b in bans] for bans in together] == [[r1], [], [None], [], [r1], [None], []]
        assert together[0] is not together[4]  # each caller has a list of its own
    finally:
        await forget_bans(db, ann, ben, cat)
        await db.close()


async def test_memberships_recorded_together(db: Database) -> None:
    store = RoomStore(db)
    room_a, room_b, gone = unique(), unique(), unique()
    for room_id in (room_a, room_b):
        await store.ensure(room_id, name=room_id, type="public")
    ann, ben = unique(), unique()
    touches = [(room_a, Principal(ann, "Ann")), (room_b, Principal(ann, "Ann")), (room_a, Principal(ben, "Ben", avatar="b.png")),
               (room_a, Principal(ann, "Ann Renamed")), (gone, Principal(ben, "Ben"))]
    results = await asyncio.gather(*(store.touch_member(r, u) for r, u in touches), return_exceptions=True)
    assert [r is None for r in results] == [True, True, True, True, False]  # only the missing room's join fails
    members = {(r["room_id"], r["user_id"]): r for r in await db.fetch(
        "SELECT room_id, user_id, username, avatar FROM room_members WHERE room_id = ANY(%s)", ([room_a, room_b, gone],))}
    assert set(members) == {(room_a, ann), (room_b, ann), (room_a, ben)}
    assert members[(room_a, ann)]["username"] == "Ann Renamed" and members[(room_a, ben)]["avatar"] == "b.png"
