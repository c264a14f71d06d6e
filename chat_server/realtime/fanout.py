"""Fast local fan-out for Socket.IO clients on WebSocket (docs/protocol.md §6 "Performance").

Stock python-socketio delivers a broadcast to N local sockets with N asyncio tasks
(``AsyncManager.emit``), each putting the packet on the socket's Engine.IO queue, from
which a writer task per socket encodes it and writes one WebSocket frame: ~50 µs of CPU
per delivery.  Here a broadcast is encoded once (``42["event",data]`` with orjson), framed
once (an unmasked server frame: header + payload), and the same bytes are written with
``transport.write`` to every recipient whose WebSocket is ready for it: no task, queue or
encode per recipient.

Write batching.  Most of a delivery's CPU is the send system call, not the bytes.  A busy
room's broadcast (the room's broadcasts come less than ``write_delay_s`` apart on average,
so its members are about to get more) waits until a socket has ``write_batch`` frames or the first
has waited ``write_delay_s``, then goes out in one write per socket.  A broadcast to a quiet
room is written at the end of the event-loop iteration: batching it would save nothing (its
members get no other frame in the meantime) and cost it the delay, however busy the rest of
the node is.  Single packets (acks, CONNECT, pings, emits to one socket) never wait: they
are written at the end of the iteration together with whatever that socket has waiting, in
order.

Order.  A socket's packets must never overtake each other (acks, emits to one sid or user,
broadcasts).  So once a socket's WebSocket is ready, *every* packet of that socket is
written at once, in call order, on the same path: ``DirectSocket.send`` (acks, CONNECT,
pings, calls) writes its frame synchronously too, and Engine.IO's queue and writer task
are bypassed.  The switch happens in the writer task itself: ``DirectSocket.poll`` (which
Engine.IO's writer calls in a loop) hands back what is still queued, and only when the
queue is empty, and nothing popped from it is still unwritten, turns direct writes on.
Before that (connecting, upgrading from polling) packets are queued as usual.

Fallbacks (the library's own path): long-polling sockets, sockets whose WebSocket is not
direct yet or any more (upgrading, closing), sockets that negotiated permessage-deflate
(never, unless turned back on), events with an ack callback, events with binary
attachments or values orjson cannot encode.

Slow consumers.  Direct writes do not wait for the client: a client that stops reading is
disconnected (``transport.abort()``) once its unsent bytes pass ``slow_client_buffer_bytes``;
it reconnects and catches up by ``since_seq``.  The stock path would instead queue without
bound in that socket's Engine.IO queue.

Library internals this relies on (checked by ``check_internals`` at start-up: when one is
missing the fast path stays off and the stock path serves everything):
- python-engineio ``AsyncServer._async['websocket']``: the driver's WebSocket wrapper class,
  called as ``cls(socket._websocket_handler, server)``; we give the server a copy of the
  ``_async`` dict with our subclass of ``engineio.async_drivers.aiohttp.WebSocket``
  (``handler``/``server``/``_sock`` attributes, ``__call__``/``send``/``close``/``wait``).
- ``AsyncSocket._websocket_handler``: its writer task loops ``packets = await self.poll()``
  then ``await ws.send(pkt.encode())`` for each, ``await ws.close()`` when ``poll`` returns
  an empty list; a ``None`` put on ``socket.queue`` ends it.  Checked in its source text.
- ``AsyncSocket`` attributes ``queue``, ``upgraded``, ``closed``, ``last_ping``,
  ``check_ping_timeout()``, ``send()``, ``poll()``; the socket's class is switched to
  ``DirectSocket`` (a subclass adding no state but two attributes) when its WebSocket starts.
- python-socketio ``AsyncManager.get_participants``, ``rooms``, ``server.eio.sockets`` and
  ``server._send_eio_packet`` (the stock fallback for one recipient).
- aiohttp: ``WebSocketResponse(compress=False)`` writes each frame synchronously with one
  or two ``transport.write`` calls (no await between), so whole frames written here never
  interleave with aiohttp's own (PONG, CLOSE); ``request.transport`` is the connection's
  transport; ``WebSocketResponse.closed`` is set before aiohttp sends its CLOSE frame.
Verified with the versions in ``VERIFIED``; another version logs a warning and still runs
when the structural checks pass (tests/realtime/test_fanout.py fails loudly if the fast
path is not in use, so an upgrade that breaks it is caught in CI, not in production).
"""

from __future__ import annotations

import asyncio
import inspect
import json as std_json
import logging
import struct
import time
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Any

import orjson
import socketio
from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import json as eio_json
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

log = logging.getLogger(__name__)

#: Library versions (major.minor) this module was verified against.
VERIFIED = {"python-engineio": "4.15", "python-socketio": "5.18", "aiohttp": "3.14"}

#: Default bound on a client's unsent bytes before it is disconnected.
DEFAULT_SLOW_CLIENT_BUFFER_BYTES = 1024 * 1024

_OP_TEXT = 0x1
_OP_BINARY = 0x2


def ws_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """One unmasked, unfragmented server WebSocket frame (RFC 6455 §5.2) around ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


# --- the server's JSON module ----------------------------------------------------------------


class OrjsonModule:
    """A ``json``-compatible module for python-socketio/engineio (``AsyncServer(json=...)``,
    process-wide): orjson where it gives the same value, the standard library otherwise.

    ``dumps``: compact output (what the libraries ask for with ``separators=(',', ':')``),
    non-ASCII as UTF-8 rather than ``\\uXXXX`` escapes (the same JSON value), and NaN or
    Infinity as ``null`` (the standard library writes ``NaN``, which is not JSON and which
    JavaScript's ``JSON.parse`` rejects; ``JSON.stringify`` writes ``null`` too).  Anything
    orjson refuses (non-string keys, integers beyond 64 bits, lone surrogates, unknown
    types) and any other keyword argument goes to ``json.dumps`` unchanged.
    ``loads``: orjson; text it rejects, and values holding a float (orjson reads integers
    beyond 64 bits as floats), go to engine.io's own ``loads``: NaN, lone surrogates, huge
    integers and errors behave exactly as before.
    """

    JSONDecodeError = std_json.JSONDecodeError

    @staticmethod
    def dumps(obj: Any, *args: Any, separators: Any = None, **kwargs: Any) -> str:
        if not args and not kwargs:
            try:
                return orjson.dumps(obj).decode()
            except TypeError:
                pass
        return std_json.dumps(obj, *args, separators=separators, **kwargs)

    @staticmethod
    def loads(s: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            try:
                value = orjson.loads(s)
                # orjson reads integers beyond 64 bits as floats: a value holding any float
                # (rare in this protocol) is decoded again by the standard path.
                if not _has_float(value):
                    return value
            except (orjson.JSONDecodeError, TypeError, RecursionError):
                pass
        return eio_json.loads(s, *args, **kwargs)


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return kind is float
    for item in items:
        kind = type(item)
        if (kind is dict or kind is list or kind is float) and _has_float(item):
            return True
    return False


orjson_module = OrjsonModule()


# --- counters ----------------------------------------------------------------------------------


@dataclass
class FanoutStats:
    """Plain counters (read by the Prometheus collector in metrics.py at scrape time)."""

    broadcasts: int = 0  # broadcasts encoded once by the fast path
    direct_deliveries: int = 0  # broadcast frames written straight to a WebSocket
    queued_deliveries: int = 0  # broadcast packets that took the stock path (polling, upgrading ...)
    direct_packets: int = 0  # other packets (acks, CONNECT, pings, calls) written straight
    direct_events: int = 0  # client events dispatched without the library's layers (realtime/direct_events.py)
    stock_broadcasts: int = 0  # broadcasts the fast path handed to the library (callback, binary)
    slow_disconnects: int = 0  # clients dropped for an unsent buffer over the bound
    writes: int = 0  # transport writes of the direct path (a send system call each, most often)


# --- Engine.IO socket and WebSocket wrapper ----------------------------------------------------


class DirectSocket(AsyncSocket):
    """An Engine.IO socket whose packets, once its WebSocket is direct, are written at once."""

    # The WebSocket wrapper of this socket (None: not on WebSocket, or not eligible).
    _ws: DirectWebSocket | None = None
    # Set while every packet is written directly (None: packets go through the queue).
    _direct: DirectWebSocket | None = None

    async def send(self, pkt: eio_packet.Packet) -> None:
        direct = self._direct
        if direct is None:
            await super().send(pkt)
            return
        await self._write_direct(direct, pkt.encode())

    async def send_message(self, text: str) -> None:
        """Send an Engine.IO MESSAGE carrying ``text``: what ``server.send_packet(sid,
        Packet(MESSAGE, text))`` does, without building the packet when writes are direct."""
        direct = self._direct
        if direct is None or self.closed:
            await self.server.send_packet(self.sid, eio_packet.Packet(eio_packet.MESSAGE, data=text))
            return
        await self._write_direct(direct, "4" + text)  # the MESSAGE packet's encoding

    async def _write_direct(self, direct: DirectWebSocket, encoded: str | bytes) -> None:
        if not await self.check_ping_timeout():  # as the stock send: a timed-out client is closed
            return
        direct.write_message(encoded)
        direct.stats.direct_packets += 1

    async def poll(self) -> list[eio_packet.Packet]:
        ws = self._ws
        if ws is None or ws.transport is None or not self.upgraded:
            return await super().poll()  # long-polling GET, or a WebSocket we leave alone
        # Called by Engine.IO's WebSocket writer task, which writes what we return with
        # ws.send (synchronous here) before it calls poll again: no await in between.
        queue = self.queue
        packets: list[eio_packet.Packet] = []
        while True:
            try:
                pkt = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            queue.task_done()
            if pkt is None:  # the connection is ending; the writer closes the WebSocket
                self._direct = None
                ws.flush()  # what was written before goes out before the CLOSE frame
                if packets:
                    queue.put_nowait(None)  # as the stock poll: end on the next call
                return packets
            packets.append(pkt)
        if packets:
            return packets
        # Everything queued so far is written: from here on send() writes at once, in call order.
        self._direct = ws
        try:
            # Parked until the connection ends (a None from Engine.IO or close_all).  No
            # timeout: with direct writes the queue stays empty; dead clients are found by
            # the reader's timeout and the ping checks, as before.
            pkt = await queue.get()
        except asyncio.CancelledError:
            self._direct = None
            ws.flush()
            raise eio_exceptions.QueueEmpty() from None
        queue.task_done()
        if pkt is None:
            self._direct = None
            ws.flush()
            return []
        return [pkt]  # put on the queue directly by someone (Engine.IO itself does not)


class DirectWebSocket(eio_aiohttp.WebSocket):
    """engineio's aiohttp WebSocket wrapper with compression chosen here and synchronous,
    bounded frame writes."""

    def __init__(self, handler: Any, server: Any, *, fanout: FastFanout) -> None:
        super().__init__(handler, server)
        self.fanout = fanout
        self.stats = fanout.stats
        self.transport: Any = None  # set when this WebSocket takes direct writes
        self._pending: list[bytes] = []  # frames not written to the transport yet
        self._urgent = False  # a single packet is pending: write at the end of this iteration
        self._dirty = False  # in FastFanout._dirty: a busy room's frame is pending

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        # As the driver's __call__, plus: no permessage-deflate (docs/protocol.md §6
        # "Performance"), and the socket made a DirectSocket.
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=self.fanout.compress)
        await self._sock.prepare(request)
        self.environ = environ
        socket = getattr(self.handler, "__self__", None)
        if type(socket) is AsyncSocket:
            socket.__class__ = DirectSocket
        if isinstance(socket, DirectSocket):
            transport = request.transport
            if transport is not None and not self._sock.compress:
                self.transport = transport
            socket._ws = self
        try:
            await self.handler(self)
        finally:
            self._pending = []
            if isinstance(socket, DirectSocket) and socket._ws is self:
                socket._direct = None
                socket._ws = None
        return self._sock

    async def send(self, message: str | bytes) -> None:
        if self.transport is None:
            await super().send(message)
        else:
            self.write_message(message)

    def write_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.write_frame(ws_frame(message.encode(), _OP_TEXT))
        else:
            self.write_frame(ws_frame(bytes(message), _OP_BINARY))

    def write_frame(self, frame: bytes) -> None:
        """Write ``frame`` (a single packet: ack, CONNECT, ping, emit to one socket) after the
        frames written before it, at the end of this event-loop iteration, together with any
        broadcast frames still waiting for the write delay (``FastFanout.emit``): one
        ``transport.write``, so one send system call, for all of them."""
        pending = self._pending
        pending.append(frame)
        if not self._urgent:
            self._urgent = True
            self.fanout.flush_soon(self)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        transport = self.transport
        if transport.is_closing() or self._sock.closed:
            return  # the connection is going away: the frames would be lost anyway
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self.stats.writes += 1
        if transport.get_write_buffer_size() > self.fanout.slow_client_buffer_bytes:
            self.fanout.drop_slow_client(self)


# --- the fan-out ----------------------------------------------------------------------------


def missing_source_markers(sources: Any) -> list[str]:
    """For ``(function or class, markers)`` pairs: each marker no longer in that object's
    source text (a library internal we rely on has changed), or a source that cannot be read."""
    problems: list[str] = []
    for obj, markers in sources:
        try:
            source = inspect.getsource(obj)
        except (OSError, TypeError) as exc:
            problems.append(f"cannot read the source of {obj.__qualname__} ({exc})")
            continue
        problems.extend(f"{obj.__qualname__} no longer contains {marker!r}" for marker in markers if marker not in source)
    return problems


def check_internals() -> list[str]:
    """What is missing from the library internals the fast path relies on (empty: all there)."""
    problems: list[str] = []
    for cls, names in (
        (AsyncSocket, ("send", "poll", "check_ping_timeout", "_websocket_handler", "_upgrade_websocket", "close")),
        (eio_aiohttp.WebSocket, ("__call__", "send", "close", "wait")),
        (socketio.AsyncManager, ("emit", "get_participants")),
        (socketio.AsyncServer, ("_send_eio_packet",)),
    ):
        for name in names:
            if not callable(getattr(cls, name, None)):
                problems.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    sources = (
        (AsyncSocket._websocket_handler, ("await self.poll()", "await ws.send(pkt.encode())", "await ws.close()", "await self.queue.put(None)")),
        (AsyncSocket._upgrade_websocket, ("self.server._async['websocket'](", "self._websocket_handler, self.server)")),
        # DirectWebSocket.__call__ repeats the driver's __call__: it must not have changed.
        (eio_aiohttp.WebSocket, ("self.handler = handler", "request = environ['aiohttp.request']\n        self._sock = WebSocketResponse(\n"
                                 "            max_msg_size=self.server.max_http_buffer_size)\n        await self._sock.prepare(request)\n\n"
                                 "        self.environ = environ\n        await self.handler(self)\n        return self._sock")),
    )
    problems.extend(missing_source_markers(sources))
    return problems


def _unverified_versions() -> list[str]:
    found = []
    for dist, verified in VERIFIED.items():
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if ".".join(version.split(".")[:2]) != verified:
            found.append(f"{dist} {version} (verified: {verified}.x)")
    return found


#: How a room's broadcast rate is followed (``FastFanout._room_busy``): the weight of each new
#: gap in the moving average, the gap (in write delays) a new room starts from, and the
#: longest gap counted (a pause of minutes must not take minutes of traffic to forget).
#: A new room at 50 broadcasts/s (with the default 50 ms delay) is busy from its fifth
#: broadcast; one with pairs of messages a moment apart, five a second, never is (its mean
#: gap is 200 ms).
GAP_WEIGHT = 0.25
QUIET_GAPS = 2.0
LONGEST_GAP = 20.0

#: Events that may wait (up to ``FastFanout.lazy_delay_s``) for the next write to each
#: recipient instead of taking a write of their own: ``room_stats`` is coalesced to about one
#: per second and room anyway, and it follows the room's messages, so in a busy room it rides
#: with the next one.  Alone, it cost a big room one more send system call per member and
#: second (at 5,000 members and 10 messages/s, one write in eleven).
LAZY_EVENTS = frozenset({"room_stats"})


class FastFanout:
    """Installed on one ``socketio.AsyncServer``; ``LocalDeliveryHook.emit`` calls ``emit``."""

    def __init__(self, sio: socketio.AsyncServer, *, slow_client_buffer_bytes: int = DEFAULT_SLOW_CLIENT_BUFFER_BYTES,
                 compress: bool = False, write_delay_s: float = 0.0, write_batch: int = 1,
                 lazy_delay_s: float = 0.0) -> None:
        self.sio = sio
        self.slow_client_buffer_bytes = slow_client_buffer_bytes
        self.compress = compress
        # Broadcast frames may wait up to write_delay_s (0: written at the end of every
        # event-loop iteration) for more, until a socket has write_batch of them: most of a
        # delivery's CPU is the send system call, not the bytes, so a socket that gets
        # several events per write costs a fraction per event (docs/protocol.md §6).
        self.write_delay_s = write_delay_s
        self.stats = FanoutStats()
        self.active = False
        self._dirty: list[DirectWebSocket] = []  # sockets with broadcast frames pending
        self.write_batch = write_batch
        self._flush_handle: asyncio.Handle | None = None
        self._flush_timed = False  # the pending flush waits for the write delay
        # room -> (loop time of its last broadcast here, moving average of the time between them)
        self._room_rate: dict[Any, tuple[float, float]] = {}
        self._urgent: list[DirectWebSocket] = []  # sockets with a single packet pending
        self._urgent_scheduled = False
        # LAZY_EVENTS frames wait up to lazy_delay_s (0: they are broadcast like any other).
        self.lazy_delay_s = lazy_delay_s
        self._lazy: list[DirectWebSocket] = []  # sockets whose only pending frames are lazy
        self._lazy_handle: asyncio.Handle | None = None

    def flush_soon(self, ws: DirectWebSocket) -> None:
        """Write ``ws``'s pending frames at the end of this event-loop iteration."""
        self._urgent.append(ws)
        self._schedule_urgent()

    def _schedule_urgent(self) -> None:
        if not self._urgent_scheduled:
            self._urgent_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_urgent)

    def _flush_urgent(self) -> None:
        self._urgent_scheduled = False
        urgent, self._urgent = self._urgent, []
        for ws in urgent:
            ws._urgent = False
        self._write_out(urgent)

    def _schedule_flush(self, full: bool) -> None:
        """When a busy room's frames pending now go out: once a socket has ``write_batch`` of
        them (``full``: at the end of this iteration) or the first of them has waited the
        write delay, whichever is first."""
        handle = self._flush_handle
        if handle is not None and not (full and self._flush_timed):
            return
        loop = asyncio.get_running_loop()
        if full:
            if handle is not None:
                handle.cancel()
            self._flush_handle = loop.call_soon(self._flush)
            self._flush_timed = False
        else:
            self._flush_handle = loop.call_at(loop.time() + self.write_delay_s, self._flush)
            self._flush_timed = True

    def _room_busy(self, namespace: str, room: Any) -> bool:
        """Whether ``room`` broadcasts often enough that its members will get another frame
        within the write delay (and notes this broadcast).  The measure is a moving average
        of the time between the room's broadcasts from this node: below the delay, a frame
        that waits is likely to share its write.  Two messages a moment apart in a room that
        is otherwise quiet do not make it busy (the second would wait for nothing)."""
        delay = self.write_delay_s
        if delay <= 0:
            return False
        try:
            key = (namespace, room)
            hash(key)
        except TypeError:  # a list of rooms
            key = (namespace, tuple(room))
        now = asyncio.get_running_loop().time()
        rooms = self._room_rate
        entry = rooms.get(key)
        if entry is None:
            gap = QUIET_GAPS * delay  # a room starts as quiet
        else:
            gap = entry[1] + GAP_WEIGHT * (min(now - entry[0], LONGEST_GAP * delay) - entry[1])
        rooms[key] = (now, gap)
        if len(rooms) > 4096:  # forget the rooms that are quiet by now
            self._room_rate = {k: v for k, v in rooms.items() if now - v[0] < LONGEST_GAP * delay}
        return gap < delay

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for ws in dirty:
            ws._dirty = False
        self._write_out(dirty)

    def _flush_lazy(self) -> None:
        self._lazy_handle = None
        lazy, self._lazy = self._lazy, []
        self._write_out(lazy)  # the sockets another write took along meanwhile are skipped

    def _write_out(self, sockets: list[DirectWebSocket]) -> None:
        limit = self.slow_client_buffer_bytes
        writes = 0
        for ws in sockets:  # DirectWebSocket.flush, inlined: this loop runs once per recipient
            pending = ws._pending
            if not pending:
                continue  # written already (by the other flush, or before a close)
            ws._pending = []
            transport = ws.transport
            try:
                if transport.is_closing() or ws._sock.closed:
                    continue
                transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
                writes += 1
                if transport.get_write_buffer_size() > limit:
                    self.drop_slow_client(ws)
            except Exception:  # one broken transport must not keep frames from the others
                log.exception("writing to a Socket.IO WebSocket failed")
        self.stats.writes += writes

    def install(self) -> bool:
        """Route this server's WebSockets through ``DirectWebSocket``; False (and the stock
        path everywhere) when the async mode is not aiohttp or an internal is missing."""
        eio = self.sio.eio
        if eio.async_mode != "aiohttp" or not isinstance(getattr(eio, "_async", None), dict) \
                or eio._async.get("websocket") is not eio_aiohttp.WebSocket:
            log.warning("fast fan-out off: Engine.IO is not on the stock aiohttp driver")
            return False
        problems = check_internals()
        if problems:
            log.warning("fast fan-out off (library internals changed): %s", "; ".join(problems))
            return False
        unverified = _unverified_versions()
        if unverified:
            log.warning("fast fan-out: structural checks pass, but not verified with %s", ", ".join(unverified))
        # A copy: the driver's dict is shared by every server of the process.
        eio._async = {**eio._async, "websocket": partial(DirectWebSocket, fanout=self)}
        self.active = True
        return True

    def drop_slow_client(self, ws: DirectWebSocket) -> None:
        """Disconnect at the transport level: the reader sees the connection lost and the
        usual cleanup runs; the client reconnects and catches up by since_seq."""
        transport = ws.transport
        size = transport.get_write_buffer_size()
        self.stats.slow_disconnects += 1
        socket = getattr(ws.handler, "__self__", None)
        log.warning("dropping slow Socket.IO client %s: %d bytes unsent (bound %d)",
                    getattr(socket, "sid", "?"), size, self.slow_client_buffer_bytes)
        transport.abort()

    async def emit(self, manager: socketio.AsyncManager, event: str, data: Any, namespace: str | None, room: Any,
                   skip_sid: Any) -> bool:
        """Deliver an event without ack callback to this node's participants of ``room``;
        False when the stock path must do it (binary data, values orjson cannot encode)."""
        if namespace is None or namespace not in manager.rooms:
            return True  # as the stock emit: nobody to deliver to
        if isinstance(data, tuple):
            args = [event, *data]
        elif data is None:
            args = [event]
        else:
            args = [event, data]
        try:
            body = orjson.dumps(args)
        except TypeError:  # bytes (binary attachments), non-string keys, huge ints ...
            self.stats.stock_broadcasts += 1
            return False
        text = (b"42" if namespace == "/" else b"42" + namespace.encode() + b",") + body
        frame = ws_frame(text)
        if isinstance(skip_sid, list):
            skip = set(skip_sid)
        else:
            skip = {skip_sid}
        lazy = self.lazy_delay_s > 0 and event in LAZY_EVENTS
        busy = not lazy and self._room_busy(namespace, room)
        eio = self.sio.eio
        sockets = eio.sockets
        now = time.time()
        ping_timeout = eio.ping_timeout
        queued: list[str] | None = None
        direct = 0
        dirty = self._dirty
        urgent = self._urgent
        waiting = self._lazy
        batch = self.write_batch
        full = False
        for sid, eio_sid in manager.get_participants(namespace, room):
            if sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None:
                continue
            ws = getattr(socket, "_direct", None)
            if ws is not None and not socket.closed:
                last_ping = socket.last_ping
                if not last_ping or now - last_ping <= ping_timeout:
                    # ws.write_frame(frame) (quiet room), the batched write or the lazy one,
                    # inlined: this loop runs once per recipient
                    pending = ws._pending
                    if lazy:
                        if not pending:
                            waiting.append(ws)  # no write is coming for it yet: the lazy flush is one
                    elif busy:
                        if not ws._dirty:
                            ws._dirty = True
                            dirty.append(ws)
                        if len(pending) + 1 >= batch:
                            full = True
                    elif not ws._urgent:
                        ws._urgent = True
                        urgent.append(ws)
                    pending.append(frame)
                    direct += 1
                    continue
            if queued is None:
                queued = []
            queued.append(eio_sid)
        if lazy:
            if waiting and self._lazy_handle is None:
                loop = asyncio.get_running_loop()
                self._lazy_handle = loop.call_at(loop.time() + self.lazy_delay_s, self._flush_lazy)
        elif busy:
            if dirty:
                self._schedule_flush(full or batch <= 1)
        elif urgent:
            self._schedule_urgent()
        stats = self.stats
        stats.broadcasts += 1
        stats.direct_deliveries += direct
        if queued:
            # The library's path, one recipient at a time (each send only puts on a queue,
            # so this does not wait; one packet object shared, as the stock emit does).
            pkt = eio_packet.Packet(eio_packet.MESSAGE, text[1:].decode())
            for eio_sid in queued:
                try:
                    await self.sio._send_eio_packet(eio_sid, pkt)
                except Exception:  # a socket closing under us: the packet would be lost anyway
                    log.debug("queued delivery of %s to %s failed", event, eio_sid, exc_info=True)
            stats.queued_deliveries += len(queued)
        return True
