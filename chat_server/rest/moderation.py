"""REST: bans and timeouts, message removal, reports, personal blocks, room moderators and
the audit log (thin: parse, call one service method, serialise).  Who may call what is
decided in ``services.moderation``; a room the caller may not moderate answers 404 like
a missing one."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, querystring_schema, request_schema, response_schema

from ..domain import Message, Report
from ..errors import NotFound
from ..schemas import (
    AuditOut,
    AuditQueryIn,
    BanIn,
    BanOut,
    BansOut,
    BlockIn,
    BlockOut,
    BlocksOut,
    ErrorOut,
    ModeratorOut,
    ReportIn,
    ReportOut,
    ReportsOut,
    ReportsQueryIn,
    ResolveReportIn,
)
from ..services.moderation import ModerationService
from .middleware import principal

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
ERRORS = {
    401: {"schema": ErrorOut, "description": "Missing or invalid token"},
    404: {"schema": ErrorOut, "description": "No such resource, or not one you may act on"},
    422: {"schema": ErrorOut, "description": "Invalid input"},
}
FORBIDDEN = {403: {"schema": ErrorOut, "description": "Not allowed"}}
NO_CONTENT = {204: {"description": "Done (also when there was nothing to do)"}}


def _report_id(request: web.Request) -> int:
    raw = request.match_info["report_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("Report not found")
    return int(raw)


def _report_body(report: Report, message: Message | None) -> dict[str, Any]:
    body = report.to_dict()
    body["message"] = message.to_dict() if message is not None else None
    body["message_deleted"] = message is None or message.deleted_at is not None
    return body


class ModerationApi:
    def __init__(self, moderation: ModerationService) -> None:
        self._moderation = moderation

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/rooms/{room_id}/ban", self.ban)
        r.add_delete("/api/rooms/{room_id}/ban/{user_id}", self.unban)
        r.add_get("/api/rooms/{room_id}/bans", self.list_bans)
        r.add_put("/api/rooms/{room_id}/moderators/{user_id}", self.grant_moderator)
        r.add_delete("/api/rooms/{room_id}/moderators/{user_id}", self.revoke_moderator)
        r.add_post("/api/bans", self.global_ban)
        r.add_delete("/api/bans/{user_id}", self.global_unban)
        r.add_get("/api/bans", self.list_global_bans)
        r.add_delete("/api/messages/{message_id}", self.delete_message)
        r.add_post("/api/messages/{message_id}/report", self.report)
        r.add_get("/api/reports", self.list_reports)
        r.add_post("/api/reports/{report_id}/resolve", self.resolve_report)
        r.add_get("/api/users/me/blocks", self.list_blocks)
        r.add_post("/api/users/me/blocks", self.block)
        r.add_delete("/api/users/me/blocks/{user_id}", self.unblock)
        r.add_get("/api/audit", self.audit)

    # --- bans ----------------------------------------------------------------------------

    @docs(tags=["moderation"], summary="Ban or time out a user in a room (room moderators)",
          description="No `duration_seconds`: permanent ban; with it: a timeout. `purge` also deletes the user's "
                      "messages of the last 24 hours in the room (each announced with `message_deleted`). `shadow`: "
                      "the user is not told and their messages reach only their own sockets. The user's connected "
                      "sockets get `banned` and leave the room, on every node. A new ban replaces an active one.",
          security=BEARER, responses={201: {"schema": BanOut, "description": "Banned"}, **FORBIDDEN, **ERRORS})
    @request_schema(BanIn)
    async def ban(self, request: web.Request) -> web.Response:
        data = request["data"]
        ban = await self._moderation.ban(principal(request), request.match_info["room_id"], data["user_id"], reason=data["reason"],
                                         duration_seconds=data["duration_seconds"], purge=data["purge"], shadow=data["shadow"])
        return web.json_response(ban.to_dict(), status=201)

    @docs(tags=["moderation"], summary="Lift a user's ban or timeout in a room (room moderators)", security=BEARER,
          responses={**NO_CONTENT, **ERRORS})
    async def unban(self, request: web.Request) -> web.Response:
        await self._moderation.unban(principal(request), request.match_info["room_id"], request.match_info["user_id"])
        return web.Response(status=204)

    @docs(tags=["moderation"], summary="Active bans and timeouts of a room (room moderators)", security=BEARER, responses={**ERRORS})
    @response_schema(BansOut, 200)
    async def list_bans(self, request: web.Request) -> web.Response:
        bans = await self._moderation.list_bans(principal(request), request.match_info["room_id"])
        return web.json_response({"bans": [b.to_dict() for b in bans]})

    @docs(tags=["moderation"], summary="Ban or time out a user everywhere (admins)",
          description="Same body as a room ban; the user cannot join or post in any room.", security=BEARER,
          responses={201: {"schema": BanOut, "description": "Banned"}, **FORBIDDEN, **ERRORS})
    @request_schema(BanIn)
    async def global_ban(self, request: web.Request) -> web.Response:
        data = request["data"]
        ban = await self._moderation.ban(principal(request), None, data["user_id"], reason=data["reason"],
                                         duration_seconds=data["duration_seconds"], purge=data["purge"], shadow=data["shadow"])
        return web.json_response(ban.to_dict(), status=201)

    @docs(tags=["moderation"], summary="Lift a global ban (admins)", security=BEARER, responses={**NO_CONTENT, **FORBIDDEN, **ERRORS})
    async def global_unban(self, request: web.Request) -> web.Response:
        await self._moderation.unban(principal(request), None, request.match_info["user_id"])
        return web.Response(status=204)

    @docs(tags=["moderation"], summary="Active global bans (moderators and admins)", security=BEARER, responses={**FORBIDDEN, **ERRORS})
    @response_schema(BansOut, 200)
    async def list_global_bans(self, request: web.Request) -> web.Response:
        bans = await self._moderation.list_bans(principal(request), None)
        return web.json_response({"bans": [b.to_dict() for b in bans]})

    # --- room moderators -------------------------------------------------------------------

    @docs(tags=["moderation"], summary="Make a user a moderator of the room (admins and the room's owner)", security=BEARER,
          responses={409: {"schema": ErrorOut, "description": "The user owns the room"}, **ERRORS})
    @response_schema(ModeratorOut, 200)
    async def grant_moderator(self, request: web.Request) -> web.Response:
        room_id, user_id = request.match_info["room_id"], request.match_info["user_id"]
        changed = await self._moderation.grant_moderator(principal(request), room_id, user_id)
        return web.json_response({"room_id": room_id, "user_id": user_id, "role": "moderator", "changed": changed})

    @docs(tags=["moderation"], summary="Take a room's moderator role away (admins and the room's owner)", security=BEARER,
          responses={**NO_CONTENT, 409: {"schema": ErrorOut, "description": "The user owns the room"}, **ERRORS})
    async def revoke_moderator(self, request: web.Request) -> web.Response:
        await self._moderation.revoke_moderator(principal(request), request.match_info["room_id"], request.match_info["user_id"])
        return web.Response(status=204)

    # --- messages and reports ----------------------------------------------------------------

    @docs(tags=["messages"], summary="Delete a message (its author or a moderator of its room)",
          description="Soft delete: history hides it and the room gets `message_deleted {room_id, message_id, seq}`.",
          security=BEARER, responses={**NO_CONTENT, **FORBIDDEN, **ERRORS})
    async def delete_message(self, request: web.Request) -> web.Response:
        await self._moderation.delete_message(principal(request), request.match_info["message_id"])
        return web.Response(status=204)

    @docs(tags=["reports"], summary="Report a message you can see",
          description="One report per user and message: repeating it returns the existing report with 200.",
          security=BEARER, responses={201: {"schema": ReportOut, "description": "Reported"},
                                      200: {"schema": ReportOut, "description": "Already reported by you"}, **ERRORS})
    @request_schema(ReportIn)
    async def report(self, request: web.Request) -> web.Response:
        report, created = await self._moderation.report(principal(request), request.match_info["message_id"], request["data"]["reason"])
        return web.json_response(report.to_dict(), status=201 if created else 200)

    @docs(tags=["reports"], summary="The review queue (global moderators: every room; room moderators: their rooms)",
          description="`status` open (default), resolved, dismissed or all; newest first; `before_id` pages.",
          security=BEARER, responses={**ERRORS})
    @querystring_schema(ReportsQueryIn)
    @response_schema(ReportsOut, 200)
    async def list_reports(self, request: web.Request) -> web.Response:
        q = request["querystring"]
        rows = await self._moderation.list_reports(principal(request), status=None if q["status"] == "all" else q["status"],
                                                   room_id=q["room_id"], limit=q["limit"], before_id=q["before_id"])
        return web.json_response({"reports": [_report_body(r, m) for r, m in rows]})

    @docs(tags=["reports"], summary="Close a report: dismiss, delete_message or ban_user (moderators of its room)",
          description="`delete_message` soft-deletes the message; `ban_user` bans its author from the room "
                      "(a timeout with `duration_seconds`). Actions on the message also close its other open reports. "
                      "Everything is recorded in the audit log.",
          security=BEARER, responses={409: {"schema": ErrorOut, "description": "Already closed"}, **FORBIDDEN, **ERRORS})
    @request_schema(ResolveReportIn)
    @response_schema(ReportOut, 200)
    async def resolve_report(self, request: web.Request) -> web.Response:
        data = request["data"]
        report = await self._moderation.resolve_report(principal(request), _report_id(request), action=data["action"],
                                                       note=data["note"], duration_seconds=data["duration_seconds"])
        return web.json_response(report.to_dict())

    # --- blocks ---------------------------------------------------------------------------------

    @docs(tags=["blocks"], summary="Users you block", security=BEARER, responses={**ERRORS})
    @response_schema(BlocksOut, 200)
    async def list_blocks(self, request: web.Request) -> web.Response:
        blocks = await self._moderation.blocks(principal(request))
        return web.json_response({"blocks": [b.to_dict() for b in blocks]})

    @docs(tags=["blocks"], summary="Block a user: their messages, typing and reactions no longer reach you",
          description="Live on every node and in your history. 201 when new, 200 when already blocked.",
          security=BEARER, responses={201: {"schema": BlockOut, "description": "Blocked"},
                                      200: {"schema": BlockOut, "description": "Already blocked"}, **ERRORS})
    @request_schema(BlockIn)
    async def block(self, request: web.Request) -> web.Response:
        block, created = await self._moderation.block(principal(request), request["data"]["user_id"])
        return web.json_response(block.to_dict(), status=201 if created else 200)

    @docs(tags=["blocks"], summary="Unblock a user", security=BEARER, responses={**NO_CONTENT, **ERRORS})
    async def unblock(self, request: web.Request) -> web.Response:
        await self._moderation.unblock(principal(request), request.match_info["user_id"])
        return web.Response(status=204)

    # --- audit ----------------------------------------------------------------------------------

    @docs(tags=["moderation"], summary="Moderation audit log (admins; room moderators for their rooms)",
          description="Append-only, newest first; `before_id` pages. Actions: ban, timeout, unban, untimeout, delete, "
                      "mod, unmod, slow/slowoff, emoteonly/emoteonlyoff, uniquechat/uniquechatoff, links/linksoff, "
                      "settings, rename, resolve, dismiss.",
          security=BEARER, responses={**FORBIDDEN, **ERRORS})
    @querystring_schema(AuditQueryIn)
    @response_schema(AuditOut, 200)
    async def audit(self, request: web.Request) -> web.Response:
        q = request["querystring"]
        records = await self._moderation.audit_log(principal(request), room_id=q["room_id"], limit=q["limit"], before_id=q["before_id"])
        return web.json_response({"entries": [r.to_dict() for r in records]})
