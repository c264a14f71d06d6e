"""Room-cache invalidation on every node (``services.rooms.RoomCache``).

A room update is announced as ``room_updated`` to the room's channel; the client manager
delivers every event on every node and runs the local filters first
(``realtime.manager.LocalDeliveryHook.local_filters``).  This filter drops the room from
this node's cache when that event passes, so a changed setting (slow mode, emoji-only,
gating ...) applies to the next message on every node, not after the cache's TTL.
"""

from __future__ import annotations

from typing import Any, Protocol

ROOM_UPDATED = "room_updated"


class ForgetsRooms(Protocol):
    def forget(self, room_id: str | None = None) -> None: ...


class RoomCacheRelay:
    def __init__(self, rooms: ForgetsRooms) -> None:
        self._rooms = rooms

    async def before_delivery(self, event: str, data: Any, room: str, skip_sid: Any) -> Any:
        if event == ROOM_UPDATED and isinstance(data, dict) and isinstance(data.get("room_id"), str):
            self._rooms.forget(data["room_id"])
        return skip_sid
