"""Rate limits, spam rules, room modes and the profanity filter over real sockets.

Every refusal is checked by its error code (and ``details.reason`` / ``details.rule``);
every event a client receives is validated against its Out schema by ``ChatClient``.
Nothing here sleeps: windows are long and the tests check ``retry_after_ms`` instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import REDIS_URL, ChatClient, Node, make_token, rest, unique

# Distinct, unrelated texts: the spam rules must not take them for repeats.
WORDS = ["apple pie", "blue whale", "cold brew", "dark matter", "early bird", "fresh start", "green light",
         "happy hour", "iron man", "jazz night", "key lime", "lucky shot", "moon walk", "night owl"]


async def make_room(node: Node, **settings: Any) -> str:
    """A public room with ``settings``, created by a (global) moderator."""
    room_id = unique()
    status, body = await rest(node, "POST", "/api/rooms", unique("owner"), role="moderator",
                              json={"id": room_id, "name": "Moderated", "settings": settings})
    assert status == 201, body
    return room_id


async def joined(client: ChatClient, room_id: str) -> ChatClient:
    ack = await client.call("join_room", {"room_id": room_id})
    assert ack["ok"], ack
    return client


async def send(client: ChatClient, room_id: str, content: str, **extra: Any) -> dict[str, Any]:
    return await client.call("send_message", {"room_id": room_id, "content": content, **extra})  # type: ignore[no-any-return]


def assert_refused(ack: dict[str, Any], code: str, reason: str | None = None, rule: str | None = None) -> dict[str, Any]:
    assert ack["ok"] is False, ack
    error = ack["error"]
    assert error["code"] == code, ack
    if reason is not None:
        assert error["details"]["reason"] == reason, ack
    if rule is not None:
        assert error["details"]["rule"] == rule, ack
    return error  # type: ignore[no-any-return]


# --- spam --------------------------------------------------------------------------------------


async def test_a_spammer_is_refused_with_the_right_codes(node: Node, connect: Any) -> None:
    room = unique()
    spammer = await joined(await connect(unique("spammer")), room)
    viewer = await joined(await connect(unique("viewer")), room)

    assert_refused(await send(spammer, room, "FREE" + "!" * 30), "message_rejected", "spam", "repeated_chars")
    assert_refused(await send(spammer, room, "a.com b.com c.com d.com"), "message_rejected", "spam", "links")
    assert_refused(await send(spammer, room, " ".join(f"@user{i}" for i in range(11))), "message_rejected", "spam", "mentions")
    for _ in range(2):
        assert (await send(spammer, room, "Follow my channel for free coins"))["ok"]
    assert_refused(await send(spammer, room, "follow my channel for FREE coins!!"), "message_rejected", "duplicate", "repeated_message")
    assert_refused(await send(spammer, room, "Follow my channel for free coin"), "message_rejected", "duplicate")

    # Refused messages never reach the room.
    assert (await send(spammer, room, "an ordinary message"))["ok"]
    await viewer.wait_for("new_message", lambda m: m["content"] == "an ordinary message")
    assert len(viewer.events["new_message"]) == 3


# --- rate limits ---------------------------------------------------------------------------------


async def test_rate_limit_is_exact_across_two_nodes_sharing_redis(start_node: Any, connect: Any) -> None:
    limits = {"redis_url": REDIS_URL, "rate_limit_max_messages": 5, "rate_limit_window_ms": 60_000}
    first, second = await start_node(**limits), await start_node(**limits)
    room, user = unique(), unique("chatty")
    on_first = await joined(await connect(user, url=first.url), room)
    on_second = await joined(await connect(user, url=second.url), room)

    acks = [await send((on_first, on_second)[i % 2], room, WORDS[i]) for i in range(5)]
    assert all(a["ok"] for a in acks), acks
    for client in (on_first, on_second, on_first):
        error = assert_refused(await send(client, room, "one more thing"), "rate_limited")
        assert 0 < error["retry_after_ms"] <= 60_000, error
        assert error["details"]["scope"] == "user"
    # Another user has a budget of their own.
    other = await joined(await connect(unique("calm"), url=second.url), room)
    assert (await send(other, room, "hello everyone"))["ok"]


async def test_reactions_are_rate_limited_like_messages(start_node: Any, connect: Any) -> None:
    node = await start_node(rate_limit_max_messages=3)
    room = unique()
    alice = await joined(await connect(unique("alice"), url=node.url), room)
    message = (await send(alice, room, "react to this"))["message"]
    for reaction in ("👍", "🎉", "❤️"):
        assert (await alice.call("react", {"message_id": message["message_id"], "reaction": reaction}))["ok"]
    error = assert_refused(await alice.call("react", {"message_id": message["message_id"], "reaction": "🔥"}), "rate_limited")
    assert error["retry_after_ms"] > 0
    assert (await send(alice, room, "messages have their own budget"))["ok"]


async def test_moderators_are_exempt_from_chat_limits(start_node: Any, connect: Any) -> None:
    node = await start_node(rate_limit_max_messages=2)
    room = unique()
    mod = await joined(await connect(unique("mod"), role="moderator", url=node.url), room)
    for word in WORDS[:5]:
        assert (await send(mod, room, word))["ok"]


async def test_rest_writes_answer_429_with_retry_after(start_node: Any) -> None:
    node = await start_node(rest_rate_limit_max_requests=3, rest_rate_limit_window_ms=60_000)
    mod = unique("mod")  # moderators are not exempt from the REST abuse limit
    for _ in range(3):
        status, body = await rest(node, "POST", "/api/rooms", mod, role="moderator", json={"name": "r"})
        assert status == 201, body
    async with aiohttp.ClientSession() as http:
        async with http.post(node.url + "/api/rooms", json={"name": "r"},
                             headers={"Authorization": f"Bearer {make_token(mod, role='moderator')}"}) as response:
            assert response.status == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            body = await response.json()
    assert body["error"]["code"] == "rate_limited" and body["error"]["retry_after_ms"] > 0
    # Reads are not limited; other users have their own budget.
    status, _ = await rest(node, "GET", "/api/rooms/lobby", mod)
    assert status in (200, 404)
    status, _ = await rest(node, "POST", "/api/rooms", unique("mod"), role="moderator", json={"name": "r"})
    assert status == 201


# --- room modes -------------------------------------------------------------------------------------


async def test_slow_mode_per_user_across_nodes(start_node: Any, connect: Any) -> None:
    first, second = await start_node(redis_url=REDIS_URL), await start_node(redis_url=REDIS_URL)
    room = await make_room(first, slow_mode_seconds=30)
    user = unique("alice")
    on_first = await joined(await connect(user, url=first.url), room)
    on_second = await joined(await connect(user, url=second.url), room)
    assert (await send(on_first, room, "first!"))["ok"]
    error = assert_refused(await send(on_second, room, "second"), "slow_mode")
    assert 25_000 < error["retry_after_ms"] <= 30_000, error
    bob = await joined(await connect(unique("bob"), url=second.url), room)
    assert (await send(bob, room, "bob has his own turn"))["ok"]
    mod = await joined(await connect(unique("mod"), role="moderator", url=first.url), room)
    assert (await send(mod, room, "moderators"))["ok"]
    assert (await send(mod, room, "are exempt"))["ok"]


async def test_emoji_only(node: Node, connect: Any) -> None:
    room = await make_room(node, emoji_only=True)
    alice = await joined(await connect(unique("alice")), room)
    assert (await send(alice, room, "👍 🎉"))["ok"]
    assert_refused(await send(alice, room, "nice 👍"), "message_rejected", "emoji_only")


async def test_links_not_allowed(node: Node, connect: Any) -> None:
    room = await make_room(node, links_allowed=False)
    alice = await joined(await connect(unique("alice")), room)
    assert_refused(await send(alice, room, "visit https://example.com now"), "message_rejected", "links_not_allowed")
    assert_refused(await send(alice, room, "or example.org"), "message_rejected", "links_not_allowed")
    assert (await send(alice, room, "no links here"))["ok"]


async def test_unique_chat(node: Node, connect: Any) -> None:
    room = await make_room(node, unique_chat=True)
    alice = await joined(await connect(unique("alice")), room)
    bob = await joined(await connect(unique("bob")), room)
    assert (await send(alice, room, "What a goal!"))["ok"]
    assert_refused(await send(bob, room, "what a GOAL"), "message_rejected", "duplicate", "unique_chat")
    assert (await send(bob, room, "what a save"))["ok"]


async def test_unique_chat_lets_one_of_simultaneous_equal_messages_through_across_nodes(start_node: Any, connect: Any) -> None:
    first, second = await start_node(redis_url=REDIS_URL), await start_node(redis_url=REDIS_URL)
    room = await make_room(first, unique_chat=True)
    clients = [await joined(await connect(unique(f"fan{i}"), url=(first, second)[i % 2].url), room) for i in range(6)]
    acks = await asyncio.gather(*(send(c, room, "GOOOAL!") for c in clients))
    assert sum(a["ok"] for a in acks) == 1, acks
    for ack in acks:
        if not ack["ok"]:
            assert_refused(ack, "message_rejected", "duplicate", "unique_chat")


async def test_unique_chat_forgets_a_text_whose_message_was_not_stored(node: Node, connect: Any) -> None:
    room = await make_room(node, unique_chat=True)
    alice = await joined(await connect(unique("alice")), room)
    bob = await joined(await connect(unique("bob")), room)
    refused = await alice.call("send_message", {"room_id": room, "content": "nice one", "reply_to": "no-such-message"})
    assert refused["ok"] is False and refused["error"]["code"] == "validation_error", refused
    assert (await send(bob, room, "Nice one!"))["ok"]  # Alice's text was never posted
    assert_refused(await send(alice, room, "nice one"), "message_rejected", "duplicate", "unique_chat")


async def test_gating_by_role_or_claim(node: Node, connect: Any) -> None:
    room = await make_room(node, required_claim="subscriber")
    outsider = await joined(await connect(unique("outsider")), room)
    assert_refused(await send(outsider, room, "can I talk?"), "forbidden")
    subscriber = await joined(await connect(token=make_token(unique("sub"), subscriber=True)), room)
    assert (await send(subscriber, room, "subscribers can"))["ok"]
    mods_only = await make_room(node, min_role="moderator")
    await joined(outsider, mods_only)
    assert_refused(await send(outsider, mods_only, "hello?"), "forbidden")
    mod = await joined(await connect(unique("mod"), role="moderator"), mods_only)
    assert (await send(mod, mods_only, "moderators only here"))["ok"]


# --- profanity ---------------------------------------------------------------------------------------


async def test_profanity_is_censored_with_room_terms(node: Node, connect: Any) -> None:
    room = await make_room(node, blocked_terms=["banana"], allowed_terms=["hell"])
    alice = await joined(await connect(unique("alice")), room)
    viewer = await joined(await connect(unique("viewer")), room)
    ack = await send(alice, room, "what the shit, a <b>banana</b>")
    assert ack["ok"], ack
    assert ack["message"]["content"] == "what the ****, a ****"
    assert "shit" not in ack["message"]["content_html"] and "banana" not in ack["message"]["content_html"]
    seen = await viewer.wait_for("new_message", lambda m: m["message_id"] == ack["message"]["message_id"])
    assert seen["content"] == "what the ****, a ****"
    # Lookalike letters do not smuggle words past the filter; allowed terms pass.
    ack = await send(alice, room, "ѕһit and fսck, what the hell")
    assert ack["message"]["content"] == "**** and ****, what the hell", ack


async def test_profanity_reject_mode(node: Node, connect: Any) -> None:
    room = await make_room(node, profanity_mode="reject", blocked_terms=["banana"])
    alice = await joined(await connect(unique("alice")), room)
    for text in ("what the shit", "BANANA!", "bаnаnа"):  # the last with Cyrillic а
        assert_refused(await send(alice, room, text), "message_rejected", "profanity")
    assert (await send(alice, room, "a clean message"))["ok"]


# --- PATCH and room_updated ----------------------------------------------------------------------------


async def test_patch_validates_settings_and_announces_room_updated(node: Node, connect: Any) -> None:
    owner = unique("owner")
    room = unique()
    status, body = await rest(node, "POST", "/api/rooms", owner, role="moderator", json={"id": room, "name": "Before"})
    assert status == 201, body
    viewer = await joined(await connect(unique("viewer")), room)

    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", unique("nobody"), json={"settings": {"emoji_only": True}})
    assert status == 403, body
    for bad in ({"slowmode": 5}, {"slow_mode_seconds": -1}, {"profanity_mode": "shout"}, {"min_role": "king"}, {"emoji_only": "maybe"}):
        status, body = await rest(node, "PATCH", f"/api/rooms/{room}", owner, role="moderator", json={"settings": bad})
        assert status == 422 and body["error"]["code"] == "validation_error", (bad, body)

    settings = {"slow_mode_seconds": 10, "emoji_only": True, "links_allowed": False, "unique_chat": True,
                "min_role": None, "required_claim": "vip", "profanity_mode": "reject", "blocked_terms": ["spoiler"]}
    status, body = await rest(node, "PATCH", f"/api/rooms/{room}", owner, role="moderator", json={"name": "After", "settings": settings})
    assert status == 200, body
    assert body["settings"]["slow_mode_seconds"] == 10 and body["settings"]["blocked_terms"] == ["spoiler"]
    event = await viewer.wait_for("room_updated", lambda e: e["room_id"] == room)
    assert event["name"] == "After"
    assert event["settings"]["slow_mode_seconds"] == 10 and event["settings"]["emoji_only"] is True
    assert "blocked_terms" not in event["settings"]  # moderation configuration stays out of the broadcast
    # The new settings apply at once.
    assert_refused(await send(viewer, room, "hello"), "forbidden")
