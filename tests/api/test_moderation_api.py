"""Moderation REST API: roles, bans, reports, blocks, room moderators and the audit log,
against a real server, PostgreSQL and real sockets."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg2
import pytest

from chat_server.schemas import AuditOut, BanOut, BansOut, BlockOut, BlocksOut, ErrorOut, ReportOut, ReportsOut
from tests.conftest import ChatClient, rest, unique


def uid(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:6]}"


def ok(schema: Any, body: Any) -> Any:
    errors = schema().validate(body)
    assert errors == {}, f"{schema.__name__}: {errors} in {body!r}"
    return body


def refused(status: int, body: Any, expected: int, code: str) -> None:
    assert status == expected, (status, body)
    ok(ErrorOut, body)
    assert body["error"]["code"] == code, body


async def room_of(node: Any, owner: str, *, role: str = "admin", **body: Any) -> str:
    room = unique()
    status, created = await rest(node, "POST", "/api/rooms", owner, role=role, json={"id": room, "name": room, **body})
    assert status == 201, created
    return room


async def post_in(connect: Any, user: str, room: str, content: str, **kwargs: Any) -> tuple[ChatClient, dict[str, Any]]:
    client = await connect(user, **kwargs)
    assert (await client.call("join_room", {"room_id": room}))["ok"]
    ack = await client.call("send_message", {"room_id": room, "content": content})
    assert ack["ok"], ack
    return client, ack["message"]


async def audit_actions(node: Any, room: str, actor: str = "root", role: str = "admin") -> list[dict[str, Any]]:
    status, body = await rest(node, "GET", f"/api/audit?room_id={room}", actor, role=role)
    assert status == 200, body
    return list(reversed(ok(AuditOut, body)["entries"]))  # oldest first


# --- roles ------------------------------------------------------------------------------------

async def test_plain_users_cannot_moderate_and_the_room_looks_missing(node, connect):
    room = unique()
    await post_in(connect, "alice", room, "hi")  # public room, auto-created
    missing = unique()
    for method, path, body in [
        ("POST", "/api/rooms/{r}/ban", {"user_id": "alice"}),
        ("DELETE", "/api/rooms/{r}/ban/alice", None),
        ("GET", "/api/rooms/{r}/bans", None),
        ("PUT", "/api/rooms/{r}/moderators/eve", None),
        ("DELETE", "/api/rooms/{r}/moderators/eve", None),
        ("GET", "/api/audit?room_id={r}", None),
        ("GET", "/api/reports?room_id={r}", None),
    ]:
        as_user = await rest(node, method, path.format(r=room), "eve", json=body)
        as_missing = await rest(node, method, path.format(r=missing), "mod", role="moderator", json=body)
        refused(*as_user, 404, "not_found")
        refused(*as_missing, 404, "not_found")
        assert as_user[1]["error"]["message"] == as_missing[1]["error"]["message"], (path, as_user, as_missing)
    refused(*await rest(node, "POST", f"/api/rooms/{room}/ban", json={"user_id": "x"}), 401, "unauthorized")


async def test_owner_grants_room_moderators_who_moderate_only_that_room(node, connect):
    room = await room_of(node, "owner", role="moderator")  # the creator owns the room
    other = await room_of(node, "root")
    # Only the owner (or an admin) grants: another global moderator is refused like a missing room.
    refused(*await rest(node, "PUT", f"/api/rooms/{room}/moderators/rmod", "gm", role="moderator"), 404, "not_found")
    status, body = await rest(node, "PUT", f"/api/rooms/{room}/moderators/rmod", "owner", role="moderator")
    assert status == 200 and body == {"room_id": room, "user_id": "rmod", "role": "moderator", "changed": True}
    status, body = await rest(node, "PUT", f"/api/rooms/{room}/moderators/rmod", "owner", role="moderator")
    assert status == 200 and body["changed"] is False  # idempotent, audited once
    _, members = await rest(node, "GET", f"/api/rooms/{room}/members", "rmod")
    assert {m["user_id"]: m["role"] for m in members["members"]}["rmod"] == "moderator"

    victim = uid("victim")
    status, ban = await rest(node, "POST", f"/api/rooms/{room}/ban", "rmod", json={"user_id": victim, "reason": "spam"})
    assert status == 201, ban
    ok(BanOut, ban)
    refused(*await rest(node, "POST", f"/api/rooms/{other}/ban", "rmod", json={"user_id": victim}), 404, "not_found")
    # A room moderator cannot ban the owner, nor grant roles.
    refused(*await rest(node, "POST", f"/api/rooms/{room}/ban", "rmod", json={"user_id": "owner"}), 403, "forbidden")
    refused(*await rest(node, "PUT", f"/api/rooms/{room}/moderators/x", "rmod"), 404, "not_found")
    refused(*await rest(node, "PUT", f"/api/rooms/{room}/moderators/owner", "root", role="admin"), 409, "conflict")

    assert (await rest(node, "DELETE", f"/api/rooms/{room}/moderators/rmod", "root", role="admin"))[0] == 204
    refused(*await rest(node, "GET", f"/api/rooms/{room}/bans", "rmod"), 404, "not_found")
    actions = [(e["action"], e["actor_id"], e["target_user_id"]) for e in await audit_actions(node, room)]
    assert actions == [("mod", "owner", "rmod"), ("ban", "rmod", victim), ("unmod", "root", "rmod")]


async def test_private_rooms_stay_hidden_from_outsiders(node, connect):
    room = await room_of(node, "root", type="private", members=["alice"])
    _, message = await post_in(connect, "alice", room, "secret")
    refused(*await rest(node, "POST", f"/api/messages/{message['message_id']}/report", "eve", json={"reason": "x"}), 404, "not_found")
    refused(*await rest(node, "DELETE", f"/api/messages/{message['message_id']}", "eve"), 404, "not_found")
    refused(*await rest(node, "POST", f"/api/rooms/{room}/ban", "eve", json={"user_id": "alice"}), 404, "not_found")


async def test_ban_validation(node):
    room = await room_of(node, "root")
    for body, field in [({}, "user_id"), ({"user_id": ""}, "user_id"), ({"user_id": "x", "duration_seconds": 0}, "duration_seconds"),
                        ({"user_id": "x", "duration_seconds": "10"}, "duration_seconds"), ({"user_id": "x", "shadow": "maybe"}, "shadow")]:
        status, body = await rest(node, "POST", f"/api/rooms/{room}/ban", "root", role="admin", json=body)
        refused(status, body, 422, "validation_error")
        assert field in body["error"]["details"], body
    refused(*await rest(node, "POST", f"/api/rooms/{room}/ban", "root", role="admin", json={"user_id": "root"}), 422, "validation_error")


async def test_bans_list_replace_and_audit(node):
    room = await room_of(node, "root")
    victim = uid("v")
    assert (await rest(node, "POST", f"/api/rooms/{room}/ban", "root", role="admin", json={"user_id": victim, "duration_seconds": 600}))[0] == 201
    status, ban = await rest(node, "POST", f"/api/rooms/{room}/ban", "root", role="admin", json={"user_id": victim, "reason": "worse"})
    assert status == 201 and ban["kind"] == "ban"
    status, body = await rest(node, "GET", f"/api/rooms/{room}/bans", "gm", role="moderator")
    assert status == 200
    ok(BansOut, body)
    assert [(b["user_id"], b["kind"], b["reason"]) for b in body["bans"]] == [(victim, "ban", "worse")]  # replaced
    assert (await rest(node, "DELETE", f"/api/rooms/{room}/ban/{victim}", "root", role="admin"))[0] == 204
    assert (await rest(node, "GET", f"/api/rooms/{room}/bans", "root", role="admin"))[1] == {"bans": []}
    actions = [(e["action"], e["target_user_id"]) for e in await audit_actions(node, room)]
    assert actions == [("timeout", victim), ("ban", victim), ("unban", victim)]
    entry = (await audit_actions(node, room))[0]
    assert entry["details"]["duration_seconds"] == 600 and entry["actor_id"] == "root" and entry["created_at"]


# --- messages and reports ------------------------------------------------------------------------

async def test_rest_delete_by_author_moderator_and_others(node, connect):
    room = await room_of(node, "root")
    watcher = await connect("watcher")
    assert (await watcher.call("join_room", {"room_id": room}))["ok"]
    _, first = await post_in(connect, "alice", room, "first")
    _, second = await post_in(connect, "alice", room, "second")
    refused(*await rest(node, "DELETE", f"/api/messages/{first['message_id']}", "eve"), 403, "forbidden")
    assert (await rest(node, "DELETE", f"/api/messages/{first['message_id']}", "alice"))[0] == 204
    assert (await rest(node, "DELETE", f"/api/messages/{second['message_id']}", "gm", role="moderator"))[0] == 204
    refused(*await rest(node, "DELETE", f"/api/messages/{second['message_id']}", "gm", role="moderator"), 404, "not_found")
    refused(*await rest(node, "DELETE", "/api/messages/nope", "alice"), 404, "not_found")
    for message in (first, second):
        await watcher.wait_for("message_deleted", lambda e, m=message: e["message_id"] == m["message_id"])
    _, history = await rest(node, "GET", f"/api/rooms/{room}/messages", "eve")
    assert history["messages"] == []
    assert [(e["action"], e["actor_id"], e["target_message_id"]) for e in await audit_actions(node, room)] == [
        ("delete", "gm", second["message_id"])]


async def test_reports_collapse_per_user(node, connect):
    room = await room_of(node, "root")
    _, message = await post_in(connect, "alice", room, "report me")
    path = f"/api/messages/{message['message_id']}/report"
    status, first = await rest(node, "POST", path, "bob", json={"reason": "spam"})
    assert status == 201
    ok(ReportOut, first)
    assert first["status"] == "open" and first["reporter_id"] == "bob" and first["room_id"] == room
    status, again = await rest(node, "POST", path, "bob", json={"reason": "really spam"})
    assert status == 200 and again == first
    status, other = await rest(node, "POST", path, "carol", json={"reason": "rude"})
    assert status == 201 and other["id"] != first["id"]
    refused(*await rest(node, "POST", path, "bob", json={}), 422, "validation_error")
    refused(*await rest(node, "POST", "/api/messages/nope/report", "bob", json={"reason": "x"}), 404, "not_found")

    status, queue = await rest(node, "GET", f"/api/reports?room_id={room}", "gm", role="moderator")
    assert status == 200
    ok(ReportsOut, queue)
    assert [r["id"] for r in queue["reports"]] == [other["id"], first["id"]]
    assert queue["reports"][0]["message"]["content"] == "report me"


async def test_review_queue_is_scoped_to_what_the_caller_moderates(node, connect):
    mine = await room_of(node, "root")
    theirs = await room_of(node, "root")
    rmod = uid("rmod")
    assert (await rest(node, "PUT", f"/api/rooms/{mine}/moderators/{rmod}", "root", role="admin"))[0] == 200
    _, in_mine = await post_in(connect, "alice", mine, "in mine")
    _, in_theirs = await post_in(connect, "alice", theirs, "in theirs")
    for message in (in_mine, in_theirs):
        assert (await rest(node, "POST", f"/api/messages/{message['message_id']}/report", "bob", json={"reason": "x"}))[0] == 201

    _, body = await rest(node, "GET", "/api/reports", rmod)
    assert {r["message_id"] for r in body["reports"]} == {in_mine["message_id"]}
    _, body = await rest(node, "GET", "/api/reports?status=all", "gm", role="moderator")
    assert {in_mine["message_id"], in_theirs["message_id"]} <= {r["message_id"] for r in body["reports"]}
    _, body = await rest(node, "GET", "/api/reports", "eve")
    assert body == {"reports": []}
    refused(*await rest(node, "GET", f"/api/reports?room_id={theirs}", rmod), 404, "not_found")
    refused(*await rest(node, "GET", "/api/reports?status=weird", "gm", role="moderator"), 422, "validation_error")


@pytest.mark.parametrize("action", ["dismiss", "delete_message", "ban_user"])
async def test_resolving_a_report_records_the_action(node, connect, action):
    room = await room_of(node, "root")
    author = uid("author")
    client, message = await post_in(connect, author, room, "bad message")
    status, report = await rest(node, "POST", f"/api/messages/{message['message_id']}/report", "bob", json={"reason": "abuse"})
    assert status == 201
    _, second = await rest(node, "POST", f"/api/messages/{message['message_id']}/report", "carol", json={"reason": "abuse"})

    refused(*await rest(node, "POST", f"/api/reports/{report['id']}/resolve", "eve", json={"action": action}), 404, "not_found")
    refused(*await rest(node, "POST", f"/api/reports/{report['id']}/resolve", "gm", role="moderator", json={"action": "nuke"}),
            422, "validation_error")
    status, resolved = await rest(node, "POST", f"/api/reports/{report['id']}/resolve", "gm", role="moderator",
                                  json={"action": action, "note": "handled"})
    assert status == 200, resolved
    ok(ReportOut, resolved)
    assert resolved["status"] == ("dismissed" if action == "dismiss" else "resolved")
    assert (resolved["action"], resolved["note"], resolved["resolved_by"]) == (action, "handled", "gm")
    refused(*await rest(node, "POST", f"/api/reports/{report['id']}/resolve", "gm", role="moderator", json={"action": action}),
            409, "conflict")

    _, queue = await rest(node, "GET", f"/api/reports?room_id={room}&status=all", "gm", role="moderator")
    statuses = {r["id"]: r["status"] for r in queue["reports"]}
    # Acting on the message closes its other reports too; dismissing closes only this one.
    assert statuses[second["id"]] == ("open" if action == "dismiss" else "resolved")

    actions = [(e["action"], e["target_message_id"]) for e in await audit_actions(node, room)]
    mid = message["message_id"]
    if action == "dismiss":
        assert actions == [("dismiss", mid)]
    elif action == "delete_message":
        assert actions == [("delete", mid), ("resolve", mid)]
        await client.wait_for("message_deleted", lambda e: e["message_id"] == mid)
        refused(*await rest(node, "DELETE", f"/api/messages/{mid}", author), 404, "not_found")
    else:
        assert actions == [("ban", mid), ("resolve", mid)]
        assert (await client.wait_for("banned"))["room_id"] == room
        ack = await client.call("send_message", {"room_id": room, "content": "again"})
        assert ack["error"]["code"] == "banned"


# --- blocks ---------------------------------------------------------------------------------------

async def test_block_list_crud(node):
    me, them = uid("me"), uid("them")
    status, body = await rest(node, "GET", "/api/users/me/blocks", me)
    assert status == 200 and body == {"blocks": []}
    status, block = await rest(node, "POST", "/api/users/me/blocks", me, json={"user_id": them})
    assert status == 201
    ok(BlockOut, block)
    status, again = await rest(node, "POST", "/api/users/me/blocks", me, json={"user_id": them})
    assert status == 200 and again == block
    status, body = await rest(node, "GET", "/api/users/me/blocks", me)
    ok(BlocksOut, body)
    assert [b["user_id"] for b in body["blocks"]] == [them]
    refused(*await rest(node, "POST", "/api/users/me/blocks", me, json={"user_id": me}), 422, "validation_error")
    refused(*await rest(node, "POST", "/api/users/me/blocks", me, json={}), 422, "validation_error")
    assert (await rest(node, "DELETE", f"/api/users/me/blocks/{them}", me))[0] == 204
    assert (await rest(node, "DELETE", f"/api/users/me/blocks/{them}", me))[0] == 204
    assert (await rest(node, "GET", "/api/users/me/blocks", me))[1] == {"blocks": []}
    refused(*await rest(node, "GET", "/api/users/me/blocks"), 401, "unauthorized")


# --- audit ------------------------------------------------------------------------------------------

async def test_mode_changes_are_audited_with_twitch_names(node):
    room = await room_of(node, "root")
    for settings in ({"slow_mode_seconds": 10}, {"slow_mode_seconds": 0, "emoji_only": True}, {"emoji_only": False}):
        status, body = await rest(node, "PATCH", f"/api/rooms/{room}", "gm", role="moderator", json={"settings": settings})
        assert status == 200, body
    assert (await rest(node, "PATCH", f"/api/rooms/{room}", "gm", role="moderator", json={"name": "Renamed"}))[0] == 200
    entries = await audit_actions(node, room)
    assert [(e["action"], e["actor_id"]) for e in entries] == [
        ("slow", "gm"), ("emoteonly", "gm"), ("slowoff", "gm"), ("emoteonlyoff", "gm"), ("rename", "gm")]
    assert entries[0]["details"] == {"setting": "slow_mode_seconds", "from": None, "to": 10}


async def test_audit_log_is_readable_only_by_admins_and_the_rooms_moderators(node):
    room = await room_of(node, "root")
    other = await room_of(node, "root")
    rmod = uid("rmod")
    assert (await rest(node, "PUT", f"/api/rooms/{room}/moderators/{rmod}", "root", role="admin"))[0] == 200
    assert (await rest(node, "POST", f"/api/rooms/{other}/ban", "root", role="admin", json={"user_id": uid("x")}))[0] == 201

    status, body = await rest(node, "GET", f"/api/audit?room_id={room}", rmod)
    assert status == 200 and [e["action"] for e in body["entries"]] == ["mod"]
    refused(*await rest(node, "GET", f"/api/audit?room_id={other}", rmod), 404, "not_found")
    status, body = await rest(node, "GET", "/api/audit", rmod)  # all of the caller's rooms
    assert status == 200 and {e["room_id"] for e in body["entries"]} == {room}
    refused(*await rest(node, "GET", "/api/audit", "eve"), 403, "forbidden")
    refused(*await rest(node, "GET", f"/api/audit?room_id={room}", "eve"), 404, "not_found")
    status, body = await rest(node, "GET", "/api/audit?limit=500", "root", role="admin")
    refused(status, body, 422, "validation_error")
    status, body = await rest(node, "GET", "/api/audit?limit=2", "root", role="admin")
    assert status == 200 and len(body["entries"]) == 2
    older = await rest(node, "GET", f"/api/audit?limit=2&before_id={body['entries'][-1]['id']}", "root", role="admin")
    assert all(e["id"] < body["entries"][-1]["id"] for e in older[1]["entries"])


async def test_audit_log_is_append_only(node, database_url):
    room = await room_of(node, "root")
    assert (await rest(node, "POST", f"/api/rooms/{room}/ban", "root", role="admin", json={"user_id": uid("x")}))[0] == 201
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in ("UPDATE audit_log SET action = 'nothing' WHERE room_id = %s", "DELETE FROM audit_log WHERE room_id = %s"):
                with pytest.raises(psycopg2.Error, match="append-only"):
                    cur.execute(statement, (room,))
    finally:
        conn.close()
    assert [e["action"] for e in await audit_actions(node, room)] == ["ban"]


async def test_moderation_routes_are_in_the_openapi_document(node):
    status, doc = await rest(node, "GET", "/api/chats/openapi.json")
    assert status == 200
    paths = doc["paths"]
    for path, method in [
        ("/api/rooms/{room_id}/ban", "post"), ("/api/rooms/{room_id}/ban/{user_id}", "delete"), ("/api/rooms/{room_id}/bans", "get"),
        ("/api/rooms/{room_id}/moderators/{user_id}", "put"), ("/api/rooms/{room_id}/moderators/{user_id}", "delete"),
        ("/api/bans", "post"), ("/api/bans", "get"), ("/api/bans/{user_id}", "delete"),
        ("/api/messages/{message_id}", "delete"), ("/api/messages/{message_id}/report", "post"),
        ("/api/reports", "get"), ("/api/reports/{report_id}/resolve", "post"),
        ("/api/users/me/blocks", "get"), ("/api/users/me/blocks", "post"), ("/api/users/me/blocks/{user_id}", "delete"),
        ("/api/audit", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} is missing"
    body = paths["/api/rooms/{room_id}/ban"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BanIn"}


async def test_a_report_can_be_closed_after_its_message_was_deleted(node, connect):
    room = await room_of(node, "root")
    author = uid("author")
    _, message = await post_in(connect, author, room, "regrettable")
    _, report = await rest(node, "POST", f"/api/messages/{message['message_id']}/report", "bob", json={"reason": "x"})
    assert (await rest(node, "DELETE", f"/api/messages/{message['message_id']}", author))[0] == 204
    _, queue = await rest(node, "GET", f"/api/reports?room_id={room}", "gm", role="moderator")
    assert queue["reports"][0]["message_deleted"] is True and queue["reports"][0]["message"]["content"] == "regrettable"
    status, resolved = await rest(node, "POST", f"/api/reports/{report['id']}/resolve", "gm", role="moderator",
                                  json={"action": "delete_message"})
    assert status == 200 and resolved["status"] == "resolved"
    assert [e["action"] for e in await audit_actions(node, room)] == ["resolve"]  # nothing left to delete
