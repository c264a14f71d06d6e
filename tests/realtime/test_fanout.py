"""The fast fan-out path (chat_server/realtime/fanout.py): used, in order, with the stock
path as fallback for long-polling and upgrading sockets, and bounded for slow consumers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import aiohttp
import pytest
import socketio

from chat_server.config import ConfigError, Settings
from chat_server.realtime.broadcaster import room_channel, user_channel
from chat_server.realtime.fanout import DirectSocket, OrjsonModule, check_internals, ws_frame
from tests.conftest import REDIS_URL, make_token, rest, unique


class RawClient:
    """Engine.IO v4 / Socket.IO v5 over one WebSocket, packet by packet (no client library):
    what arrives, in the order it arrives on the wire."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.packets: list[str] = []

    async def connect(self, user: str) -> RawClient:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"{self.url}/socket.io/?EIO=4&transport=websocket")
        opened = await self.ws.receive_str(timeout=5)
        assert opened.startswith("0{"), opened
        await self.ws.send_str("40" + json.dumps({"token": make_token(user)}))
        reply = await self.next()
        assert reply.startswith("40{"), reply
        self.sid = json.loads(reply[2:])["sid"]
        return self

    async def next(self, timeout: float = 5) -> str:
        while True:
            data = await self.ws.receive_str(timeout=timeout)
            if data == "2":  # Engine.IO ping
                await self.ws.send_str("3")
                continue
            self.packets.append(data)
            return data

    async def emit(self, event: str, data: Any, ack_id: int | None = None) -> None:
        await self.ws.send_str(f"42{'' if ack_id is None else ack_id}{json.dumps([event, data])}")

    async def call(self, event: str, data: Any, ack_id: int) -> Any:
        await self.emit(event, data, ack_id)
        prefix = f"43{ack_id}["
        while True:
            packet = await self.next()
            if packet.startswith(prefix):
                return json.loads(packet[len(prefix) - 1:])[0]

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def parse(packet: str) -> tuple[str, Any, Any]:
    """``("event", name, data)`` or ``("ack", id, data)`` (an event's own ack id is dropped)."""
    if packet[:2] not in ("42", "43"):
        return "other", packet, None
    body = packet[2:]
    digits = len(body) - len(body.lstrip("0123456789"))
    decoded = json.loads(body[digits:])
    if packet.startswith("42"):
        return "event", decoded[0], decoded[1] if len(decoded) > 1 else None
    return "ack", int(body[:digits]), decoded


def fanout_of(node: Any) -> Any:
    fanout = node.components.sio.manager.fanout
    assert fanout is not None and fanout.active, "the fast fan-out path is not installed"
    return fanout


async def arrival(client: RawClient, name: str, *numbers: int) -> float:
    """The event-loop time once ``client`` has received the ``name`` events whose data has
    each of these ``n`` (other packets are read past)."""
    missing = set(numbers)
    while missing:
        kind, event, data = parse(await client.next(timeout=5))
        if kind == "event" and event == name and isinstance(data, dict):
            missing.discard(data.get("n"))
    return asyncio.get_running_loop().time()


# --- the pieces ---------------------------------------------------------------------------------


def test_library_internals_it_relies_on_are_there():
    # Fails when an upgrade of python-engineio/python-socketio/aiohttp changes what the fast
    # path relies on (production would then log a warning and use the stock path).
    assert check_internals() == []


def test_frames_are_unmasked_server_frames():
    assert ws_frame(b"42[]") == b"\x81\x0442[]"
    assert ws_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_frame(b"x" * 70000)[:10] == b"\x81\x7f" + struct.pack("!Q", 70000)
    assert ws_frame(b"\x00", 0x2) == b"\x82\x01\x00"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1.5, None, True, "é ✓ 😀"], "c": {"d": ""}},
    ["new_message", {"content": "<b>x</b> \\ \" \n", "n": -12, "f": 1e16}],
    {1: "non-string key"},
    {"big": 2**70},
    {"nan": float("nan")},
    "lone \ud800 surrogate",
])
def test_json_module_gives_the_same_values_as_the_standard_library(value):
    encoded = OrjsonModule.dumps(value, separators=(",", ":"))
    assert isinstance(encoded, str)
    if value == {"nan": value["nan"]} if isinstance(value, dict) and "nan" in value else False:
        # The one deliberate difference: NaN/Infinity (not JSON; JSON.parse fails on them)
        # become null, as JavaScript's JSON.stringify does.
        assert encoded == '{"nan":null}'
    else:
        assert canonical(json.loads(encoded)) == canonical(json.loads(json.dumps(value)))
    text = json.dumps(value)
    assert canonical(OrjsonModule.loads(text)) == canonical(json.loads(text))
    assert OrjsonModule.dumps(value, indent=2) == json.dumps(value, indent=2)  # other options: the standard library


def test_json_module_errors_are_the_standard_ones():
    with pytest.raises(ValueError):
        OrjsonModule.loads("{not json")
    with pytest.raises(ValueError):
        OrjsonModule.loads("1" * 5000)  # engine.io's guard against huge integers still applies
    assert OrjsonModule.loads("[-99999999999999999999]") == [-99999999999999999999]  # an int, as with json
    assert OrjsonModule.loads(b'{"a":"\\u00e9"}') == {"a": "é"}  # bytes, as the Redis bus gives them


def test_settings(tmp_path):
    default = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert default.fast_fanout is True and default.slow_client_buffer_bytes == 1024 * 1024
    assert default.fanout_write_delay_s == 0.05 and default.fanout_write_batch == 3
    custom = Settings.from_env({"DATA_DIR": str(tmp_path), "FAST_FANOUT": "false", "SLOW_CLIENT_BUFFER_BYTES": "65536",
                                "FANOUT_WRITE_DELAY_MS": "0", "FANOUT_WRITE_BATCH": "1"})
    assert custom.fast_fanout is False and custom.slow_client_buffer_bytes == 65536
    assert custom.fanout_write_delay_s == 0 and custom.fanout_write_batch == 1
    with pytest.raises(ConfigError, match="FANOUT_WRITE_BATCH"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "FANOUT_WRITE_BATCH": "0"})
    with pytest.raises(ConfigError, match="SLOW_CLIENT_BUFFER_BYTES"):
        Settings.from_env({"DATA_DIR": str(tmp_path), "SLOW_CLIENT_BUFFER_BYTES": "0"})


# --- on a running node ----------------------------------------------------------------------------


async def test_fast_path_is_used_and_counted(node, connect):
    room = unique()
    alice = await connect("alice")
    bob = await connect("bob")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    stats = fanout_of(node).stats
    before = stats.direct_deliveries
    sent = await alice.call("send_message", {"room_id": room, "content": "hello"})
    assert (await bob.wait_for("new_message"))["message_id"] == sent["message"]["message_id"]
    assert stats.direct_deliveries >= before + 2  # bob and alice's echo
    assert stats.direct_packets > 0  # the acks took the same direct path
    sockets = list(node.components.sio.eio.sockets.values())
    assert sockets and all(isinstance(s, DirectSocket) and s._direct is not None for s in sockets)
    status, text = await rest(node, "GET", "/metrics")
    assert status == 200
    direct = [line for line in text.splitlines() if line.startswith('chat_fanout_deliveries_total{path="direct"}')]
    assert direct and float(direct[0].split()[-1]) >= 2


async def test_metrics_time_the_insert_batches_the_acks_waited_for(node, connect):
    # docs/protocol.md §6: chat_message_batch_seconds is the commit round trip of each insert
    # batch, one observation per batch (chat_message_batches_total counts the same batches).
    def batch_figures(text: str) -> tuple[float, float, float]:
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
        return (values["chat_message_batches_total"], values["chat_message_batch_seconds_count"],
                values["chat_message_batch_seconds_sum"])

    room = unique()
    alice = await connect("alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    status, text = await rest(node, "GET", "/metrics")
    assert status == 200
    batches_before, count_before, sum_before = batch_figures(text)
    acks = await asyncio.gather(*(alice.call("send_message", {"room_id": room, "content": f"hello {i}"}) for i in range(5)))
    assert all(ack["ok"] for ack in acks)
    _, text = await rest(node, "GET", "/metrics")
    batches, count, total = batch_figures(text)
    assert 1 <= count - count_before <= 5
    assert count - count_before == batches - batches_before
    assert total > sum_before
    assert 'chat_message_batch_seconds_bucket{le="0.02"}' in text


async def test_permessage_deflate_is_not_negotiated(node):
    # docs/protocol.md §6 "Performance": a client offering deflate (as browsers do) gets
    # plain frames, which the fast path writes.
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{node.url}/socket.io/?EIO=4&transport=websocket", compress=15) as ws:
            assert ws.compress == 0
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str("40" + json.dumps({"token": make_token("dora")}))
            assert (await ws.receive_str(timeout=5)).startswith("40{")
            assert fanout_of(node).stats.direct_packets >= 1  # the CONNECT answer


@pytest.mark.parametrize("fast,delay", [(True, 0.05), (True, 0.0), (False, 0.0)], ids=["fast", "fast-no-delay", "stock"])
async def test_acks_direct_emits_and_broadcasts_keep_their_order(start_node, fast, delay):
    # The stock path sets the expectations; "fast" batches broadcasts (the default write
    # delay), "fast-no-delay" writes at the end of every event-loop iteration.
    node = await start_node(fast_fanout=fast, fanout_write_delay_s=delay, fanout_write_batch=3)
    assert (node.components.sio.manager.fanout is not None) is fast
    sio = node.components.sio
    room = unique()
    pending: set[asyncio.Task[Any]] = set()

    async def probe(sid: str, data: Any) -> dict[str, Any]:
        i = data["i"]
        # An ack id makes the manager take the stock path (one packet per recipient, through
        # DirectSocket.send); the others take the fast path; the ack is DirectSocket.send.
        await sio.emit("order", {"i": i, "kind": "call"}, to=sid, callback=lambda *a: None)
        await sio.emit("order", {"i": i, "kind": "room"}, to=room_channel(room))  # broadcast
        await sio.emit("order", {"i": i, "kind": "user"}, to=user_channel("alice"))  # user channel
        await sio.emit("order", {"i": i, "kind": "call2"}, to=sid, callback=lambda *a: None)
        await sio.emit("order", {"i": i, "kind": "sid"}, to=sid)  # one sid
        # Runs right after the ack below is sent (same step as this return): must follow it.
        after = asyncio.create_task(sio.emit("order", {"i": i, "kind": "after"}, to=room_channel(room)))
        pending.add(after)
        after.add_done_callback(pending.discard)
        return {"i": i}

    sio.on("probe", probe)
    alice = await RawClient(node.url).connect("alice")
    bob = await RawClient(node.url).connect("bob")
    stop = asyncio.Event()

    async def background() -> None:  # broadcasts from another task, interleaved with the probes
        j = 0
        while not stop.is_set():
            await sio.emit("order", {"i": j, "kind": "bg"}, to=room_channel(room))
            j += 1
            await asyncio.sleep(0)

    try:
        assert (await alice.call("join_room", {"room_id": room}, 1))["ok"]
        assert (await bob.call("join_room", {"room_id": room}, 1))["ok"]
        bg = asyncio.create_task(background())
        n = 150
        for i in range(n):  # pipelined: the server handles them one after another
            await alice.emit("probe", {"i": i}, ack_id=100 + i)
        while True:
            packet = await alice.next()
            kind, ident, data = parse(packet)
            if kind == "event" and ident == "order" and data == {"i": n - 1, "kind": "after"}:
                break
            if kind == "event" and data and data.get("kind") in ("call", "call2"):
                await alice.ws.send_str(f"43{packet[2:].split('[', 1)[0]}[]")  # answer the server's call
        stop.set()
        await bg
    finally:
        stop.set()
    expected: list[Any] = []
    for i in range(n):
        expected += [("call", i), ("room", i), ("user", i), ("call2", i), ("sid", i), ("ack", i), ("after", i)]
    seen: list[Any] = []
    background_seen: list[int] = []
    for packet in alice.packets:
        kind, ident, data = parse(packet)
        if kind == "event" and ident == "order" and data["kind"] == "bg":
            background_seen.append(data["i"])
        elif kind == "event" and ident == "order":
            seen.append((data["kind"], data["i"]))
        elif kind == "ack" and ident >= 100:
            seen.append(("ack", data[0]["i"]))
    assert seen == expected
    assert background_seen == sorted(background_seen) and len(set(background_seen)) == len(background_seen)
    assert background_seen, "the background broadcasts did not interleave"
    # bob (same room, another socket) sees the room's broadcasts in the same order
    await asyncio.sleep(0.2)
    while True:
        try:
            await bob.next(timeout=0.2)
        except TimeoutError:
            break
    bob_rooms = [parse(p)[2]["i"] for p in bob.packets if parse(p)[1] == "order" and parse(p)[2]["kind"] == "room"]
    assert bob_rooms == list(range(n))
    await alice.close()
    await bob.close()


async def test_busy_broadcasts_wait_for_the_write_delay_but_acks_and_quiet_rooms_do_not(start_node):
    # docs/protocol.md §6 "Performance": broadcast frames may wait up to FANOUT_WRITE_DELAY_MS
    # for more (until a socket has FANOUT_WRITE_BATCH of them) once their room is busy; a
    # room's first broadcast after a quiet spell goes out at once, and acks never wait.  A long delay makes the
    # cases tell apart by timing; room_stats is slowed down so that only the test broadcasts.
    delay = 1.0
    node = await start_node(fanout_write_delay_s=delay, fanout_write_batch=3, room_stats_interval_s=60)
    sio = node.components.sio
    room = unique()
    alice = await RawClient(node.url).connect("alice")
    bob = await RawClient(node.url).connect("bob")
    loop = asyncio.get_running_loop()

    async def broadcast(*numbers: int) -> float:
        sent = loop.time()
        for n in numbers:
            await sio.emit("probe", {"n": n}, to=room_channel(room))
        return sent

    try:
        assert (await alice.call("join_room", {"room_id": room}, 1))["ok"]
        assert (await bob.call("join_room", {"room_id": room}, 2))["ok"]
        await asyncio.sleep(delay + 0.2)
        sent = await broadcast(1, 2, 3)  # a quiet room: at once, even a few in a row
        assert await arrival(bob, "probe", 1, 2, 3) - sent < delay / 2
        sent = await broadcast(4)  # the room is busy now (broadcasts well under the delay apart): waits for more
        assert await arrival(bob, "probe", 4) - sent >= delay * 0.7
        sent = await broadcast(5, 6, 7)  # a full batch: at once
        assert await arrival(bob, "probe", 5, 6, 7) - sent < delay / 2
        sent = await broadcast(8)  # waits again, but an ack (to alice, who has it pending too) does not
        asked = loop.time()
        assert (await alice.call("join_room", {"room_id": room}, 3))["ok"]
        assert loop.time() - asked < delay / 2
        assert await arrival(bob, "probe", 8) - sent >= delay * 0.7
        # alice got the waiting broadcast with her ack, before it: order holds
        probes = [parse(p)[2]["n"] for p in alice.packets if parse(p)[1] == "probe"]
        assert probes == [1, 2, 3, 4, 5, 6, 7, 8]
    finally:
        await alice.close()
        await bob.close()


async def test_a_quiet_room_is_not_held_up_by_a_busy_one(start_node):
    # Batching is per room: a room whose broadcasts are not under the write delay apart gets
    # its events at once however busy the node's other rooms are (many small rooms of a few
    # messages a second each would otherwise all wait the delay, for nothing).
    delay = 1.0
    node = await start_node(fanout_write_delay_s=delay, fanout_write_batch=3, room_stats_interval_s=60)
    sio = node.components.sio
    busy, quiet = unique(), unique()
    alice = await RawClient(node.url).connect("alice")  # in the busy room
    bob = await RawClient(node.url).connect("bob")  # in the quiet room
    loop = asyncio.get_running_loop()

    try:
        assert (await alice.call("join_room", {"room_id": busy}, 1))["ok"]
        assert (await bob.call("join_room", {"room_id": quiet}, 2))["ok"]
        await asyncio.sleep(delay + 0.2)
        for n in (1, 2, 3):
            await sio.emit("probe", {"n": n}, to=room_channel(busy))
        await arrival(alice, "probe", 3)
        sent_busy = loop.time()
        await sio.emit("probe", {"n": 4}, to=room_channel(busy))  # the busy room's next: waits
        sent_quiet = loop.time()
        await sio.emit("probe", {"n": 5}, to=room_channel(quiet))  # meanwhile, the quiet room's first
        assert await arrival(bob, "probe", 5) - sent_quiet < delay / 2
        assert await arrival(alice, "probe", 4) - sent_busy >= delay * 0.7
    finally:
        await alice.close()
        await bob.close()


async def test_room_stats_ride_with_the_next_write_or_go_out_after_the_lazy_delay(start_node):
    # room_stats (coalesced to ~1/s anyway) does not take a send of its own when another
    # frame for the same socket follows within the lazy delay: it goes out with that frame,
    # before it (order holds); alone, it still goes out once the delay has passed.
    delay = 1.0
    node = await start_node(room_stats_interval_s=60)  # no room_stats of the node's own
    fanout_of(node).lazy_delay_s = delay
    sio = node.components.sio
    room = unique()
    alice = await RawClient(node.url).connect("alice")
    bob = await RawClient(node.url).connect("bob")
    loop = asyncio.get_running_loop()

    def order(client: RawClient) -> list[tuple[str, Any]]:
        """The test's events and alice's ack of the third join, in arrival order."""
        seen: list[tuple[str, Any]] = []
        for kind, name, data in map(parse, client.packets):
            if kind == "event" and name in ("room_stats", "probe") and "n" in data:
                seen.append((name, data["n"]))
            elif kind == "ack" and name == 3:
                seen.append(("ack", 3))
        return seen

    try:
        assert (await alice.call("join_room", {"room_id": room}, 1))["ok"]
        assert (await bob.call("join_room", {"room_id": room}, 2))["ok"]
        await asyncio.sleep(0.2)
        sent = loop.time()
        await sio.emit("room_stats", {"room_id": room, "n": 1}, to=room_channel(room))  # alone: waits
        assert await arrival(bob, "room_stats", 1) - sent >= delay * 0.7
        stats = fanout_of(node).stats
        writes = stats.writes
        sent = loop.time()
        await sio.emit("room_stats", {"room_id": room, "n": 2}, to=room_channel(room))
        await asyncio.sleep(0.05)  # a few event-loop iterations later
        await sio.emit("probe", {"n": 3}, to=room_channel(room))  # a quiet room's broadcast takes it along
        assert await arrival(bob, "probe", 3) - sent < delay / 2
        await arrival(alice, "probe", 3)
        assert stats.writes - writes == 2  # one write per client for both events (4 if room_stats went alone)
        sent = loop.time()
        await sio.emit("room_stats", {"room_id": room, "n": 4}, to=room_channel(room))
        assert (await alice.call("join_room", {"room_id": room}, 3))["ok"]  # so does an ack
        assert loop.time() - sent < delay / 2
        assert await arrival(bob, "room_stats", 4) - sent >= delay * 0.7  # bob had no other write
        expected = [("room_stats", 1), ("room_stats", 2), ("probe", 3), ("room_stats", 4)]
        assert order(bob) == expected and order(alice) == [*expected, ("ack", 3)]
    finally:
        await alice.close()
        await bob.close()


async def test_polling_clients_get_everything_through_the_stock_path(node, connect):
    room = unique()
    alice = await connect("alice")  # WebSocket
    bob = await connect("bob", transports=["polling"])
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    stats = fanout_of(node).stats
    queued, direct = stats.queued_deliveries, stats.direct_deliveries
    for i in range(30):
        assert (await alice.call("send_message", {"room_id": room, "content": f"m{i}"}))["ok"]
    await bob.wait_for("new_message", lambda m: m["content"] == "m29")
    await alice.wait_for("new_message", lambda m: m["content"] == "m29")
    assert [m["content"] for m in bob.events["new_message"]] == [f"m{i}" for i in range(30)]
    assert [m["content"] for m in alice.events["new_message"]] == [f"m{i}" for i in range(30)]
    assert stats.queued_deliveries >= queued + 30  # bob, by polling
    assert stats.direct_deliveries >= direct + 30  # alice
    polling = [s for s in node.components.sio.eio.sockets.values() if not s.upgraded]
    assert len(polling) == 1 and getattr(polling[0], "_direct", None) is None


async def test_order_holds_across_the_upgrade_from_polling(node):
    # Packets sent while a socket upgrades are queued; once upgraded, new ones are written
    # at once: none may overtake the queued ones.  Several clients, ticks in bursts of 1-2
    # every loop iteration, so that some upgrades end with packets in flight.
    sio = node.components.sio
    users = [f"carol{k}" for k in range(8)]
    got: dict[str, list[int]] = {u: [] for u in users}
    clients = []
    for user in users:
        client = socketio.AsyncClient(reconnection=False)
        client.on("tick", lambda data, user=user: got[user].append(data["i"]))
        clients.append(client)
    stop = asyncio.Event()

    async def ticks() -> None:  # to each user's channel, before, during and after the upgrades
        i = 0
        while not stop.is_set():
            for _ in range(1 + i % 2):
                for user in users:
                    await sio.emit("tick", {"i": i}, to=user_channel(user))
                i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticks())
    try:
        await asyncio.gather(*(client.connect(node.url, socketio_path="socket.io", transports=["polling", "websocket"],
                                              auth={"token": make_token(user)}, wait_timeout=5)
                               for client, user in zip(clients, users, strict=True)))
        for _ in range(100):
            if all(c.transport() == "websocket" for c in clients):
                break
            await asyncio.sleep(0.05)
        assert all(c.transport() == "websocket" for c in clients)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
        for client in clients:
            await client.disconnect()
    for user in users:
        ticks_seen = got[user]
        assert ticks_seen, f"no ticks arrived for {user}"
        assert ticks_seen == list(range(ticks_seen[0], ticks_seen[0] + len(ticks_seen))), f"ticks lost or reordered for {user}"


async def test_fast_path_under_the_redis_manager(start_node, connect):
    a = await start_node(redis_url=REDIS_URL)
    b = await start_node(redis_url=REDIS_URL)
    room = unique()
    # Users of their own: the rate limits live in the shared Redis, where other tests' load
    # (tests/scale) may have filled a common name's window.
    alice = await connect(unique("alice"), url=a.url)
    bob = await connect(unique("bob"), url=b.url)
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    await asyncio.sleep(0.2)  # node b's subscription
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    on_b = fanout_of(b).stats.direct_deliveries
    for i in range(10):
        sent = await alice.call("send_message", {"room_id": room, "content": f"x{i}"})
        assert sent["ok"], sent
    await bob.wait_for("new_message", lambda m: m["content"] == "x9")
    assert [m["content"] for m in bob.events["new_message"]] == [f"x{i}" for i in range(10)]
    assert fanout_of(b).stats.direct_deliveries >= on_b + 10  # delivered by node b's hook, from Redis


# --- slow consumers ---------------------------------------------------------------------------------


class StalledClient:
    """A raw WebSocket client on a plain socket with a tiny receive buffer, so that once it
    stops reading, unread bytes pile up on the server."""

    async def connect(self, url: str, user: str, room: str) -> StalledClient:
        async with asyncio.timeout(10):
            return await self._connect(url, user, room)

    async def _connect(self, url: str, user: str, room: str) -> StalledClient:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (await self.read_text()).startswith("0{")
        self.send_text("40" + json.dumps({"token": make_token(user)}))
        reply = await self.read_text()
        self.sid = json.loads(reply[2:])["sid"]
        self.send_text("421" + json.dumps(["join_room", {"room_id": room}]))
        while not (await self.read_text()).startswith("431"):
            pass
        return self

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        head = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
        self.writer.write(head + mask + masked)

    async def read_text(self) -> str:
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return (await self.reader.readexactly(length)).decode()


async def test_a_client_that_stops_reading_is_disconnected(start_node):
    node = await start_node(slow_client_buffer_bytes=256 * 1024)
    room = unique()
    slow = await StalledClient().connect(node.url, "slowpoke", room)
    try:
        await _stall_and_flood(node, slow, room)
    finally:
        slow.writer.close()


async def _stall_and_flood(node: Any, slow: StalledClient, room: str) -> None:
    sio = node.components.sio
    healthy = await RawClient(node.url).connect("healthy")
    assert (await healthy.call("join_room", {"room_id": room}, 1))["ok"]
    stats = fanout_of(node).stats
    registry = node.components.sessions.registry
    assert registry.get(slow.sid) is not None
    blob = "x" * 8192
    received = 0
    sent = 0

    async def read_healthy() -> None:
        nonlocal received
        while True:
            kind, name, _ = parse(await healthy.next())
            if kind == "event" and name == "flood":
                received += 1

    reader = asyncio.create_task(read_healthy())
    try:
        # The stalled client reads nothing from here on.
        for _ in range(2000):
            await sio.emit("flood", {"blob": blob}, to=room_channel(room))
            sent += 1
            await asyncio.sleep(0)
            if stats.slow_disconnects:
                break
        assert stats.slow_disconnects == 1, "the stalled client was never dropped"
        assert sent * len(blob) < 8 * 1024 * 1024  # dropped near the bound, not after everything
        for _ in range(100):  # the usual disconnect cleanup ran
            if registry.get(slow.sid) is None:
                break
            await asyncio.sleep(0.05)
        assert registry.get(slow.sid) is None
        for _ in range(20):  # the others were not held back
            await sio.emit("flood", {"blob": blob}, to=room_channel(room))
            sent += 1
        for _ in range(100):
            if received == sent:
                break
            await asyncio.sleep(0.05)
        assert received == sent
    finally:
        reader.cancel()
    # The stalled client finds its connection gone (it would reconnect and catch up by since_seq).
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        async with asyncio.timeout(10):
            while True:
                await slow.read_text()
    status, text = await rest(node, "GET", "/metrics")
    assert "chat_fanout_slow_disconnects_total 1.0" in text
    writes = next(float(line.split()[1]) for line in text.splitlines() if line.startswith("chat_fanout_writes_total "))
    assert 0 < writes == fanout_of(node).stats.writes
    await healthy.close()
