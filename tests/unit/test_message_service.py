"""MessageService and RoomService against in-memory fakes (no network)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from chat_server import errors
from chat_server.domain import HistoryPage, Membership, Message, NewMessage, Principal, Room
from chat_server.services.messages import MessageLimits, MessageService
from chat_server.services.rooms import RoomPolicy, RoomService

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)

ALICE = Principal("alice", "Alice")
BOB = Principal("bob", "Bob")
MOD = Principal("mod", "Mod", role="moderator")
ADMIN = Principal("root", "Root", role="admin")


# --- fakes ---------------------------------------------------------------------------------


class FakeRooms:
    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.members: dict[tuple[str, str], Membership] = {}

    def add(self, room_id: str, type: str = "public", members: tuple[str, ...] = ()) -> Room:
        room = Room(room_id, room_id, type, {}, None, NOW)
        self.rooms[room_id] = room
        for user_id in members:
            self.members[(room_id, user_id)] = Membership(room_id, user_id, user_id, None, "member", NOW)
        return room

    async def get(self, room_id: str) -> Room | None:
        return self.rooms.get(room_id)


    async def get_many(self, room_ids: Sequence[str]) -> dict[str, Room]:
        # Through get(), so subclasses that count or gate reads see these too.
        rooms = {room_id: await self.get(room_id) for room_id in room_ids}
        return {room_id: room for room_id, room in rooms.items() if room is not None}
    async def create(self, room_id: str, *, name: str, type: str, settings: Mapping[str, Any], owner: Principal | None, members: list[str] | None = None) -> Room:
        if room_id in self.rooms:
            raise errors.Conflict("exists")
        room = Room(room_id, name, type, dict(settings), owner.user_id if owner else None, NOW)
        self.rooms[room_id] = room
        if owner is not None:
            self.members[(room_id, owner.user_id)] = Membership(room_id, owner.user_id, owner.username, owner.avatar, "owner", NOW)
        return room

    async def ensure(self, room_id: str, *, name: str, type: str) -> Room:
        return self.rooms.get(room_id) or self.add(room_id, type)

    async def update(self, room_id: str, *, name: str | None, settings: Mapping[str, Any] | None) -> Room | None:
        room = self.rooms.get(room_id)
        if room is None:
            return None
        room = replace(room, name=name or room.name, settings={**room.settings, **(settings or {})})
        self.rooms[room_id] = room
        return room

    async def membership(self, room_id: str, user_id: str) -> Membership | None:
        return self.members.get((room_id, user_id))

    async def touch_member(self, room_id: str, user: Principal) -> None:
        self.members.setdefault((room_id, user.user_id), Membership(room_id, user.user_id, user.username, user.avatar, "member", NOW))

    async def members(self, room_id: str, *, limit: int = 1000) -> list[Membership]:
        return [m for (r, _), m in self.members.items() if r == room_id][:limit]

    async def resolve_mentions(self, room_id: str, tokens: list[str]) -> dict[str, str]:
        return {}


class FakePresence:
    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return []

    async def count(self, room_id: str) -> int:
        return 0


class FakeMessages:
    """Stores messages like MessageStore: per-room seq, idempotent on client_msg_id."""

    def __init__(self) -> None:
        self.stored: list[Message] = []
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.viewers: list[str] = []  # whose history was read

    async def insert(self, new: NewMessage) -> tuple[Message, bool]:
        for m in self.stored:
            if new.client_msg_id is not None and (m.room_id, m.user_id, m.client_msg_id) == (new.room_id, new.user.user_id, new.client_msg_id):
                return m, False
        seq = 1 + sum(1 for m in self.stored if m.room_id == new.room_id)
        message = Message(
            message_id=new.message_id, room_id=new.room_id, seq=seq, user_id=new.user.user_id,
            username=new.user.username, avatar=new.user.avatar, content=new.content,
            content_html=new.content_html, type=new.type, created_at=NOW, mentions=new.mentions,
            reply_to=new.reply_to, client_msg_id=new.client_msg_id,
        )
        self.stored.append(message)
        return message, True

    async def get(self, message_id: str) -> Message | None:
        return next((m for m in self.stored if m.message_id == message_id), None)

    def for_viewer(self, viewer: str) -> FakeMessages:
        self.viewers.append(viewer)
        return self

    async def before(self, room_id: str, before_seq: int | None, limit: int) -> HistoryPage:
        self.calls.append(("before", (room_id, before_seq, limit)))
        return HistoryPage([], False)

    async def after(self, room_id: str, after_seq: int, limit: int) -> HistoryPage:
        self.calls.append(("after", (room_id, after_seq, limit)))
        return HistoryPage([], False)

    async def page(self, room_id: str, page: int, limit: int) -> HistoryPage:
        self.calls.append(("page", (room_id, page, limit)))
        return HistoryPage([], False)


class RecordingEvents:
    def __init__(self, store: FakeMessages, fail: bool = False) -> None:
        self.store = store
        self.fail = fail
        self.created: list[Message] = []
        self.stored_when_announced: list[bool] = []

    async def message_created(self, message: Message) -> None:
        self.stored_when_announced.append(message in self.store.stored)
        self.created.append(message)
        if self.fail:
            raise ConnectionError("fan-out is down")

    def __getattr__(self, name: str) -> Any:
        # Any other announcement the service may make is accepted and ignored.
        async def ignore(*args: Any, **kwargs: Any) -> None:
            return None

        return ignore


class World:
    def __init__(self, *, fail_broadcast: bool = False, max_length: int = 50, history_limit: int = 20) -> None:
        self.rooms = FakeRooms()
        self.rooms.add("lobby")
        self.rooms.add("secret", "private", members=("bob",))
        self.messages = FakeMessages()
        self.events = RecordingEvents(self.messages, fail=fail_broadcast)
        self.room_service = RoomService(self.rooms, FakePresence(), RoomPolicy())
        ids = itertools.count(1)
        self.service = MessageService(
            self.messages, self.room_service, self.events,
            MessageLimits(max_length=max_length, history_limit=history_limit),
            id_factory=lambda: f"m{next(ids)}",
        )


@pytest.fixture
def world() -> World:
    return World()


# --- sending -------------------------------------------------------------------------------


async def test_send_stores_then_broadcasts(world):
    message = await world.service.send(ALICE, "lobby", content="hello <b>all</b>")
    assert message.content == "hello all"
    assert message.seq == 1
    assert message.user_id == "alice"
    assert world.messages.stored == [message]
    assert world.events.created == [message]
    assert world.events.stored_when_announced == [True]  # after the insert, never before


async def test_too_long_is_rejected(world):
    with pytest.raises(errors.MessageRejected) as info:
        await world.service.send(ALICE, "lobby", content="x" * 51)
    assert info.value.reason == "too_long"
    assert info.value.code == "message_rejected"
    assert info.value.to_dict()["details"]["reason"] == "too_long"
    assert world.messages.stored == [] and world.events.created == []


async def test_exactly_max_length_is_accepted(world):
    message = await world.service.send(ALICE, "lobby", content="x" * 50)
    assert len(message.content) == 50


@pytest.mark.parametrize("content", ["", "   ", "\n\t", "<b></b>", "\u200b\u200b", "<script></script>"])
async def test_empty_is_rejected(world, content):
    with pytest.raises(errors.MessageRejected) as info:
        await world.service.send(ALICE, "lobby", content=content)
    assert info.value.reason == "empty"
    assert world.messages.stored == [] and world.events.created == []


async def test_unknown_type_is_a_validation_error(world):
    with pytest.raises(errors.ValidationFailed):
        await world.service.send(ALICE, "lobby", content="hi", type="html")
    assert world.messages.stored == []


async def test_encrypted_message_is_not_rendered(world):
    message = await world.service.send(ALICE, "lobby", content="QUJD<b>==", type="encrypted")
    assert message.content == "QUJD<b>=="
    assert message.content_html is None
    assert message.type == "encrypted"


async def test_duplicate_client_msg_id_is_not_broadcast_again(world):
    first = await world.service.send(ALICE, "lobby", content="once", client_msg_id="c-1")
    again = await world.service.send(ALICE, "lobby", content="once", client_msg_id="c-1")
    assert again.message_id == first.message_id
    assert again.seq == first.seq
    assert len(world.messages.stored) == 1
    assert world.events.created == [first]


async def test_same_client_msg_id_by_another_user_is_a_new_message(world):
    await world.service.send(ALICE, "lobby", content="a", client_msg_id="c-1")
    other = await world.service.send(BOB, "lobby", content="b", client_msg_id="c-1")
    assert other.seq == 2
    assert len(world.events.created) == 2


async def test_failing_broadcaster_does_not_fail_the_send():
    world = World(fail_broadcast=True)
    message = await world.service.send(ALICE, "lobby", content="still stored")
    assert world.messages.stored == [message]
    assert len(world.events.created) == 1  # it was tried
    nxt = await world.service.send(ALICE, "lobby", content="and the next one")
    assert nxt.seq == 2


async def test_send_to_missing_room_is_not_found(world):
    with pytest.raises(errors.NotFound):
        await world.service.send(ALICE, "nowhere", content="hi")
    assert world.messages.stored == []


async def test_private_room_invisible_to_non_member(world):
    with pytest.raises(errors.NotFound) as missing_room:
        await world.service.send(ALICE, "never-existed", content="hi")
    with pytest.raises(errors.NotFound) as private_room:
        await world.service.send(ALICE, "secret", content="hi")
    # Indistinguishable from a missing room: no leak of its existence.
    assert private_room.value.to_dict() == missing_room.value.to_dict()
    with pytest.raises(errors.NotFound):
        await world.service.history(ALICE, "secret")
    with pytest.raises(errors.NotFound):
        await world.room_service.visible(ALICE, "secret")
    assert world.messages.stored == [] and world.events.created == []


async def test_private_room_visible_to_member_and_staff(world):
    assert (await world.service.send(BOB, "secret", content="hi")).room_id == "secret"
    assert (await world.room_service.visible(MOD, "secret")).id == "secret"
    assert (await world.room_service.visible(ADMIN, "secret")).id == "secret"


async def test_reply_to_must_be_in_the_same_room(world):
    parent = await world.service.send(BOB, "secret", content="parent")
    with pytest.raises(errors.ValidationFailed):
        await world.service.send(ALICE, "lobby", content="reply", reply_to=parent.message_id)
    with pytest.raises(errors.ValidationFailed):
        await world.service.send(ALICE, "lobby", content="reply", reply_to="no-such-id")
    here = await world.service.send(ALICE, "lobby", content="parent here")
    reply = await world.service.send(BOB, "lobby", content="reply", reply_to=here.message_id)
    assert reply.reply_to == here.message_id


async def test_invalid_room_id_is_a_validation_error(world):
    with pytest.raises(errors.ValidationFailed):
        await world.service.send(ALICE, "bad room id!", content="hi")


# --- rooms ---------------------------------------------------------------------------------


async def test_create_room_by_non_moderator_is_forbidden(world):
    with pytest.raises(errors.Forbidden):
        await world.room_service.create(ALICE, room_id="new-room", name="New", type="public", settings=None)
    assert "new-room" not in world.rooms.rooms


@pytest.mark.parametrize("user", [MOD, ADMIN])
async def test_create_room_by_moderator(world, user):
    room = await world.room_service.create(user, room_id="new-room", name="New", type="private", settings={"slow_mode_s": 5})
    assert (room.id, room.type, room.created_by) == ("new-room", "private", user.user_id)
    assert (await world.rooms.membership("new-room", user.user_id)).role == "owner"


async def test_update_room_needs_room_moderator(world):
    with pytest.raises(errors.Forbidden):
        await world.room_service.update(ALICE, "lobby", name="Renamed", settings=None)
    updated = await world.room_service.update(MOD, "lobby", name="Renamed", settings={"slow_mode_s": 3})
    assert updated.name == "Renamed"


# --- history limits -----------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 21, 10_000])
async def test_history_limit_out_of_range(world, limit):
    with pytest.raises(errors.ValidationFailed) as info:
        await world.service.history(ALICE, "lobby", limit=limit)
    assert info.value.code == "validation_error"
    with pytest.raises(errors.ValidationFailed):
        await world.service.recent(ALICE, "lobby", limit=limit)
    assert world.messages.calls == []


async def test_history_limit_defaults_to_the_cap(world):
    await world.service.history(ALICE, "lobby")
    await world.service.recent(ALICE, "lobby")
    assert world.messages.calls == [("page", ("lobby", 1, 20)), ("before", ("lobby", None, 20))]
    assert world.messages.viewers == [ALICE.user_id, ALICE.user_id]  # read as the asking user sees it


async def test_history_limit_bounds_and_cursors(world):
    await world.service.history(ALICE, "lobby", limit=1)
    await world.service.history(ALICE, "lobby", limit=20, page=3)
    await world.service.history(ALICE, "lobby", limit=5, before_seq=40)
    await world.service.history(ALICE, "lobby", limit=5, after_seq=7)
    await world.service.recent(ALICE, "lobby", since_seq=9, limit=4)
    assert world.messages.calls == [
        ("page", ("lobby", 1, 1)),
        ("page", ("lobby", 3, 20)),
        ("before", ("lobby", 40, 5)),
        ("after", ("lobby", 7, 5)),
        ("after", ("lobby", 9, 4)),
    ]


async def test_history_before_and_after_together_is_invalid(world):
    with pytest.raises(errors.ValidationFailed):
        await world.service.history(ALICE, "lobby", before_seq=5, after_seq=1)


# --- the room cache of the send path --------------------------------------------------------


class CountingRooms(FakeRooms):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, room_id: str) -> Room | None:
        self.gets += 1
        return await super().get(room_id)


async def test_room_cache_serves_the_send_path_and_forgets_on_update():
    from chat_server.realtime.room_cache_relay import RoomCacheRelay
    from chat_server.services.rooms import RoomCache

    clock = [0.0]
    repo = CountingRooms()
    repo.add("lobby")
    service = RoomService(repo, FakePresence(), RoomPolicy(), cache=RoomCache(5.0, lambda: clock[0]))
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == {}
    await service.visible(ALICE, "lobby", cached=True)
    assert repo.gets == 1
    await service.visible(ALICE, "lobby")  # uncached reads always read
    assert repo.gets == 2

    updated = await service.update(MOD, "lobby", name=None, settings={"slow_mode_seconds": 5})  # forgets locally
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == updated.settings

    repo.rooms["lobby"] = replace(repo.rooms["lobby"], settings={"emoji_only": True})  # changed on another node
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == updated.settings  # still cached here
    await RoomCacheRelay(service).before_delivery("room_updated", {"room_id": "lobby"}, "r:lobby", None)
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == {"emoji_only": True}

    repo.rooms["lobby"] = replace(repo.rooms["lobby"], settings={})
    clock[0] += 6  # past the TTL: read again even without an invalidation
    assert (await service.visible(ALICE, "lobby", cached=True)).settings == {}


async def test_room_cache_never_keeps_a_read_older_than_an_invalidation():
    from chat_server.services.rooms import RoomCache

    repo = CountingRooms()
    repo.add("lobby")
    service = RoomService(repo, FakePresence(), RoomPolicy(), cache=RoomCache(60.0))
    gate = asyncio.Event()
    original_get = repo.get

    async def slow_get(room_id: str) -> Room | None:
        room = await original_get(room_id)
        await gate.wait()  # the row was read; an update lands before it is cached
        return room

    repo.get = slow_get  # type: ignore[method-assign]
    reading = asyncio.ensure_future(service.visible(ALICE, "lobby", cached=True))
    await asyncio.sleep(0)
    service.forget("lobby")
    gate.set()
    await reading
    repo.get = original_get  # type: ignore[method-assign]
    before = repo.gets
    await service.visible(ALICE, "lobby", cached=True)
    assert repo.gets == before + 1  # the stale read was not cached


async def test_private_room_membership_is_always_checked_even_when_the_room_is_cached():
    from chat_server.services.rooms import RoomCache

    repo = CountingRooms()
    repo.add("secret", type="private", members=("alice",))
    service = RoomService(repo, FakePresence(), RoomPolicy(), cache=RoomCache(60.0))
    assert (await service.visible(ALICE, "secret", cached=True)).id == "secret"
    with pytest.raises(errors.NotFound):
        await service.visible(BOB, "secret", cached=True)
    del repo.members[("secret", "alice")]
    with pytest.raises(errors.NotFound):
        await service.visible(ALICE, "secret", cached=True)


def test_build_gives_the_same_object_as_the_constructor() -> None:
    """``domain.build`` (the send path's constructor without per-field ``__setattr__``)."""
    from datetime import UTC, datetime

    from chat_server.domain import Message, NewMessage, build

    fields = {"message_id": "m1", "room_id": "r", "seq": 3, "user_id": "u", "username": "U", "avatar": None, "content": "hi",
              "content_html": "hi", "type": "text", "created_at": datetime.now(UTC), "edited_at": None, "deleted_at": None,
              "reactions": {}, "mentions": ("x",), "reply_to": None, "client_msg_id": "c", "metadata": {}}
    built = build(Message, fields)
    assert type(built) is Message and built == Message(**fields)
    assert built.to_dict() == Message(**fields).to_dict()
    partial = {k: v for k, v in fields.items() if k != "metadata"}  # a default left out: the constructor fills it
    assert build(Message, partial) == Message(**partial)
    new = build(NewMessage, {"message_id": "m", "room_id": "r", "user": Principal("u", "U"), "content": "c", "content_html": None,
                             "type": "text", "client_msg_id": None, "reply_to": None, "mentions": (), "metadata": {}})
    assert new == NewMessage("m", "r", Principal("u", "U"), "c", None, "text", None, None)
