"""The server's Socket.IO packet class (``realtime.packets.ChatPacket``) decides "binary or
not" exactly like python-socketio's ``Packet`` and is the one the server uses."""

from __future__ import annotations

import random
from typing import Any

from socketio.packet import ACK, BINARY_ACK, Packet

from chat_server.app import COMPONENTS_KEY, create_app
from chat_server.realtime.packets import ChatPacket, holds_binary
from tests.conftest import make_settings


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.random()
    if depth > 3 or kind < 0.5:
        return rng.choice(["text", "", 0, 7, 1.5, True, False, None, b"raw", bytearray(b"x"), ("a", b"in a tuple")])
    if kind < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def test_same_answer_as_python_socketio_on_many_values() -> None:
    rng = random.Random(3)
    answers = set()
    for _ in range(5000):
        value = _value(rng, 0)
        expected = Packet.data_is_binary(value)
        assert holds_binary(value) is expected and ChatPacket.data_is_binary(value) is expected, value
        answers.add(expected)
    assert answers == {True, False}


def test_a_binary_ack_is_still_a_binary_ack() -> None:
    assert ChatPacket(ACK, data=[{"ok": True, "blob": b"\x00"}], id=1).packet_type == BINARY_ACK
    plain = ChatPacket(ACK, data=[{"ok": True, "message": {"seq": 1, "mentions": [], "user": {"avatar": None}}}], id=1)
    assert plain.packet_type == ACK and plain.encode() == Packet(ACK, data=plain.data, id=1).encode()


def test_the_server_builds_its_packets_with_it(database_url: str) -> None:
    app = create_app(make_settings(database_url))
    assert app[COMPONENTS_KEY].sio.packet_class is ChatPacket
