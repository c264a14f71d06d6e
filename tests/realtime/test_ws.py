"""PROTOCOL.md §3 and docs/protocol.md §6 "/ws": the plain WebSocket endpoint, with real
WebSocket clients (aiohttp) next to real Socket.IO clients, on one node and on two nodes
sharing Redis.  Every frame a /ws client receives is checked against its Out schema."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from chat_server.realtime import ws_frames
from chat_server.realtime.connections import ConnState
from chat_server.realtime.ws_handler import WS_KEY, WsConnection
from tests.conftest import JWT_SECRET, REDIS_URL, ChatClient, Node, make_token, unique

QUIET = 0.3  # how long "nothing arrives" is watched for


class WsClient:
    """A real WebSocket client that records every frame and validates it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frame = orjson.loads(msg.data)
                    schema = ws_frames.SERVER_FRAMES.get(frame.get("type"))
                    if schema is None:
                        self.violations.append(f"unexpected frame {frame!r}")
                    else:
                        errors = schema().validate(frame)
                        if errors:
                            self.violations.append(f"{frame.get('type')}: {errors} in {frame!r}")
                    self.frames.append(frame)
                    self._changed.set()
                elif msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                    continue
                else:
                    break
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._changed.set()

    def of(self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind and predicate(f)]

    async def wait_for(self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.of(kind, predicate)
            if found:
                return found[0]
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                raise AssertionError(f"no {kind!r} frame matching within {timeout}s (closed={self.closed.is_set()}, code={self.close_code}); saw {self.frames}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def send(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def wait_closed(self, timeout: float = 5) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        await asyncio.wait_for(self.closed.wait(), 5)

    def assert_valid(self) -> None:
        assert not self.violations, "; ".join(self.violations)


WsFactory = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def ws_open() -> AsyncIterator[WsFactory]:
    """``await ws_open(node, "alice", roomId=...)`` → a connected /ws client."""
    session = aiohttp.ClientSession()
    clients: list[WsClient] = []

    async def factory(node: Node, user: str | None = None, *, token: str | None = None, header: bool = False,
                      headers: dict[str, str] | None = None, **params: Any) -> WsClient:
        token = token if token is not None else (make_token(user) if user else None)
        autoping = params.pop("_autoping", True)
        headers = dict(headers or {})
        if token is not None:
            if header:
                headers["Authorization"] = f"Bearer {token}"
            else:
                params["token"] = token
        ws = await session.ws_connect(node.url + "/ws", params={k: str(v) for k, v in params.items()}, headers=headers, autoclose=True,
                                      autoping=autoping)
        client = WsClient(ws)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
    await session.close()
    for client in clients:
        client.assert_valid()


async def sio(url: str, user: str) -> ChatClient:
    return await ChatClient(url, make_token(user)).connect()


async def quiet(client: WsClient | ChatClient, kind: str, predicate: Callable[[Any], bool] = lambda _: True) -> None:
    """Assert that nothing of ``kind`` matching arrives for a moment."""
    await asyncio.sleep(QUIET)
    seen = client.of(kind, predicate) if isinstance(client, WsClient) else [e for e in client.events.get(kind, []) if predicate(e)]
    assert not seen, seen


async def eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def wait_subscribed(*nodes: Node) -> None:
    """Wait until each node's Socket.IO client manager listens on Redis."""
    for node in nodes:
        manager = node.components.sio.manager
        for _ in range(250):
            if getattr(manager, "subscribed", False):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the node never subscribed to Redis")
    await asyncio.sleep(0.1)  # the SUBSCRIBE command reaching Redis


# --- connecting ----------------------------------------------------------------------------


async def test_query_token_joins_lobby_by_default(node, ws_open):
    alice = await ws_open(node, "alice")
    joined = await alice.wait_for("room_joined")
    assert joined["roomId"] == "lobby"
    assert joined["memberCount"] >= 1
    assert "alice" in {u["userId"] for u in joined["onlineUsers"]}
    assert isinstance(joined["history"], list)


async def test_header_token_and_room_id(node, ws_open):
    room = unique()
    bob = await ws_open(node, "bob", header=True, roomId=room)
    joined = await bob.wait_for("room_joined")
    assert joined == {"type": "room_joined", "roomId": room, "memberCount": 1, "history": [], "hasMore": False,
                      "onlineUsers": [{"userId": "bob", "username": "bob", "avatar": None}]}


@pytest.mark.parametrize("how", ["missing", "garbage", "expired", "wrong_secret", "bad_header"])
async def test_bad_token_is_accepted_then_closed_4401(node, ws_open, how):
    kwargs: dict[str, Any] = {
        "missing": {},
        "garbage": {"token": "not-a-jwt"},
        "expired": {"token": make_token("alice", ttl=-10)},
        "wrong_secret": {"token": make_token("alice", secret=JWT_SECRET + "nope")},
        "bad_header": {"headers": {"Authorization": "Basic YWxpY2U6c2VjcmV0"}},
    }[how]
    client = await ws_open(node, **kwargs)  # the upgrade itself succeeds
    assert await client.wait_closed() == 4401
    assert client.frames == []
    await eventually(lambda: len(node.components.sessions.registry) == 0)


async def test_plain_http_get_and_foreign_origin_are_refused(start_node):
    node = await start_node(cors_allowed_origins=("http://good.example",))
    token = make_token("alice")
    async with aiohttp.ClientSession() as session:
        async with session.get(node.url + "/ws") as resp:
            assert resp.status == 426
            assert (await resp.json())["error"]["code"] == "validation_error"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(node.url + "/ws", params={"token": token}, headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403
        ws = await session.ws_connect(node.url + "/ws", params={"token": token}, headers={"Origin": "http://good.example"})
        kinds = [(await ws.receive_json(timeout=5))["type"] for _ in range(2)]
        assert "room_joined" in kinds  # the joiner's own presence frame may come first
        await ws.close()


async def test_openapi_documents_ws(node):
    async with aiohttp.ClientSession() as session:
        async with session.get(node.url + "/api/chats/openapi.json") as resp:
            spec = await resp.json()
    assert "get" in spec["paths"]["/ws"]
    assert spec["paths"]["/ws"]["get"]["summary"]


# --- the bridge, one node ------------------------------------------------------------------


async def test_messages_typing_presence_between_ws_and_socketio(node, ws_open):
    room = unique()
    alice = await sio(node.url, "alice")  # Socket.IO
    try:
        assert (await alice.call("join_room", {"room_id": room}))["ok"]
        bob = await ws_open(node, "bob", roomId=room)  # /ws
        joined = await bob.wait_for("room_joined")
        assert joined["memberCount"] == 2
        assert {u["userId"] for u in joined["onlineUsers"]} == {"alice", "bob"}
        # Presence: a /ws join is a Socket.IO user_joined, and the other way round.
        assert (await alice.wait_for("user_joined", lambda e: e["user_id"] == "bob"))["room_id"] == room
        await alice.wait_for("presence", lambda e: e["user_id"] == "bob" and e["status"] == "online")
        carol = await ws_open(node, "carol", roomId=room)
        await carol.wait_for("room_joined")
        online = await bob.wait_for("presence", lambda f: f["userId"] == "carol")
        assert online == {"type": "presence", "userId": "carol", "status": "online", "roomId": room, "username": "carol", "avatar": None}

        # /ws → Socket.IO (and /ws → /ws; the sender gets its own message back).
        await bob.send({"type": "message", "roomId": room, "content": "hi <b>alice</b>", "clientMsgId": "b-1",
                        "timestamp": "2020-01-01T00:00:00Z"})
        got = await alice.wait_for("new_message")
        assert got["content"] == "hi alice" and got["user"]["user_id"] == "bob" and got["client_msg_id"] == "b-1"
        echo = await bob.wait_for("message")
        assert echo["messageId"] == got["message_id"] and echo["clientMsgId"] == "b-1"
        assert {k: echo[k] for k in ("userId", "username", "roomId", "content", "seq")} == \
            {"userId": "bob", "username": "bob", "roomId": room, "content": "hi alice", "seq": 1}
        assert echo["timestamp"] == got["timestamp"] != "2020-01-01T00:00:00Z"  # the server's clock
        ack = await bob.wait_for("message_ack")
        assert ack == {"type": "message_ack", "clientMsgId": "b-1", "messageId": echo["messageId"], "roomId": room, "seq": 1,
                       "timestamp": echo["timestamp"]}
        assert bob.frames.index(echo) < bob.frames.index(ack)
        assert (await carol.wait_for("message"))["messageId"] == echo["messageId"]

        # Socket.IO → /ws.
        sent = await alice.call("send_message", {"room_id": room, "content": "hello bob"})
        assert sent["ok"]
        frame = await bob.wait_for("message", lambda f: f["userId"] == "alice")
        assert frame["messageId"] == sent["message"]["message_id"] and frame["seq"] == 2 and frame["content"] == "hello bob"
        assert frame["contentHtml"] == "hello bob" and frame["clientMsgId"] is None

        # Typing, both ways, never back to the typist.
        await bob.send({"type": "typing", "roomId": room, "isTyping": True})
        typing = await alice.wait_for("user_typing", lambda e: e["user_id"] == "bob")
        assert typing["is_typing"] is True and typing["room_id"] == room
        await carol.wait_for("typing_indicator", lambda f: f["userId"] == "bob" and f["isTyping"])
        assert (await alice.call("typing", {"room_id": room, "is_typing": True}))["ok"]
        indicator = await bob.wait_for("typing_indicator", lambda f: f["userId"] == "alice")
        assert indicator == {"type": "typing_indicator", "userId": "alice", "roomId": room, "isTyping": True, "username": "alice"}
        await quiet(bob, "typing_indicator", lambda f: f["userId"] == "bob")

        # Leaving: Socket.IO user_left → /ws presence offline; /ws leave → user_left.
        await alice.disconnect()
        offline = await bob.wait_for("presence", lambda f: f["userId"] == "alice" and f["status"] == "offline")
        assert offline["roomId"] == room
        await carol.close()
        await bob.wait_for("presence", lambda f: f["userId"] == "carol" and f["status"] == "offline")
        # One presence frame per change (Socket.IO's paired presence event is not doubled).
        assert len(bob.of("presence", lambda f: f["userId"] == "carol")) == 2
    finally:
        await alice.disconnect()
    alice.assert_valid()


async def test_ws_leave_and_rejoin_with_history(node, ws_open, connect):
    room = unique()
    alice = await connect("alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    bob = await ws_open(node, "bob", roomId=room)
    await bob.wait_for("room_joined")
    await bob.send({"type": "leave_room", "roomId": room})
    assert await bob.wait_for("room_left") == {"type": "room_left", "roomId": room}
    left = await alice.wait_for("user_left", lambda e: e["user_id"] == "bob")
    assert left["room_id"] == room
    for i in range(3):
        assert (await alice.call("send_message", {"room_id": room, "content": f"m{i}"}))["ok"]
    await quiet(bob, "message")  # not in the room any more
    await bob.send({"type": "join_room", "roomId": room, "sinceSeq": 1})
    joined = await bob.wait_for("room_joined", lambda f: f["history"])
    assert [m["content"] for m in joined["history"]] == ["m1", "m2"]
    assert all(m["type"] == "message" for m in joined["history"])
    # Connect-time catch-up: ?sinceSeq=
    carol = await ws_open(node, "carol", roomId=room, sinceSeq=2)
    assert [m["seq"] for m in (await carol.wait_for("room_joined"))["history"]] == [3]


async def test_resend_with_same_client_msg_id_is_acked_not_repeated(node, ws_open, connect):
    room = unique()
    alice = await connect("alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    bob = await ws_open(node, "bob", roomId=room)
    await bob.wait_for("room_joined")
    frame = {"type": "message", "roomId": room, "content": "once", "clientMsgId": "dup-1"}
    await bob.send(frame)
    first = await bob.wait_for("message_ack")
    await bob.send(frame)
    await bob.wait_for("message_ack", lambda f: len(bob.of("message_ack")) == 2)
    assert [a["messageId"] for a in bob.of("message_ack")] == [first["messageId"]] * 2
    await quiet(bob, "message", lambda f: f["messageId"] != first["messageId"])
    assert len(bob.of("message")) == 1 and len(alice.events["new_message"]) == 1
    # Without clientMsgId the echo is the only answer.
    await bob.send({"type": "message", "roomId": room, "content": "plain"})
    await bob.wait_for("message", lambda f: f["content"] == "plain")
    await quiet(bob, "message_ack", lambda f: f["clientMsgId"] is None)


async def test_reactions_reach_both_kinds_of_client(node, ws_open, connect):
    room = unique()
    alice = await connect("alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    bob = await ws_open(node, "bob", roomId=room)
    await bob.wait_for("room_joined")
    sent = await alice.call("send_message", {"room_id": room, "content": "react to me"})
    message_id = sent["message"]["message_id"]
    await bob.send({"type": "react", "messageId": message_id, "reaction": "👍"})
    change = await alice.wait_for("message_reaction")
    assert change["user_id"] == "bob" and change["reactions"] == {"👍": 1}
    frame = await bob.wait_for("message_reaction")
    assert frame == {"type": "message_reaction", "roomId": room, "messageId": message_id, "reactions": {"👍": 1},
                     "userId": "bob", "reaction": "👍", "action": "added"}
    await bob.send({"type": "react", "messageId": "nope", "reaction": "👍"})
    error = await bob.wait_for("error")
    assert error["code"] == "not_found" and error["requestType"] == "react"


# --- the bridge, two nodes sharing Redis -----------------------------------------------------


async def test_bridge_across_two_nodes(start_node, ws_open):
    a = await start_node(redis_url=REDIS_URL)
    b = await start_node(redis_url=REDIS_URL)
    room = unique()
    bob_a = await ws_open(a, "bob", roomId=room)  # node a has only /ws clients
    await bob_a.wait_for("room_joined")
    alice_b = await sio(b.url, "alice")
    try:
        await wait_subscribed(a, b)
        ack = await alice_b.call("join_room", {"room_id": room})
        assert ack["ok"] and {u["user_id"] for u in ack["online_users"]} == {"alice", "bob"}
        await bob_a.wait_for("presence", lambda f: f["userId"] == "alice" and f["status"] == "online")
        dave_b = await ws_open(b, "dave", roomId=room)
        assert (await dave_b.wait_for("room_joined"))["memberCount"] == 3
        await bob_a.wait_for("presence", lambda f: f["userId"] == "dave" and f["status"] == "online")
        await alice_b.wait_for("user_joined", lambda e: e["user_id"] == "dave")

        # /ws on a → Socket.IO and /ws on b.
        await bob_a.send({"type": "message", "roomId": room, "content": "from a", "clientMsgId": "x1"})
        got = await alice_b.wait_for("new_message", lambda m: m["content"] == "from a")
        assert (await dave_b.wait_for("message", lambda f: f["content"] == "from a"))["messageId"] == got["message_id"]
        assert (await bob_a.wait_for("message_ack"))["messageId"] == got["message_id"]

        # Socket.IO on b → /ws on a.
        sent = await alice_b.call("send_message", {"room_id": room, "content": "from b"})
        assert (await bob_a.wait_for("message", lambda f: f["content"] == "from b"))["messageId"] == sent["message"]["message_id"]

        # Typing across nodes, not back to the typist.
        await bob_a.send({"type": "typing", "roomId": room, "isTyping": True})
        assert (await alice_b.wait_for("user_typing", lambda e: e["user_id"] == "bob"))["is_typing"] is True
        await dave_b.wait_for("typing_indicator", lambda f: f["userId"] == "bob" and f["isTyping"])
        await dave_b.send({"type": "typing", "roomId": room, "isTyping": True})
        await bob_a.wait_for("typing_indicator", lambda f: f["userId"] == "dave")
        await quiet(bob_a, "typing_indicator", lambda f: f["userId"] == "bob")

        # Presence across nodes.
        await alice_b.disconnect()
        await bob_a.wait_for("presence", lambda f: f["userId"] == "alice" and f["status"] == "offline")
        await dave_b.close()
        await bob_a.wait_for("presence", lambda f: f["userId"] == "dave" and f["status"] == "offline")
    finally:
        await alice_b.disconnect()
    alice_b.assert_valid()


# --- bad input -------------------------------------------------------------------------------


BAD_FRAMES: list[tuple[str, Any, str]] = [
    ("not json", "{nope", "validation_error"),
    ("json array", "[1, 2]", "validation_error"),
    ("json string", '"message"', "validation_error"),
    ("json number", "42", "validation_error"),
    ("no type", {"roomId": "lobby", "content": "x"}, "validation_error"),
    ("type not a string", {"type": 7}, "validation_error"),
    ("unknown type", {"type": "send_message", "room_id": "lobby", "content": "x"}, "validation_error"),
    ("message without roomId", {"type": "message", "content": "x"}, "validation_error"),
    ("message without content", {"type": "message", "roomId": "lobby"}, "validation_error"),
    ("content not a string", {"type": "message", "roomId": "lobby", "content": 12}, "validation_error"),
    ("clientMsgId not a string", {"type": "message", "roomId": "lobby", "content": "x", "clientMsgId": 5}, "validation_error"),
    ("bad room id", {"type": "join_room", "roomId": "no spaces allowed"}, "validation_error"),
    ("roomId not a string", {"type": "join_room", "roomId": ["lobby"]}, "validation_error"),
    ("sinceSeq not an integer", {"type": "join_room", "roomId": "lobby", "sinceSeq": "3"}, "validation_error"),
    ("isTyping not a boolean", {"type": "typing", "roomId": "lobby", "isTyping": "yes"}, "validation_error"),
    ("isTyping missing", {"type": "typing", "roomId": "lobby"}, "validation_error"),
    ("leave without roomId", {"type": "leave_room"}, "validation_error"),
    ("message to a room not joined", {"type": "message", "roomId": "elsewhere", "content": "x", "clientMsgId": "c9"}, "not_in_room"),
    ("typing in a room not joined", {"type": "typing", "roomId": "elsewhere", "isTyping": True}, "not_in_room"),
    ("leaving a room not joined", {"type": "leave_room", "roomId": "elsewhere"}, "not_in_room"),
    ("empty message", {"type": "message", "roomId": "lobby", "content": "   "}, "message_rejected"),
]


async def test_bad_frames_answer_errors_and_keep_the_connection(node, ws_open):
    client = await ws_open(node, "mallory")
    await client.wait_for("room_joined")
    for n, (name, frame, code) in enumerate(BAD_FRAMES, start=1):
        await client.send(frame)
        await client.wait_for("error", lambda f, n=n: len(client.of("error")) >= n)
        error = client.of("error")[n - 1]
        assert error["code"] == code, (name, error)
        assert error["message"], name
    by_name = dict(zip([b[0] for b in BAD_FRAMES], client.of("error"), strict=True))
    assert by_name["unknown type"]["details"] == {"type": ["Must be one of: message, join_room, leave_room, typing, react."]}
    assert "content" in by_name["content not a string"]["details"]
    assert by_name["message to a room not joined"]["requestType"] == "message"
    assert by_name["message to a room not joined"]["roomId"] == "elsewhere"
    assert by_name["message to a room not joined"]["clientMsgId"] == "c9"
    assert by_name["empty message"]["details"]["reason"] == "empty"
    assert "requestType" not in by_name["not json"]

    # Binary frames and frames over 64 KiB are refused, the socket stays open.
    await client.ws.send_bytes(b'{"type":"message"}')
    await client.wait_for("error", lambda f: "Binary" in f["message"])
    await client.send({"type": "message", "roomId": "lobby", "content": "x" * (70 * 1024)})
    big = await client.wait_for("error", lambda f: (f.get("details") or {}).get("max_frame_bytes") == 64 * 1024)
    assert big["code"] == "validation_error"
    await client.send({"type": "message", "roomId": "lobby", "content": "é" * (40 * 1024)})  # 80 KiB in UTF-8
    await client.wait_for("error", lambda f: len(client.of("error", lambda e: "max_frame_bytes" in (e.get("details") or {}))) == 2)

    # Still connected, still working.
    await client.send({"type": "message", "roomId": "lobby", "content": "still here", "clientMsgId": "ok-1"})
    assert (await client.wait_for("message_ack"))["clientMsgId"] == "ok-1"
    assert not client.closed.is_set()


async def test_bad_room_at_connect_answers_error_and_stays_open(node, ws_open):
    client = await ws_open(node, "alice", roomId="bad room!")
    error = await client.wait_for("error")
    assert error["code"] == "validation_error" and error["requestType"] == "join_room"
    room = unique()
    await client.send({"type": "join_room", "roomId": room})
    assert (await client.wait_for("room_joined"))["roomId"] == room


async def test_frame_over_the_hard_limit_closes_1009(node, ws_open):
    client = await ws_open(node, "alice")
    await client.wait_for("room_joined")
    await client.send("x" * (300 * 1024))
    assert await client.wait_closed() == 1009


# --- keep-alive, idle, slow consumers, shutdown ----------------------------------------------


async def test_heartbeat_drops_a_peer_that_never_pongs(node, ws_open):
    node.server.app[WS_KEY].configure(heartbeat_s=0.2)
    client = await ws_open(node, "alice", _autoping=False)
    await client.wait_for("room_joined")
    await client.wait_closed(timeout=5)
    await eventually(lambda: len(node.components.sessions.registry) == 0)


async def test_heartbeat_keeps_a_live_but_silent_peer(node, ws_open):
    node.server.app[WS_KEY].configure(heartbeat_s=0.2, idle_timeout_s=0.5)
    client = await ws_open(node, "alice")  # answers pings automatically
    await client.wait_for("room_joined")
    await asyncio.sleep(1.2)
    assert not client.closed.is_set()


async def test_idle_timeout_closes_4408(node, ws_open):
    node.server.app[WS_KEY].configure(heartbeat_s=None, idle_timeout_s=0.3)
    client = await ws_open(node, "alice")
    await client.wait_for("room_joined")
    assert await client.wait_closed() == 4408
    await eventually(lambda: len(node.components.sessions.registry) == 0)


async def test_a_dropped_connection_still_leaves_its_rooms(node, ws_open, connect):
    """The server cancels the handler of a connection whose TCP is gone; the cleanup
    (stop typing, leave rooms, presence) must still run to the end."""
    room = unique()
    alice = await connect("alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    bob = await ws_open(node, "bob", roomId=room)
    await bob.wait_for("room_joined")
    await bob.send({"type": "typing", "roomId": room, "isTyping": True})
    await alice.wait_for("user_typing", lambda e: e["user_id"] == "bob" and e["is_typing"])
    bob.ws._response.connection.transport.abort()  # no close frame, just gone
    await alice.wait_for("user_typing", lambda e: e["user_id"] == "bob" and not e["is_typing"])
    assert (await alice.wait_for("user_left", lambda e: e["user_id"] == "bob"))["room_id"] == room
    assert len(node.components.sessions.registry) == 1  # alice only
    assert await node.components.presence.count(room) == 1


async def test_cleanup_survives_the_handler_being_cancelled(node, ws_open, connect, monkeypatch):
    """Deterministic version of the race above: the TCP connection goes away while the
    disconnect cleanup is still running, and the server cancels the handler."""
    room = unique()
    alice = await connect("alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    bob = await ws_open(node, "bob", roomId=room)
    await bob.wait_for("room_joined")
    sessions = node.components.sessions
    original = sessions.disconnected
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_disconnected(conn: ConnState) -> None:
        started.set()
        await release.wait()
        await original(conn)

    monkeypatch.setattr(sessions, "disconnected", slow_disconnected)
    await bob.close()  # close handshake, then the client drops the TCP connection
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.2)  # the server notices the lost connection and cancels the handler
    release.set()
    assert (await alice.wait_for("user_left", lambda e: e["user_id"] == "bob"))["room_id"] == room
    await eventually(lambda: len(sessions.registry) == 1)


async def test_shutdown_closes_ws_clients_with_1001(start_node, ws_open):
    node = await start_node()
    client = await ws_open(node, "alice")
    await client.wait_for("room_joined")
    await node.server.close()
    assert await client.wait_closed() == 1001


class _StuckSocket:
    """A WebSocketResponse whose peer never reads: every send blocks."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed_with: int | None = None

    async def send_frame(self, data: bytes, opcode: Any) -> None:
        self.sent += 1
        await asyncio.Event().wait()

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        self.closed_with = code
        await asyncio.Event().wait()  # the close frame cannot get through either
        return True


async def test_a_client_that_does_not_read_is_closed_1013_without_blocking_anyone():
    from chat_server.domain import Principal

    stuck = _StuckSocket()
    state = ConnState(conn_id="n:ws-1", sid="ws-1", user=Principal("slow", "slow"), transport=None)  # type: ignore[arg-type]
    conn = WsConnection(stuck, state, queue_limit=3, close_timeout_s=0.2)  # type: ignore[arg-type]
    conn.push(b"{}")
    await asyncio.sleep(0.05)  # the writer is now stuck sending it
    for _ in range(4):
        conn.push(b"{}")  # never blocks; the fourth overflows the queue
    await asyncio.sleep(0.4)
    assert stuck.closed_with == 1013 and stuck.sent == 1
    conn.push(b"{}")  # ignored once closing
    await conn.stop()


# --- translation -----------------------------------------------------------------------------


def test_translation_of_other_events_is_camel_case():
    assert ws_frames.translate("room_stats", {"room_id": "r", "online_users": 2, "message_count": 5}, "r") == \
        {"type": "room_stats", "roomId": "r", "onlineUsers": 2, "messageCount": 5}
    assert ws_frames.translate("banned", {"room_id": "r", "until": None, "reason": "spam"}, None) == \
        {"type": "banned", "roomId": "r", "until": None, "reason": "spam"}
    assert ws_frames.translate("presence", {"user_id": "u", "status": "offline"}, "r") is None  # twin of user_left
    assert ws_frames.translate("presence", {"user_id": "u", "status": "offline"}, None) == {"type": "presence", "userId": "u", "status": "offline"}
    assert ws_frames.translate("anything", ["not", "a", "dict"], "r") is None


# A message frame lets the next frame's handling start once it has its place (chat_server/pipelining.py).


async def test_a_ws_burst_is_announced_in_order_and_a_bad_frame_after_it_is_answered_after_it(node, ws_open: WsFactory):
    room = unique()
    alice = await ws_open(node, "alice", roomId=room)
    bob = await ws_open(node, "bob", roomId=room)
    for member in (alice, bob):
        await member.wait_for("room_joined")
    sent = [f"note {i}: {secrets.token_hex(8)}" for i in range(20)]  # far apart for the repeat rule
    for text in sent:
        await alice.send({"type": "message", "roomId": room, "content": text})
    await alice.send("not json")
    error = await alice.wait_for("error")
    echoes = alice.of("message")
    assert [m["content"] for m in echoes] == sent  # all before the error
    assert alice.frames.index(error) > alice.frames.index(echoes[-1])
    await bob.wait_for("message", lambda m: m["content"] == sent[-1])
    seen = bob.of("message")
    assert [m["content"] for m in seen] == sent
    assert [m["seq"] for m in seen] == sorted(m["seq"] for m in seen)
