"""Plain WebSocket edge: ``GET /ws`` with the JSON protocol of PROTOCOL.md §3.

Mirrors the Socket.IO edge (``socketio_handlers``): authenticate, validate each frame,
call ``ChatSessions`` once, answer.  No business rule lives here, so whatever the
sessions and services enforce (membership, limits, moderation, bans, idempotency)
applies to /ws exactly as to Socket.IO.

Fan-out reuses the Socket.IO client manager: every event the broadcaster emits to a
room channel ``r:<room>`` or a user channel ``u:<user>`` is handed, on every node (via
Redis when configured), to ``LocalDeliveryHook.local_listeners``.  ``WsHub`` is such a
listener and also the ``Transport`` of /ws connections: entering a room registers the
connection in this node's room index, and an event for that room is translated once,
encoded once and queued to each /ws connection of the room on this node.  Each
connection has its own bounded send queue and writer task, so a slow client never
slows the broadcast (it is closed when its queue overflows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
import socketio
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_apigami import docs

from ..auth import TokenVerifier, bearer_token
from ..errors import ChatError, ValidationFailed
from ..pipelining import EventPipeline
from ..schemas import load, schema_of
from ..services.rooms import ROOM_ID_PATTERN
from . import ws_frames as frames
from .acks import acknowledge
from .connections import ConnState
from .drain import Departures, Drain
from .manager import skipped_users
from .sessions import ChatSessions

log = logging.getLogger(__name__)

# Close codes (documented in docs/protocol.md §6 "/ws").
CLOSE_UNAUTHORIZED = 4401  # missing, invalid or expired token
CLOSE_IDLE_TIMEOUT = 4408  # nothing at all (not even a pong) arrived for idle_timeout_s
CLOSE_TOO_SLOW = int(WSCloseCode.TRY_AGAIN_LATER)  # 1013: the client does not read its frames
CLOSE_GOING_AWAY = int(WSCloseCode.GOING_AWAY)  # 1001: server shutting down

#: Frames whose handling lets the connection's next frame start once the message has its
#: place in the commit order (chat_server/pipelining.py).
OVERLAPPING_FRAMES = frozenset({"message"})
# 1009 (MESSAGE_TOO_BIG) is sent by aiohttp itself for a frame over hard_max_frame_bytes.


@dataclass(frozen=True)
class WsOptions:
    heartbeat_s: float | None = 25.0  # ping after this much silence; no pong within half of it → closed
    idle_timeout_s: float | None = 60.0  # no frame at all (pongs count) for this long → closed 4408
    max_frame_bytes: int = 64 * 1024  # larger text frames are answered with an error frame
    hard_max_frame_bytes: int = 256 * 1024  # larger frames make aiohttp close with 1009
    send_queue_limit: int = 1024  # frames waiting for a slow client before it is closed 1013
    close_timeout_s: float = 5.0  # how long a server-side close waits for the client's close frame


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class WsConnection:
    """One /ws client: its session state and an ordered, bounded send queue drained by a
    writer task.  Everything sent to the client (answers and broadcast frames alike) goes
    through ``push`` so frames keep the order in which they were produced."""

    def __init__(self, ws: web.WebSocketResponse, state: ConnState, *, queue_limit: int, close_timeout_s: float) -> None:
        self.ws = ws
        self.state = state
        self.entered: set[str] = set()  # rooms this connection is indexed under (WsHub)
        self.pipeline = EventPipeline()  # the order of its frames' handling (pipelining.py)
        self._queue: deque[bytes] = deque()
        self._limit = queue_limit
        self._close_timeout = close_timeout_s
        self._wake = asyncio.Event()
        self._stopped = False
        self._closer: asyncio.Task[None] | None = None
        self._task = asyncio.create_task(self._run(), name=f"ws-writer-{state.sid}")

    @property
    def sid(self) -> str:
        return self.state.sid

    def push(self, frame: bytes) -> None:
        if self._stopped:
            return
        if len(self._queue) >= self._limit:
            # The client does not read what it is sent: drop it rather than buffer without
            # bound (it reconnects and catches up by seq).
            self._stopped = True
            self._queue.clear()
            self._closer = asyncio.create_task(self._close_slow(), name=f"ws-close-{self.sid}")
            return
        self._queue.append(frame)
        self._wake.set()

    def send(self, frame: dict[str, Any]) -> None:
        self.push(frames.encode(frame))

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self.ws.send_frame(self._queue.popleft(), WSMsgType.TEXT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away; the reader loop notices and cleans up
            log.debug("/ws writer of %s stopped: %r", self.state.conn_id, exc)

    async def _close_slow(self) -> None:
        log.info("closing /ws connection %s: send queue overflow", self.state.conn_id)
        # The writer may be stuck waiting for the socket to drain; so may the close frame,
        # hence the timeout (after which the transport is dropped).
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=CLOSE_TOO_SLOW, message=b"too slow"), self._close_timeout)

    async def stop(self) -> None:
        self._stopped = True
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        if self._closer is not None:
            with contextlib.suppress(BaseException):
                await self._closer


def _skipped(skip_sid: Any) -> tuple[set[str], set[str]]:
    """The sids and (``skip_user`` markers) user ids an emit's ``skip_sid`` excludes."""
    if skip_sid is None:
        return set(), set()
    sids = {skip_sid} if isinstance(skip_sid, str) else {s for s in skip_sid if isinstance(s, str)}
    return sids, set(skipped_users(skip_sid))


class WsHub:
    """This node's /ws connections, indexed by chat room and by user.

    The ``Transport`` of /ws connections (``enter``/``leave`` maintain the room index) and
    a ``LocalListener`` of the Socket.IO client manager (``deliver`` forwards events of
    ``r:<room>`` / ``u:<user>`` channels to the indexed connections)."""

    def __init__(self) -> None:
        self._conns: dict[str, WsConnection] = {}
        self._rooms: dict[str, dict[str, WsConnection]] = {}
        self._users: dict[str, dict[str, WsConnection]] = {}

    def __len__(self) -> int:
        return len(self._conns)

    def connections(self) -> list[WsConnection]:
        return list(self._conns.values())

    def add(self, conn: WsConnection) -> None:
        self._conns[conn.sid] = conn
        self._users.setdefault(conn.state.user.user_id, {})[conn.sid] = conn

    def remove(self, conn: WsConnection) -> None:
        self._conns.pop(conn.sid, None)
        for room_id in list(conn.entered):
            self._unindex(self._rooms, room_id, conn.sid)
        conn.entered.clear()
        self._unindex(self._users, conn.state.user.user_id, conn.sid)

    @staticmethod
    def _unindex(index: dict[str, dict[str, WsConnection]], key: str, sid: str) -> None:
        members = index.get(key)
        if members is not None:
            members.pop(sid, None)
            if not members:
                del index[key]

    # Transport -------------------------------------------------------------------------

    async def enter(self, conn: ConnState, room_id: str) -> None:
        ws_conn = self._conns.get(conn.sid)
        if ws_conn is None:  # already disconnected
            return
        self._rooms.setdefault(room_id, {})[conn.sid] = ws_conn
        ws_conn.entered.add(room_id)

    async def leave(self, conn: ConnState, room_id: str) -> None:
        ws_conn = self._conns.get(conn.sid)
        if ws_conn is not None:
            ws_conn.entered.discard(room_id)
        self._unindex(self._rooms, room_id, conn.sid)

    # LocalListener ---------------------------------------------------------------------

    async def deliver(self, event: str, data: Any, room: str | None, skip_sid: Any) -> None:
        if not room or not self._conns:
            return
        kind, _, key = room.partition(":")
        if kind == "r":
            recipients = self._rooms.get(key)
            channel_room: str | None = key
        elif kind == "u":
            recipients = self._users.get(key)
            channel_room = None
        else:
            return
        if not recipients:
            return
        frame = frames.translate(event, data, channel_room)
        if frame is None:
            return
        encoded = frames.encode(frame)  # once per event, whatever the number of recipients
        if skip_sid is None:
            for conn in recipients.values():
                conn.push(encoded)
            return
        sids, users = _skipped(skip_sid)
        for sid, conn in recipients.items():
            if sid not in sids and conn.state.user.user_id not in users:
                conn.push(encoded)

    async def close_all(self, code: int, message: bytes) -> None:
        conns = self.connections()
        if conns:
            await asyncio.gather(*(c.ws.close(code=code, message=message) for c in conns), return_exceptions=True)


class WsHandler:
    def __init__(
        self,
        sessions: ChatSessions,
        verifier: TokenVerifier,
        hub: WsHub,
        *,
        default_room: str,
        count_online: Callable[[str], Awaitable[int]],
        allowed_origins: tuple[str, ...] | str = "*",
        options: WsOptions | None = None,
        on_result: Callable[[str, str], None] | None = None,
        connections_gauge: _Counter | None = None,
        on_first_connection: Callable[[], None] | None = None,
        drain: Drain | None = None,
    ) -> None:
        self._drain = drain
        self._sessions = sessions
        self._verifier = verifier
        self._hub = hub
        self._default_room = default_room
        self._count_online = count_online
        self._allowed_origins = allowed_origins
        self.options = options or WsOptions()
        self._on_result = on_result
        self._gauge = connections_gauge
        self._on_first_connection = on_first_connection
        self.departures = Departures()  # disconnect cleanups; shutdown waits for them
        self._handlers: dict[str, Callable[[WsConnection, dict[str, Any]], Awaitable[None]]] = {
            "message": self._message,
            "join_room": self._join_room,
            "leave_room": self._leave_room,
            "typing": self._typing,
            "react": self._react,
        }

    def configure(self, **changes: Any) -> None:
        """Change options for connections opened from now on (tests, tuning)."""
        self.options = replace(self.options, **changes)

    # Connection ------------------------------------------------------------------------

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or self._allowed_origins == "*":
            return True  # non-browser clients send no Origin
        return origin in self._allowed_origins or origin == f"{request.scheme}://{request.host}"

    @docs(
        tags=["realtime"],
        summary="Plain WebSocket endpoint (JSON frames, PROTOCOL.md §3; decisions in docs/protocol.md §6 \"/ws\")",
        description=(
            "Upgrade to a WebSocket. Token from `?token=` or `Authorization: Bearer`; a missing or invalid token "
            "is accepted and closed at once with close code 4401. Joins `?roomId=` (default `lobby`) and answers "
            "`{\"type\":\"room_joined\",\"roomId\",\"memberCount\",...}`. Client frames: `message`, `join_room`, "
            "`leave_room`, `typing`; server frames: `message`, `message_ack`, `presence`, `room_joined`, `room_left`, "
            "`typing_indicator`, `room_stats`, `error`."
        ),
        parameters=[
            {"in": "query", "name": "token", "schema": {"type": "string"}, "required": False, "description": "JWT (or use the Authorization header)"},
            {"in": "query", "name": "roomId", "schema": {"type": "string"}, "required": False, "description": "room joined right after connecting (default lobby)"},
            {"in": "query", "name": "sinceSeq", "schema": {"type": "integer", "minimum": 0}, "required": False, "description": "history of that room after this seq"},
        ],
        responses={
            101: {"description": "Switching Protocols (the WebSocket session starts)"},
            403: {"description": "Origin not allowed (CORS_ALLOWED_ORIGINS)"},
            426: {"description": "Not a WebSocket upgrade request"},
        },
    )
    async def handle(self, request: web.Request) -> web.StreamResponse:
        opts = self.options
        if not self._origin_allowed(request):
            return web.json_response({"error": {"code": "forbidden", "message": "Origin not allowed"}}, status=403)
        ws = web.WebSocketResponse(
            heartbeat=opts.heartbeat_s,
            receive_timeout=opts.idle_timeout_s,
            max_msg_size=opts.hard_max_frame_bytes,
            # One encode per event serves every recipient; per-connection deflate would
            # redo the work per recipient for frames that are a few hundred bytes.
            compress=False,
            timeout=opts.close_timeout_s,
        )
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error": {"code": "validation_error", "message": "Expected a WebSocket upgrade"}},
                status=426, headers={"Upgrade": "websocket", "Connection": "Upgrade"},
            )
        await ws.prepare(request)
        try:
            user = self._verifier.verify(request.query.get("token") or bearer_token(request.headers.get("Authorization")))
        except ChatError:
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
            return ws

        if self._on_first_connection is not None:
            self._on_first_connection()
        sid = f"ws-{uuid.uuid4().hex}"
        registry = self._sessions.registry
        state = ConnState(conn_id=registry.conn_id(sid), sid=sid, user=user, transport=self._hub, address=request.remote)
        conn = WsConnection(ws, state, queue_limit=opts.send_queue_limit, close_timeout_s=opts.close_timeout_s)
        self._hub.add(conn)
        if self._gauge is not None:
            self._gauge.inc()
        try:
            try:
                await self._sessions.connected(state)
            except Exception:
                log.exception("/ws connect of %s failed", state.conn_id)
                await ws.close(code=int(WSCloseCode.INTERNAL_ERROR), message=b"unavailable")
                return ws
            await self._run_frame(conn, "join_room", self._connect_join_frame(request))
            await self._read_loop(conn, opts)
        finally:
            await self._close(conn)
        return ws

    def _connect_join_frame(self, request: web.Request) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join_room", "roomId": request.query.get("roomId") or request.query.get("room_id") or self._default_room}
        since = request.query.get("sinceSeq")
        if since is not None:
            frame["sinceSeq"] = int(since) if since.isdigit() and len(since) < 19 else since  # anything else fails validation
        return frame

    async def _read_loop(self, conn: WsConnection, opts: WsOptions) -> None:
        ws = conn.ws
        while True:
            try:
                msg = await ws.receive()
            except TimeoutError:
                await ws.close(code=CLOSE_IDLE_TIMEOUT, message=b"idle timeout")
                return
            if msg.type == WSMsgType.TEXT:
                await self._text(conn, msg.data, opts.max_frame_bytes)
            elif msg.type == WSMsgType.BINARY:
                await conn.pipeline.settle()  # answered after the frames before it
                self._reject(conn, ValidationFailed("Binary frames are not supported; send JSON text frames",
                                                    details={"_frame": ["Expected a text frame."]}))
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp has closed or is closing the socket)
                return

    async def _close(self, conn: WsConnection) -> None:
        self._hub.remove(conn)  # at once: no frame is queued to it from here on
        if self._gauge is not None:
            self._gauge.dec()
        # In a task of its own (``Departures``): the handler task may be cancelled (the client
        # dropped the TCP connection and the server cancels handlers, or shutdown
        # force-closes them).
        await self.departures.run(conn.state.conn_id, lambda: self._cleanup(conn))

    async def _cleanup(self, conn: WsConnection) -> None:
        await conn.pipeline.settle()  # its messages under way end before it leaves its rooms
        try:
            await self._sessions.disconnected(conn.state)
        except Exception:
            log.exception("/ws disconnect cleanup of %s failed", conn.state.conn_id)
        await conn.stop()
        if not conn.ws.closed:
            with contextlib.suppress(Exception):
                await conn.ws.close()

    # Frames ----------------------------------------------------------------------------

    def _reject(self, conn: WsConnection, exc: ChatError) -> None:
        if self._on_result:
            self._on_result("invalid_frame", exc.code)
        conn.send(frames.error_frame(exc.to_dict()))

    async def _text(self, conn: WsConnection, data: str, max_bytes: int) -> None:
        frame = self._parse(data, max_bytes)
        if isinstance(frame, ChatError):
            await conn.pipeline.settle()  # answered after the frames before it
            self._reject(conn, frame)
            return
        kind = frame["type"]
        await conn.pipeline.run(self._run_frame(conn, kind, frame), overlap=kind in OVERLAPPING_FRAMES)

    def _parse(self, data: str, max_bytes: int) -> dict[str, Any] | ChatError:
        """The frame ``data`` holds (with a known string ``type``), or why it is refused."""
        # Characters ≤ UTF-8 bytes ≤ 4 × characters: encode only when it could matter.
        if len(data) > max_bytes or (len(data) * 4 > max_bytes and len(data.encode("utf-8")) > max_bytes):
            return ValidationFailed(f"Frames may be at most {max_bytes} bytes", details={"max_frame_bytes": max_bytes})
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return ValidationFailed("Frames must be JSON", details={"_frame": ["Not valid JSON."]})
        if not isinstance(frame, dict):
            return ValidationFailed("Frames must be JSON objects", details={"_frame": ["Expected an object."]})
        kind = frame.get("type")
        if not isinstance(kind, str) or kind not in self._handlers:
            shown = kind if isinstance(kind, str) and len(kind) <= 64 else None
            return ValidationFailed(
                f"Unknown frame type {shown!r}" if shown is not None else "Frames need a string \"type\"",
                details={"type": [f"Must be one of: {', '.join(self._handlers)}."]},
            )
        return frame

    async def _run_frame(self, conn: WsConnection, kind: str, frame: dict[str, Any]) -> None:
        handler = self._handlers[kind]
        event = frames.CLIENT_FRAME_EVENTS[kind]
        context = {"sid": conn.sid, "event": event, "user_id": conn.state.user.user_id}
        async def run() -> None:
            await handler(conn, frame)

        result = await acknowledge(event, context, run, self._on_result, self._drain)
        if not result["ok"]:
            room_id = frame.get("roomId")
            client_msg_id = frame.get("clientMsgId")
            conn.send(frames.error_frame(
                result["error"],
                request_type=kind,
                room_id=room_id if isinstance(room_id, str) and ROOM_ID_PATTERN.match(room_id) else None,
                client_msg_id=client_msg_id if isinstance(client_msg_id, str) and len(client_msg_id) <= 128 else None,
            ))

    async def _join_room(self, conn: WsConnection, frame: dict[str, Any]) -> None:
        payload = load(schema_of(frames.WsJoinRoomIn), frame)
        joined = await self._sessions.join(conn.state, payload["room_id"], since_seq=payload["since_seq"])
        room_id = joined["room"]["id"]
        conn.send(frames.room_joined_frame(room_id, await self._count_online(room_id), joined))

    async def _leave_room(self, conn: WsConnection, frame: dict[str, Any]) -> None:
        payload = load(schema_of(frames.WsLeaveRoomIn), frame)
        await self._sessions.leave(conn.state, payload["room_id"])
        conn.send(frames.room_left_frame(payload["room_id"]))

    async def _message(self, conn: WsConnection, frame: dict[str, Any]) -> None:
        payload = load(schema_of(frames.WsMessageIn), frame)
        message = await self._sessions.send(
            conn.state,
            payload["room_id"],
            content=payload["content"],
            type=payload["message_type"],
            client_msg_id=payload["client_msg_id"],
            reply_to=payload["reply_to"],
        )
        if payload["client_msg_id"] is not None:
            # The room's echo also carries clientMsgId, but a resend of a message already
            # stored is not broadcast again: the ack is the answer that always comes.
            conn.send(frames.message_ack_frame(message.to_dict()))

    async def _typing(self, conn: WsConnection, frame: dict[str, Any]) -> None:
        payload = load(schema_of(frames.WsTypingIn), frame)
        await self._sessions.typing(conn.state, payload["room_id"], payload["is_typing"])

    async def _react(self, conn: WsConnection, frame: dict[str, Any]) -> None:
        # Answered by the room's message_reaction frame (the reactor included), or an error.
        payload = load(schema_of(frames.WsReactIn), frame)
        await self._sessions.react(conn.state, payload["message_id"], payload["reaction"], remove=payload["remove"])


WS_KEY = web.AppKey("ws_handler", WsHandler)


def setup_ws(
    app: web.Application,
    sio: socketio.AsyncServer,
    sessions: ChatSessions,
    verifier: TokenVerifier,
    *,
    default_room: str,
    count_online: Callable[[str], Awaitable[int]],
    allowed_origins: tuple[str, ...] | str = "*",
    on_result: Callable[[str, str], None] | None = None,
    connections_gauge: _Counter | None = None,
    options: WsOptions | None = None,
    drain: Drain | None = None,
    drain_timeout_s: float = 5.0,
) -> WsHandler:
    """Add ``GET /ws`` to ``app``, bridged to the Socket.IO client manager of ``sio``."""
    hub = WsHub()
    sio.manager.local_listeners.append(hub)

    def start_manager() -> None:
        # python-socketio starts its client manager (the Redis subscription, with Redis)
        # on the first Socket.IO connection only; a node serving only /ws clients must
        # start it too, or events from other nodes would never reach them.
        if not sio.manager_initialized:
            sio.manager_initialized = True
            sio.manager.initialize()

    handler = WsHandler(
        sessions, verifier, hub,
        default_room=default_room,
        count_online=count_online,
        allowed_origins=allowed_origins,
        options=options,
        on_result=on_result,
        connections_gauge=connections_gauge,
        on_first_connection=start_manager,
        drain=drain,
    )
    app[WS_KEY] = handler
    app.router.add_get("/ws", handler.handle)

    async def close_connections(app: web.Application) -> None:
        # As for Socket.IO: refuse new frames (answered ``unavailable``), let those in
        # flight finish and answer, then tell /ws clients to go (they reconnect elsewhere
        # and catch up with sinceSeq).  Drain.close is shared and may be called twice.
        if drain is not None and len(hub):
            await drain.close(drain_timeout_s)
        if len(hub):
            # Every connection here is about to go (this shutdown runs before the Socket.IO
            # one): the departures below are for other nodes' users, not n² frames here.
            sio.manager.stop_local_delivery()
        await hub.close_all(CLOSE_GOING_AWAY, b"server shutdown")
        # Let leaving-room cleanups finish while Redis and PostgreSQL are still open.
        await handler.departures.wait(drain_timeout_s)

    app.on_shutdown.append(close_connections)
    return handler
