"""One contract for every PresenceStore: the in-memory one and the Redis one.

The Redis variant talks to the real Redis at 127.0.0.1:6379 (``REDIS_URL`` overrides)
under a key prefix unique to each test, removed afterwards.  Time comes from a fake
clock, so expiry is tested without sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from chat_server.services.presence import Connection, MemoryPresenceStore, PresenceStore
from chat_server.storage.presence_redis import RedisPresenceStore
from tests.conftest import REDIS_URL, FakeClock

TTL = 30.0
ROOM = "room-1"


def user(user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "username": user_id.title(), "avatar": None}


StoreFactory = Callable[[], PresenceStore]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _drop_keys(client: Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == []


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[Redis, str]]:
    """A Redis client and a key prefix of this test only; its keys are removed after."""
    client = Redis.from_url(REDIS_URL)
    prefix = f"chattest:{uuid.uuid4().hex}"
    try:
        yield client, prefix
    finally:
        await _drop_keys(client, prefix)
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def make_store(request, clock) -> AsyncIterator[StoreFactory]:
    """Factory of stores that share state (several nodes of one deployment)."""
    if request.param == "memory":
        shared = MemoryPresenceStore(TTL, clock)
        yield lambda: shared
        return
    client = Redis.from_url(REDIS_URL)
    prefix = f"chattest:{uuid.uuid4().hex}"
    try:
        yield lambda: RedisPresenceStore(client, prefix=prefix, ttl_s=TTL, clock=clock)
    finally:
        await _drop_keys(client, prefix)
        await client.aclose()


@pytest.fixture
def store(make_store) -> PresenceStore:
    return make_store()


async def test_first_connection_is_reported(store):
    assert await store.add(ROOM, user("alice"), "c1") is True
    assert await store.add(ROOM, user("alice"), "c2") is False  # second tab
    assert await store.add(ROOM, user("bob"), "c3") is True


async def test_adding_the_same_connection_again_is_still_first(store):
    assert await store.add(ROOM, user("alice"), "c1") is True
    assert await store.add(ROOM, user("alice"), "c1") is True  # a re-join of the only socket
    assert await store.count(ROOM) == 1


async def test_last_connection_is_reported(store):
    await store.add(ROOM, user("alice"), "c1")
    await store.add(ROOM, user("alice"), "c2")
    assert await store.remove(ROOM, "alice", "c1") is False
    assert await store.is_online(ROOM, "alice") is True
    assert await store.remove(ROOM, "alice", "c2") is True
    assert await store.is_online(ROOM, "alice") is False
    assert await store.count(ROOM) == 0
    assert await store.online(ROOM) == []


async def test_removing_unknown_connection(store):
    assert await store.remove(ROOM, "ghost", "nope") is False
    await store.add(ROOM, user("alice"), "c1")
    assert await store.remove(ROOM, "alice", "other") is False
    assert await store.remove(ROOM, "bob", "c1") is False
    assert await store.is_online(ROOM, "alice") is True
    assert await store.remove(ROOM, "alice", "c1") is True
    assert await store.remove(ROOM, "alice", "c1") is False  # twice


async def test_online_count_is_online(store):
    await store.add(ROOM, user("alice"), "c1")
    await store.add(ROOM, user("alice"), "c2")
    await store.add(ROOM, user("bob"), "c3")
    await store.add("other-room", user("carol"), "c4")
    assert await store.count(ROOM) == 2  # distinct users, not connections
    online = await store.online(ROOM)
    assert sorted(u["user_id"] for u in online) == ["alice", "bob"]
    assert {u["user_id"]: u["username"] for u in online} == {"alice": "Alice", "bob": "Bob"}
    assert await store.is_online(ROOM, "alice") is True
    assert await store.is_online(ROOM, "carol") is False
    assert await store.is_online("other-room", "carol") is True
    assert await store.count("empty-room") == 0
    assert await store.online("empty-room") == []


async def test_online_limit(store):
    for name in ("a", "b", "c", "d"):
        await store.add(ROOM, user(name), f"conn-{name}")
    assert len(await store.online(ROOM, limit=2)) == 2
    assert await store.count(ROOM) == 4


async def test_entries_expire_without_refresh(store, clock):
    await store.add(ROOM, user("alice"), "c1")
    clock.advance(TTL - 1)
    assert await store.is_online(ROOM, "alice") is True
    clock.advance(2)  # the node that held c1 died: nobody refreshed it
    assert await store.is_online(ROOM, "alice") is False
    assert await store.count(ROOM) == 0
    assert await store.online(ROOM) == []
    # Coming back is a first connection again.
    assert await store.add(ROOM, user("alice"), "c2") is True


async def test_refresh_keeps_entries_alive(store, clock):
    await store.add(ROOM, user("alice"), "c1")
    await store.add(ROOM, user("bob"), "c2")
    for _ in range(5):  # well past the ttl in total
        clock.advance(TTL * 0.6)
        await store.refresh([Connection(ROOM, "alice", "c1")])
    assert await store.is_online(ROOM, "alice") is True
    assert await store.is_online(ROOM, "bob") is False
    assert [u["user_id"] for u in await store.online(ROOM)] == ["alice"]
    assert await store.count(ROOM) == 1
    assert await store.add(ROOM, user("alice"), "c3") is False


async def test_refresh_of_unknown_connection_does_not_make_anyone_online(store, clock):
    assert await store.refresh([]) == []
    assert await store.refresh([Connection(ROOM, "ghost", "g1")]) == [Connection(ROOM, "ghost", "g1")]  # reported gone
    assert await store.is_online(ROOM, "ghost") is False
    assert await store.count(ROOM) == 0


async def test_heartbeat_racing_a_disconnect_does_not_resurrect(store):
    # The heartbeat took its list of connections just before this one went away.
    await store.add(ROOM, user("alice"), "c1")
    assert await store.remove(ROOM, "alice", "c1") is True
    await store.add(ROOM, user("bob"), "c9")
    gone = await store.refresh([Connection(ROOM, "alice", "c1"), Connection(ROOM, "bob", "c9")])
    assert gone == [Connection(ROOM, "alice", "c1")]  # the caller decides: here it was removed
    assert await store.is_online(ROOM, "alice") is False
    assert await store.count(ROOM) == 1  # bob
    assert await store.add(ROOM, user("alice"), "c2") is True  # user_joined is not lost


async def test_dead_node_connection_does_not_keep_user(make_store, clock):
    node_a, node_b = make_store(), make_store()
    assert await node_a.add(ROOM, user("alice"), "on-a") is True
    assert await node_b.add(ROOM, user("alice"), "on-b") is False
    clock.advance(TTL * 0.8)
    await node_b.refresh([Connection(ROOM, "alice", "on-b")])  # node A is dead, B is alive
    clock.advance(TTL * 0.8)
    assert await node_b.is_online(ROOM, "alice") is True
    # B's connection is now the only live one: removing it is the last.
    assert await node_b.remove(ROOM, "alice", "on-b") is True
    assert await node_a.is_online(ROOM, "alice") is False


async def test_sweep_hands_a_dead_nodes_users_to_one_node_once(make_store, clock):
    node_a, node_b = make_store(), make_store()
    await node_a.add(ROOM, user("alice"), "a1")
    await node_a.add("other-room", user("alice"), "a1")
    await node_b.add(ROOM, user("bob"), "b1")
    await node_b.add(ROOM, user("carol"), "b2")
    await node_a.add(ROOM, user("carol"), "a2")  # carol also has a tab on the node that dies
    for _ in range(3):  # node A died; B keeps its own connections alive
        clock.advance(TTL * 0.4)
        await node_b.refresh([Connection(ROOM, "bob", "b1"), Connection(ROOM, "carol", "b2")])
    assert await node_a.online(ROOM) is not None  # a read meanwhile must not lose alice's info
    swept = await node_a.sweep() + await node_b.sweep()
    assert sorted((room, info["user_id"], info["username"]) for room, info in swept) == [
        ("other-room", "alice", "Alice"), (ROOM, "alice", "Alice")]
    assert await node_a.sweep() == [] and await node_b.sweep() == []
    assert sorted(u["user_id"] for u in await node_b.online(ROOM)) == ["bob", "carol"]
    # A late heartbeat of that node brings nobody back by itself: it learns what is gone.
    assert await node_a.refresh([Connection(ROOM, "alice", "a1")]) == [Connection(ROOM, "alice", "a1")]
    assert await node_b.is_online(ROOM, "alice") is False
    assert await node_b.add(ROOM, user("alice"), "b3") is True


async def test_sweep_leaves_live_and_departed_users_alone(store, clock):
    await store.add(ROOM, user("alice"), "c1")
    assert await store.remove(ROOM, "alice", "c1") is True  # left normally: announced then
    await store.add(ROOM, user("bob"), "c2")
    for _ in range(4):
        clock.advance(TTL * 0.5)
        await store.refresh([Connection(ROOM, "bob", "c2")])
    assert await store.sweep() == []
    assert await store.is_online(ROOM, "bob") is True


async def test_sweep_is_bounded(store, clock):
    for name in ("a", "b", "c"):
        await store.add(ROOM, user(name), f"conn-{name}")
    clock.advance(TTL + 1)
    first = await store.sweep(limit=2)
    assert len(first) == 2
    assert len(await store.sweep(limit=2)) == 1


async def test_two_redis_stores_share_state(redis_prefix, clock):
    client, prefix = redis_prefix
    other_client = Redis.from_url(REDIS_URL)
    try:
        node_a = RedisPresenceStore(client, prefix=prefix, ttl_s=TTL, clock=clock)
        node_b = RedisPresenceStore(other_client, prefix=prefix, ttl_s=TTL, clock=clock)
        assert await node_a.add(ROOM, user("alice"), "a1") is True
        assert await node_b.add(ROOM, user("bob"), "b1") is True
        # Alice's second tab landed on the other node: not a new arrival.
        assert await node_b.add(ROOM, user("alice"), "b2") is False
        for node in (node_a, node_b):
            assert await node.count(ROOM) == 2
            assert sorted(u["user_id"] for u in await node.online(ROOM)) == ["alice", "bob"]
            assert await node.is_online(ROOM, "bob") is True
        assert await node_a.remove(ROOM, "alice", "a1") is False
        assert await node_b.remove(ROOM, "alice", "b2") is True
        assert await node_a.is_online(ROOM, "alice") is False
        # A store under another prefix (another deployment) sees nobody.
        stranger = RedisPresenceStore(client, prefix=prefix + "-other", ttl_s=TTL, clock=clock)
        assert await stranger.count(ROOM) == 0
    finally:
        await other_client.aclose()


async def test_count_and_online_follow_a_long_random_run(store, clock):
    """Joins, leaves, heartbeats, sweeps and time passing, in random order: after every
    step the count and the online list are exactly the users with a live connection (the
    in-memory store keeps its count between scans instead of scanning the room each time)."""
    import random

    rng = random.Random(11)
    model: dict[str, dict[str, float]] = {}  # user -> connection -> expiry
    for _ in range(1500):
        op = rng.random()
        user_id = f"u{rng.randrange(25)}"
        conn_id = f"{user_id}:{rng.randrange(3)}"
        if op < 0.4:
            await store.add(ROOM, user(user_id), conn_id)
            model.setdefault(user_id, {})[conn_id] = clock.now + TTL
        elif op < 0.65:
            await store.remove(ROOM, user_id, conn_id)
            model.get(user_id, {}).pop(conn_id, None)
        elif op < 0.75:
            beat = [Connection(ROOM, u, c) for u, conns in model.items() for c in conns if rng.random() < 0.6]
            gone = set(await store.refresh(beat))
            for c in beat:
                if c in gone:
                    model[c.user_id].pop(c.conn_id, None)  # lapsed and taken out meanwhile
                else:
                    model[c.user_id][c.conn_id] = clock.now + TTL
        elif op < 0.8:
            for room_id, info in await store.sweep():
                assert room_id == ROOM and not any(e > clock.now for e in model.pop(info["user_id"], {}).values())
        else:
            clock.advance(rng.choice([0.5, 5.0, 12.0, 31.0]))
        live = {u for u, conns in model.items() if any(e > clock.now for e in conns.values())}
        assert await store.count(ROOM) == len(live)
        assert {o["user_id"] for o in await store.online(ROOM, limit=100)} == live
        few = await store.online(ROOM, limit=3)
        assert len(few) == min(3, len(live)) and {o["user_id"] for o in few} <= live


async def test_online_until_the_last_remaining_connection_expires(store, clock):
    """Closing the newer tab leaves the user online only as long as the older one lives
    (the Redis store used to keep the closed tab's expiry)."""
    await store.add(ROOM, user("alice"), "c1")
    clock.advance(10)
    await store.add(ROOM, user("alice"), "c2")
    assert await store.remove(ROOM, "alice", "c2") is False
    clock.advance(TTL - 5)  # c1 lapsed (its node stopped refreshing it); c2 would still live
    assert await store.count(ROOM) == 0
    assert not await store.is_online(ROOM, "alice")
    assert await store.online(ROOM) == []
