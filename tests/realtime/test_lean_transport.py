"""Socket.IO WebSocket clients served on the raw connection (chat_server/realtime/lean_transport.py):
the same wire behaviour as the stock path, without what the stock path keeps per connection."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import struct
from typing import Any

import aiohttp
import pytest
from aiohttp import web_protocol

from chat_server.config import ConfigError, Settings
from chat_server.realtime import lean_transport
from chat_server.realtime.fanout import DirectSocket
from chat_server.realtime.lean_transport import LeanSocket, LeanWebSocket, check_internals
from tests.conftest import ChatClient, make_token, unique

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class RawWebSocket:
    """A WebSocket client on a plain stream (no client library, no task of its own): frames
    exactly as written here, and what the server sends, frame by frame."""

    async def open(self, url: str, *, path: str = "/socket.io/?EIO=4&transport=websocket", headers: dict[str, str] | None = None,
                   then: bytes = b"") -> str:
        """Send the opening handshake (and ``then`` in the same write); the status line and headers."""
        host, port = url.removeprefix("http://").split(":")
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Extensions: permessage-deflate",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + then)
        return (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)).decode()

    async def connect(self, url: str, user: str, **kwargs: Any) -> RawWebSocket:
        head = await self.open(url, **kwargs)
        assert head.startswith("HTTP/1.1 101"), head
        assert (await self.read_text()).startswith("0{")
        self.send_text("40" + json.dumps({"token": make_token(user)}))
        reply = await self.read_text()
        assert reply.startswith("40{"), reply
        self.sid = json.loads(reply[2:])["sid"]
        return self

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> None:
        self.writer.write(frame(opcode, payload, fin=fin, masked=masked))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    async def read_frame(self, timeout: float = 5) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            head = await self.reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return head[0] & 0x0F, await self.reader.readexactly(length)

    async def read_text(self, timeout: float = 5) -> str:
        """The next text message, answering Engine.IO pings on the way."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            assert opcode == OP_TEXT, (opcode, payload)
            if payload == b"2":
                self.send_text("3")
                continue
            return payload.decode()

    async def call(self, event: str, data: Any, ack_id: int) -> Any:
        self.send_text(f"42{ack_id}{json.dumps([event, data])}")
        while not (text := await self.read_text()).startswith(f"43{ack_id}["):
            pass
        return json.loads(text[len(f"43{ack_id}"):])[0]

    async def closed_with(self, timeout: float = 5) -> int | None:
        """Read until the server's CLOSE frame; its status code (then the connection ends)."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == OP_CLOSE:
                async with asyncio.timeout(timeout):
                    assert await self.reader.read() == b""  # and the server closes the connection
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def close(self) -> None:
        self.writer.close()


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    head = bytes((first, bit | n)) if n < 126 else struct.pack("!BBH", first, bit | 126, n) if n < 65536 \
        else struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def eventually(check: Any, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check()


# --- the pieces ---------------------------------------------------------------------------------


def test_library_internals_it_relies_on_are_there():
    # Fails when an upgrade of aiohttp/python-engineio changes what the lean transport relies
    # on (production would then log a warning and serve every client on the stock path).
    assert check_internals() == []


def test_settings(tmp_path):
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).lean_websockets is True
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "LEAN_WEBSOCKETS": "false"}).lean_websockets is False
    with pytest.raises(ConfigError, match="LEAN_WEBSOCKETS"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "LEAN_WEBSOCKETS": "maybe"})


# --- on a running node ----------------------------------------------------------------------------


async def test_websocket_clients_take_the_lean_path_and_upgrades_the_stock_one(node, connect):
    # (Long-polling clients: tests/realtime/test_fanout.py, test_polling_clients_...)
    room = unique()
    alice = await connect("alice")  # python-socketio's client, WebSocket only
    carol = await connect("carol", transports=["polling", "websocket"])  # upgraded from polling
    sockets = node.components.sio.eio.sockets
    assert isinstance(sockets[alice.sio.eio.sid], LeanSocket)
    assert not isinstance(sockets[carol.sio.eio.sid], LeanSocket)
    for client in (alice, carol):
        assert (await client.call("join_room", {"room_id": room}))["ok"]
    sent = await alice.call("send_message", {"room_id": room, "content": "hello"})
    for client in (alice, carol):
        assert (await client.wait_for("new_message"))["message_id"] == sent["message"]["message_id"]
    await eventually(lambda: sockets[carol.sio.eio.sid].upgraded)
    assert isinstance(sockets[carol.sio.eio.sid], DirectSocket)


async def test_lean_websockets_can_be_turned_off(start_node):
    node = await start_node(lean_websockets=False)
    client = await RawWebSocket().connect(node.url, "alice")
    socket = node.components.sio.eio.sockets[next(iter(node.components.sio.eio.sockets))]
    assert isinstance(socket, DirectSocket) and not isinstance(socket, LeanSocket)
    assert (await client.call("join_room", {"room_id": unique()}, 1))["ok"]
    client.close()


async def test_the_stock_path_serves_everyone_when_an_internal_is_missing(start_node, monkeypatch):
    monkeypatch.setattr(lean_transport, "check_internals", lambda: ["aiohttp RequestHandler._message_tail is gone"])
    node = await start_node()
    client = await RawWebSocket().connect(node.url, "alice")
    socket = next(iter(node.components.sio.eio.sockets.values()))
    assert isinstance(socket, DirectSocket) and not isinstance(socket, LeanSocket)
    assert (await client.call("join_room", {"room_id": unique()}, 1))["ok"]
    client.close()


async def test_an_idle_connection_keeps_no_task_and_no_request(node):
    # What the stock path keeps per connection for its lifetime (the aiohttp request handler
    # and its request, Engine.IO's writer and reader tasks, a task between pings) is gone.
    first = await RawWebSocket().connect(node.url, "warmup")  # the node's own background tasks start
    await asyncio.sleep(0.1)
    gc.collect()
    tasks = len(asyncio.all_tasks())
    handlers = sum(isinstance(o, web_protocol.RequestHandler) for o in gc.get_objects())
    clients = [await RawWebSocket().connect(node.url, f"idle{i}") for i in range(20)]
    await asyncio.sleep(0.1)
    gc.collect()
    assert len(asyncio.all_tasks()) == tasks
    assert sum(isinstance(o, web_protocol.RequestHandler) for o in gc.get_objects()) == handlers
    sio = node.components.sio
    for eio_sid in sio.eio.sockets:  # the environ keeps what the handlers read, not the request
        assert set(sio.environ[eio_sid]) == {"QUERY_STRING", "REMOTE_ADDR"}
        assert sio.environ[eio_sid]["REMOTE_ADDR"] == "127.0.0.1"
    # ... and they still work.
    room = unique()
    for i, client in enumerate(clients):
        assert (await client.call("join_room", {"room_id": room}, i + 1))["ok"]
    for client in [first, *clients]:
        client.close()
    await eventually(lambda: len(sio.eio.sockets) == 0)
    await eventually(lambda: len(node.components.sessions.registry) == 0)
    await asyncio.sleep(0.1)
    gc.collect()
    # Nothing left behind (Engine.IO's service task may still hold a closed socket in the copy
    # of the socket table it walks, as it does on the stock path).
    assert not [o for o in gc.get_objects() if isinstance(o, LeanWebSocket) and o.server is sio.eio]


async def test_pings_are_sent_on_a_timer_and_a_silent_client_is_closed(node):
    eio = node.components.sio.eio
    eio.ping_interval, eio.ping_timeout = 0.2, 0.3
    registry = node.components.sessions.registry
    answering = await RawWebSocket().connect(node.url, "answering")
    pings = 0

    async def answer() -> None:
        nonlocal pings
        while True:
            assert await answering.read_frame() == (OP_TEXT, b"2")
            pings += 1
            answering.send_text("3")

    answerer = asyncio.create_task(answer())
    try:
        silent = await RawWebSocket().connect(node.url, "silent")
        assert registry.get(silent.sid) is not None
        # the silent client gets a ping, does not answer, and is closed
        assert await silent.read_frame() == (OP_TEXT, b"2")
        assert await silent.closed_with() == 1000
        await eventually(lambda: registry.get(silent.sid) is None)
        # the answering one gets a ping every interval and stays
        await eventually(lambda: pings >= 4)
        assert registry.get(answering.sid) is not None and not answerer.done()
    finally:
        answerer.cancel()
    answering.close()


async def test_frames_as_rfc_6455_allows_them(node):
    client = await RawWebSocket().connect(node.url, "framer")
    # a ping is answered with its payload
    client.send_frame(OP_PING, b"are you there")
    assert await client.read_frame() == (OP_PONG, b"are you there")
    # a message in fragments, a ping between them
    text = "421" + json.dumps(["join_room", {"room_id": unique()}])
    encoded = text.encode()
    client.send_frame(OP_TEXT, encoded[:5], fin=False)
    client.send_frame(OP_PING, b"")
    client.send_frame(0x0, encoded[5:12], fin=False)
    client.send_frame(0x0, encoded[12:])
    assert await client.read_frame() == (OP_PONG, b"")
    while not (ack := await client.read_text()).startswith("431["):
        pass
    assert json.loads(ack[3:])[0]["ok"] is True
    # 16-bit and 64-bit lengths (refused by validation, but read and answered)
    for n, ack_id in ((1000, 2), (70_000, 3)):
        reply = await client.call("send_message", {"room_id": "x", "content": "y" * n}, ack_id)
        assert reply["ok"] is False
    client.close()


@pytest.mark.parametrize("bad,code", [
    (frame(OP_TEXT, b"42[]", masked=False), 1002),
    (frame(OP_TEXT, b"\xff\xfe"), 1007),
    (frame(OP_BINARY, b"x" * (256 * 1024 + 1)), 1009),
    (frame(0x3, b""), 1002),
], ids=["unmasked", "not-utf8", "too-big", "unknown-opcode"])
async def test_protocol_errors_close_with_their_code_and_clean_up(node, bad, code):
    client = await RawWebSocket().connect(node.url, "breaker")
    registry = node.components.sessions.registry
    assert registry.get(client.sid) is not None
    client.writer.write(bad)
    assert await client.closed_with() == code
    # The cleanup runs in a task of its own (a shutdown waits for it): the session leaves
    # the registry as it starts, the socket the server's table once it has finished.
    await eventually(lambda: registry.get(client.sid) is None and not node.components.sio.eio.sockets)


async def test_a_client_close_frame_is_answered_and_the_socket_cleaned_up(node):
    client = await RawWebSocket().connect(node.url, "leaver")
    registry = node.components.sessions.registry
    client.send_frame(OP_CLOSE, struct.pack("!H", 1001) + b"bye")
    assert await client.closed_with() == 1001
    await eventually(lambda: registry.get(client.sid) is None and not node.components.sio.eio.sockets)


async def test_a_server_side_disconnect_sends_close_then_closes(node):
    sio = node.components.sio
    client = await RawWebSocket().connect(node.url, "kicked")
    await sio.eio.disconnect(next(iter(sio.eio.sockets)))
    assert await client.read_text() == "1"  # Engine.IO CLOSE: the client does not reconnect
    assert await client.closed_with() == 1000
    await eventually(lambda: node.components.sessions.registry.get(client.sid) is None)


async def test_shutdown_closes_lean_connections_like_a_lost_network(start_node):
    node = await start_node()
    raw = await RawWebSocket().connect(node.url, "a")
    client = await ChatClient(node.url, make_token("b")).connect()
    registry = node.components.sessions.registry
    assert len(registry) == 2
    await node.server.close()  # app.on_shutdown: SocketIOHandlers.close_all
    assert await raw.closed_with() == 1000  # no Engine.IO CLOSE packet first: clients reconnect
    await eventually(lambda: not client.sio.connected)
    assert len(registry) == 0 and not node.components.sio.eio.sockets


async def test_bytes_right_after_the_handshake_are_read_in_order(node):
    # A client that does not wait for the 101 (allowed to be read once the upgrade is done).
    token = make_token("eager")
    room = unique()
    early = frame(OP_TEXT, ("40" + json.dumps({"token": token})).encode()) \
        + frame(OP_TEXT, ("421" + json.dumps(["join_room", {"room_id": room}])).encode())
    client = RawWebSocket()
    head = await client.open(node.url, then=early)
    assert head.startswith("HTTP/1.1 101")
    assert (await client.read_text()).startswith("0{")
    assert (await client.read_text()).startswith("40{")
    while not (ack := await client.read_text()).startswith("431["):
        pass
    assert json.loads(ack[3:])[0]["ok"] is True
    client.close()


async def test_what_the_stock_path_refuses_it_still_refuses(start_node):
    node = await start_node(cors_allowed_origins=("https://ok.example",))
    refused = RawWebSocket()
    head = await refused.open(node.url, headers={"Origin": "https://evil.example"})
    assert head.startswith("HTTP/1.1 400"), head
    refused.close()
    allowed = await RawWebSocket().connect(node.url, "ok", headers={"Origin": "https://ok.example"})
    allowed.close()
    bad_version = RawWebSocket()
    head = await bad_version.open(node.url, path="/socket.io/?EIO=3&transport=websocket")
    assert head.startswith("HTTP/1.1 400"), head
    bad_version.close()
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{node.url}/socket.io/?EIO=4&transport=websocket") as response:
            assert response.status == 405  # HEAD: "method not supported", as before


async def test_the_client_address_comes_from_a_trusted_proxy(start_node):
    node = await start_node(trusted_proxies=("127.0.0.0/8",))
    client = await RawWebSocket().connect(node.url, "proxied", headers={"X-Forwarded-For": "203.0.113.7"})
    assert node.components.sessions.registry.get(client.sid).address == "203.0.113.7"
    client.close()
