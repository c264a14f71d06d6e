"""Reactions, mentions, presence with several tabs, typing throttle/expiry, big rooms."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import REDIS_URL, ChatClient, make_token, unique


async def _joined(connect, user: str, room: str, **kwargs) -> ChatClient:
    client = await connect(user, **kwargs)
    ack = await client.call("join_room", {"room_id": room})
    assert ack["ok"], ack
    return client


# --- reactions ---------------------------------------------------------------------------

async def test_reactions_count_once_per_user_toggle_and_show_in_history(node, connect):
    room = unique()
    alice = await _joined(connect, "alice", room)
    bob = await _joined(connect, "bob", room)
    sent = (await alice.call("send_message", {"room_id": room, "content": "react to me"}))["message"]
    mid = sent["message_id"]

    ack = await bob.call("react", {"message_id": mid, "reaction": "👍"})
    assert ack == {"ok": True, "reactions": {"👍": 1}, "action": "added"}
    event = await alice.wait_for("message_reaction", lambda e: e["action"] == "added")
    assert event == {"room_id": room, "message_id": mid, "reactions": {"👍": 1}, "user_id": "bob", "reaction": "👍", "action": "added"}

    # Adding the same emoji again does not count twice.
    ack = await bob.call("react", {"message_id": mid, "reaction": "👍", "remove": False})
    assert ack["reactions"] == {"👍": 1}
    assert (await alice.call("react", {"message_id": mid, "reaction": "👍"}))["reactions"] == {"👍": 2}
    assert (await alice.call("react", {"message_id": mid, "reaction": "love"}))["reactions"] == {"👍": 2, "love": 1}

    # Without `remove`, reacting again toggles the reaction off.
    ack = await alice.call("react", {"message_id": mid, "reaction": "👍"})
    assert ack["action"] == "removed" and ack["reactions"] == {"👍": 1, "love": 1}
    removed = await bob.wait_for("message_reaction", lambda e: e["action"] == "removed")
    assert removed["user_id"] == "alice"

    history = (await bob.call("join_room", {"room_id": room}))["history"]
    assert history[-1]["reactions"] == {"👍": 1, "love": 1}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/api/rooms/{room}/messages", headers={"Authorization": f"Bearer {make_token('carol')}"}) as resp:
            body = await resp.json()
    assert body["messages"][-1]["reactions"] == {"👍": 1, "love": 1}


async def test_invalid_reactions_are_refused(connect):
    room = unique()
    alice = await _joined(connect, "alice", room)
    mid = (await alice.call("send_message", {"room_id": room, "content": "x"}))["message"]["message_id"]
    for bad in ["a", "👍👍", "x" * 200, "<script>", "", 5]:
        ack = await alice.call("react", {"message_id": mid, "reaction": bad})
        assert ack["ok"] is False and ack["error"]["code"] == "validation_error", (bad, ack)
    ack = await alice.call("react", {"message_id": "nope", "reaction": "👍"})
    assert ack["error"]["code"] == "not_found"


# --- mentions ----------------------------------------------------------------------------

async def test_mentions_reach_the_user_outside_the_room_and_are_marked_up(connect):
    room = unique()
    other_room = unique()
    bob_elsewhere = await _joined(connect, "bob", other_room)  # bob is a member of `room`? not yet
    bob_here = await _joined(connect, "bob", room)
    await bob_here.call("leave_room", {"room_id": room})  # bob stays a member but has no socket in the room
    alice = await _joined(connect, "alice", room)

    ack = await alice.call("send_message", {"room_id": room, "content": "hey @bob and @nobody, mail me at a@b.com"})
    message = ack["message"]
    assert message["mentions"] == ["bob"]
    assert '<span class="mention" data-user-id="bob">@bob</span>' in message["content_html"]
    assert "@nobody" in message["content_html"] and "a@b.com" in message["content_html"]

    got = await bob_elsewhere.wait_for("mentioned")
    assert got["message_id"] == message["message_id"]
    assert "new_message" not in bob_elsewhere.events  # not in the room, only the mention
    assert "mentioned" not in alice.events  # the author is not notified


async def test_mass_mentions_are_refused(connect):
    room = unique()
    alice = await _joined(connect, "alice", room)
    content = " ".join(f"@user{i}" for i in range(11))
    ack = await alice.call("send_message", {"room_id": room, "content": content})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "message_rejected" and ack["error"]["details"]["reason"] == "spam"


# --- presence ----------------------------------------------------------------------------

async def test_several_tabs_do_not_flap_presence(connect):
    room = unique()
    watcher = await _joined(connect, "watcher", room)
    tab1 = await _joined(connect, "alice", room)
    tab2 = await _joined(connect, "alice", room)
    await watcher.wait_for("user_joined", lambda e: e["user_id"] == "alice")
    await watcher.wait_for("presence", lambda e: e == {"user_id": "alice", "status": "online"})
    await tab1.disconnect()
    await asyncio.sleep(0.3)
    assert [e["user_id"] for e in watcher.events["user_joined"]].count("alice") == 1
    assert "user_left" not in watcher.events
    await tab2.disconnect()
    left = await watcher.wait_for("user_left", lambda e: e["user_id"] == "alice")
    assert left["room_id"] == room
    await watcher.wait_for("presence", lambda e: e == {"user_id": "alice", "status": "offline"})
    assert [e["status"] for e in watcher.events["presence"] if e["user_id"] == "alice"] == ["online", "offline"]


async def test_members_show_online_state(node, connect):
    room = unique()
    alice = await _joined(connect, "alice", room)
    bob = await _joined(connect, "bob", room)
    await bob.disconnect()
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/api/rooms/{room}/members", headers={"Authorization": f"Bearer {make_token('alice')}"}) as resp:
            members = {m["user_id"]: m for m in (await resp.json())["members"]}
    assert members["alice"]["online"] is True
    assert members["bob"]["online"] is False
    await alice.disconnect()


async def test_presence_of_a_killed_node_expires(spawn_server):
    """Users of a node that dies without cleaning up stop counting within the TTL."""
    room = unique()
    env = {"REDIS_URL": REDIS_URL, "PRESENCE_TTL_MS": "1500"}
    survivor = await spawn_server(**env)
    doomed = await spawn_server(**env)
    watcher = await ChatClient(survivor.url, make_token("watcher")).connect()
    victim = await ChatClient(doomed.url, make_token("victim")).connect()
    try:
        assert (await watcher.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)
        ack = await victim.call("join_room", {"room_id": room})
        assert {u["user_id"] for u in ack["online_users"]} == {"watcher", "victim"}
        doomed.kill()
        # Still counted right after the kill (nobody cleaned up) ...
        ack = await watcher.call("join_room", {"room_id": room})
        assert "victim" in {u["user_id"] for u in ack["online_users"]}
        # ... and gone once its entries expire (TTL 1.5 s, heartbeat every 0.5 s).
        await asyncio.sleep(2.0)
        ack = await watcher.call("join_room", {"room_id": room})
        assert {u["user_id"] for u in ack["online_users"]} == {"watcher"}
        stats = await watcher.wait_for("room_stats", lambda s: s["online_users"] == 1, timeout=5)
        assert stats["room_id"] == room
    finally:
        await watcher.disconnect()
        await victim.sio.disconnect()


# --- typing ------------------------------------------------------------------------------

async def test_typing_is_throttled_and_expires(start_node):
    node = await start_node(typing_ttl_s=0.6, typing_throttle_s=1.0)
    room = unique()
    watcher = await ChatClient(node.url, make_token("watcher")).connect()
    typist = await ChatClient(node.url, make_token("typist")).connect()
    try:
        for client in (watcher, typist):
            assert (await client.call("join_room", {"room_id": room}))["ok"]
        for _ in range(5):
            assert await typist.call("typing", {"room_id": room, "is_typing": True}) == {"ok": True}
        await watcher.wait_for("user_typing", lambda e: e["is_typing"] is True)
        stopped = await watcher.wait_for("user_typing", lambda e: e["is_typing"] is False, timeout=3)
        assert stopped["user_id"] == "typist"
        states = [e["is_typing"] for e in watcher.events["user_typing"]]
        assert states == [True, False]  # five "typing" calls → one start, one automatic stop
        assert "user_typing" not in typist.events  # never to the typist
    finally:
        await watcher.disconnect()
        await typist.disconnect()
    watcher.assert_valid()


async def test_typing_cleared_on_send_and_disconnect(connect):
    room = unique()
    watcher = await _joined(connect, "watcher", room)
    typist = await _joined(connect, "typist", room)
    await typist.call("typing", {"room_id": room, "is_typing": True})
    await watcher.wait_for("user_typing", lambda e: e["is_typing"])
    await typist.call("send_message", {"room_id": room, "content": "done typing"})
    await watcher.wait_for("user_typing", lambda e: not e["is_typing"])
    await typist.call("typing", {"room_id": room, "is_typing": True})
    await asyncio.sleep(0.1)
    await typist.disconnect()
    await asyncio.sleep(0.3)
    assert [e["is_typing"] for e in watcher.events["user_typing"]] == [True, False, True, False]


# --- big rooms ---------------------------------------------------------------------------

async def test_big_rooms_send_counts_only(start_node):
    node = await start_node(big_room_threshold=2)
    room = unique()
    clients = [await ChatClient(node.url, make_token(f"viewer{i}")).connect() for i in range(4)]
    try:
        for client in clients:
            assert (await client.call("join_room", {"room_id": room}))["ok"]
            await asyncio.sleep(0.05)
        first = clients[0]
        # viewer1 and viewer2 joined while the room was small; viewer3 made it big.
        await first.wait_for("room_stats", lambda s: s["online_users"] == 4)
        joined = [e["user_id"] for e in first.events["user_joined"]]
        assert "viewer3" not in joined and "viewer1" in joined
        await clients[3].call("typing", {"room_id": room, "is_typing": True})
        await clients[3].call("send_message", {"room_id": room, "content": "messages still flow"})
        await first.wait_for("new_message")
        assert all(e["user_id"] != "viewer3" for e in first.events.get("user_typing", []))
    finally:
        for client in clients:
            await client.disconnect()
