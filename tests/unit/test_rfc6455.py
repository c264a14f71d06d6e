"""The WebSocket frame reader and handshake of the lean Engine.IO transport (realtime/rfc6455.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import pytest

from chat_server.realtime.rfc6455 import (
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    _unmask_python,
    close_code,
    close_frame,
    handshake_key,
    handshake_response,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it (masked unless told otherwise)."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if masked else 0) | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_whole_frames_give_messages():
    reader = FrameReader(0)
    data = client_frame(OP_TEXT, "héllo ✓".encode()) + client_frame(OP_BINARY, b"\x00\x01") + client_frame(OP_PING, b"p")
    assert reader.feed(data) == [(OP_TEXT, "héllo ✓"), (OP_BINARY, b"\x00\x01"), (OP_PING, b"p")]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_every_length_encoding_byte_by_byte_and_at_once(size):
    payload = os.urandom(size)
    frame = client_frame(OP_BINARY, payload)
    assert FrameReader(0).feed(frame) == [(OP_BINARY, payload)]
    reader = FrameReader(0)
    got = []
    step = 1 if size < 300 else 997  # arbitrary cuts, through the header and the mask too
    for i in range(0, len(frame), step):
        got.extend(reader.feed(frame[i:i + step]))
    assert got == [(OP_BINARY, payload)]


def test_fragments_are_joined_and_control_frames_may_come_between():
    reader = FrameReader(0)
    data = (client_frame(OP_TEXT, b"42[\"a\",", fin=False) + client_frame(OP_PING, b"x")
            + client_frame(OP_CONTINUATION, b"\"b", fin=False) + client_frame(OP_CONTINUATION, b"\"]"))
    assert reader.feed(data) == [(OP_PING, b"x"), (OP_TEXT, '42["a","b"]')]
    # a text message cut inside a multi-byte character is decoded whole
    euro = "€".encode()
    assert reader.feed(client_frame(OP_TEXT, euro[:1], fin=False) + client_frame(OP_CONTINUATION, euro[1:])) == [(OP_TEXT, "€")]


def test_close_and_pong_frames():
    reader = FrameReader(0)
    assert reader.feed(client_frame(OP_CLOSE, struct.pack("!H", 1001) + b"bye")) == [(OP_CLOSE, struct.pack("!H", 1001) + b"bye")]
    assert close_code(struct.pack("!H", 1001) + b"bye") == 1001
    assert reader.feed(client_frame(OP_CLOSE, b"")) == [(OP_CLOSE, b"")]
    assert close_code(b"") is None
    assert reader.feed(client_frame(OP_PONG, b"")) == [(OP_PONG, b"")]


@pytest.mark.parametrize("frame,code", [
    (client_frame(OP_TEXT, b"hi", masked=False), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_TEXT, b"hi", rsv=0x40), CLOSE_PROTOCOL_ERROR),  # permessage-deflate was not negotiated
    (client_frame(0x3, b"hi"), CLOSE_PROTOCOL_ERROR),
    (client_frame(0xB, b"hi"), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_PING, b"x" * 126), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_PING, b"x", fin=False), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_CONTINUATION, b"x"), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_CLOSE, b"\x03"), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_CLOSE, struct.pack("!H", 1005)), CLOSE_PROTOCOL_ERROR),
    (client_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), CLOSE_INVALID_DATA),
    (client_frame(OP_TEXT, b"\xff\xfe"), CLOSE_INVALID_DATA),
])
def test_what_a_client_must_not_send(frame, code):
    with pytest.raises(WebSocketError) as raised:
        FrameReader(0).feed(frame)
    assert raised.value.code == code


def test_messages_before_a_bad_frame_are_kept():
    with pytest.raises(WebSocketError) as raised:
        FrameReader(0).feed(client_frame(OP_TEXT, b"first") + client_frame(OP_TEXT, b"second", masked=False))
    assert raised.value.messages == [(OP_TEXT, "first")]


def test_a_message_over_the_limit_is_refused_from_its_header():
    reader = FrameReader(1000)
    assert reader.feed(client_frame(OP_TEXT, b"x" * 1000)) == [(OP_TEXT, "x" * 1000)]
    with pytest.raises(WebSocketError) as raised:
        reader.feed(client_frame(OP_BINARY, b"x" * 5000)[:10])  # the header alone is enough
    assert raised.value.code == CLOSE_MESSAGE_TOO_BIG
    fragmented = FrameReader(1000)
    fragmented.feed(client_frame(OP_TEXT, b"x" * 600, fin=False))
    with pytest.raises(WebSocketError) as raised:
        fragmented.feed(client_frame(OP_CONTINUATION, b"x" * 600))
    assert raised.value.code == CLOSE_MESSAGE_TOO_BIG
    with pytest.raises(WebSocketError):  # a 64-bit length with the top bit set
        FrameReader(0).feed(b"\x82\xff" + b"\x80" + b"\x00" * 7 + b"mask")


def test_unmasking_matches_the_reference():
    mask = b"\x12\x34\x56\x78"
    data = os.urandom(1001)
    expected = bytearray(b ^ mask[i % 4] for i, b in enumerate(data))
    ours = bytearray(data)
    _unmask_python(mask, ours)
    assert ours == expected


def test_handshake():
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key}
    assert handshake_key(headers) == key
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    response = handshake_response(key)
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and response.endswith(b"\r\n\r\n")
    assert b"\r\nSec-WebSocket-Accept: " + accept + b"\r\n" in response
    for broken in ({"Upgrade": "h2c"}, {"Connection": "close"}, {"Sec-WebSocket-Version": "8"}, {"Sec-WebSocket-Key": "short"},
                   {"Sec-WebSocket-Key": base64.b64encode(os.urandom(15)).decode()}):
        assert handshake_key({**headers, **broken}) is None


def test_close_frames():
    assert close_frame(1000) == b"\x88\x02\x03\xe8"
    assert close_frame(None) == b"\x88\x00"
