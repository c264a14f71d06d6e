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
