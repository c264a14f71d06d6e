"""Engine.IO WebSocket clients served on the raw connection (docs/protocol.md §6 "Performance",
"Memory per connection").

Why.  A Socket.IO client that opens its WebSocket directly (``GET /socket.io/?EIO=4&
transport=websocket``, what our clients and most others do) costs, on the stock path, an
aiohttp request handler suspended for the connection's lifetime (two tasks, the parsed
request and headers, every middleware's coroutine frame, a ``WebSocketResponse`` with its
reader, writer and queues) plus Engine.IO's per-socket writer task, queue, a reader task
and ``wait_for`` per read, and a task sleeping between pings: about 33 KiB per idle
connection, against 21 KiB for Node's socket.io.  Here the connection is taken over once the
application accepted it, and an idle connection costs its transport, two small objects and a
timer.

How.  ``LeanWebSockets.handle_get`` serves the Engine.IO endpoint's GETs.  A plain opening
handshake of a new WebSocket client is served here; anything else (long-polling, upgrades
from polling, another Engine.IO version, a refused origin, a malformed handshake, HEAD ...)
goes to ``engineio.AsyncServer.handle_request`` unchanged.  Serving one:
1. what Engine.IO's ``_handle_connect`` does for a WebSocket client: a new socket (a
   ``LeanSocket``) in ``eio.sockets``, the application's ``connect`` event (python-socketio
   stores the environ), a refusal answered 401 as before;
2. the environ trimmed to what the application reads later (``environ_keys``, and
   ``REMOTE_ADDR`` set to the client's address), so the request is not kept alive by it;
3. the connection taken from aiohttp: ``transport.set_protocol(LeanWebSocket)``, then aiohttp's
   request handler is told the connection is gone (``transport`` cleared first, so it never
   writes to or closes it; it forgets the connection like a closed one), and the handler
   returns a response aiohttp writes nothing for.  The 101 answer and Engine.IO's OPEN packet
   are written, and bytes aiohttp had read past the request head are fed to the reader;
4. from then on ``LeanWebSocket`` reads frames itself (``rfc6455.FrameReader``) and hands
   each message to ``socket.receive`` in order, one at a time (a task exists only while
   messages wait), as Engine.IO's reader loop did; Socket.IO events go straight to their
   handler where ``direct_events.DirectEvents`` takes them; it writes through the fast fan-out's
   direct path (it is a ``DirectWebSocket``), so every packet keeps its order as before.
   Pings run on a timer per socket (``LeanSocket.schedule_ping``); a client that does not
   answer one within ``ping_timeout`` is closed, as Engine.IO's checks would.

Ends.  A client's CLOSE frame is answered (its code echoed) and the connection closed.  A
protocol error (answered with its close code: 1002, 1007 invalid UTF-8, 1009 over
``max_http_buffer_size``) or a server-side close (``disconnect``, ping timeout, shutdown's
``close_all``) sends our CLOSE frame after the frames written before, shuts our side, and
drops what the client still sends until it closes its side (``CLOSE_TIMEOUT`` at most;
closing with unread input would reset the connection and could lose the CLOSE frame).  A lost
connection or a slow client dropped by the fan-out (``transport.abort``) just ends.  In every
case the socket is then closed with reason ``TRANSPORT_CLOSE`` (the application's
``disconnect`` runs), after the messages already read were handled, and leaves
``eio.sockets``.

Library internals this relies on (``check_internals``; when one is missing every request
takes the stock path and a warning is logged; tests/realtime/test_lean_transport.py fails):
- aiohttp: ``request.protocol`` (a ``RequestHandler``) and ``request.transport``; the
  handler's ``_upgraded`` and ``_message_tail`` (bytes read past an upgrade request's head);
  once its ``transport`` attribute is None, ``connection_lost(None)`` and what follows
  (``force_close``, the end of ``start``) never touch the transport; a response whose
  ``prepare``/``write_eof`` write nothing is accepted.  Checked in their source text.
- python-engineio: ``AsyncServer.sockets``, ``generate_id``, ``_trigger_event``,
  ``start_service_task``/``_service_task``/``start_background_task``,
  ``_cors_allowed_origins``, ``_unauthorized``, ``_make_response``, ``reason``,
  ``_async['create_route'|'translate_request']``; ``_handle_connect``'s OPEN packet and order
  (checked in its source); ``AsyncSocket.schedule_ping``/``_send_ping`` (repeated here with a
  timer), ``receive``, ``close``, the reader loop of ``_websocket_handler`` (repeated here).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import engineio
import socketio
from aiohttp import HttpVersion11, web
from aiohttp import base_protocol as aiohttp_base_protocol
from aiohttp import web_protocol as aiohttp_web_protocol
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket

from ..pipelining import EventPipeline
from .direct_events import DirectEvents, missing_internals
from .fanout import DirectSocket, DirectWebSocket, FastFanout, missing_source_markers, ws_frame
from .rfc6455 import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    close_code,
    close_frame,
    handshake_key,
    handshake_response,
)

log = logging.getLogger(__name__)

#: Read no more from a client while this many bytes of its messages wait to be handled.
INBOX_LIMIT = 64 * 1024
#: After our CLOSE frame, how long the client may take to close its side.
CLOSE_TIMEOUT = 5.0

_END = None  # in a connection's inbox: the connection ended, close the socket
_tasks: set[asyncio.Task[Any]] = set()  # ping-timeout closes in flight (the loop keeps weak references)


class _NoQueue:
    """A lean socket's ``queue`` once its WebSocket runs: packets are written at once, never
    queued.  What the library could still put there after the end (the connection is gone)
    is dropped, as Engine.IO's writer task, gone too, would never have sent it."""

    __slots__ = ()

    def put_nowait(self, item: Any) -> None:
        pass

    async def put(self, item: Any) -> None:
        pass

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty()

    async def get(self) -> Any:
        raise eio_exceptions.QueueEmpty()

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True


NO_QUEUE = _NoQueue()


class LeanSocket(DirectSocket):
    """An Engine.IO socket living on a ``LeanWebSocket`` from its OPEN packet on: no queue,
    no writer task, and a timer between pings instead of a task."""

    _ping_timer: asyncio.TimerHandle | None = None
    last_ping: float | None  # Engine.IO's: when the unanswered PING was sent (None: none is)

    def schedule_ping(self) -> None:
        # AsyncSocket.schedule_ping's rule: a new ping only once the last one was answered.
        if self.last_ping:
            self.last_ping = None
            self._arm(self.server.ping_interval, self._ping)

    def _arm(self, delay: float, callback: Any) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._ping_timer = asyncio.get_running_loop().call_later(delay, callback)

    def disarm(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _ping(self) -> None:
        # AsyncSocket._send_ping after its sleep, with the PING written directly.
        self._ping_timer = None
        ws = self._direct
        if self.closing or self.closed or ws is None:
            return
        self.last_ping = time.time()
        ws.write_message(eio_packet.Packet(eio_packet.PING).encode())
        ws.stats.direct_packets += 1
        self._arm(self.server.ping_timeout, self._pong_overdue)

    def _pong_overdue(self) -> None:
        # No PONG (which would have re-armed the ping timer) within ping_timeout: closed as
        # AsyncSocket.check_ping_timeout closes a client that is gone.
        self._ping_timer = None
        if self.closing or self.closed or not self.last_ping:
            return
        task = asyncio.ensure_future(self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        await super().close(wait=wait, abort=abort, reason=reason)
        self.disarm()
        ws = self._ws
        if isinstance(ws, LeanWebSocket):
            ws.end(CLOSE_NORMAL)  # after the CLOSE packet (unless abort): the client needs no reader for it


class LeanWebSocket(DirectWebSocket, asyncio.Protocol):
    """The connection's protocol once taken from aiohttp, and the socket's WebSocket for the
    fast fan-out (``FastFanout`` and ``DirectWebSocket`` write its frames)."""

    def __init__(self, socket: LeanSocket, transport: asyncio.Transport, *, fanout: FastFanout, max_size: int,
                 events: DirectEvents | None = None) -> None:
        # ``handler``: only its ``__self__`` (the socket) is read (FastFanout.drop_slow_client).
        super().__init__(socket._websocket_handler, socket.server, fanout=fanout)
        self._sock: Any = self  # the fan-out's "is the WebSocket closed" is ``ws._sock.closed``
        self.closed = False
        self.transport = transport
        self.socket = socket
        self._events = events  # Socket.IO events served without the library's layers (None: all stock)
        self._pipeline = EventPipeline()  # the order of those events (pipelining.py)
        self._reader = FrameReader(max_size)
        self._inbox: list[str | bytes | None] | None = None  # messages waiting for the socket
        self._inbox_bytes = 0
        self._task: asyncio.Task[None] | None = None  # handing the inbox to the socket
        self._ended = False  # _END is in the inbox
        self._reading = True
        self._linger: asyncio.TimerHandle | None = None  # closing: the client's side may stay open until then

    # --- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # closing: what the client still sends is dropped
        error = None
        try:
            messages = self._reader.feed(data)
        except WebSocketError as exc:
            messages, error = exc.messages, exc
        for opcode, payload in messages:
            if opcode == OP_TEXT or opcode == OP_BINARY:
                self._deliver(payload)
            elif opcode == OP_PING:
                self.write_frame(ws_frame(payload, OP_PONG))  # type: ignore[arg-type]
            elif opcode == OP_CLOSE:
                self._shutdown(close_frame(close_code(payload)), answer=True)  # type: ignore[arg-type]
                return
            # OP_PONG: nothing to do (Engine.IO has its own pings)
        if error is not None:
            log.info("Socket.IO WebSocket %s closed: %s", self.socket.sid, error)
            self._shutdown(close_frame(error.code))

    def eof_received(self) -> None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._pending = []
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._end_socket()

    # --- Engine.IO's WebSocket wrapper interface ---------------------------------------------

    async def close(self) -> None:
        self.end(CLOSE_NORMAL)

    async def wait(self) -> Any:
        raise OSError("a lean WebSocket is read by its protocol")  # never called: no Engine.IO reader runs

    def end(self, code: int) -> None:
        """Close the connection with ``code`` after the frames written so far."""
        self._shutdown(close_frame(code))

    # --- internals ---------------------------------------------------------------------------

    def _shutdown(self, close: bytes, *, answer: bool = False) -> None:
        """Send ``close`` after the frames written so far and end the connection.  Unless it
        answers the client's CLOSE, our side is shut (FIN) and what the client still sends
        is read and dropped until it closes its side (at most ``CLOSE_TIMEOUT``): closing a
        socket with unread input would reset it, and the client could lose our CLOSE."""
        if self.closed:
            return
        self.flush()  # what was written before the end goes out before the CLOSE frame
        self.closed = True
        transport = self.transport
        if not transport.is_closing():
            transport.write(close)
            if not answer and transport.can_write_eof():
                transport.write_eof()
                self._linger = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)
            else:
                transport.close()
        self._end_socket()

    def _deliver(self, message: str | bytes | None) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = []
        inbox.append(message)
        if message is not None:
            self._inbox_bytes += len(message)
            if self._inbox_bytes > INBOX_LIMIT and self._reading:
                self._reading = False
                self.transport.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _end_socket(self) -> None:
        if not self._ended:
            self._ended = True
            self._deliver(_END)

    async def _run(self) -> None:
        # Engine.IO's reader loop (AsyncSocket._websocket_handler), fed by data_received.
        stopped = False  # the loop would have ended: what remains before _END is not handed on
        try:
            while True:
                batch = self._inbox
                if not batch:
                    return
                self._inbox = None
                for index, message in enumerate(batch, 1):
                    if message is _END:
                        await self._pipeline.settle()  # acks owed before the disconnect is handled
                        await self._finish()
                        return
                    self._inbox_bytes -= len(message)
                    if not stopped:
                        stopped = not await self._receive(message, index < len(batch) or bool(self._inbox))
                if not self._reading and not self.closed and self._inbox_bytes <= INBOX_LIMIT // 2:
                    self._reading = True
                    self.transport.resume_reading()
        finally:
            self._task = None

    async def _receive(self, message: str | bytes, more_waiting: bool) -> bool:
        """Hand one message to the socket; False (and the connection closed) where Engine.IO's
        reader loop would have ended.  ``more_waiting``: the connection's next message has
        arrived already."""
        socket = self.socket
        events = self._events
        if events is not None and type(message) is str:
            try:
                taken = events.take(socket, message)
            except Exception:  # a bug there must not stop this connection's reader: the stock path decides
                log.exception("direct event path failed; the stock path takes the message")
                taken = None
            if taken is not None:
                handler, args, ack_id, overlap = taken
                await self._pipeline.run(events.run(socket, handler, args, ack_id), overlap=overlap, more_waiting=more_waiting)
                return True
        await self._pipeline.settle()  # the stock path after overlapping events: in order
        try:
            pkt = eio_packet.Packet(encoded_packet=message)
        except Exception:
            log.info("Socket.IO WebSocket %s closed: not an Engine.IO packet", socket.sid)
            self._shutdown(close_frame(CLOSE_PROTOCOL_ERROR))
            return False
        try:
            await socket.receive(pkt)
        except eio_exceptions.UnknownPacketError:
            pass
        except eio_exceptions.SocketIsClosedError:
            self._shutdown(close_frame(CLOSE_NORMAL))
            return False
        except asyncio.CancelledError:
            raise
        except Exception:  # as Engine.IO's reader: logged, and the connection goes on
            socket.server.logger.exception("Unknown receive error")
        return True

    async def _finish(self) -> None:
        socket = self.socket
        try:
            await socket.close(wait=False, abort=True, reason=socket.server.reason.TRANSPORT_CLOSE)
        finally:
            socket.disarm()
            if socket._ws is self:
                socket._direct = None
                socket._ws = None
            sockets = socket.server.sockets
            if sockets.get(socket.sid) is socket:
                del sockets[socket.sid]


class _TakenOver(web.StreamResponse):
    """What the handler returns for a connection it took from aiohttp: nothing to write (aiohttp
    no longer has the transport); status 101 for the access log."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class LeanWebSockets:
    """Installed on one ``socketio.AsyncServer`` whose fast fan-out is on, before
    ``sio.attach(app)``: the Engine.IO endpoint's GET route becomes ``handle_get``."""

    def __init__(self, sio: socketio.AsyncServer, fanout: FastFanout, *, environ_keys: Iterable[str],
                 overlapping: Iterable[str] = ()) -> None:
        self.sio = sio
        self.eio = sio.eio
        self.fanout = fanout
        # What the application reads from the environ after the Engine.IO connect (plus
        # REMOTE_ADDR, always set to the client's address).
        self.environ_keys = tuple(environ_keys)
        # Events that may let the connection's next one start before they end (pipelining.py).
        self.overlapping = frozenset(overlapping)
        self.active = False
        self.events: DirectEvents | None = None

    def install(self) -> bool:
        eio = self.eio
        if not self.fanout.active or self.fanout.compress:
            log.warning("lean Socket.IO WebSockets off: they need the fast fan-out without compression")
            return False
        if not isinstance(getattr(eio, "_async", None), dict) or eio._async.get("create_route") is not eio_aiohttp.create_route:
            log.warning("lean Socket.IO WebSockets off: Engine.IO is not on the stock aiohttp driver")
            return False
        problems = check_internals()
        if problems:
            log.warning("lean Socket.IO WebSockets off (library internals changed): %s", "; ".join(problems))
            return False
        eio._async = {**eio._async, "create_route": self._create_route}  # a copy: the driver's is shared
        self.active = True
        event_problems = missing_internals(self.sio)
        if event_problems:
            log.warning("Socket.IO events of lean WebSockets take the stock path (library internals changed): %s",
                        "; ".join(event_problems))
        else:
            self.events = DirectEvents(self.sio, self.fanout.stats, overlapping=self.overlapping)
        return True

    def _create_route(self, app: web.Application, engineio_server: Any, endpoint: str) -> None:
        # As the driver's create_route, with GET (and HEAD) here.
        app.router.add_get(endpoint, self.handle_get)
        app.router.add_post(endpoint, engineio_server.handle_request)
        app.router.add_route("OPTIONS", endpoint, engineio_server.handle_request)

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        eio = self.eio
        key = self._handshake(request)
        if key is None:
            return await eio.handle_request(request)  # type: ignore[no-any-return]
        environ = eio._async["translate_request"](request)
        if eio.cors_allowed_origins != []:
            origin = environ.get("HTTP_ORIGIN")
            if origin:
                allowed = eio._cors_allowed_origins(environ)
                if allowed is not None and origin not in allowed:
                    return await eio.handle_request(request)  # type: ignore[no-any-return]  # refused there, as before
        return await self._connect(request, environ, key)

    def _handshake(self, request: web.Request) -> str | None:
        """The WebSocket key of a new Engine.IO v4 WebSocket client's plain handshake that can
        be served here, else None (the stock path serves the request)."""
        if request.method != "GET" or request.version != HttpVersion11:
            return None
        query = parse_qs(request.query_string)  # as Engine.IO reads it
        if query.get("transport") != ["websocket"] or query.get("EIO") != ["4"] or "sid" in query or "j" in query:
            return None
        if "websocket" not in self.eio.transports:
            return None
        transport = request.transport
        protocol = request.protocol
        if transport is None or transport.is_closing() or not hasattr(transport, "set_protocol") \
                or getattr(protocol, "_upgraded", None) is not True or not isinstance(getattr(protocol, "_message_tail", None), bytes):
            return None
        return handshake_key(request.headers)

    async def _connect(self, request: web.Request, environ: dict[str, Any], key: str) -> web.StreamResponse:
        eio = self.eio
        # Engine.IO's _handle_connect for a WebSocket client.
        if eio.start_service_task:
            eio.start_service_task = False
            eio.service_task_handle = eio.start_background_task(eio._service_task)
        sid = eio.generate_id()
        socket = LeanSocket(eio, sid)
        eio.sockets[sid] = socket
        ret = await eio._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            eio.sockets.pop(sid, None)
            eio.logger.warning("Application rejected connection")
            return await eio._make_response(eio._unauthorized(ret or None), environ)  # type: ignore[no-any-return]
        transport = request.transport
        if transport is None or transport.is_closing() or socket.closing or socket.closed:
            # the client left, or the socket was closed (shutdown), while it was being accepted
            await socket.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
            eio.sockets.pop(sid, None)
            return _TakenOver()
        self._trim(environ, request.remote)
        ws, tail = self._take_over(request, transport, socket)
        # The 101 answer and the OPEN packet, then what the connect event sent (queued, as the
        # stock path does before the WebSocket starts): from here on every packet is direct.
        opening = eio_packet.Packet(eio_packet.OPEN, {
            "sid": sid,
            "upgrades": [],  # a WebSocket client has nothing to upgrade to
            "pingTimeout": int(eio.ping_timeout * 1000),
            "pingInterval": int(eio.ping_interval + eio.ping_interval_grace_period) * 1000,
            "maxPayload": eio.max_http_buffer_size,
        })
        transport.write(handshake_response(key) + ws_frame(opening.encode().encode()))
        queue = socket.queue
        socket.queue = NO_QUEUE
        while not queue.empty():
            pkt = queue.get_nowait()
            if pkt is not None:
                ws.write_message(pkt.encode())
        socket.connected = True
        socket.upgraded = True
        socket._ws = ws
        socket._direct = ws
        socket.schedule_ping()
        if tail:
            ws.data_received(tail)  # what the client sent right after its handshake, before anything newer
        return _TakenOver()

    def _trim(self, environ: dict[str, Any], address: str | None) -> None:
        """Keep only what the application reads later: the full environ holds the request
        (``aiohttp.request``, ``wsgi.input``) and every header for the connection's lifetime."""
        kept = {k: environ[k] for k in self.environ_keys if k in environ}
        kept["REMOTE_ADDR"] = address if address is not None else environ.get("REMOTE_ADDR")
        environ.clear()  # in place: python-socketio holds this dict (clear() also frees its table)
        environ.update(kept)

    def _take_over(self, request: web.Request, transport: asyncio.Transport, socket: LeanSocket) -> tuple[LeanWebSocket, bytes]:
        protocol = request.protocol
        tail: bytes = protocol._message_tail  # type: ignore[attr-defined]
        protocol._message_tail = b""  # type: ignore[attr-defined]
        ws = LeanWebSocket(socket, transport, fanout=self.fanout, max_size=self.eio.max_http_buffer_size, events=self.events)
        transport.set_protocol(ws)
        # aiohttp forgets the connection as if it were lost, without touching the transport.
        protocol.transport = None
        protocol.connection_lost(None)
        try:
            if not transport.is_reading():  # aiohttp may have paused it for a long tail
                transport.resume_reading()
        except (AttributeError, NotImplementedError, RuntimeError):  # pragma: no cover - no flow control
            pass
        return ws, tail


def check_internals() -> list[str]:
    """What is missing from the library internals the lean transport relies on (empty: all there)."""
    problems: list[str] = []
    eio_server = engineio.AsyncServer
    for cls, names in (
        (eio_server, ("handle_request", "generate_id", "_trigger_event", "start_background_task", "_service_task",
                      "_cors_allowed_origins", "_unauthorized", "_make_response")),
        (AsyncSocket, ("schedule_ping", "receive", "close", "check_ping_timeout", "_websocket_handler")),
        (aiohttp_web_protocol.RequestHandler, ("connection_lost", "force_close", "data_received")),
    ):
        for name in names:
            if not callable(getattr(cls, name, None)):
                problems.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    handler_slots = set(getattr(aiohttp_web_protocol.RequestHandler, "__slots__", ())) | set(aiohttp_base_protocol.BaseProtocol.__slots__)
    problems.extend(f"aiohttp RequestHandler.{name} is gone" for name in ("_message_tail", "_upgraded", "transport") if name not in handler_slots)
    sources = (
        (eio_server._handle_connect, (
            "s = async_socket.AsyncSocket(self, sid)", "self.sockets[sid] = s", "'upgrades': self._upgrades(sid, transport)",
            "'pingTimeout': int(self.ping_timeout * 1000)", "self.ping_interval + self.ping_interval_grace_period) * 1000",
            "'maxPayload': self.max_http_buffer_size", "await s.send(pkt)",
            "await self._trigger_event('connect', sid, environ,", "return self._unauthorized(ret or None)", "s.schedule_ping()")),
        (eio_server.handle_request, ("self._cors_allowed_origins(environ)", "query.get('EIO') != ['4']")),
        (AsyncSocket.schedule_ping, ("if self.last_ping:", "self.last_ping = None", "self._send_ping")),
        (AsyncSocket._send_ping, ("await asyncio.sleep(self.server.ping_interval)", "self.last_ping = time.time()",
                                  "packet.Packet(packet.PING)")),
        (AsyncSocket.check_ping_timeout, ("reason=self.server.reason.PING_TIMEOUT",)),
        (AsyncSocket._websocket_handler, ("pkt = packet.Packet(encoded_packet=p)", "await self.receive(pkt)",
                                          "except exceptions.UnknownPacketError:", "except exceptions.SocketIsClosedError:",
                                          "reason=self.server.reason.TRANSPORT_CLOSE")),
        (eio_aiohttp.create_route, ("app.router.add_get(engineio_endpoint, engineio_server.handle_request)",
                                    "app.router.add_post(engineio_endpoint, engineio_server.handle_request)",
                                    "app.router.add_route('OPTIONS', engineio_endpoint,")),
        (aiohttp_web_protocol.RequestHandler.data_received, ("self._message_tail = tail", "self._message_tail += data")),
        (aiohttp_web_protocol.RequestHandler.force_close, ("if self.transport is not None:",)),
        (aiohttp_web_protocol.RequestHandler.connection_lost, ("self.force_close()", "super().connection_lost(exc)")),
        (aiohttp_web_protocol.RequestHandler.start, ("if not self._force_close:", "if self.transport is not None:\n                self.transport.close()")),
        (aiohttp_web_protocol.RequestHandler.finish_response, ("await prepare_meth(request)", "await resp.write_eof()")),
        (aiohttp_base_protocol.BaseProtocol.connection_lost, ("self.transport = None",)),
    )
    problems.extend(missing_source_markers(sources))
    for name in ("TRANSPORT_CLOSE", "PING_TIMEOUT"):
        if not hasattr(getattr(eio_server, "reason", None), name):
            problems.append(f"engineio AsyncServer.reason.{name}")
    return problems
