"""The server side of RFC 6455 (WebSocket) for a connection we read ourselves: the opening
handshake's answer, an incremental frame reader, close frames.  No I/O here.

Used by the lean Engine.IO transport (``lean_transport.py``).  Server frames are built by
``fanout.ws_frame``.  No extension is ever negotiated (permessage-deflate is off for
Socket.IO, docs/protocol.md §6 "Performance"), so any RSV bit is a protocol error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable, Mapping

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007  # a text message that is not UTF-8
CLOSE_MESSAGE_TOO_BIG = 1009

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketError(Exception):
    """The peer broke the protocol; ``code`` is the close code to answer with.  ``messages``:
    those completed before the offending frame, in the same ``feed`` (to be handled first)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.messages: list[Message] = []


def handshake_key(headers: Mapping[str, str]) -> str | None:
    """The ``Sec-WebSocket-Key`` of a valid version-13 opening handshake (``Upgrade:
    websocket``, ``Connection: upgrade``), or None when the request is not one."""
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        return None
    if "upgrade" not in (token.strip().lower() for token in headers.get("Connection", "").split(",")):
        return None
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return key


def handshake_response(key: str) -> bytes:
    """The ``101 Switching Protocols`` answer to a handshake with ``key`` (no subprotocol,
    no extension)."""
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " \
        + accept + b"\r\n\r\n"


def close_frame(code: int | None = CLOSE_NORMAL) -> bytes:
    """An unmasked CLOSE frame with ``code`` (None: no status code)."""
    if code is None:
        return b"\x88\x00"
    return b"\x88\x02" + struct.pack("!H", code)


# --- unmasking ---------------------------------------------------------------------------------

_XOR_TABLES: list[bytes] = []


def _unmask_python(mask: bytes, data: bytearray) -> None:
    if not _XOR_TABLES:
        _XOR_TABLES.extend(bytes(a ^ b for a in range(256)) for b in range(256))
    for i in range(4):
        data[i::4] = data[i::4].translate(_XOR_TABLES[mask[i]])


def _fast_unmask() -> Callable[[bytes, bytearray], None]:
    """aiohttp's compiled masking function when it is there and right, ours otherwise (the
    same result, about twice as slow for large messages)."""
    try:
        from aiohttp._websocket.helpers import websocket_mask
    except ImportError:  # pragma: no cover - depends on the aiohttp build
        return _unmask_python
    probe, expected = bytearray(b"\x01\x02\x03\x04\x05"), bytearray(b"\x01\x02\x03\x04\x05")
    try:
        websocket_mask(b"\x0f\xf0\xaa\x55", probe)
        _unmask_python(b"\x0f\xf0\xaa\x55", expected)
    except Exception:  # pragma: no cover
        return _unmask_python
    return websocket_mask if probe == expected else _unmask_python  # type: ignore[no-any-return]


_unmask = _fast_unmask()


# --- reading -----------------------------------------------------------------------------------

Message = tuple[int, "str | bytes"]


class FrameReader:
    """Client frames in, whole messages out.

    ``feed`` returns ``(opcode, payload)`` for each complete message: ``OP_TEXT`` with a
    ``str``, ``OP_BINARY`` with ``bytes`` (fragments joined), and the control frames
    ``OP_PING``/``OP_PONG``/``OP_CLOSE`` with their payload bytes (a CLOSE payload is checked:
    empty, or a valid status code and UTF-8 reason).  Raises ``WebSocketError`` on anything
    RFC 6455 forbids a client to send (unmasked frames, RSV bits, unknown opcodes, bad
    fragmentation, oversized control frames, a text message that is not UTF-8) and for a
    message larger than ``max_size`` bytes (0: no limit), which is refused from its header,
    before its payload is buffered.
    """

    __slots__ = ("_buffer", "_fragments", "_fragment_opcode", "_fragment_size", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._fragment_size = 0

    def feed(self, data: bytes) -> list[Message]:
        messages: list[Message] = []
        try:
            self._feed(data, messages)
        except WebSocketError as exc:
            exc.messages = messages
            raise
        return messages

    def _feed(self, data: bytes, messages: list[Message]) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        pos = 0
        end = len(data)
        while end - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length = int.from_bytes(data[start:start + 2], "big")
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(data[start:start + 8], "big")
                start += 8
                if length >> 63:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "64-bit length with the most significant bit set")
            if first & 0x70:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if not second & 0x80:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            opcode = first & 0x0F
            fin = first & 0x80
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if not fin or length > 125:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame")
            elif opcode > OP_BINARY:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif self.max_size and (self._fragment_size if opcode == OP_CONTINUATION else 0) + length > self.max_size:
                raise WebSocketError(CLOSE_MESSAGE_TOO_BIG, f"message over {self.max_size} bytes")
            stop = start + 4 + length
            if stop > end:
                break  # the rest of this frame has not arrived yet
            payload = bytearray(data[start + 4:stop])
            if length:
                _unmask(data[start:start + 4], payload)
            pos = stop
            message = self._frame(fin, opcode, bytes(payload))
            if message is not None:
                messages.append(message)
        if pos < end:
            self._buffer = data[pos:]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> Message | None:
        if opcode >= OP_CLOSE:
            if opcode == OP_CLOSE:
                _check_close(payload)
            return opcode, payload
        fragments = self._fragments
        if opcode == OP_CONTINUATION:
            if fragments is None:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            fragments.append(payload)
            self._fragment_size += len(payload)
            if not fin:
                return None
            opcode = self._fragment_opcode
            payload = b"".join(fragments)
            self._fragments = None
            self._fragment_size = 0
        elif fragments is not None:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
        elif not fin:
            self._fragments = [payload]
            self._fragment_opcode = opcode
            self._fragment_size = len(payload)
            return None
        if opcode == OP_TEXT:
            try:
                return OP_TEXT, payload.decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketError(CLOSE_INVALID_DATA, "text message is not UTF-8") from None
        return OP_BINARY, payload


def close_code(payload: bytes) -> int | None:
    """The status code of a (checked) CLOSE payload."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


def _check_close(payload: bytes) -> None:
    if not payload:
        return
    if len(payload) == 1:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    # RFC 6455 §7.4: 1000-1003, 1007-1011 (and 1012-1014, registered since) and 3000-4999.
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
