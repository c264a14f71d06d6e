"""Socket.IO events of lean WebSocket clients handed straight to their handler (docs/protocol.md
§6 "Performance", "Events in").

Why.  On the stock path an event such as ``42["send_message",{...}]`` passes through
Engine.IO's packet class and ``AsyncSocket.receive``, Engine.IO's ``_trigger_event``, Socket.IO's
packet class (a second decode and a walk of the data looking for ``bytes``),
``_handle_eio_message``, ``_handle_event``, ``_handle_event_internal`` and
``_trigger_event`` (an ``inspect.iscoroutinefunction`` per call), and its ack back through a
Socket.IO packet (another walk for ``bytes``), ``_send_packet``, ``send_packet`` and an
Engine.IO packet: about a fifth of the server's CPU per message in a profile of the ingest
benchmark, for work that is the same for every event.

What.  ``DirectEvents.take`` reads a text message of the form ``42[<id>]["event", ...]``
(Engine.IO MESSAGE, Socket.IO EVENT, default namespace, no attachments) the way
``socketio.Packet.decode`` reads it, with the server's JSON module, and finds the handler
``AsyncServer._get_event_handler`` would call: the one registered for that event on ``/``.
``run`` then does what ``_handle_event`` and ``_handle_event_internal`` do with
``async_handlers=False``: it awaits the handler with ``(sid, *arguments)``, and answers an
ack as ``[result]`` (``[]`` for None, a tuple spread) in a ``43<id>[...]`` text written on the
socket's direct path, in order with everything else written to it.

Anything else takes the stock path unchanged, decided before any effect: other packet types,
namespaces, binary events and attachments in progress, an id that is not plain digits, JSON
that does not parse to a list starting with a string, reserved events (``connect``,
``disconnect``), events without their own handler (the catch-all), handlers that are not
coroutine functions, a connection not (or no longer) on ``/``, an ack that is not plain JSON
(``bytes`` would make it a binary ack), and a socket that is closed or not direct.  An
exception in a handler is logged as Engine.IO logs it and the connection goes on.

Library internals this relies on (``missing_internals``; the lean transport is off when one
changed): the code of ``AsyncSocket.receive``, ``_handle_eio_message``, ``_handle_event``,
``_handle_event_internal`` and ``_get_event_handler`` (checked in their source),
``manager.sid_from_eio_sid`` / ``is_connected`` and ``_binary_packet``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import socketio
from engineio.async_socket import AsyncSocket
from socketio import base_server as sio_base_server

from .fanout import DirectSocket, FanoutStats, missing_source_markers

_EVENT_PREFIX = "42"  # Engine.IO MESSAGE (4) carrying a Socket.IO EVENT (2)
_ACK_PREFIX = "3"  # Socket.IO ACK, default namespace
_MAX_ID_DIGITS = 15  # Socket.IO's decoder refuses 100 digits; longer ids take the stock path


class DirectEvents:
    """Event packets of one ``socketio.AsyncServer`` (with ``async_handlers=False``) read and
    dispatched without the library's per-packet layers."""

    def __init__(self, sio: socketio.AsyncServer, stats: FanoutStats, *, overlapping: frozenset[str] = frozenset()) -> None:
        self.sio = sio
        self.stats = stats
        self._overlapping = overlapping  # events that may let the next one start early (pipelining.py)
        self._loads = sio.packet_class.json.loads
        self._dumps = sio.packet_class.json.dumps
        # handler -> is a coroutine function (asked once per handler, not per event)
        self._coroutine: dict[Any, bool] = {}

    def take(self, socket: DirectSocket, message: str) -> tuple[Callable[..., Any], tuple[Any, ...], int | None, bool] | None:
        """``(handler, arguments, ack id, overlaps)`` for an event this path serves, else
        None (the stock path serves ``message``).  Nothing has happened yet either way.
        ``overlaps``: the event is one of ``overlapping``."""
        if not message.startswith(_EVENT_PREFIX):
            return None
        sio = self.sio
        eio_sid = socket.sid
        if eio_sid in sio._binary_packet:
            return None  # this message is an attachment of an earlier binary packet
        i = message.find("[", 2)
        digits = message[2:i]
        if i < 0 or len(digits) > _MAX_ID_DIGITS or (digits and not (digits.isascii() and digits.isdigit())):
            return None  # a namespace, an attachment count, or no data
        ack_id = int(digits) if digits else None
        try:
            data = self._loads(message[i:])
        except Exception:  # not JSON, or nested too deep (RecursionError): the stock path logs it, as before
            return None
        if type(data) is not list or not data or type(data[0]) is not str:
            return None
        event = data[0]
        if event in sio.reserved_events:
            return None
        handler = sio.handlers.get("/", {}).get(event)
        if handler is None or not self._is_coroutine(handler):
            return None
        manager = sio.manager
        sid = manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None or not manager.is_connected(sid, "/"):
            return None
        self.stats.direct_events += 1
        return handler, (sid, *data[1:]), ack_id, event in self._overlapping

    async def run(self, socket: DirectSocket, handler: Callable[..., Any], args: tuple[Any, ...], ack_id: int | None) -> None:
        """Run a taken event and answer its ack, as ``_handle_event_internal`` would."""
        sio = self.sio
        try:
            try:
                result = await handler(*args)
            except asyncio.CancelledError:
                result = None  # as python-socketio: a cancelled handler is answered like None
            if ack_id is None or result is sio.not_handled:
                return
            data = [] if result is None else list(result) if isinstance(result, tuple) else [result]
            try:
                text = f"{_ACK_PREFIX}{ack_id}{self._dumps(data, separators=(',', ':'))}"
            except (TypeError, ValueError):  # not plain JSON (bytes: a binary ack)
                await sio._send_packet(socket.sid, sio.packet_class(socketio.packet.ACK, namespace="/", id=ack_id, data=data))
                return
            await socket.send_message(text)
        except Exception:  # as Engine.IO's handler runner: logged, and the connection goes on
            sio.eio.logger.exception("message async handler error")

    def _is_coroutine(self, handler: Any) -> bool:
        known = self._coroutine.get(handler)
        if known is None:
            if len(self._coroutine) > 256:  # handlers re-registered over and over: start again
                self._coroutine.clear()
            known = self._coroutine[handler] = inspect.iscoroutinefunction(handler)
        return known


def missing_internals(sio: socketio.AsyncServer) -> list[str]:
    """What this path relies on and no longer finds (empty: all there)."""
    problems: list[str] = []
    if sio.async_handlers:
        problems.append("AsyncServer(async_handlers=True): events would each run in a task")
    for name in ("_binary_packet", "handlers", "manager", "not_handled", "reserved_events", "_send_packet"):
        if not hasattr(sio, name):
            problems.append(f"socketio.AsyncServer.{name}")
    server = socketio.AsyncServer
    sources = (
        (AsyncSocket.receive, ("elif pkt.packet_type == packet.MESSAGE:", "'message', self.sid, pkt.data,")),
        (server._handle_eio_message, ("if eio_sid in self._binary_packet:", "pkt = self.packet_class(encoded_packet=data)",
                                      "elif pkt.packet_type == packet.EVENT:",
                                      "await self._handle_event(eio_sid, pkt.namespace, pkt.id,")),
        (server._handle_event, ("sid = self.manager.sid_from_eio_sid(eio_sid, namespace)",
                                "if not self.manager.is_connected(sid, namespace):", "if self.async_handlers:",
                                "await self._handle_event_internal(self, sid, eio_sid, data,")),
        (server._handle_event_internal, ("r = await server._trigger_event(data[0], namespace, sid, *data[1:])",
                                         "if r != self.not_handled and id is not None:", "data = list(r)",
                                         "packet.ACK, namespace=namespace, id=id, data=data))")),
        (server._trigger_event, ("handler, args = self._get_event_handler(event, namespace, args)",
                                 "if inspect.iscoroutinefunction(handler):", "ret = await handler(*args)")),
        (sio_base_server.BaseServer._get_event_handler, ("if event in self.handlers[namespace]:",
                                                         "handler = self.handlers[namespace][event]")),
    )
    problems.extend(missing_source_markers(sources))
    return problems
