"""Bad payloads get the right error code in the ack, never a silent hang, and the
connection keeps working afterwards (PROTOCOL.md §2: "always answers it")."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.conftest import ChatClient, unique

# Each call must be answered well inside this (a handler that raises leaves the client
# waiting forever; python-socketio would make it a timeout here).
ACK_TIMEOUT = 3


async def error_of(client: ChatClient, event: str, data: Any) -> dict[str, Any]:
    ack = await client.call(event, data, timeout=ACK_TIMEOUT)
    assert isinstance(ack, dict) and ack.get("ok") is False, ack
    assert set(ack) == {"ok", "error"}, ack
    assert isinstance(ack["error"].get("message"), str) and ack["error"]["message"], ack
    return ack["error"]


async def assert_still_works(client: ChatClient, room: str) -> None:
    ack = await client.call("join_room", {"room_id": room}, timeout=ACK_TIMEOUT)
    assert ack["ok"] is True, ack
    ack = await client.call("send_message", {"room_id": room, "content": "still here"}, timeout=ACK_TIMEOUT)
    assert ack["ok"] is True, ack
    message = await client.wait_for("new_message", lambda m: m["message_id"] == ack["message"]["message_id"])
    assert message["content"] == "still here"
    assert await client.call("typing", {"room_id": room, "is_typing": True}, timeout=ACK_TIMEOUT) == {"ok": True}
    assert await client.call("leave_room", {"room_id": room}, timeout=ACK_TIMEOUT) == {"ok": True}


def text_of(length: int) -> str:
    """Ordinary-looking text of exactly ``length`` characters (no spam-like runs)."""
    words = " ".join(hashlib.sha256(str(i).encode()).hexdigest()[:7] for i in range(length // 8 + 2))
    return words[:length - 1] + "."


@pytest.fixture
async def joined(connect) -> tuple[ChatClient, str]:
    client = await connect("alice")
    room = unique()
    ack = await client.call("join_room", {"room_id": room})
    assert ack["ok"] is True, ack
    return client, room


WRONG_TYPES = [
    ("join_room", {"room_id": 123}, "room_id"),
    ("join_room", {"room_id": ["lobby"]}, "room_id"),
    ("join_room", {"room_id": None}, "room_id"),
    ("join_room", {"room_id": "ok_room", "since_seq": "5"}, "since_seq"),
    ("join_room", {"room_id": "ok_room", "since_seq": -1}, "since_seq"),
    ("join_room", {"room_id": "ok_room", "since_seq": 1.5}, "since_seq"),
    ("join_room", {"room_id": "ok_room", "user_token": 42}, "user_token"),
    ("leave_room", {"room_id": 7}, "room_id"),
    ("send_message", {"room_id": 123, "content": "hi"}, "room_id"),
    ("send_message", {"room_id": "ROOM", "content": ["hi"]}, "content"),
    ("send_message", {"room_id": "ROOM", "content": {"text": "hi"}}, "content"),
    ("send_message", {"room_id": "ROOM", "content": 42}, "content"),
    ("send_message", {"room_id": "ROOM", "content": None}, "content"),
    ("send_message", {"room_id": "ROOM", "content": "hi", "type": "html"}, "type"),
    ("send_message", {"room_id": "ROOM", "content": "hi", "client_msg_id": 5}, "client_msg_id"),
    ("send_message", {"room_id": "ROOM", "content": "hi", "client_msg_id": ""}, "client_msg_id"),
    ("send_message", {"room_id": "ROOM", "content": "hi", "client_msg_id": "x" * 129}, "client_msg_id"),
    ("typing", {"room_id": "ROOM", "is_typing": "maybe"}, "is_typing"),
    ("typing", {"room_id": "ROOM", "is_typing": None}, "is_typing"),
    ("typing", {"room_id": "ROOM", "is_typing": [True]}, "is_typing"),
]


@pytest.mark.parametrize(("event", "payload", "field"), WRONG_TYPES, ids=[f"{e}-{f}-{i}" for i, (e, _, f) in enumerate(WRONG_TYPES)])
async def test_wrong_types_are_validation_errors_naming_the_field(joined, event, payload, field):
    client, room = joined
    payload = {k: (room if v == "ROOM" else v) for k, v in payload.items()}
    error = await error_of(client, event, payload)
    assert error["code"] == "validation_error", error
    assert field in error.get("details", {}), error
    await assert_still_works(client, room)


MISSING = [
    ("join_room", {}, "room_id"),
    ("join_room", {"since_seq": 1}, "room_id"),
    ("leave_room", {}, "room_id"),
    ("send_message", {"content": "hi"}, "room_id"),
    ("send_message", {"room_id": "ROOM"}, "content"),
    ("typing", {"room_id": "ROOM"}, "is_typing"),
    ("typing", {"is_typing": True}, "room_id"),
]


@pytest.mark.parametrize(("event", "payload", "field"), MISSING, ids=[f"{e}-{f}" for e, _, f in MISSING])
async def test_missing_fields_are_validation_errors(joined, event, payload, field):
    client, room = joined
    payload = {k: (room if v == "ROOM" else v) for k, v in payload.items()}
    error = await error_of(client, event, payload)
    assert error["code"] == "validation_error", error
    assert field in error.get("details", {}), error
    await assert_still_works(client, room)


NON_OBJECTS: list[Any] = ["lobby", ["lobby"], None, 42, True]


@pytest.mark.parametrize("event", ["join_room", "leave_room", "send_message", "typing", "react", "edit_message", "delete_message"])
@pytest.mark.parametrize("payload", NON_OBJECTS, ids=["string", "list", "none", "int", "bool"])
async def test_non_object_payloads_are_validation_errors(joined, event, payload):
    client, room = joined
    error = await error_of(client, event, payload)
    assert error["code"] == "validation_error", error


EXTRA_ARGS = {
    "join_room": lambda room: {"room_id": room},
    "send_message": lambda room: {"room_id": room, "content": "two args"},
    "typing": lambda room: {"room_id": room, "is_typing": True},
}


@pytest.mark.parametrize("event", sorted(EXTRA_ARGS))
async def test_extra_positional_arguments_are_answered(joined, event):
    """``socket.emit("join_room", a, b, ack)`` passes two arguments: the first is the
    payload, the rest is ignored, and the ack still comes."""
    client, room = joined
    ack = await client.sio.call(event, (EXTRA_ARGS[event](room), "extra"), timeout=ACK_TIMEOUT)
    assert isinstance(ack, dict) and ack["ok"] is True, ack
    await assert_still_works(client, room)


async def test_react_with_extra_arguments_is_answered(joined):
    client, room = joined
    ack = await client.sio.call("react", ({"message_id": "nope", "reaction": "like"}, "extra"), timeout=ACK_TIMEOUT)
    assert isinstance(ack, dict) and ack["ok"] is False and ack["error"]["code"] == "not_found", ack


async def test_payload_without_an_ack_callback_still_has_side_effects_and_errors_do_not_break(connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    for c in (alice, bob):
        assert (await c.call("join_room", {"room_id": room}))["ok"]
    await alice.sio.emit("send_message", {"room_id": room, "content": "no callback"})
    await alice.sio.emit("send_message", "garbage without a callback")
    await alice.sio.emit("no_such_event", {"x": 1})
    got = await bob.wait_for("new_message", lambda m: m["content"] == "no callback")
    assert got["user"]["user_id"] == "alice"
    await assert_still_works(alice, room)


async def test_oversize_content_is_rejected_as_too_long(start_node, connect):
    node = await start_node(max_message_length=50)
    client = await connect("alice", url=node.url)
    room = unique()
    assert (await client.call("join_room", {"room_id": room}))["ok"]
    ok = await client.call("send_message", {"room_id": room, "content": text_of(50)})
    assert ok["ok"] is True and ok["message"]["content"] == text_of(50), ok
    for content in (text_of(51), text_of(1000), "b" * 5000, text_of(150_000)):
        error = await error_of(client, "send_message", {"room_id": room, "content": content})
        assert error["code"] == "message_rejected", error
        assert error["details"]["reason"] == "too_long", error
    await assert_still_works(client, room)


async def test_default_max_message_length_is_1000(joined):
    client, room = joined
    ok = await client.call("send_message", {"room_id": room, "content": text_of(1000)})
    assert ok["ok"] is True, ok
    error = await error_of(client, "send_message", {"room_id": room, "content": text_of(1001)})
    assert error["code"] == "message_rejected" and error["details"]["reason"] == "too_long", error


@pytest.mark.parametrize("content", [
    "", " ", "   \n\t  ", "<b></b>", "<p> </p><br/>", "<!-- only a comment -->", "\u200b\u200b\u200b", "&nbsp;",
])
async def test_empty_content_is_rejected_as_empty(joined, content):
    client, room = joined
    error = await error_of(client, "send_message", {"room_id": room, "content": content})
    assert error["code"] == "message_rejected", error
    assert error["details"]["reason"] == "empty", error
    await assert_still_works(client, room)
    # nothing was stored: the only message is the one assert_still_works sent
    ack = await client.call("join_room", {"room_id": room})
    assert [m["content"] for m in ack["history"]] == ["still here"]


BAD_ROOM_IDS = ["has space", "x" * 129, "", "slash/room", "émoji😀", "tab\there", "new\nline"]


@pytest.mark.parametrize("room_id", BAD_ROOM_IDS, ids=["space", "too-long", "empty", "slash", "non-ascii", "tab", "newline"])
async def test_malformed_room_ids_are_validation_errors(joined, room_id):
    client, room = joined
    for event, payload in (
        ("join_room", {"room_id": room_id}),
        ("leave_room", {"room_id": room_id}),
        ("send_message", {"room_id": room_id, "content": "hi"}),
        ("typing", {"room_id": room_id, "is_typing": True}),
    ):
        error = await error_of(client, event, payload)
        assert error["code"] == "validation_error", (event, error)
        assert "room_id" in error.get("details", {}), (event, error)
    await assert_still_works(client, room)


async def test_longest_valid_room_id_is_accepted(joined):
    client, _ = joined
    room = "r" * 128
    ack = await client.call("join_room", {"room_id": room})
    assert ack["ok"] is True and ack["room"]["id"] == room


@pytest.mark.parametrize("event", ["no_such_event", "joinRoom", "message", "send_message ", "admin"])
async def test_unknown_events_are_answered_with_validation_error(joined, event):
    client, room = joined
    error = await error_of(client, event, {"room_id": room})
    assert error["code"] == "validation_error", error
    await assert_still_works(client, room)


async def test_a_barrage_of_bad_payloads_leaves_the_connection_usable(joined, connect):
    client, room = joined
    bob = await connect("bob")
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    bad: list[tuple[str, Any]] = [
        ("join_room", None), ("join_room", "x"), ("join_room", {"room_id": 1}), ("send_message", []),
        ("send_message", {"room_id": room, "content": ["a"]}), ("send_message", {"room_id": room, "content": " "}),
        ("send_message", {"room_id": room, "content": "y" * 2000}), ("typing", {"room_id": room, "is_typing": "maybe"}),
        ("leave_room", {"room_id": "bad id"}), ("unknown", {}), ("send_message", {"room_id": unique(), "content": "hi"}),
    ]
    for event, payload in bad:
        ack = await client.call(event, payload, timeout=ACK_TIMEOUT)
        assert ack["ok"] is False, (event, payload, ack)
        assert ack["error"]["code"] in {"validation_error", "message_rejected", "not_in_room"}, (event, ack)
    assert client.sio.connected
    await assert_still_works(client, room)
    # bob saw exactly the one good message, nothing from the bad ones
    await bob.wait_for("new_message", lambda m: m["content"] == "still here")
    assert [m["content"] for m in bob.events["new_message"]] == ["still here"]
