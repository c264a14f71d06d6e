"""REST API (PROTOCOL.md §4) against a real server on a real port."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Any

import aiohttp
import pytest

from chat_server.rest.middleware import PUBLIC_API_PREFIXES
from chat_server.schemas import ErrorOut, HistoryOut, MembersOut, ReadyOut, RoomOut, RoomWithStatsOut
from tests.conftest import ChatClient, make_token, rest, unique

# Routes that are not part of the REST API document.
NOT_REST = ("/socket.io", "/api/chats/", "/ws")


def assert_schema(schema: Any, body: Any) -> None:
    errors = schema().validate(body)
    assert errors == {}, f"{schema.__name__}: {errors} in {body!r}"


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, (status, body)
    assert_schema(ErrorOut, body)
    assert body["error"]["code"] == code, body


async def create_room(node: Any, *, role: str = "moderator", user: str = "mod", **body: Any) -> dict[str, Any]:
    body.setdefault("name", "A room")
    status, created = await rest(node, "POST", "/api/rooms", user, role=role, json=body)
    assert status == 201, created
    return created


def text(i: int) -> str:
    """Distinct, ordinary message texts (so spam rules never mistake them for repeats)."""
    return f"message {i}: {hashlib.sha256(str(i).encode()).hexdigest()[:12]}"


async def fill(client: ChatClient, room: str, n: int) -> list[dict[str, Any]]:
    ack = await client.call("join_room", {"room_id": room})
    assert ack["ok"], ack
    messages = []
    for i in range(1, n + 1):
        ack = await client.call("send_message", {"room_id": room, "content": text(i)})
        assert ack["ok"], ack
        messages.append(ack["message"])
    return messages


# --- health and docs ----------------------------------------------------------------------

async def test_healthz(node):
    status, body = await rest(node, "GET", "/healthz")
    assert status == 200 and body["status"] == "ok", body


async def test_readyz_reports_each_dependency(node):
    # a node may still be starting (schema, pool) for a moment: wait as a balancer would
    deadline = time.monotonic() + 10
    while (answer := await rest(node, "GET", "/readyz"))[0] != 200:
        status, body = answer
        assert status == 503 and body["status"] != "ready", answer
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.05)
    status, body = answer
    assert body["status"] == "ready"
    assert_schema(ReadyOut, body)
    assert body["checks"]["postgres"] == "ok"
    assert "redis" in body["checks"]  # not configured in this node, but listed


async def test_openapi_documents_every_rest_route(node):
    status, doc = await rest(node, "GET", "/api/chats/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    schemas = doc["components"]["schemas"]

    routes = set()
    for route in node.server.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method in ("HEAD", "OPTIONS", "*") or path.startswith(NOT_REST):
            continue
        if not path.startswith("/api/") and path not in ("/healthz", "/readyz", "/metrics"):
            continue  # HTML pages and their static files are not part of the API
        routes.add((path, route.method.lower()))
    for expected in [("/api/rooms", "post"), ("/api/rooms/{room_id}", "get"), ("/api/rooms/{room_id}", "patch"),
                     ("/api/rooms/{room_id}/messages", "get"), ("/api/rooms/{room_id}/members", "get"),
                     ("/healthz", "get"), ("/readyz", "get")]:
        assert expected in routes, f"{expected} is not even served"

    def resolve(ref_holder: dict[str, Any]) -> None:
        ref = ref_holder["schema"].get("$ref")
        if ref:
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref

    for path, method in sorted(routes):
        assert path in paths and method in paths[path], f"{method.upper()} {path} is missing from openapi.json"
        operation = paths[path][method]
        if not path.startswith("/api/"):
            continue
        responses = operation["responses"]
        success = [code for code in responses if str(code).startswith("2")]
        assert success, f"{method.upper()} {path} documents no success response"
        for code in success:
            if str(code) != "204":
                content = responses[code]["content"]["application/json"]
                resolve(content)
        if path.startswith(PUBLIC_API_PREFIXES):  # no token needed (the development sign-in)
            assert operation.get("security") == [], f"{method.upper()} {path} is public but documents a security scheme"
            continue
        assert "401" in responses, f"{method.upper()} {path} does not document 401"
        for code, response in responses.items():
            if not str(code).startswith("2"):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
        if method in ("post", "patch", "put") and path in ("/api/rooms", "/api/rooms/{room_id}"):
            resolve(operation["requestBody"]["content"]["application/json"])
        assert operation.get("security") == [{"bearerAuth": []}], f"{method.upper()} {path} has no bearer security"
    params = {p["name"] for p in paths["/api/rooms/{room_id}/messages"]["get"]["parameters"]}
    assert {"page", "limit", "before_seq", "after_seq", "room_id"} <= params


async def test_swagger_ui_is_served_locally(node):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/api/chats/docs") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        assert "swagger-ui" in page.lower()
        assert not re.search(r"https?://", page), "the docs page loads something from another host"
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
        assert any(a.endswith(".css") for a in assets), assets
        for asset in assets:
            assert not asset.startswith("//"), asset
            async with session.get(node.url + asset if asset.startswith("/") else f"{node.url}/api/chats/{asset}") as response:
                assert response.status == 200, asset
                assert len(await response.read()) > 0, asset
        # the page points Swagger UI at this server's document
        assert "/api/chats/openapi.json" in page


# --- POST /api/rooms ----------------------------------------------------------------------

async def test_moderator_creates_a_room(node):
    room = unique()
    status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator",
                              json={"id": room, "name": "Video 1", "type": "public", "settings": {"slow_mode_seconds": 5}})
    assert status == 201, body
    assert_schema(RoomOut, body)
    assert body["id"] == room and body["name"] == "Video 1" and body["type"] == "public"
    assert body["settings"]["slow_mode_seconds"] == 5
    assert body["created_by"] == "mod" and body["message_count"] == 0 and body["last_seq"] == 0
    # it exists now
    status, got = await rest(node, "GET", f"/api/rooms/{room}", "someone")
    assert status == 200 and got["name"] == "Video 1"


async def test_admin_creates_a_room_without_an_id(node):
    status, body = await rest(node, "POST", "/api/rooms", "boss", role="admin", json={"name": "No id given"})
    assert status == 201, body
    assert_schema(RoomOut, body)
    assert re.fullmatch(r"[A-Za-z0-9_\-.:@]{1,128}", body["id"])
    status, got = await rest(node, "GET", f"/api/rooms/{body['id']}", "someone")
    assert status == 200


async def test_plain_user_cannot_create_rooms(node):
    room = unique()
    status, body = await rest(node, "POST", "/api/rooms", "alice", json={"id": room, "name": "Mine"})
    assert_error(status, body, 403, "forbidden")
    status, body = await rest(node, "GET", f"/api/rooms/{room}", "alice")
    assert status == 404


async def test_duplicate_room_id_is_a_conflict(node):
    room = unique()
    await create_room(node, id=room, name="first")
    status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator", json={"id": room, "name": "second"})
    assert_error(status, body, 409, "conflict")
    status, got = await rest(node, "GET", f"/api/rooms/{room}", "mod")
    assert got["name"] == "first"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": 5}, "name"),
    ({"name": "ok", "type": "secret"}, "type"),
    ({"name": "ok", "id": "has space"}, "id"),
    ({"name": "ok", "id": "x" * 129}, "id"),
    ({"name": "ok", "settings": ["not", "an", "object"]}, "settings"),
    ({"name": "ok", "settings": {"no_such_setting": 1}}, "settings"),
    ({"name": "ok", "settings": {"slow_mode_seconds": -1}}, "settings"),
    ({"name": "ok", "members": "bob"}, "members"),
])
async def test_bad_room_body_is_a_validation_error(node, body, field):
    status, answer = await rest(node, "POST", "/api/rooms", "mod", role="moderator", json=body)
    assert_error(status, answer, 422, "validation_error")
    assert field in answer["error"]["details"], answer


async def test_invalid_json_is_400(node):
    status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator",
                              data=b'{"name": "oops",', headers={"Content-Type": "application/json"})
    assert status == 400, body
    assert_schema(ErrorOut, body)
    assert body["error"]["code"] == "validation_error"


async def test_non_object_json_body_is_rejected(node):
    status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator", json=["name", "x"])
    assert status in (400, 422), body
    assert_schema(ErrorOut, body)
    assert body["error"]["code"] == "validation_error"


async def test_oversized_body_is_413(node):
    status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator",
                              json={"name": "big", "settings": {"blob": "x" * 400_000}})
    assert_error(status, body, 413, "validation_error")


async def test_creating_without_a_token_is_401_before_validation(node):
    status, body = await rest(node, "POST", "/api/rooms", json={"nonsense": True})
    assert_error(status, body, 401, "unauthorized")


# --- GET / PATCH /api/rooms/{id} ------------------------------------------------------------

async def test_room_has_settings_and_live_stats(node, connect):
    room = (await create_room(node, id=unique(), settings={"links_allowed": False}))["id"]
    alice = await connect("alice")
    bob = await connect("bob")
    await fill(alice, room, 3)
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    status, body = await rest(node, "GET", f"/api/rooms/{room}", "carol")
    assert status == 200, body
    assert_schema(RoomWithStatsOut, body)
    assert body["settings"] == {"links_allowed": False}
    assert body["online_users"] == 2 and body["message_count"] == 3 and body["last_seq"] == 3


async def test_moderator_patches_a_room(node):
    room = (await create_room(node, id=unique(), name="Old", settings={"links_allowed": False, "slow_mode_seconds": 0}))["id"]
    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", "mod2", role="moderator",
                              json={"name": "New", "settings": {"slow_mode_seconds": 10}})
    assert status == 200, body
    assert_schema(RoomWithStatsOut, body)
    assert body["name"] == "New"
    assert body["settings"]["slow_mode_seconds"] == 10
    assert body["settings"]["links_allowed"] is False  # settings are merged, not replaced
    status, got = await rest(node, "GET", f"/api/rooms/{room}", "alice")
    assert got["name"] == "New" and got["settings"]["slow_mode_seconds"] == 10

    # the owner (room role) may change it too, even without a global role
    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", "mod", role="user", json={"name": "By owner"})
    assert status == 200 and body["name"] == "By owner", body


async def test_patch_is_refused_to_plain_users_and_validated(node):
    room = (await create_room(node, id=unique(), name="Keep"))["id"]
    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", "alice", json={"name": "Hijacked"})
    assert_error(status, body, 403, "forbidden")
    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", "mod", role="moderator", json={"name": ""})
    assert_error(status, body, 422, "validation_error")
    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", "mod", role="moderator", json={"settings": "slow"})
    assert_error(status, body, 422, "validation_error")
    status, body = await rest(node, "PATCH", f"/api/rooms/{unique()}", "mod", role="moderator", json={"name": "Ghost"})
    assert_error(status, body, 404, "not_found")
    status, got = await rest(node, "GET", f"/api/rooms/{room}", "alice")
    assert got["name"] == "Keep"


# --- GET /api/rooms/{id}/messages ------------------------------------------------------------

async def test_numbered_pages_newest_first_oldest_first_inside(node, connect):
    room = unique()
    alice = await connect("alice")
    sent = await fill(alice, room, 7)
    pages = {}
    for page in (1, 2, 3, 4):
        status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?page={page}&limit=3", "bob")
        assert status == 200, body
        assert body["page"] == page and body["limit"] == 3
        pages[page] = ([m["seq"] for m in body["messages"]], body["has_more"])
    assert pages == {1: ([5, 6, 7], True), 2: ([2, 3, 4], True), 3: ([1], False), 4: ([], False)}
    status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?page=1&limit=3", "bob")
    assert body["messages"] == sent[4:]  # the same Message objects the senders got


async def test_history_body_matches_its_schema(node, connect):
    room = unique()
    alice = await connect("alice")
    await fill(alice, room, 2)
    status, body = await rest(node, "GET", f"/api/rooms/{room}/messages", "bob")
    assert status == 200
    assert_schema(HistoryOut, body)
    assert body["page"] == 1 and body["has_more"] is False
    assert [m["content"] for m in body["messages"]] == [text(1), text(2)]


async def test_seq_cursors(node, connect):
    room = unique()
    alice = await connect("alice")
    await fill(alice, room, 7)

    async def seqs(query: str) -> tuple[list[int], bool]:
        status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?{query}", "bob")
        assert status == 200, body
        return [m["seq"] for m in body["messages"]], body["has_more"]

    assert await seqs("before_seq=5&limit=3") == ([2, 3, 4], True)
    assert await seqs("before_seq=2&limit=3") == ([1], False)
    assert await seqs("before_seq=1") == ([], False)
    assert await seqs("after_seq=4&limit=2") == ([5, 6], True)
    assert await seqs("after_seq=6&limit=2") == ([7], False)
    assert await seqs("after_seq=7") == ([], False)
    assert await seqs("after_seq=0") == ([1, 2, 3, 4, 5, 6, 7], False)
    # walking back with before_seq visits every message exactly once
    seen: list[int] = []
    cursor = ""
    while True:
        page, more = await seqs(f"limit=2{cursor}")
        seen = page + seen
        if not more:
            break
        cursor = f"&before_seq={page[0]}"
    assert seen == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("query", [
    "limit=11", "limit=0", "limit=-1", "limit=abc", "page=0", "page=x", "before_seq=0", "after_seq=-1",
    "before_seq=5&after_seq=1",
])
async def test_bad_history_queries_are_422(start_node, query):
    node = await start_node(message_history_limit=10)
    room = (await create_room(node, id=unique()))["id"]
    status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?{query}", "bob")
    assert_error(status, body, 422, "validation_error")


async def test_limit_up_to_message_history_limit_is_fine(start_node):
    node = await start_node(message_history_limit=10)
    room = (await create_room(node, id=unique()))["id"]
    status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?limit=10", "bob")
    assert status == 200 and body["limit"] == 10, body
    status, body = await rest(node, "GET", f"/api/rooms/{room}/messages", "bob")
    assert status == 200 and body["limit"] <= 10, body


# --- GET /api/rooms/{id}/members -------------------------------------------------------------

async def test_members_show_who_is_online(node, connect):
    room = (await create_room(node, id=unique()))["id"]
    alice = await connect("alice")
    bob = await connect("bob")
    for c in (alice, bob):
        assert (await c.call("join_room", {"room_id": room}))["ok"]

    async def online() -> dict[str, bool]:
        status, body = await rest(node, "GET", f"/api/rooms/{room}/members", "carol")
        assert status == 200, body
        assert_schema(MembersOut, body)
        return {m["user_id"]: m["online"] for m in body["members"]}

    assert await online() == {"mod": False, "alice": True, "bob": True}
    status, body = await rest(node, "GET", f"/api/rooms/{room}/members", "carol")
    roles = {m["user_id"]: m["role"] for m in body["members"]}
    assert roles["mod"] == "owner" and roles["alice"] == "member"

    await bob.disconnect()
    deadline = time.monotonic() + 5
    while (state := await online()) != {"mod": False, "alice": True, "bob": False}:
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.05)
    # leaving the room (still connected) also makes you offline there
    assert await alice.call("leave_room", {"room_id": room}) == {"ok": True}
    assert await online() == {"mod": False, "alice": False, "bob": False}


# --- not found, and private rooms look the same ----------------------------------------------

async def test_unknown_and_private_rooms_answer_alike(node, connect):
    private = (await create_room(node, id=unique("priv"), type="private", members=["bob"]))["id"]
    missing = unique("missing")
    for suffix in ("", "/messages", "/members"):
        status_missing, body_missing = await rest(node, "GET", f"/api/rooms/{missing}{suffix}", "carol")
        status_private, body_private = await rest(node, "GET", f"/api/rooms/{private}{suffix}", "carol")
        assert_error(status_missing, body_missing, 404, "not_found")
        assert (status_private, body_private) == (status_missing, body_missing), suffix
        # a member sees it
        status, body = await rest(node, "GET", f"/api/rooms/{private}{suffix}", "bob")
        assert status == 200, (suffix, body)
    status_missing, body_missing = await rest(node, "PATCH", f"/api/rooms/{missing}", "carol", json={"name": "x"})
    status_private, body_private = await rest(node, "PATCH", f"/api/rooms/{private}", "carol", json={"name": "x"})
    assert (status_private, body_private) == (status_missing, body_missing)
    assert status_missing == 404


async def test_unknown_api_route_is_a_json_404(node):
    status, body = await rest(node, "GET", "/api/nothing/here", "alice")
    assert_error(status, body, 404, "not_found")


async def test_wrong_method_on_an_api_route_is_405_with_json(node):
    status, body = await rest(node, "DELETE", "/api/rooms", "alice")
    assert status == 405, body
    assert_schema(ErrorOut, body)


async def test_expired_token_gets_401_with_www_authenticate(node):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/api/rooms/lobby", headers={"Authorization": f"Bearer {make_token('a', ttl=-10)}"}) as response:
            assert response.status == 401
            assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer")
            body = await response.json()
    assert body["error"]["code"] == "unauthorized"
