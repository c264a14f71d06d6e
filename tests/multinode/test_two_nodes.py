"""Two server processes' worth of nodes sharing Redis: what one node's clients do, the
other node's clients see."""

import asyncio

from tests.conftest import REDIS_URL, ChatClient, make_token, unique


async def _client(url: str, user: str) -> ChatClient:
    return await ChatClient(url, make_token(user)).connect()


async def test_messages_typing_presence_and_stats_cross_nodes(start_node):
    a = await start_node(redis_url=REDIS_URL)
    b = await start_node(redis_url=REDIS_URL)
    room = unique()
    alice = await _client(a.url, "alice")
    bob = await _client(b.url, "bob")
    try:
        assert (await alice.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)  # let node b's Redis subscription settle
        ack = await bob.call("join_room", {"room_id": room})
        assert ack["ok"]
        assert {u["user_id"] for u in ack["online_users"]} == {"alice", "bob"}
        joined = await alice.wait_for("user_joined", lambda e: e["user_id"] == "bob")
        assert joined["room_id"] == room

        sent = await bob.call("send_message", {"room_id": room, "content": "from node b"})
        got = await alice.wait_for("new_message")
        assert got["message_id"] == sent["message"]["message_id"]

        await alice.call("typing", {"room_id": room, "is_typing": True})
        typing = await bob.wait_for("user_typing")
        assert typing["user_id"] == "alice" and typing["is_typing"] is True

        stats = await alice.wait_for("room_stats", lambda s: s["message_count"] == 1 and s["online_users"] == 2)
        assert stats["room_id"] == room

        await bob.disconnect()
        left = await alice.wait_for("user_left", lambda e: e["user_id"] == "bob")
        assert left["room_id"] == room
    finally:
        await alice.disconnect()
        await bob.disconnect()
    alice.assert_valid()
    bob.assert_valid()


async def test_reactions_mentions_and_rest_emits_cross_nodes(start_node):
    from tests.conftest import rest

    a = await start_node(redis_url=REDIS_URL)
    b = await start_node(redis_url=REDIS_URL)
    room = unique()
    alice = await _client(a.url, "alice")
    bob = await _client(b.url, "bob")
    bob_elsewhere = await _client(b.url, "bob")  # bob's other tab, not in the room
    try:
        assert (await alice.call("join_room", {"room_id": room}))["ok"]
        assert (await bob.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)

        sent = (await alice.call("send_message", {"room_id": room, "content": "hi @bob"}))["message"]
        assert sent["mentions"] == ["bob"]
        mention = await bob_elsewhere.wait_for("mentioned")  # every tab, on another node
        assert mention["message_id"] == sent["message_id"]

        ack = await bob.call("react", {"message_id": sent["message_id"], "reaction": "🔥"})
        assert ack["ok"] and ack["reactions"] == {"🔥": 1}
        reaction = await alice.wait_for("message_reaction")
        assert reaction["user_id"] == "bob" and reaction["reactions"] == {"🔥": 1}

        # A REST call handled by node a reaches a socket on node b.
        status, body = await rest(a, "DELETE", f"/api/messages/{sent['message_id']}", "alice")
        assert status in (200, 204), body
        deleted = await bob.wait_for("message_deleted")
        assert deleted == {"room_id": room, "message_id": sent["message_id"], "seq": sent["seq"]}
    finally:
        for c in (alice, bob, bob_elsewhere):
            await c.disconnect()
    for c in (alice, bob, bob_elsewhere):
        c.assert_valid()


async def test_a_room_change_on_one_node_applies_at_once_on_the_other(start_node):
    """Node b caches the room's row for its senders; a change made through node a drops it
    there as soon as room_updated arrives (not after the cache's TTL)."""
    from tests.conftest import rest

    a = await start_node(redis_url=REDIS_URL, room_cache_ttl_s=300.0)
    b = await start_node(redis_url=REDIS_URL, room_cache_ttl_s=300.0)
    room = unique()
    status, body = await rest(a, "POST", "/api/rooms", "owner", role="moderator", json={"id": room, "name": "r"})
    assert status == 201, body
    bob = await _client(b.url, "bob")
    try:
        assert (await bob.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)
        assert (await bob.call("send_message", {"room_id": room, "content": "plain words"}))["ok"]  # cached on b now
        status, body = await rest(a, "PATCH", f"/api/rooms/{room}", "owner", role="moderator", json={"settings": {"emoji_only": True}})
        assert status == 200, body
        await bob.wait_for("room_updated", lambda e: e["room_id"] == room)
        ack = await bob.call("send_message", {"room_id": room, "content": "more plain words"})
        assert ack["ok"] is False and ack["error"]["code"] == "message_rejected", ack
        assert (await bob.call("send_message", {"room_id": room, "content": "👍"}))["ok"]
    finally:
        await bob.disconnect()
    bob.assert_valid()
