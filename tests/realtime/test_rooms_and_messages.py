"""Round trips between several real Socket.IO clients (PROTOCOL.md §2)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from chat_server.schemas import JoinRoomAckOut, SendMessageAckOut
from tests.conftest import ChatClient, rest, unique

JOIN_ACK_KEYS = {"ok", "room", "history", "has_more", "online_users"}


def assert_join_ack(ack: dict[str, Any], room: str) -> None:
    assert ack.get("ok") is True, ack
    assert set(ack) == JOIN_ACK_KEYS, ack
    assert JoinRoomAckOut().validate(ack) == {}, JoinRoomAckOut().validate(ack)
    assert ack["room"]["id"] == room


def assert_send_ack(ack: dict[str, Any]) -> dict[str, Any]:
    assert ack.get("ok") is True, ack
    assert set(ack) == {"ok", "message"}, ack
    assert SendMessageAckOut().validate(ack) == {}, SendMessageAckOut().validate(ack)
    return ack["message"]


async def join(client: ChatClient, room: str, **extra: Any) -> dict[str, Any]:
    ack = await client.call("join_room", {"room_id": room, **extra})
    assert_join_ack(ack, room)
    return ack


async def send(client: ChatClient, room: str, content: str, **extra: Any) -> dict[str, Any]:
    return assert_send_ack(await client.call("send_message", {"room_id": room, "content": content, **extra}))


async def barrier(sender: ChatClient, room: str, *receivers: ChatClient) -> None:
    """Send a marker and wait until every receiver has it: anything the server emitted to
    them before the marker (on this node) has arrived by then."""
    marker = f"barrier {uuid.uuid4().hex}"
    await send(sender, room, marker)
    for receiver in receivers:
        await receiver.wait_for("new_message", lambda m: m["content"] == marker)


def of_room(events: list[dict[str, Any]], room: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in events if e["room_id"] == room and all(e.get(k) == v for k, v in match.items())]


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- acks and fan-out ---------------------------------------------------------------------

async def test_acks_have_the_documented_shapes(connect):
    room = unique()
    alice = await connect("alice")
    ack = await join(alice, room)
    assert ack["history"] == [] and ack["has_more"] is False
    assert ack["online_users"] == [{"user_id": "alice", "username": "alice", "avatar": None}]
    assert ack["room"]["type"] == "public"

    message = await send(alice, room, "hello", client_msg_id="c-1")
    assert message["room_id"] == room and message["seq"] == 1
    assert message["user"] == {"user_id": "alice", "username": "alice", "avatar": None}
    assert message["client_msg_id"] == "c-1" and message["type"] == "text"

    assert await alice.call("typing", {"room_id": room, "is_typing": True}) == {"ok": True}
    assert await alice.call("typing", {"room_id": room, "is_typing": False}) == {"ok": True}
    assert await alice.call("leave_room", {"room_id": room}) == {"ok": True}
    # leaving twice: not in the room any more
    ack = await alice.call("leave_room", {"room_id": room})
    assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"


async def test_new_message_reaches_everyone_in_the_room_including_the_sender(connect):
    room, elsewhere = unique(), unique()
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol")
    dave = await connect("dave")  # in another room
    for c in (alice, bob, carol):
        await join(c, room)
    await join(dave, elsewhere)

    sent = await send(alice, room, "hi <i>all</i>")
    for c in (alice, bob, carol):
        got = await c.wait_for("new_message", lambda m: m["message_id"] == sent["message_id"])
        assert got == sent
    assert sent["content"] == "hi all"
    await barrier(dave, elsewhere, dave)
    assert of_room(dave.events["new_message"], room) == []
    # every client got it exactly once
    for c in (alice, bob, carol):
        assert len([m for m in c.events["new_message"] if m["message_id"] == sent["message_id"]]) == 1


async def test_user_joined_once_per_user_and_user_left_only_for_the_last_socket(node, connect):
    room = unique()
    bob = await connect("bob")
    await join(bob, room)
    alice_tab1 = await connect("alice")
    alice_tab2 = await connect("alice")

    await join(alice_tab1, room)
    joined = await bob.wait_for("user_joined", lambda e: e["user_id"] == "alice")
    assert joined == {"room_id": room, "user_id": "alice", "username": "alice", "avatar": None}
    ack = await join(alice_tab2, room)
    assert sorted(u["user_id"] for u in ack["online_users"]) == ["alice", "bob"]  # distinct users
    await barrier(bob, room, bob, alice_tab1, alice_tab2)
    assert len(of_room(bob.events["user_joined"], room, user_id="alice")) == 1
    # joining again on a socket that is already in the room announces nothing either
    await join(alice_tab2, room)
    await barrier(bob, room, bob)
    assert len(of_room(bob.events["user_joined"], room, user_id="alice")) == 1

    # first tab leaves explicitly: alice is still there
    assert await alice_tab1.call("leave_room", {"room_id": room}) == {"ok": True}
    await barrier(bob, room, bob)
    assert of_room(bob.events.get("user_left", []), room) == []
    stats = await bob.wait_for("room_stats", lambda s: s["room_id"] == room and s["online_users"] == 2)
    assert stats["online_users"] == 2

    # the last socket goes away (a disconnect, not a leave): now alice left, once
    await alice_tab2.disconnect()
    left = await bob.wait_for("user_left", lambda e: e["room_id"] == room and e["user_id"] == "alice")
    assert left == {"room_id": room, "user_id": "alice", "username": "alice"}
    await barrier(bob, room, bob)
    assert len(of_room(bob.events["user_left"], room, user_id="alice")) == 1
    assert (await bob.wait_for("room_stats", lambda s: s["room_id"] == room and s["online_users"] == 1))["online_users"] == 1


async def test_disconnecting_one_of_two_tabs_does_not_announce_user_left(node, connect):
    room = unique()
    bob = await connect("bob")
    await join(bob, room)
    tab1 = await connect("alice")
    tab2 = await connect("alice")
    await join(tab1, room)
    await join(tab2, room)
    registry = node.components.sessions.registry
    before = len(registry)
    await tab1.disconnect()
    await wait_until(lambda: len(registry) == before - 1)  # the server has processed the disconnect
    await barrier(bob, room, bob, tab2)
    assert of_room(bob.events.get("user_left", []), room) == []
    ack = await join(bob, room)
    assert sorted(u["user_id"] for u in ack["online_users"]) == ["alice", "bob"]


async def test_user_typing_reaches_others_but_never_the_typist(connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    bob_other_tab = await connect("bob")
    for c in (alice, bob, bob_other_tab):
        await join(c, room)

    assert await bob.call("typing", {"room_id": room, "is_typing": True}) == {"ok": True}
    typing = await alice.wait_for("user_typing", lambda e: e["room_id"] == room)
    assert typing == {"room_id": room, "user_id": "bob", "username": "bob", "is_typing": True}
    assert await bob.call("typing", {"room_id": room, "is_typing": False}) == {"ok": True}
    await alice.wait_for("user_typing", lambda e: e["room_id"] == room and e["is_typing"] is False)

    # sending ends typing for the others
    assert await bob.call("typing", {"room_id": room, "is_typing": True}) == {"ok": True}
    await send(bob, room, "done typing")
    await barrier(alice, room, alice, bob, bob_other_tab)
    assert [e["is_typing"] for e in of_room(alice.events["user_typing"], room, user_id="bob")] == [True, False, True, False]
    assert bob.events.get("user_typing", []) == []
    assert bob_other_tab.events.get("user_typing", []) == [], "the typist's other tab was told the typist is typing"


async def test_room_stats_are_coalesced_and_correct(start_node, connect):
    interval = 0.5
    node = await start_node(room_stats_interval_s=interval)
    room = unique()
    alice = await connect("alice", url=node.url)
    bob = await connect("bob", url=node.url)
    await join(alice, room)
    await join(bob, room)
    first = await alice.wait_for("room_stats", lambda s: s["room_id"] == room and s["online_users"] == 2)
    assert first["message_count"] == 0

    count_before = len(of_room(alice.events["room_stats"], room))
    started = time.monotonic()
    n = 20
    acks = await asyncio.gather(*(alice.call("send_message", {"room_id": room, "content": f"m{i}"}) for i in range(n)))
    assert all(a["ok"] for a in acks)
    final = await alice.wait_for("room_stats", lambda s: s["room_id"] == room and s["message_count"] == n, timeout=5)
    elapsed = time.monotonic() - started
    assert final == {"room_id": room, "online_users": 2, "message_count": n}
    during = len(of_room(alice.events["room_stats"], room)) - count_before
    # at most about one per interval (plus the leading and trailing edges), far fewer than messages
    assert 1 <= during <= int(elapsed / interval) + 2, (during, elapsed)
    assert during < n
    await bob.wait_for("room_stats", lambda s: s["room_id"] == room and s["message_count"] == n)


# --- history ----------------------------------------------------------------------------

async def test_join_returns_last_n_messages_oldest_first(start_node, connect):
    node = await start_node(message_history_limit=5)
    room = unique()
    alice = await connect("alice", url=node.url)
    await join(alice, room)
    sent = [await send(alice, room, f"message {i}") for i in range(1, 9)]
    bob = await connect("bob", url=node.url)
    ack = await join(bob, room)
    assert [m["seq"] for m in ack["history"]] == [4, 5, 6, 7, 8]
    assert [m["content"] for m in ack["history"]] == [f"message {i}" for i in range(4, 9)]
    assert ack["history"] == sent[3:]
    assert ack["has_more"] is True

    other = unique()
    await join(alice, other)
    for i in range(3):
        await send(alice, other, f"x{i}")
    ack = await join(bob, other)
    assert [m["seq"] for m in ack["history"]] == [1, 2, 3] and ack["has_more"] is False


async def test_since_seq_returns_exactly_what_was_missed(connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    await join(alice, room)
    await join(bob, room)
    for i in range(3):
        await send(alice, room, f"before {i}")
    await bob.wait_for("new_message", lambda m: m["seq"] == 3)
    last_seen = max(m["seq"] for m in bob.events["new_message"])
    await bob.disconnect()

    missed = [await send(alice, room, f"missed {i}") for i in range(4)]

    bob_again = await connect("bob")
    ack = await join(bob_again, room, since_seq=last_seen)
    assert ack["history"] == missed
    assert [m["seq"] for m in ack["history"]] == [4, 5, 6, 7]
    assert ack["has_more"] is False
    # caught up: since_seq at the head returns nothing
    ack = await join(bob_again, room, since_seq=7)
    assert ack["history"] == [] and ack["has_more"] is False
    # since_seq=0 is "everything"
    ack = await join(bob_again, room, since_seq=0)
    assert [m["seq"] for m in ack["history"]] == list(range(1, 8))


# --- idempotency and ordering -------------------------------------------------------------

async def test_resend_with_same_client_msg_id_is_idempotent(node, connect):
    room = unique()
    alice = await connect("alice")
    alice_tab2 = await connect("alice")
    bob = await connect("bob")
    for c in (alice, alice_tab2, bob):
        await join(c, room)

    first = await send(alice, room, "only once", client_msg_id="retry-1")
    again = await send(alice, room, "only once", client_msg_id="retry-1")
    assert again["message_id"] == first["message_id"] and again["seq"] == first["seq"]
    # a retry racing from another tab of the same user
    racing = await asyncio.gather(*(c.call("send_message", {"room_id": room, "content": "race", "client_msg_id": "retry-2"}) for c in (alice, alice_tab2)))
    assert racing[0]["ok"] and racing[1]["ok"], racing
    assert racing[0]["message"]["message_id"] == racing[1]["message"]["message_id"]
    # the same client_msg_id from another user is another message
    bobs = await send(bob, room, "mine", client_msg_id="retry-1")
    assert bobs["message_id"] != first["message_id"]

    await barrier(bob, room, bob, alice)
    for client in (bob, alice):
        ids = [m["message_id"] for m in of_room(client.events["new_message"], room)]
        assert ids.count(first["message_id"]) == 1
        assert ids.count(racing[0]["message"]["message_id"]) == 1
    status, history = await rest(node, "GET", f"/api/rooms/{room}/messages", "bob")
    assert status == 200
    assert [m["seq"] for m in history["messages"]] == [1, 2, 3, 4]  # retry-1, retry-2, bob's, barrier
    status, info = await rest(node, "GET", f"/api/rooms/{room}", "bob")
    assert info["message_count"] == 4 and info["last_seq"] == 4


async def test_seq_is_gapless_with_50_concurrent_senders(node, connect):
    room = unique()
    senders = 50
    per_sender = 2
    watcher = await connect("watcher")
    await join(watcher, room)
    clients = await asyncio.gather(*(connect(f"sender{i}") for i in range(senders)))
    await asyncio.gather(*(join(c, room) for c in clients))

    async def burst(client: ChatClient, i: int) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(
            client.call("send_message", {"room_id": room, "content": f"{i}-{k}", "client_msg_id": f"{i}-{k}"}, timeout=20)
            for k in range(per_sender)
        )))

    results = await asyncio.gather(*(burst(c, i) for i, c in enumerate(clients)))
    acks = [a for batch in results for a in batch]
    assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]
    total = senders * per_sender
    seqs = sorted(a["message"]["seq"] for a in acks)
    assert seqs == list(range(1, total + 1))

    await watcher.wait_for("new_message", lambda m: len(of_room(watcher.events["new_message"], room)) >= total, timeout=10)
    seen = sorted(m["seq"] for m in of_room(watcher.events["new_message"], room))
    assert seen == list(range(1, total + 1))

    status, history = await rest(node, "GET", f"/api/rooms/{room}/messages?after_seq=0&limit={total}", "watcher")
    assert status == 200, history
    assert [m["seq"] for m in history["messages"]] == list(range(1, total + 1))
    by_seq = {a["message"]["seq"]: a["message"]["message_id"] for a in acks}
    assert {m["seq"]: m["message_id"] for m in history["messages"]} == by_seq
    assert history["has_more"] is False


# --- which rooms can be joined ------------------------------------------------------------

async def test_private_room_is_only_joinable_by_members(node, connect):
    room = unique("private")
    status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator",
                              json={"id": room, "name": "Secret", "type": "private", "members": ["bob"]})
    assert status == 201, body
    assert body["type"] == "private"

    carol = await connect("carol")
    ack = await carol.call("join_room", {"room_id": room})
    assert ack["ok"] is False
    # exactly what a missing room answers
    status, missing = await rest(node, "GET", f"/api/rooms/{unique('missing')}", "carol")
    assert status == 404
    assert ack["error"] == missing["error"]
    ack = await carol.call("send_message", {"room_id": room, "content": "let me in"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"

    bob = await connect("bob")
    ack = await join(bob, room)
    assert ack["room"]["type"] == "private"
    message = await send(bob, room, "members only")
    await bob.wait_for("new_message", lambda m: m["message_id"] == message["message_id"])
    lounge = unique()
    await join(carol, lounge)
    await barrier(carol, lounge, carol)  # anything sent to carol before this has arrived
    assert of_room(carol.events.get("new_message", []), room) == []
    # still not joinable after it has content
    ack = await carol.call("join_room", {"room_id": room})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"


async def test_joining_an_unknown_room_creates_it_by_default(node, connect):
    room = unique("fresh")
    alice = await connect("alice")
    ack = await join(alice, room)
    assert ack["room"]["type"] == "public" and ack["room"]["last_seq"] == 0
    status, body = await rest(node, "GET", f"/api/rooms/{room}", "bob")
    assert status == 200 and body["id"] == room and body["online_users"] == 1


async def test_without_auto_create_unknown_rooms_are_not_found_but_the_default_room_works(start_node, connect):
    node = await start_node(auto_create_rooms=False)
    alice = await connect("alice", url=node.url)
    unknown = unique("nope")
    ack = await alice.call("join_room", {"room_id": unknown})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    status, _ = await rest(node, "GET", f"/api/rooms/{unknown}", "alice")
    assert status == 404  # the failed join did not create it

    ack = await join(alice, "lobby")
    assert ack["room"]["id"] == "lobby"
    await send(alice, "lobby", "hello lobby")

    # a room created through REST is joinable; a private one answers like the unknown one
    public, private = unique("made"), unique("hidden")
    for rid, kind in ((public, "public"), (private, "private")):
        status, body = await rest(node, "POST", "/api/rooms", "mod", role="moderator", json={"id": rid, "name": rid, "type": kind})
        assert status == 201, body
    await join(alice, public)
    unknown_error = (await alice.call("join_room", {"room_id": unknown}))["error"]
    private_error = (await alice.call("join_room", {"room_id": private}))["error"]
    assert private_error == unknown_error


async def test_sending_without_joining_is_not_in_room(connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    await join(bob, room)
    ack = await alice.call("send_message", {"room_id": room, "content": "hi"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"
    ack = await alice.call("typing", {"room_id": room, "is_typing": True})
    assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"
    # after leaving, too
    await join(alice, room)
    assert await alice.call("leave_room", {"room_id": room}) == {"ok": True}
    ack = await alice.call("send_message", {"room_id": room, "content": "hi again"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"
    await barrier(bob, room, bob)
    assert [m["content"] for m in of_room(bob.events["new_message"], room)][:-1] == []


async def test_leaving_stops_delivery(connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    await join(alice, room)
    await join(bob, room)
    assert await bob.call("leave_room", {"room_id": room}) == {"ok": True}
    left = await alice.wait_for("user_left", lambda e: e["room_id"] == room)
    assert left["user_id"] == "bob"
    sent = await send(alice, room, "bob is gone")
    await alice.wait_for("new_message", lambda m: m["message_id"] == sent["message_id"])
    await join(bob, unique())  # a round trip on bob's connection
    assert of_room(bob.events.get("new_message", []), room) == []
