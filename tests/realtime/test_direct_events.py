"""Socket.IO events of WebSocket clients read and dispatched without the library's layers
(chat_server/realtime/direct_events.py): the same answers as the stock path, and everything
the direct path does not take still answered by the stock one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import socketio

from chat_server.realtime import lean_transport
from chat_server.realtime.direct_events import missing_internals
from tests.conftest import unique
from tests.realtime.test_lean_transport import OP_BINARY, RawWebSocket


def stats_of(node: Any) -> Any:
    return node.components.sio.manager.fanout.stats


async def no_ack_within(client: RawWebSocket, seconds: float = 0.3) -> bool:
    """No ack arrives (events such as room_stats may) and the connection stays open."""
    while True:
        try:
            text = await client.read_text(timeout=seconds)
        except TimeoutError:
            return True
        assert not text.startswith(("43", "46")), f"unexpected ack {text!r}"


def test_library_internals_it_relies_on_are_there():
    assert missing_internals(socketio.AsyncServer(async_mode="aiohttp", async_handlers=False)) == []
    # With a task per event the library would run a client's events concurrently: not served here.
    assert missing_internals(socketio.AsyncServer(async_mode="aiohttp", async_handlers=True)) != []


async def test_events_are_dispatched_directly_with_the_acks_and_broadcasts_of_the_stock_path(node, start_node):
    room = unique()
    stock = await start_node(lean_websockets=False)  # every event on the library's path
    answers = []
    for server in (node, stock):
        before = stats_of(server).direct_events
        alice = await RawWebSocket().connect(server.url, "alice")
        bob = await RawWebSocket().connect(server.url, "bob")
        assert (await alice.call("join_room", {"room_id": room}, 1))["ok"]
        assert (await bob.call("join_room", {"room_id": room}, 2))["ok"]
        alice.send_text("42" + json.dumps(["typing", {"room_id": room, "is_typing": True}]))  # no ack asked
        while not (text := await bob.read_text()).startswith('42["user_typing"'):
            pass
        assert json.loads(text[2:])[1]["user_id"] == "alice"
        sent = await alice.call("send_message", {"room_id": room, "content": "hi"}, 77)
        assert sent["ok"] and sent["message"]["content"] == "hi"
        refused = await alice.call("send_message", {"room_id": room, "content": ""}, 78)
        answers.append((sorted(sent), sorted(sent["message"]), refused["error"]["code"]))
        served_directly = stats_of(server).direct_events - before
        assert served_directly == (5 if server is node else 0)
        alice.close()
        bob.close()
    assert answers[0] == answers[1]


async def test_results_become_acks_as_python_socketio_makes_them(node):
    sio = node.components.sio
    results = {"pair": (1, "two"), "nothing": None, "raw": b"\x00\x01"}

    async def answer(sid: str, which: str) -> Any:
        return results[which]

    async def crash(sid: str, *args: Any) -> Any:
        raise RuntimeError("handler bug")

    sio.on("answer_test", answer)
    sio.on("crash_test", crash)
    client = await RawWebSocket().connect(node.url, "alice")
    before = stats_of(node).direct_events
    client.send_text('423["answer_test","pair"]')
    assert await client.read_text() == '433[1,"two"]'  # a tuple is spread
    client.send_text('424["answer_test","nothing"]')
    assert await client.read_text() == "434[]"
    client.send_text('425["crash_test"]')  # logged; python-socketio answers nothing either
    assert await no_ack_within(client)
    client.send_text('426["answer_test","raw"]')  # bytes: a binary ack, by the library
    assert await client.read_text() == '461-6[{"_placeholder":true,"num":0}]'
    opcode, payload = await client.read_frame()
    assert (opcode, payload) == (OP_BINARY, b"\x00\x01")
    assert stats_of(node).direct_events - before == 4
    assert (await client.call("join_room", {"room_id": unique()}, 7))["ok"]  # the connection goes on
    client.close()


async def test_what_the_direct_path_does_not_take_the_stock_path_answers(node):
    room = unique()
    client = await RawWebSocket().connect(node.url, "alice")
    assert (await client.call("join_room", {"room_id": room}, 1))["ok"]
    before = stats_of(node).direct_events
    # An unknown event goes to the catch-all handler: refused with an ack, as before.
    client.send_text('422["no_such_event",{}]')
    text = await client.read_text()
    assert text.startswith("432[") and json.loads(text[3:])[0]["error"]["code"] == "validation_error"
    # Broken packets are dropped (logged) and the connection goes on.
    # Nested too deep for the JSON reader: dropped, and the event right behind it (same read) still served.
    client.send_text("42" + "[" * 20_000 + "]" * 20_000)
    assert (await client.call("join_room", {"room_id": room}, 2))["ok"]
    before = stats_of(node).direct_events
    for broken in ("42[", '42{"a":1}', "42[1,2]", "42[]", '42/elsewhere,3["send_message",{}]', '42x["typing"]', '42\u00b2["typing",{}]'):
        client.send_text(broken)
    assert await no_ack_within(client)
    # An ack id longer than this path reads (the library reads up to 99 digits).
    client.send_text("42" + "9" * 20 + '["typing",{}]')
    text = await client.read_text()
    assert text.startswith("43" + "9" * 20 + "[") and json.loads(text[22:])[0]["error"]["code"] == "validation_error"
    # A binary event (attachments follow) is read by the library.
    client.send_text('451-9["send_message",{"_placeholder":true,"num":0}]')
    client.send_frame(OP_BINARY, b"\x01")
    text = await client.read_text()
    assert text.startswith("439[") and json.loads(text[3:])[0]["error"]["code"] == "validation_error"
    assert stats_of(node).direct_events == before  # none of these took the direct path
    sent = await client.call("send_message", {"room_id": room, "content": "still here"}, 10)
    assert sent["ok"]
    assert stats_of(node).direct_events == before + 1
    client.close()


async def test_events_keep_their_order_with_the_broadcasts_they_cause(node):
    # One client's events run one at a time, in order: each ack follows its own broadcast.
    room = unique()
    client = await RawWebSocket().connect(node.url, "alice")
    assert (await client.call("join_room", {"room_id": room}, 1))["ok"]
    for i in range(20):
        client.send_text("42" + str(100 + i) + json.dumps(["send_message", {"room_id": room, "content": f"m{i}"}]))
    seen: list[str] = []
    while len([s for s in seen if s.startswith("43")]) < 20:
        text = await client.read_text()
        if text.startswith('42["new_message"') or text.startswith("43"):
            seen.append(text)
    contents = [json.loads(s[2:])[1]["content"] for s in seen if s.startswith("42")]
    acks = [int(s[2:5]) for s in seen if s.startswith("43")]
    assert contents == [f"m{i}" for i in range(20)]
    assert acks == list(range(100, 120))
    for i in range(20):  # message i is broadcast before its ack is answered
        assert seen.index(next(s for s in seen if f'"content":"m{i}"' in s and s.startswith("42"))) < seen.index(
            next(s for s in seen if s.startswith(f"43{100 + i}")))
    client.close()


async def test_the_stock_path_serves_events_when_an_internal_is_missing(start_node, monkeypatch):
    monkeypatch.setattr(lean_transport, "missing_internals", lambda sio: ["socketio.AsyncServer._binary_packet"])
    node = await start_node()
    client = await RawWebSocket().connect(node.url, "alice")
    assert isinstance(next(iter(node.components.sio.eio.sockets.values())), lean_transport.LeanSocket)
    assert (await client.call("join_room", {"room_id": unique()}, 1))["ok"]
    assert stats_of(node).direct_events == 0
    client.close()
    await asyncio.sleep(0)
