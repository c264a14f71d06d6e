"""Refresh-ahead of the send path's read caches (services/cache.py): room rows
(``RoomService`` + ``RoomCache``) and ban state (``BanChecks``), with fake stores and a
hand-driven clock.  A read never waits for the database while its entry is younger than
the TTL; busy entries are reloaded in the background, one reload per key at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from chat_server import errors
from chat_server.domain import Ban, Room
from chat_server.services.cache import REFRESH_FROM, REFRESH_TO, Freshness, Refresher
from chat_server.services.moderation import BanChecks
from chat_server.services.rooms import RoomCache, RoomPolicy, RoomService

from .test_ban_checks import FakeBans
from .test_message_service import ALICE, FakePresence, FakeRooms

TTL = 10.0
NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


class GatedRooms(FakeRooms):
    """Counts reads; while ``gate`` is set to an unset Event, reads wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def get(self, room_id: str) -> Room | None:
        self.gets += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("database down")
        return await super().get(room_id)


async def cached_lobby() -> tuple[list[float], GatedRooms, RoomService]:
    """A room service whose cache holds "lobby", read at time 0 (a hand-driven clock; the
    entry is due a reload at half the TTL, rng 0)."""
    clock = [0.0]
    repo = GatedRooms()
    repo.add("lobby")
    service = RoomService(repo, FakePresence(), RoomPolicy(), cache=RoomCache(TTL, lambda: clock[0], rng=lambda: 0.0))
    await service.visible(ALICE, "lobby", cached=True)
    return clock, repo, service


def test_entries_are_due_for_a_reload_between_half_and_four_fifths_of_the_ttl():
    clock = [100.0]
    for rng in (0.0, 0.5, 0.999999):
        refresh_at, expires_at = Freshness(TTL, lambda: clock[0], lambda r=rng: r).stamp()
        assert 100 + REFRESH_FROM * TTL <= refresh_at < 100 + REFRESH_TO * TTL
        assert expires_at == 100 + TTL
    early, late = (Freshness(TTL, lambda: clock[0], lambda r=r: r).stamp()[0] for r in (0.0, 0.999))
    assert late - early > 0.29 * TTL  # entries loaded together are reloaded apart


async def test_a_busy_room_is_reloaded_in_the_background_and_no_read_waits():
    clock, repo, service = await cached_lobby()
    assert repo.gets == 1

    clock[0] = 4.9  # before refresh_at (rng 0: half the TTL)
    await service.visible(ALICE, "lobby", cached=True)
    assert repo.gets == 1

    repo.rooms["lobby"] = replace(repo.rooms["lobby"], settings={"slow_mode_seconds": 3})  # lost invalidation
    repo.gate = asyncio.Event()  # the reload will hang until released
    clock[0] = 5.1
    for _ in range(3):  # each read answers at once, from the cache, while one reload runs
        room = await asyncio.wait_for(service.visible(ALICE, "lobby", cached=True), 1)
        assert room.settings == {}
    while service.refresher.running == 0:  # it starts once the keys due meanwhile are gathered
        await asyncio.sleep(0.01)
    assert repo.gets == 2 and service.refresher.running == 1
    repo.gate.set()
    await service.refresher.wait()
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == {"slow_mode_seconds": 3}
    assert repo.gets == 2


async def test_an_entry_nobody_read_for_a_whole_ttl_is_read_again_before_it_is_served():
    clock, repo, service = await cached_lobby()
    repo.rooms["lobby"] = replace(repo.rooms["lobby"], settings={"emoji_only": True})
    clock[0] = TTL + 0.01
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == {"emoji_only": True}
    assert repo.gets == 2 and service.refresher.running == 0


async def test_a_reload_that_started_before_an_invalidation_is_not_cached():
    clock, repo, service = await cached_lobby()
    repo.gate = asyncio.Event()
    clock[0] = 6.0
    await service.visible(ALICE, "lobby", cached=True)  # starts the reload, which reads the old row
    await asyncio.sleep(0)
    service.forget("lobby")  # the room changed meanwhile
    repo.rooms["lobby"] = replace(repo.rooms["lobby"], settings={"emoji_only": True})
    repo.gate.set()
    await service.refresher.wait()
    repo.gate = None
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == {"emoji_only": True}


async def test_a_failed_reload_keeps_serving_the_entry_until_it_expires():
    clock, repo, service = await cached_lobby()
    repo.fail = True
    clock[0] = 6.0
    assert (await service.visible(ALICE, "lobby", cached=True)).id == "lobby"
    await service.refresher.wait()
    assert (await service.visible(ALICE, "lobby", cached=True)).id == "lobby"  # another reload, still served
    await service.refresher.wait()
    clock[0] = TTL + 1  # expired: the read itself goes to the database, and its error is the caller's
    with pytest.raises(ConnectionError):
        await service.visible(ALICE, "lobby", cached=True)


async def test_a_room_deleted_meanwhile_is_dropped_by_its_reload():
    clock, repo, service = await cached_lobby()
    del repo.rooms["lobby"]
    clock[0] = 6.0
    await service.visible(ALICE, "lobby", cached=True)
    await service.refresher.wait()
    with pytest.raises(errors.NotFound):
        await service.visible(ALICE, "lobby", cached=True)


async def test_ban_state_of_a_busy_sender_is_reloaded_in_the_background():
    """A ban whose invalidation was lost still applies within the TTL, and the sender's
    messages never wait for the reload that finds it."""
    store = FakeBans()
    mono = [0.0]
    checks = BanChecks(store, clock=lambda: NOW.timestamp(), monotonic=lambda: mono[0], ttl_s=TTL)
    checks.cache._freshness = Freshness(TTL, lambda: mono[0], lambda: 0.0)
    assert await checks.check_post(ALICE, "r1") is False
    store.bans.append(Ban(1, "r1", "alice", None, False, "mod", NOW))  # no forget(): the bus lost it
    mono[0] = 5.5
    assert await checks.check_post(ALICE, "r1") is False  # served from the cache; a reload starts
    assert await checks.check_post(ALICE, "r1") is False  # one reload per key, not one per message
    await checks.refresher.wait()
    assert store.reads == 2
    with pytest.raises(errors.Banned):
        await checks.check_post(ALICE, "r1")



async def test_keys_due_together_share_one_read_and_later_ones_the_next():
    """After a pause every busy entry is due at once: they are reloaded by a few reads,
    one at a time, not one read per key, and each key once."""
    gate = asyncio.Event()
    reads: list[list[int]] = []

    async def reload_many(keys: list[int]) -> None:
        reads.append(keys)
        await gate.wait()

    refresher: Refresher[int] = Refresher("test", reload_many, max_batch=8, gather_s=0)
    for key in range(10):
        refresher.start(key)
        refresher.start(key)  # asked twice: still once
    await asyncio.sleep(0)
    assert reads == [list(range(8))] and refresher.running == 8 and refresher.waiting == 2
    refresher.start(3)  # being reloaded: not queued again
    refresher.start(10)  # due while the read is under way: goes with the next one
    assert refresher.waiting == 3
    gate.set()
    await refresher.wait()
    assert reads == [list(range(8)), [8, 9, 10]] and refresher.running == refresher.waiting == 0


async def test_keys_that_come_due_one_at_a_time_share_a_read():
    """In steady traffic keys come due apart (their refresh points are spread): those due
    within the gathering time go together."""
    reads: list[list[int]] = []

    async def reload_many(keys: list[int]) -> None:
        reads.append(keys)

    refresher: Refresher[int] = Refresher("test", reload_many, gather_s=0.2)
    for key in range(5):
        refresher.start(key)
        await asyncio.sleep(0.02)
    assert reads == []
    await refresher.wait()
    assert reads == [[0, 1, 2, 3, 4]]
    refresher.start(5)
    await refresher.wait()
    assert reads == [[0, 1, 2, 3, 4], [5]]


async def test_one_read_reloads_every_due_room_and_ban_entry():
    clock = [0.0]
    repo = GatedRooms()
    for room_id in ("a", "b", "c"):
        repo.add(room_id)
    service = RoomService(repo, FakePresence(), RoomPolicy(), cache=RoomCache(TTL, lambda: clock[0], rng=lambda: 0.0))
    for room_id in ("a", "b", "c"):
        await service.visible(ALICE, room_id, cached=True)
    repo.rooms["b"] = replace(repo.rooms["b"], settings={"emoji_only": True})  # a lost invalidation
    del repo.rooms["c"]
    reads: list[list[str]] = []
    get_many = repo.get_many

    async def counted(room_ids: Sequence[str]) -> dict[str, Room]:
        reads.append(list(room_ids))
        return await get_many(room_ids)

    repo.get_many = counted  # type: ignore[method-assign]
    clock[0] = 6.0
    for room_id in ("a", "b", "c"):
        await service.visible(ALICE, room_id, cached=True)  # all due: served, and queued
    await service.refresher.wait()
    assert reads == [["a", "b", "c"]]
    assert (await service.visible(ALICE, "b", cached=True)).settings == {"emoji_only": True}
    with pytest.raises(errors.NotFound):
        await service.visible(ALICE, "c", cached=True)  # deleted meanwhile: dropped by the reload

    store = FakeBans()
    mono = [0.0]
    checks = BanChecks(store, clock=lambda: NOW.timestamp(), monotonic=lambda: mono[0], ttl_s=TTL)
    checks.cache._freshness = Freshness(TTL, lambda: mono[0], lambda: 0.0)
    bob = replace(ALICE, user_id="bob", username="bob")
    for user in (ALICE, bob):
        for room_id in ("r1", "r2"):
            assert await checks.check_post(user, room_id) is False
    assert store.reads == 4
    store.bans.append(Ban(1, "r2", "bob", None, False, "mod", NOW))  # the bus lost it
    mono[0] = 5.5
    for user in (ALICE, bob):
        for room_id in ("r1", "r2"):
            assert await checks.check_post(user, room_id) is False
    await checks.refresher.wait()
    assert store.reads == 5  # the four entries in one read
    with pytest.raises(errors.Banned):
        await checks.check_post(bob, "r2")
    for user, room_id in ((ALICE, "r1"), (ALICE, "r2"), (bob, "r1")):
        assert await checks.check_post(user, room_id) is False
