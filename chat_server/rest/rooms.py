"""REST: rooms, history and members (thin: parse, call one service, serialise)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema, response_schema

from ..schemas import ErrorOut, HistoryOut, HistoryQueryIn, MembersOut, RoomCreateIn, RoomOut, RoomPatchIn, RoomWithStatsOut
from ..services.messages import MessageService
from ..services.presence import PresenceStore
from ..services.rooms import RoomService
from .middleware import principal
from .responses import json_response

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
ERRORS = {
    401: {"schema": ErrorOut, "description": "Missing or invalid token"},
    404: {"schema": ErrorOut, "description": "No such room (or not visible to you)"},
    422: {"schema": ErrorOut, "description": "Invalid input"},
}


class RoomsApi:
    def __init__(self, rooms: RoomService, messages: MessageService, presence: PresenceStore) -> None:
        self._rooms = rooms
        self._messages = messages
        self._presence = presence

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/rooms", self.create_room)
        app.router.add_get("/api/rooms/{room_id}", self.get_room)
        app.router.add_patch("/api/rooms/{room_id}", self.patch_room)
        app.router.add_get("/api/rooms/{room_id}/messages", self.list_messages)
        app.router.add_get("/api/rooms/{room_id}/members", self.list_members)

    async def _with_stats(self, room: Any) -> dict[str, Any]:
        return {**room.to_dict(), "online_users": await self._presence.count(room.id)}

    @docs(tags=["rooms"], summary="Create a room (moderators and admins)", security=BEARER,
          responses={201: {"schema": RoomOut, "description": "Created"}, 403: {"schema": ErrorOut, "description": "Not a moderator"},
                     409: {"schema": ErrorOut, "description": "The id exists"}, **ERRORS})
    @request_schema(RoomCreateIn)
    async def create_room(self, request: web.Request) -> web.Response:
        user = principal(request)
        data = request["data"]
        room = await self._rooms.create(
            user,
            room_id=data["id"] or uuid.uuid4().hex[:12],
            name=data["name"],
            type=data["type"],
            settings=data["settings"],
            members=data["members"],
        )
        return web.json_response(room.to_dict(), status=201)

    @docs(tags=["rooms"], summary="A room with its settings and stats", security=BEARER, responses={**ERRORS})
    @response_schema(RoomWithStatsOut, 200)
    async def get_room(self, request: web.Request) -> web.Response:
        room = await self._rooms.visible(principal(request), request.match_info["room_id"])
        return web.json_response(await self._with_stats(room))

    @docs(tags=["rooms"], summary="Change a room's name or settings (room moderators)", security=BEARER,
          responses={403: {"schema": ErrorOut, "description": "Not a moderator of this room"}, **ERRORS})
    @request_schema(RoomPatchIn)
    @response_schema(RoomWithStatsOut, 200)
    async def patch_room(self, request: web.Request) -> web.Response:
        data = request["data"]
        room = await self._rooms.update(principal(request), request.match_info["room_id"], name=data["name"], settings=data["settings"])
        return web.json_response(await self._with_stats(room))

    @docs(tags=["messages"], summary="Message history: numbered pages (page 1 newest) or seq cursors",
          description="`?page=1&limit=50` pages from the newest; `?before_seq=` and `?after_seq=` are keyset cursors "
                      "(fast at any depth). Messages in a page are oldest first. `limit` ≤ MESSAGE_HISTORY_LIMIT.",
          security=BEARER, responses={**ERRORS})
    @querystring_schema(HistoryQueryIn)
    @response_schema(HistoryOut, 200)
    async def list_messages(self, request: web.Request) -> web.Response:
        q = request["querystring"]  # querystring_schema puts its result here, not in "data"
        limit = q["limit"] if q["limit"] is not None else min(50, self._messages.limits.history_limit)
        page = await self._messages.history(
            principal(request), request.match_info["room_id"],
            page=q["page"], limit=limit, before_seq=q["before_seq"], after_seq=q["after_seq"],
        )
        body: dict[str, Any] = {
            "messages": page.messages,  # already in the wire form
            "page": q["page"],
            "limit": limit,
            "has_more": page.has_more,
        }
        if page.messages:
            body["first_seq"] = page.messages[0]["seq"]
            body["last_seq"] = page.messages[-1]["seq"]
        return json_response(body)

    @docs(tags=["rooms"], summary="Members of a room, with who is online", security=BEARER, responses={**ERRORS})
    @response_schema(MembersOut, 200)
    async def list_members(self, request: web.Request) -> web.Response:
        members = await self._rooms.members(principal(request), request.match_info["room_id"])
        return web.json_response({"members": [m.to_dict() for m in members]})
