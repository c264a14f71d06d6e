"""Socket.IO edge: authenticate the connection, validate payloads, call the session
layer once, answer the ack.  No business rules live here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import socketio

from ..auth import TokenVerifier, bearer_token
from ..errors import ChatError, Unauthorized, ValidationFailed
from ..schemas import DeleteMessageIn, EditMessageIn, JoinRoomIn, LeaveRoomIn, ReactIn, TypingIn, load, load_send_message, schema_of
from .acks import Outcome, acknowledge
from .broadcaster import room_channel, user_channel
from .connections import ConnState
from .drain import Departures, Drain
from .sessions import ChatSessions

log = logging.getLogger(__name__)


class SocketIOTransport:
    """Rooms of a Socket.IO connection are Socket.IO rooms (carried across nodes by the
    client manager)."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def enter(self, conn: ConnState, room_id: str) -> None:
        await self._sio.enter_room(conn.sid, room_channel(room_id))

    async def leave(self, conn: ConnState, room_id: str) -> None:
        await self._sio.leave_room(conn.sid, room_channel(room_id))


#: What these handlers read from a connection's environ (besides its address): the lean
#: transport keeps only these (realtime/lean_transport.py).
ENVIRON_KEYS = ("QUERY_STRING", "HTTP_AUTHORIZATION")

#: Events whose handler lets the connection's next event start once its message has its
#: place in the commit order (chat_server/pipelining.py); the lean transport honours it.
OVERLAPPING_EVENTS = frozenset({"send_message"})


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items() if v}


def token_from(environ: dict[str, Any], auth: Any) -> str | None:
    """PROTOCOL.md §2 order: ``auth.token``, then ``?token=``, then ``Authorization: Bearer``."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return str(auth["token"])
    query = _query(environ)
    if query.get("token"):
        return query["token"]
    return bearer_token(environ.get("HTTP_AUTHORIZATION"))


def _address(environ: dict[str, Any]) -> str | None:
    request = environ.get("aiohttp.request")
    return getattr(request, "remote", None) if request is not None else environ.get("REMOTE_ADDR")


class SocketIOHandlers:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        sessions: ChatSessions,
        verifier: TokenVerifier,
        *,
        auto_join_room: str | None,
        on_result: Callable[[str, str], None] | None = None,
        drain: Drain | None = None,
    ) -> None:
        self._drain = drain
        self._sio = sio
        self._sessions = sessions
        self._verifier = verifier
        self._auto_join_room = auto_join_room
        self._transport = SocketIOTransport(sio)
        self._on_result = on_result
        self.departures = Departures()  # disconnect cleanups, by sid; shutdown waits for them

    def register(self) -> None:
        # Event handlers take ``*_extra``: a client that emits more than one argument
        # (``emit("join_room", a, b, ack)``) must still get its ack, and python-socketio
        # would otherwise fail the call with a TypeError and never answer.
        sio = self._sio
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("join_room", self.join_room)
        sio.on("leave_room", self.leave_room)
        sio.on("send_message", self.send_message)
        sio.on("typing", self.typing)
        sio.on("react", self.react)
        sio.on("edit_message", self.edit_message)
        sio.on("delete_message", self.delete_message)
        sio.on("*", self.unknown_event)

    async def close_all(self) -> None:
        """Drop every Socket.IO connection of this node like a lost network would: clients
        reconnect (to another node behind the balancer) and catch up by since_seq.

        An Engine.IO CLOSE packet would read as "the server hung up on purpose", and
        python-socketio clients do not reconnect after that; closing the transport does
        make every stock client reconnect.

        All at once, as the /ws hub does: a close waits for its connection's disconnect
        cleanup (Redis and database round trips), and one after the other a few hundred of
        them outlasted the shutdown's grace period on a slow machine, so the connections
        not reached by then were never announced as gone (until a presence TTL later).
        Local delivery stops first: those departures are for the other nodes' users.
        """
        self._sio.manager.stop_local_delivery()  # manager.LocalDeliveryHook (app.py's managers all are)

        async def close(socket: Any) -> None:
            try:
                await socket.close(wait=False, abort=True)  # runs our disconnect cleanup
                socket.queue.put_nowait(None)  # the WebSocket writer closes the socket
            except Exception:
                log.exception("closing connection %s failed", getattr(socket, "sid", "?"))

        await asyncio.gather(*(close(socket) for socket in list(self._sio.eio.sockets.values())))
        self._sio.eio.sockets.clear()

    def _conn(self, sid: str) -> ConnState:
        conn = self._sessions.registry.get(sid)
        if conn is None:  # a handler raced the disconnect
            raise Unauthorized()
        return conn

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            user = self._verifier.verify(token_from(environ, auth))
        except ChatError:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        registry = self._sessions.registry
        conn = ConnState(conn_id=registry.conn_id(sid), sid=sid, user=user, transport=self._transport, address=_address(environ))
        await self._sio.enter_room(sid, user_channel(user.user_id))
        await self._sessions.connected(conn)
        query = _query(environ)
        wanted = None
        if isinstance(auth, dict):
            wanted = auth.get("room_id") or auth.get("roomId")
        wanted = wanted or query.get("room_id") or query.get("roomId") or self._auto_join_room
        if wanted:
            # Joined right away so live events flow; the client still calls join_room
            # (idempotent) when it wants the history in an ack.
            try:
                await self._sessions.join(conn, str(wanted))
            except ChatError as exc:
                log.info("auto-join of %s to %r refused: %s", user.user_id, wanted, exc.code)

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        # In a task of its own (``Departures``): the library calls this from the connection's
        # reader, which the HTTP server cancels when it shuts down.
        conn = self._sessions.registry.get(sid)
        if conn is not None:
            await self.departures.run(sid, lambda: self._sessions.disconnected(conn))

    def _context(self, sid: str, event: str) -> dict[str, Any]:
        conn = self._sessions.registry.get(sid)
        return {"sid": sid, "event": event, "user_id": conn.user.user_id if conn else None}

    async def _ack(self, event: str, sid: str, run: Outcome) -> dict[str, Any]:
        """Run a handler body and answer its ack (counted, and refused while draining)."""
        return await acknowledge(event, self._context(sid, event), run, self._on_result, self._drain)

    async def join_room(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            payload = load(schema_of(JoinRoomIn), data)
            conn = self._conn(sid)
            token_user = self._verifier.verify(payload["user_token"]) if payload["user_token"] else None
            return await self._sessions.join(conn, payload["room_id"], since_seq=payload["since_seq"], token_user=token_user)

        return await self._ack("join_room", sid, run)

    async def leave_room(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> None:
            payload = load(schema_of(LeaveRoomIn), data)
            await self._sessions.leave(self._conn(sid), payload["room_id"])

        return await self._ack("leave_room", sid, run)

    async def send_message(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            payload = load_send_message(data)
            message = await self._sessions.send(
                self._conn(sid),
                payload["room_id"],
                content=payload["content"],
                type=payload["type"],
                client_msg_id=payload["client_msg_id"],
                reply_to=payload["reply_to"],
            )
            return {"message": message.to_dict()}

        return await self._ack("send_message", sid, run)

    async def typing(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> None:
            payload = load(schema_of(TypingIn), data)
            await self._sessions.typing(self._conn(sid), payload["room_id"], payload["is_typing"])

        return await self._ack("typing", sid, run)

    async def react(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            payload = load(schema_of(ReactIn), data)
            change = await self._sessions.react(self._conn(sid), payload["message_id"], payload["reaction"], remove=payload["remove"])
            return {"reactions": change.reactions, "action": change.action}

        return await self._ack("react", sid, run)

    async def edit_message(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> dict[str, Any]:
            payload = load(schema_of(EditMessageIn), data)
            message = await self._sessions.edit_message(self._conn(sid), payload["message_id"], payload["content"])
            return {"message": message.to_dict()}

        return await self._ack("edit_message", sid, run)

    async def delete_message(self, sid: str, data: Any = None, *_extra: Any) -> dict[str, Any]:
        async def run() -> None:
            payload = load(schema_of(DeleteMessageIn), data)
            await self._sessions.delete_message(self._conn(sid), payload["message_id"])

        return await self._ack("delete_message", sid, run)

    async def unknown_event(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        async def run() -> None:
            raise ValidationFailed(f"Unknown event {event!r}", details={"event": [f"Unknown event {event!r}."]})

        return await self._ack(event, sid, run)

