"""The Socket.IO manager's local delivery (realtime/manager.py): a node that is dropping all
its connections stops delivering to them, so the departures it announces meanwhile do not
reach, n times each, the users it is about to drop."""

from __future__ import annotations

from typing import Any

import socketio

from chat_server.realtime.manager import LocalManager


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, str | None]] = []

    async def deliver(self, event: str, data: Any, room: str | None, skip_sid: Any) -> None:
        self.events.append((event, data, room))


async def test_local_delivery_stops_for_sockets_and_listeners_alike():
    manager = LocalManager()
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    sent: list[tuple[str, Any]] = []

    async def send_packet(eio_sid: str, pkt: Any) -> None:
        sent.append((eio_sid, pkt.data))

    sio._send_eio_packet = send_packet  # type: ignore[method-assign]  # what the library writes to a socket
    listener = Recorder()
    manager.local_listeners.append(listener)
    sid = await manager.connect("eio-1", "/")
    await manager.enter_room(sid, "/", "r:room")

    await sio.emit("user_left", {"user_id": "u1"}, to="r:room")
    assert listener.events == [("user_left", {"user_id": "u1"}, "r:room")]
    assert len(sent) == 1

    manager.stop_local_delivery()
    await sio.emit("user_left", {"user_id": "u2"}, to="r:room")
    assert listener.events == [("user_left", {"user_id": "u1"}, "r:room")]  # nothing more
    assert len(sent) == 1
