from tests.conftest import unique


async def test_two_clients_chat(connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    ack = await alice.call("join_room", {"room_id": room})
    assert ack["ok"], ack
    ack = await bob.call("join_room", {"room_id": room})
    assert ack["ok"], ack
    await alice.wait_for("user_joined", lambda d: d["user_id"] == "bob")
    ack = await alice.call("send_message", {"room_id": room, "content": "hello <b>bob</b>", "client_msg_id": "c1"})
    assert ack["ok"], ack
    msg = await bob.wait_for("new_message")
    assert msg["content"] == "hello bob"
    assert msg["seq"] == 1
    await bob.call("typing", {"room_id": room, "is_typing": True})
    t = await alice.wait_for("user_typing")
    assert t["user_id"] == "bob"
    stats = await alice.wait_for("room_stats", lambda d: d["message_count"] == 1)
    assert stats["online_users"] == 2
