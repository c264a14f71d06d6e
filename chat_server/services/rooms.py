"""Room rules: who may see, join, create and change rooms."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..domain import ROOM_PUBLIC, Membership, Principal, Room
from ..errors import Forbidden, NotFound, ValidationFailed
from .cache import Freshness, Refresher

ROOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")


class RoomRepository(Protocol):
    async def get(self, room_id: str) -> Room | None: ...
    async def get_many(self, room_ids: Sequence[str]) -> dict[str, Room]: ...
    async def create(self, room_id: str, *, name: str, type: str, settings: Mapping[str, Any], owner: Principal | None, members: list[str] | None = None) -> Room: ...
    async def ensure(self, room_id: str, *, name: str, type: str) -> Room: ...
    async def update(self, room_id: str, *, name: str | None, settings: Mapping[str, Any] | None) -> Room | None: ...
    async def membership(self, room_id: str, user_id: str) -> Membership | None: ...
    async def touch_member(self, room_id: str, user: Principal) -> None: ...
    async def members(self, room_id: str, *, limit: int = 1000) -> list[Membership]: ...


class AuditedUpdate(Protocol):
    async def __call__(self, user: Principal, room: Room, /, *, name: str | None, settings: Mapping[str, Any] | None) -> Room | None: ...


class RoomEvents(Protocol):
    async def room_updated(self, room: Room) -> None: ...


class OnlineLookup(Protocol):
    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]: ...
    async def count(self, room_id: str) -> int: ...


@dataclass(frozen=True)
class RoomPolicy:
    default_room: str = "lobby"
    auto_create_rooms: bool = True


@dataclass(frozen=True)
class MemberView:
    user_id: str
    username: str
    avatar: str | None
    role: str
    online: bool

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "username": self.username, "avatar": self.avatar, "role": self.role, "online": self.online}


class RoomCache:
    """Per-node cache of room rows for the send path (``visible(..., cached=True)``), kept
    for ``ttl_s`` seconds (``clock`` is monotonic) and reloaded in the background ahead of
    that while it is read (``services.cache``).

    Every room update drops the room on every node: ``RoomService.update`` forgets it
    locally and announces ``room_updated`` on the bus, whose local delivery on each node
    calls :meth:`RoomService.forget` (``realtime.room_cache_relay``); the TTL only bounds
    staleness if the bus lost a message.  Only rows are cached (a room's type never
    changes), never a membership or a missing room.  The counters in a cached row
    (``message_count``, ``last_seq``) are stale: callers that show them read fresh."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, *, max_rooms: int = 10_000,
                 rng: Callable[[], float] = random.random) -> None:
        self._freshness = Freshness(ttl_s, clock, rng)
        self._max = max_rooms
        self._rooms: dict[str, tuple[float, float, Room]] = {}
        # Bumped by every ``forget``: a read that started before a change must not put its
        # stale answer into the cache after the change was forgotten.
        self.epoch = 0

    def lookup(self, room_id: str) -> tuple[Room | None, bool]:
        """The cached row (None: not cached or expired) and whether it is due a reload."""
        return self._freshness.read(self._rooms.get(room_id))

    def put(self, room: Room, *, epoch: int) -> None:
        if epoch != self.epoch:
            return
        if len(self._rooms) >= self._max and room.id not in self._rooms:
            self._rooms.clear()  # crude but bounded; refilled from the database
        self._rooms[room.id] = self._freshness.entry(room)

    def drop(self, room_id: str) -> None:
        """Forget one row that is gone (no invalidation: reads under way stay cacheable)."""
        self._rooms.pop(room_id, None)

    def store(self, room_id: str, room: Room | None, *, epoch: int) -> None:
        """What a read of ``room_id`` that started at ``epoch`` found: its row, or None
        (the room is gone)."""
        if room is None:
            self.drop(room_id)
        else:
            self.put(room, epoch=epoch)

    def forget(self, room_id: str | None = None) -> None:
        self.epoch += 1
        if room_id is None:
            self._rooms.clear()
        else:
            self._rooms.pop(room_id, None)


def check_room_id(room_id: Any) -> str:
    if not isinstance(room_id, str) or not ROOM_ID_PATTERN.match(room_id):
        raise ValidationFailed("room_id must be 1-128 letters, digits or _ - . : @", details={"room_id": ["Invalid room id."]})
    return room_id


class RoomService:
    def __init__(self, rooms: RoomRepository, presence: OnlineLookup, policy: RoomPolicy, *, events: RoomEvents | None = None,
                 cache: RoomCache | None = None) -> None:
        self._events = events
        self._cache = cache
        self.refresher: Refresher[str] = Refresher("room", self._reload_many)
        self._rooms = rooms
        self._presence = presence
        self._policy = policy
        # Set by the composition root to ModerationService.update_room: the update and its
        # audit entries (slow, emoteonly ...) in one transaction.
        self.audited_update: AuditedUpdate | None = None

    async def can_moderate(self, user: Principal, room: Room) -> bool:
        if user.is_global_moderator:
            return True
        membership = await self._rooms.membership(room.id, user.user_id)
        return membership is not None and membership.role in ("moderator", "owner")

    def forget(self, room_id: str | None = None) -> None:
        """Drop the cached row of ``room_id`` (every room's with None): the room changed."""
        if self._cache is not None:
            self._cache.forget(room_id)

    async def _get(self, room_id: str, cached: bool) -> Room | None:
        cache = self._cache
        if not cached or cache is None:
            return await self._rooms.get(room_id)
        room, due = cache.lookup(room_id)
        if room is None:
            room = await self._load(cache, room_id)
        elif due:
            self.refresher.start(room_id)
        return room

    async def _load(self, cache: RoomCache, room_id: str) -> Room | None:
        epoch = cache.epoch
        room = await self._rooms.get(room_id)
        cache.store(room_id, room, epoch=epoch)
        return room

    async def _reload_many(self, room_ids: list[str]) -> None:
        """The background reload of due cache entries: one read for all of them."""
        cache = self._cache
        if cache is None:
            return
        epoch = cache.epoch
        rooms = await self._rooms.get_many(room_ids)
        for room_id in room_ids:
            cache.store(room_id, rooms.get(room_id), epoch=epoch)

    async def visible(self, user: Principal, room_id: str, *, cached: bool = False) -> Room:
        """The room if ``user`` may see it; a private room they are not in looks missing.

        ``cached``: the room's row may come from this node's :class:`RoomCache` (the send
        path: settings current to the last ``room_updated``, counters possibly stale).
        Membership of a private room is always read."""
        check_room_id(room_id)
        room = await self._get(room_id, cached)
        if room is None:
            raise NotFound("Room not found")
        if room.is_public or user.is_admin:
            return room
        if await self._rooms.membership(room_id, user.user_id) is None and not user.is_global_moderator:
            raise NotFound("Room not found")
        return room

    async def join(self, user: Principal, room_id: str) -> Room:
        """Resolve the room for a join, creating the default (or any, when auto-create is
        on) public room on first use, and record the membership."""
        check_room_id(room_id)
        room = await self._rooms.get(room_id)
        if room is None:
            if room_id != self._policy.default_room and not self._policy.auto_create_rooms:
                raise NotFound("Room not found")
            room = await self._rooms.ensure(room_id, name=room_id, type=ROOM_PUBLIC)
        if not room.is_public:
            room = await self.visible(user, room_id)
        await self._rooms.touch_member(room.id, user)
        return room

    async def create(
        self,
        user: Principal,
        *,
        room_id: str,
        name: str,
        type: str,
        settings: Mapping[str, Any] | None,
        members: list[str] | None = None,
    ) -> Room:
        if not user.is_global_moderator:
            raise Forbidden("Only moderators and admins can create rooms")
        check_room_id(room_id)
        return await self._rooms.create(room_id, name=name, type=type, settings=settings or {}, owner=user, members=members)

    async def update(self, user: Principal, room_id: str, *, name: str | None, settings: Mapping[str, Any] | None) -> Room:
        room = await self.visible(user, room_id)
        if not await self.can_moderate(user, room):
            raise Forbidden("Only the room's moderators can change it")
        if self.audited_update is not None:
            updated = await self.audited_update(user, room, name=name, settings=settings)
        else:
            updated = await self._rooms.update(room_id, name=name, settings=settings)
        if updated is None:
            raise NotFound("Room not found")
        self.forget(room_id)  # here at once; other nodes when room_updated reaches them
        if self._events is not None:
            try:  # after the write, through the broadcaster; a failed announcement is not a failed update
                await self._events.room_updated(updated)
            except Exception:
                logging.getLogger(__name__).exception("announcing the update of room %s failed", room_id)
        return updated

    async def members(self, user: Principal, room_id: str) -> list[MemberView]:
        room = await self.visible(user, room_id)
        rows = await self._rooms.members(room.id)
        online_ids = {u["user_id"] for u in await self._presence.online(room.id, limit=10_000)}
        return [MemberView(m.user_id, m.username, m.avatar, m.role, m.user_id in online_ids) for m in rows]
