"""GET /api/rooms/{id}/messages as the hot read it is: one database statement per page of
a public room, numbered pages equal to walking the cursors whatever is hidden, the room
cache never widening who may read, and the JSON body."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp

from tests.api.test_rest import create_room, fill, text
from tests.conftest import make_token, rest, unique


def count_statements(node: Any) -> Counter[str]:
    """Count what the node's database runs from now on (every query helper)."""
    db = node.components.db
    counted: Counter[str] = Counter()
    for name in ("fetch", "fetchrow", "execute", "fetch_tuples"):
        original = getattr(db, name)

        def wrapper(sql: str, params: Any = None, _original: Any = original, _name: str = name) -> Any:
            counted[_name] += 1
            return _original(sql, params)

        setattr(db, name, wrapper)
    return counted


async def test_a_page_of_a_public_room_is_one_statement(start_node, connect):
    # A room cache that does not come due during the test: its refresh-ahead read (a
    # statement of its own, from half the TTL on) is not the page's, and on a
    # loaded machine the five pages took longer than that.
    node = await start_node(room_cache_ttl_s=600.0)
    room = unique()
    await fill(await connect("alice", url=node.url), room, 12)
    status, _ = await rest(node, "GET", f"/api/rooms/{room}/messages?limit=5", "bob")  # the room's row is cached now
    assert status == 200
    counted = count_statements(node)
    for query in ("limit=5", "limit=5&before_seq=9", "limit=5&after_seq=3", "limit=5&page=2", "limit=5&page=9"):
        counted.clear()
        status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?{query}", "bob")
        assert status == 200, body
        assert sum(counted.values()) == 1, (query, counted)


async def test_numbered_pages_walk_like_the_cursors_with_deleted_and_blocked_messages(node, connect):
    room = unique()
    # Users of this test only: a block is stored for good and the test database is shared.
    bob, carol_id, dave = unique("bob"), unique("carol"), unique("dave")
    alice, carol = await connect("alice"), await connect(carol_id)
    for client in (alice, carol):
        assert (await client.call("join_room", {"room_id": room}))["ok"]
    sent = []
    for i in range(18):
        ack = await (alice if (i // 3) % 2 else carol).call("send_message", {"room_id": room, "content": text(100 + i)})
        assert ack["ok"], ack
        sent.append(ack["message"])
    for message in (sent[0], sent[7], sent[8], sent[16], sent[17]):
        status, _ = await rest(node, "DELETE", f"/api/messages/{message['message_id']}", "mod", role="moderator")
        assert status in (200, 204)
    status, _ = await rest(node, "POST", "/api/users/me/blocks", bob, json={"user_id": carol_id})
    assert status == 201

    for reader in (bob, dave):
        by_pages = []
        for page in range(1, 8):
            status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?page={page}&limit=2", reader)
            assert status == 200, body
            by_pages = body["messages"] + by_pages
            if not body["has_more"]:
                break
        by_cursor: list[dict[str, Any]] = []
        cursor = ""
        while True:
            status, body = await rest(node, "GET", f"/api/rooms/{room}/messages?limit=2{cursor}", reader)
            by_cursor = body["messages"] + by_cursor
            if not body["has_more"]:
                break
            cursor = f"&before_seq={body['first_seq']}"
        assert by_pages == by_cursor
        deleted = {sent[i]["seq"] for i in (0, 7, 8, 16, 17)}
        carols = {m["seq"] for m in sent if m["user"]["user_id"] == carol_id}
        expected = [m["seq"] for m in sent if m["seq"] not in deleted and (reader != bob or m["seq"] not in carols)]
        assert [m["seq"] for m in by_pages] == expected


async def test_a_cached_private_room_is_still_checked_for_membership(node):
    room = (await create_room(node, id=unique(), type="private", members=["alice"]))["id"]
    status, _ = await rest(node, "GET", f"/api/rooms/{room}/messages", "alice")
    assert status == 200  # the room's row is in the node's cache now
    status, body = await rest(node, "GET", f"/api/rooms/{room}/messages", "mallory")
    assert status == 404 and body["error"]["code"] == "not_found"
    await node.components.db.execute("DELETE FROM room_members WHERE room_id = %s AND user_id = 'alice'", (room,))
    status, _ = await rest(node, "GET", f"/api/rooms/{room}/messages", "alice")
    assert status == 404


async def test_the_body_is_utf8_json(node, connect):
    room = unique()
    client = await connect("alice")
    assert (await client.call("join_room", {"room_id": room}))["ok"]
    ack = await client.call("send_message", {"room_id": room, "content": "grüße, 世界 ✓ \"quoted\""})
    assert ack["ok"], ack
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{node.url}/api/rooms/{room}/messages",
                               headers={"Authorization": f"Bearer {make_token('bob')}"}) as response:
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            body = await response.json()
    assert body["messages"] == [ack["message"]]
    assert body["first_seq"] == body["last_seq"] == ack["message"]["seq"]
    assert (body["page"], body["limit"], body["has_more"]) == (1, 50, False)
