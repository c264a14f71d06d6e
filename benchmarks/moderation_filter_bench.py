"""Cost of the moderation filter on the local delivery path (block filtering, ban hooks).

    python benchmarks/moderation_filter_bench.py [--members N] [--emits K]

Emits ``new_message`` to a room of N local Socket.IO participants through the real
``LocalManager`` (packet encoding, participant iteration, one send task per recipient;
only the final socket write is stubbed out), with and without
``realtime.moderation_relay.LiveModeration`` registered as a local filter, in three cases:
nobody on the node blocks anyone; 50 local users block someone else; 50 local users block
the author (their sockets are skipped).  Prints microseconds per emit.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import socketio  # noqa: E402

from chat_server.domain import Principal  # noqa: E402
from chat_server.realtime.connections import ConnectionRegistry, ConnState  # noqa: E402
from chat_server.realtime.manager import LocalManager  # noqa: E402
from chat_server.realtime.moderation_relay import LiveModeration  # noqa: E402

PAYLOAD = {
    "message_id": "m" * 32, "room_id": "bench", "seq": 1,
    "user": {"user_id": "author", "username": "author", "avatar": None},
    "content": "hello world, this is a chat message", "content_html": "hello world, this is a chat message",
    "type": "text", "timestamp": "2024-01-01T12:00:00.000Z", "edited_at": None, "reactions": {}, "mentions": [],
    "reply_to": None, "client_msg_id": None,
}


async def setup(members: int) -> tuple[socketio.AsyncServer, LocalManager, ConnectionRegistry, list[str]]:
    manager = LocalManager()
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    sent = 0

    async def send(eio_sid: str, pkt: Any) -> None:
        nonlocal sent
        sent += 1

    sio._send_eio_packet = send  # type: ignore[method-assign]
    registry = ConnectionRegistry("bench")
    sids = []
    for i in range(members):
        sid = await manager.connect(f"eio{i}", "/")
        manager.basic_enter_room(sid, "/", "r:bench")
        registry.add(ConnState(conn_id=f"bench:{sid}", sid=sid, user=Principal(f"user{i}", f"user{i}"), transport=None))  # type: ignore[arg-type]
        sids.append(sid)
    return sio, manager, registry, sids


async def once(sio: socketio.AsyncServer, emits: int) -> float:
    start = time.perf_counter()
    for _ in range(emits):
        await sio.emit("new_message", PAYLOAD, to="r:bench")
    return (time.perf_counter() - start) / emits * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--emits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    sio, manager, registry, _ = await setup(args.members)
    relay = LiveModeration(None, None, registry)  # type: ignore[arg-type]  # only the filter is exercised

    def without() -> None:
        manager.local_filters.clear()

    def nobody_blocks() -> None:
        manager.local_filters[:] = [relay]
        for i in range(50):
            relay._set_blocks(f"user{i}", set())

    def others_blocked() -> None:
        manager.local_filters[:] = [relay]
        for i in range(50):
            relay._set_blocks(f"user{i}", {"someone_else"})

    def author_blocked() -> None:
        manager.local_filters[:] = [relay]
        for i in range(50):
            relay._set_blocks(f"user{i}", {"author"})

    cases = {"without the moderation filter": without, "filter, nobody here blocks anyone": nobody_blocks,
             "filter, 50 local users block others": others_blocked, "filter, 50 local users block the author": author_blocked}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    await once(sio, args.emits)  # warm up
    for _ in range(args.rounds):  # interleaved, so machine noise hits every case alike
        for name, arrange in cases.items():
            arrange()
            samples[name].append(await once(sio, args.emits))
    baseline = statistics.median(samples["without the moderation filter"])
    print(f"new_message to {args.members} local participants; median of {args.rounds} rounds x {args.emits} emits:")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name + ':':42} {median:8.1f} us/emit ({median - baseline:+6.1f})")


if __name__ == "__main__":
    asyncio.run(main())
