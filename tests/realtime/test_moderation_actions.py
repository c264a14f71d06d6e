"""Moderation over real sockets, PostgreSQL and Redis: bans and timeouts (also across
nodes), purge, global and shadow bans, message deletes and edits, personal blocks."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from chat_server.schemas import EditMessageAckOut
from tests.conftest import REDIS_URL, ChatClient, make_token, rest, unique

MOD = {"role": "moderator"}
# Cross-node tests share Redis (and so the REST write limit) with the whole run.
NO_LIMITS = {"rest_rate_limit_max_requests": 100_000, "rate_limit_max_messages": 100_000}


def uid(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:6]}"


async def joined(connect: Any, user: str, room: str, **kwargs: Any) -> ChatClient:
    client = await connect(user, **kwargs)
    ack = await client.call("join_room", {"room_id": room})
    assert ack["ok"], ack
    return client


async def say(client: ChatClient, room: str, content: str) -> dict[str, Any]:
    ack = await client.call("send_message", {"room_id": room, "content": content})
    assert ack["ok"], ack
    return ack["message"]


async def barrier(sender: ChatClient, room: str, *receivers: ChatClient) -> None:
    """Everything emitted to ``receivers`` before a marker message has arrived once they
    have the marker (one node: one ordered stream per socket)."""
    marker = f"barrier {uuid.uuid4().hex}"
    await say(sender, room, marker)
    for receiver in receivers:
        await receiver.wait_for("new_message", lambda m: m["content"] == marker)


def contents(events: list[dict[str, Any]], room: str) -> list[str]:
    return [m["content"] for m in events if m["room_id"] == room]


async def assert_banned(client: ChatClient, room: str, *, until: bool = False) -> dict[str, Any]:
    sent = await client.call("send_message", {"room_id": room, "content": "still here?"})
    assert sent["ok"] is False and sent["error"]["code"] == "banned", sent
    again = await client.call("join_room", {"room_id": room})
    assert again["ok"] is False and again["error"]["code"] == "banned", again
    details = again["error"]["details"]
    assert (details["until"] is not None) is until
    if until:
        assert again["error"]["retry_after_ms"] > 0
    return again["error"]


# --- bans ---------------------------------------------------------------------------------

async def test_ban_tells_the_victim_and_removes_it_from_the_room(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    carol = await joined(connect, "carol", room)
    await say(bob, room, "before the ban")

    status, ban = await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "bob", "reason": "rude"})
    assert status == 201, ban
    assert ban["user_id"] == "bob" and ban["room_id"] == room and ban["until"] is None and ban["kind"] == "ban"

    told = await bob.wait_for("banned")
    assert told == {"room_id": room, "until": None, "reason": "rude"}
    left = await carol.wait_for("user_left", lambda e: e["user_id"] == "bob")
    assert left["room_id"] == room

    await barrier(carol, room, carol)
    await asyncio.sleep(0.2)
    assert "barrier" not in " ".join(contents(bob.events["new_message"], room))
    error = await assert_banned(bob, room)
    assert error["details"]["reason"] == "rude" and error["details"]["room_id"] == room
    # Other rooms are not affected.
    assert (await bob.call("join_room", {"room_id": unique()}))["ok"]
    # Leaving a room one was removed from answers not_in_room.
    assert (await bob.call("leave_room", {"room_id": room}))["error"]["code"] == "not_in_room"


async def test_ban_reaches_a_victim_connected_to_another_node(start_node):
    a = await start_node(redis_url=REDIS_URL, **NO_LIMITS)
    b = await start_node(redis_url=REDIS_URL, **NO_LIMITS)
    room = unique()
    victim, witness = uid("victim"), uid("witness")
    on_b = await ChatClient(b.url, make_token(victim)).connect()
    other_tab_on_a = await ChatClient(a.url, make_token(victim)).connect()
    on_a = await ChatClient(a.url, make_token(witness)).connect()
    try:
        for client in (on_b, other_tab_on_a, on_a):
            assert (await client.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)  # node b's Redis subscription
        # Node b now holds a cached "not banned" for the victim: the ban must still apply at once.
        await say(on_b, room, "warm the cache")
        await on_a.wait_for("new_message", lambda m: m["content"] == "warm the cache")

        status, _ = await rest(a, "POST", f"/api/rooms/{room}/ban", uid("mod"), **MOD, json={"user_id": victim})
        assert status == 201
        for tab in (on_b, other_tab_on_a):
            assert (await tab.wait_for("banned"))["room_id"] == room
        await on_a.wait_for("user_left", lambda e: e["user_id"] == victim)

        # Removed on node b: nothing more of the room reaches the socket there.
        await say(on_a, room, "after the ban")
        await asyncio.sleep(0.3)
        assert "after the ban" not in contents(on_b.events["new_message"], room)
        assert "after the ban" not in contents(other_tab_on_a.events["new_message"], room)
        await assert_banned(on_b, room)
        await assert_banned(other_tab_on_a, room)

        # Node b now caches the ban: lifting it on node a must apply there at once too.
        assert (await rest(a, "DELETE", f"/api/rooms/{room}/ban/{victim}", uid("mod"), **MOD))[0] == 204
        await on_b.wait_for("unbanned")
        assert (await on_b.call("join_room", {"room_id": room}))["ok"]
        await say(on_b, room, "back from node b")
        await on_a.wait_for("new_message", lambda m: m["content"] == "back from node b")
    finally:
        for client in (on_b, other_tab_on_a, on_a):
            await client.disconnect()
    for client in (on_b, other_tab_on_a, on_a):
        client.assert_valid()


async def test_timeout_expires(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    status, ban = await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "bob", "duration_seconds": 1})
    assert status == 201 and ban["kind"] == "timeout" and ban["until"] is not None
    told = await bob.wait_for("banned")
    assert told["until"] == ban["until"]
    error = await assert_banned(bob, room, until=True)
    assert error["retry_after_ms"] <= 1000
    await asyncio.sleep(error["retry_after_ms"] / 1000 + 0.05)
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    await say(bob, room, "back again")


async def test_unban_lets_the_user_back_at_once(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    assert (await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "bob"}))[0] == 201
    await bob.wait_for("banned")
    await assert_banned(bob, room)  # the node now caches the ban
    status, _ = await rest(node, "DELETE", f"/api/rooms/{room}/ban/bob", "mod", **MOD)
    assert status == 204
    assert (await bob.wait_for("unbanned")) == {"room_id": room}
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    await say(bob, room, "thanks")
    # Idempotent: nothing left to lift is still 204.
    assert (await rest(node, "DELETE", f"/api/rooms/{room}/ban/bob", "mod", **MOD))[0] == 204
    status, body = await rest(node, "GET", f"/api/rooms/{room}/bans", "mod", **MOD)
    assert status == 200 and body == {"bans": []}


async def test_ban_with_purge_deletes_recent_messages_for_everyone(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    carol = await joined(connect, "carol", room)
    sent = [await say(bob, room, f"spam {i}") for i in range(3)]
    kept = await say(carol, room, "carol stays")

    status, _ = await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "bob", "purge": True})
    assert status == 201
    for message in sent:
        deleted = await carol.wait_for("message_deleted", lambda e, m=message: e["message_id"] == m["message_id"])
        assert deleted == {"room_id": room, "message_id": message["message_id"], "seq": message["seq"]}
    history = (await carol.call("join_room", {"room_id": room}))["history"]
    assert [m["message_id"] for m in history] == [kept["message_id"]]
    _, audit = await rest(node, "GET", f"/api/audit?room_id={room}", "mod", **MOD)
    assert audit["entries"][0]["action"] == "ban" and audit["entries"][0]["details"]["purged"] == 3


async def test_global_ban_by_an_admin(node, connect):
    # Global bans and blocks outlive the test in the run's database: unique user ids.
    rooms = [unique(), unique()]
    victim = uid("bob")
    bob = await connect(victim)
    for room in rooms:
        assert (await bob.call("join_room", {"room_id": room}))["ok"]
    carol = await joined(connect, "carol", rooms[1])

    status, body = await rest(node, "POST", "/api/bans", "mod", **MOD, json={"user_id": victim})
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, ban = await rest(node, "POST", "/api/bans", "root", role="admin", json={"user_id": victim, "reason": "raid"})
    assert status == 201 and ban["room_id"] is None
    assert (await bob.wait_for("banned")) == {"room_id": None, "until": None, "reason": "raid"}
    await carol.wait_for("user_left", lambda e: e["user_id"] == victim)
    for room in rooms + [unique()]:
        ack = await bob.call("join_room", {"room_id": room})
        assert ack["ok"] is False and ack["error"]["code"] == "banned" and ack["error"]["details"]["global"] is True
    status, listed = await rest(node, "GET", "/api/bans", "mod", **MOD)
    assert status == 200 and [b["user_id"] for b in listed["bans"]] == [victim]

    assert (await rest(node, "DELETE", f"/api/bans/{victim}", "mod", **MOD))[0] == 403
    assert (await rest(node, "DELETE", f"/api/bans/{victim}", "root", role="admin"))[0] == 204
    assert (await bob.wait_for("unbanned")) == {"room_id": None}
    assert (await bob.call("join_room", {"room_id": rooms[0]}))["ok"]


async def test_shadow_ban_is_invisible_to_the_user(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    carol = await joined(connect, "carol", room)
    status, _ = await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "bob", "shadow": True})
    assert status == 201

    ack = await bob.call("send_message", {"room_id": room, "content": "can anyone hear me"})
    assert ack["ok"] is True, ack  # looks normal to bob
    mine = ack["message"]
    own = await bob.wait_for("new_message", lambda m: m["message_id"] == mine["message_id"])
    assert own["content"] == "can anyone hear me"
    await barrier(carol, room, carol, bob)
    assert "can anyone hear me" not in contents(carol.events["new_message"], room)
    assert "banned" not in bob.events

    # History: bob sees his message, carol does not (live join and REST alike).
    assert mine["message_id"] in [m["message_id"] for m in (await bob.call("join_room", {"room_id": room}))["history"]]
    assert mine["message_id"] not in [m["message_id"] for m in (await carol.call("join_room", {"room_id": room}))["history"]]
    _, bobs = await rest(node, "GET", f"/api/rooms/{room}/messages", "bob")
    _, carols = await rest(node, "GET", f"/api/rooms/{room}/messages", "carol")
    assert mine["message_id"] in [m["message_id"] for m in bobs["messages"]]
    assert mine["message_id"] not in [m["message_id"] for m in carols["messages"]]
    # Others cannot react to or report what they cannot see.
    assert (await carol.call("react", {"message_id": mine["message_id"], "reaction": "👍"}))["error"]["code"] == "not_found"
    # Bob can still rejoin; his edits also stay his own.
    edited = await bob.call("edit_message", {"message_id": mine["message_id"], "content": "hello?"})
    assert edited["ok"], edited
    await bob.wait_for("message_updated", lambda m: m["message_id"] == mine["message_id"])
    await barrier(carol, room, carol)
    assert "message_updated" not in carol.events


async def test_banned_users_cannot_react_and_shadow_banned_reactions_count_for_nobody(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    carol = await joined(connect, "carol", room)
    dave = await joined(connect, "dave", room)
    liked = await say(carol, room, "react to this")

    # A visible ban (a timeout here) refuses reactions like messages.
    status, _ = await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "bob", "duration_seconds": 600})
    assert status == 201
    await bob.wait_for("banned")
    refused = await bob.call("react", {"message_id": liked["message_id"], "reaction": "👍"})
    assert refused["ok"] is False and refused["error"]["code"] == "banned", refused

    # A shadow ban: dave's reaction looks counted to dave, reaches nobody, is not stored.
    status, _ = await rest(node, "POST", f"/api/rooms/{room}/ban", "mod", **MOD, json={"user_id": "dave", "shadow": True})
    assert status == 201
    shown = await dave.call("react", {"message_id": liked["message_id"], "reaction": "👍"})
    assert shown["ok"] is True and shown["reactions"] == {"👍": 1} and shown["action"] == "added", shown
    await barrier(carol, room, carol)
    assert "message_reaction" not in carol.events and "banned" not in dave.events
    _, history = await rest(node, "GET", f"/api/rooms/{room}/messages", "carol")
    assert [m["reactions"] for m in history["messages"] if m["message_id"] == liked["message_id"]] == [{}]

    # Carol's own reaction still counts once, without dave's.
    counted = await carol.call("react", {"message_id": liked["message_id"], "reaction": "👍"})
    assert counted["ok"] and counted["reactions"] == {"👍": 1}, counted


async def test_shadow_ban_applies_on_another_node_within_bus_latency(start_node):
    """Nothing tells a shadow-banned user's node to remove anything: only the ban-cache
    invalidation on the bus makes node b notice the ban (within the pub/sub latency,
    not the cache's 10 s lifetime)."""
    a = await start_node(redis_url=REDIS_URL, **NO_LIMITS)
    b = await start_node(redis_url=REDIS_URL, **NO_LIMITS)
    room = unique()
    victim, witness = uid("victim"), uid("witness")
    on_b = await ChatClient(b.url, make_token(victim)).connect()
    on_a = await ChatClient(a.url, make_token(witness)).connect()
    try:
        for client in (on_b, on_a):
            assert (await client.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)
        await say(on_b, room, "heard by all")  # node b caches "not banned"
        await on_a.wait_for("new_message", lambda m: m["content"] == "heard by all")
        assert (await rest(a, "POST", f"/api/rooms/{room}/ban", uid("mod"), **MOD, json={"user_id": victim, "shadow": True}))[0] == 201
        # The invalidation is published before the REST answer leaves node a; node b
        # applies it when the pub/sub message arrives (milliseconds, far below the cache TTL).
        await asyncio.sleep(0.3)
        mine = await say(on_b, room, "heard by me only")
        await on_b.wait_for("new_message", lambda m: m["message_id"] == mine["message_id"])
        await say(on_a, room, "marker")
        await on_a.wait_for("new_message", lambda m: m["content"] == "marker")
        assert "heard by me only" not in contents(on_a.events["new_message"], room)

        assert (await rest(a, "DELETE", f"/api/rooms/{room}/ban/{victim}", uid("mod"), **MOD))[0] == 204
        await say(on_b, room, "heard again")
        await on_a.wait_for("new_message", lambda m: m["content"] == "heard again")
        assert "unbanned" not in on_b.events and "banned" not in on_b.events  # shadow: never told
    finally:
        for client in (on_b, on_a):
            await client.disconnect()
    for client in (on_b, on_a):
        client.assert_valid()


# --- deletes and edits ------------------------------------------------------------------------

async def test_author_and_moderator_delete_others_may_not(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    carol = await joined(connect, "carol", room)
    mod = await joined(connect, "mod", room, **MOD)
    first = await say(bob, room, "oops")
    second = await say(bob, room, "rude words")

    refused = await carol.call("delete_message", {"message_id": first["message_id"]})
    assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
    assert (await bob.call("delete_message", {"message_id": first["message_id"]})) == {"ok": True}
    event = await carol.wait_for("message_deleted", lambda e: e["message_id"] == first["message_id"])
    assert event == {"room_id": room, "message_id": first["message_id"], "seq": first["seq"]}
    assert (await mod.call("delete_message", {"message_id": second["message_id"]})) == {"ok": True}
    await bob.wait_for("message_deleted", lambda e: e["message_id"] == second["message_id"])
    again = await bob.call("delete_message", {"message_id": first["message_id"]})
    assert again["error"]["code"] == "not_found"
    assert (await carol.call("delete_message", {}))["error"]["code"] == "validation_error"

    history = (await carol.call("join_room", {"room_id": room}))["history"]
    assert not {first["message_id"], second["message_id"]} & {m["message_id"] for m in history}
    _, audit = await rest(node, "GET", f"/api/audit?room_id={room}", "mod", **MOD)
    deletes = [e for e in audit["entries"] if e["action"] == "delete"]
    # Only the moderator's delete is a moderation action; the author's own is not audited.
    assert [(e["actor_id"], e["target_message_id"], e["target_user_id"]) for e in deletes] == [("mod", second["message_id"], "bob")]


async def test_edit_by_author_goes_through_the_content_pipeline(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    carol = await joined(connect, "carol", room)
    mod = await joined(connect, "mod", room, **MOD)
    original = await say(bob, room, "helo wrld")

    ack = await bob.call("edit_message", {"message_id": original["message_id"], "content": "<b>hello</b> https://example.com"})
    assert ack["ok"] is True and EditMessageAckOut().validate(ack) == {}, ack
    edited = ack["message"]
    assert edited["content"] == "hello https://example.com"
    assert 'rel="nofollow noopener"' in edited["content_html"]
    assert edited["edited_at"] is not None and edited["seq"] == original["seq"]
    update = await carol.wait_for("message_updated", lambda m: m["message_id"] == original["message_id"])
    assert update == edited

    for other in (carol, mod):
        refused = await other.call("edit_message", {"message_id": original["message_id"], "content": "mine now"})
        assert refused["ok"] is False and refused["error"]["code"] == "forbidden"
    empty = await bob.call("edit_message", {"message_id": original["message_id"], "content": "<p> </p>"})
    assert empty["error"]["code"] == "message_rejected" and empty["error"]["details"]["reason"] == "empty"
    assert (await bob.call("edit_message", {"message_id": "nope", "content": "x"}))["error"]["code"] == "not_found"

    history = (await carol.call("join_room", {"room_id": room}))["history"]
    assert [m["content"] for m in history if m["message_id"] == original["message_id"]] == ["hello https://example.com"]
    assert (await bob.call("delete_message", {"message_id": original["message_id"]}))["ok"]
    gone = await bob.call("edit_message", {"message_id": original["message_id"], "content": "back"})
    assert gone["error"]["code"] == "not_found"


# --- personal blocks ----------------------------------------------------------------------------

async def test_blocked_users_messages_typing_and_reactions_do_not_reach_the_blocker(node, connect):
    room = unique()
    blocker, blocked, bystander = uid("carol"), uid("bob"), uid("dave")
    carol = await joined(connect, blocker, room)
    bob = await joined(connect, blocked, room)
    dave = await joined(connect, bystander, room)
    before = await say(bob, room, "before the block")

    status, block = await rest(node, "POST", "/api/users/me/blocks", blocker, json={"user_id": blocked})
    assert status == 201 and block["user_id"] == blocked
    # The filter applies from the next event on; the block also covers carol's later tabs.
    carol2 = await joined(connect, blocker, room)

    hidden = await say(bob, room, "carol cannot see this")
    await bob.call("typing", {"room_id": room, "is_typing": True})
    mid = (await say(dave, room, "dave's message"))["message_id"]
    await bob.call("react", {"message_id": mid, "reaction": "👍"})
    await dave.wait_for("new_message", lambda m: m["content"] == "carol cannot see this")
    await dave.wait_for("user_typing", lambda e: e["user_id"] == blocked)
    await dave.wait_for("message_reaction", lambda e: e["user_id"] == blocked)
    await barrier(dave, room, carol, carol2)
    for tab in (carol, carol2):
        assert "carol cannot see this" not in contents(tab.events["new_message"], room)
        assert not [e for e in tab.events["user_typing"] if e["user_id"] == blocked]
        assert not [e for e in tab.events["message_reaction"] if e["user_id"] == blocked]

    ids = [m["message_id"] for m in (await carol.call("join_room", {"room_id": room}))["history"]]
    assert before["message_id"] not in ids and hidden["message_id"] not in ids and mid in ids
    _, page = await rest(node, "GET", f"/api/rooms/{room}/messages", blocker)
    assert not {before["message_id"], hidden["message_id"]} & {m["message_id"] for m in page["messages"]}
    _, page = await rest(node, "GET", f"/api/rooms/{room}/messages?after_seq=0", bystander)
    assert hidden["message_id"] in {m["message_id"] for m in page["messages"]}

    assert (await rest(node, "DELETE", f"/api/users/me/blocks/{blocked}", blocker))[0] == 204
    await say(bob, room, "visible again")
    await carol.wait_for("new_message", lambda m: m["content"] == "visible again")


async def test_blocks_stored_before_connecting_apply_from_the_first_event(node, connect):
    """The block list is loaded when the blocker's first connection arrives (several arrive
    at once here, sharing the read)."""
    room = unique()
    blockers, blocked, bystander = [uid(f"erin{i}") for i in range(4)], uid("frank"), uid("gina")
    for blocker in blockers[:3]:
        assert (await rest(node, "POST", "/api/users/me/blocks", blocker, json={"user_id": blocked}))[0] == 201
    tabs = await asyncio.gather(*(joined(connect, blocker, room) for blocker in blockers))
    frank = await joined(connect, blocked, room)
    gina = await joined(connect, bystander, room)
    await say(frank, room, "blocked before they came")
    await barrier(gina, room, *tabs)
    for tab in tabs[:3]:
        assert "blocked before they came" not in contents(tab.events["new_message"], room)
    assert "blocked before they came" in contents(tabs[3].events["new_message"], room)  # erin3 blocks nobody


async def test_blocks_apply_on_every_node(start_node):
    a = await start_node(redis_url=REDIS_URL, **NO_LIMITS)
    b = await start_node(redis_url=REDIS_URL, **NO_LIMITS)
    room = unique()
    blocker, blocked, other = uid("blocker"), uid("blocked"), uid("other")
    on_b = await ChatClient(b.url, make_token(blocker)).connect()
    sender = await ChatClient(a.url, make_token(blocked)).connect()
    witness = await ChatClient(a.url, make_token(other)).connect()
    clients = (on_b, sender, witness)
    try:
        for client in clients:
            assert (await client.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)
        assert (await rest(a, "POST", "/api/users/me/blocks", blocker, json={"user_id": blocked}))[0] == 201
        await say(sender, room, "blocked on b")
        await say(witness, room, "marker")
        await on_b.wait_for("new_message", lambda m: m["content"] == "marker")
        assert "blocked on b" not in contents(on_b.events["new_message"], room)
        assert (await rest(b, "DELETE", f"/api/users/me/blocks/{blocked}", blocker))[0] == 204
        await say(sender, room, "unblocked")
        await on_b.wait_for("new_message", lambda m: m["content"] == "unblocked")
    finally:
        for client in clients:
            await client.disconnect()
    for client in clients:
        client.assert_valid()


async def test_ban_checks_do_not_query_the_database_per_message(node, connect):
    room = unique()
    bob = await joined(connect, "bob", room)
    bans = node.components.moderation.bans
    store = bans._store
    calls = 0
    original = store.active_bans_for

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    store.active_bans_for = counting
    started = time.monotonic()
    for i in range(5):
        await say(bob, room, f"message {i}")
    assert calls <= 1, calls  # one read fills the cache, later messages use it
    assert time.monotonic() - started < 5
