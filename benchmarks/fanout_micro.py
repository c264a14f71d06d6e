"""Server CPU per Socket.IO delivery for one room of N WebSocket clients: stock path vs fast path.

    .venv/bin/python benchmarks/fanout_micro.py [--clients 1000] [--messages 200] [--loop uvloop|asyncio] [--deflate]

For each path this starts a server process (a bare ``socketio.AsyncServer`` on aiohttp built
as ``chat_server/app.py`` builds it: ``LocalManager`` delivery hook, orjson json module,
``async_handlers=False``; the fast path adds ``realtime/fanout.py``'s ``FastFanout``), connects
N raw WebSocket clients to it from this process (Engine.IO v4 handshake, no Socket.IO client
library) into one room, then asks the server to broadcast M ``new_message`` events of a
typical size (~400 bytes JSON) to the room, and waits until every client has every message.
Two cases: "spread" (one broadcast per event-loop iteration, as messages from different
senders usually arrive) and "burst" (M broadcasts back to back in one handler, as a batch of
stored messages or a backlog read from Redis produces).
The figure is the server process's CPU time (user + system, from /proc) across a round,
divided by N x M deliveries: everything the server spends, including its writer tasks and
the kernel's send path, but none of the clients' work.  Both results print from one run
(--deflate: the clients offer permessage-deflate, as browsers do, and a stock+deflate column
is added: the stock server accepts the extension, the fast path does not).
No database, Redis or chat services are involved: this isolates the delivery path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAYLOAD = {
    "message_id": "0f8fad5bd9cb469fa16570867728950e", "room_id": "stream_42", "seq": 1234,
    "user": {"user_id": "user_4711", "username": "Viewer4711", "avatar": None},
    "content": "GG! best play of the night, no doubt about it", "content_html": None, "type": "text",
    "timestamp": "2024-05-01T12:34:56.789Z", "edited_at": None, "reactions": {}, "mentions": [],
    "reply_to": None, "client_msg_id": "6ecd8c99c9f34a3a8f2d7e3c1b0a9d8e",
}


# --- server (child process) ------------------------------------------------------------------


def serve(port: int, path: str, loop: str) -> None:
    import asyncio

    import socketio
    from aiohttp import web

    from chat_server.realtime.fanout import FastFanout, orjson_module
    from chat_server.realtime.manager import LocalManager

    if loop == "uvloop":
        import uvloop

        uvloop.install()

    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=LocalManager(), async_handlers=False, cors_allowed_origins="*",
                               logger=False, engineio_logger=False, json=orjson_module)
    if path == "fast":
        fanout = FastFanout(sio, slow_client_buffer_bytes=64 * 1024 * 1024)
        assert fanout.install(), "fast path did not install"
        sio.manager.fanout = fanout

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, "room")

    async def burst(sid: str, data: Any) -> dict[str, Any]:
        payload = dict(PAYLOAD)
        spread = bool(data.get("spread"))
        for i in range(int(data["messages"])):
            payload["seq"] = i
            await sio.emit("new_message", payload, to="room")
            if spread:
                await asyncio.sleep(0)  # one broadcast per event-loop iteration
        return {"ok": True}

    sio.on("connect", connect)
    sio.on("burst", burst)
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: None, access_log=None)


# --- clients (this process) --------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Client:
    def __init__(self) -> None:
        self.received = 0
        self.done: asyncio.Future[None] | None = None
        self.want = 0

    async def run(self, session: Any, url: str, ready: asyncio.Event, connected: list[int], total: int, deflate: bool) -> None:
        import aiohttp

        # deflate: offer permessage-deflate, as browsers do (python-socketio's client does not)
        ws = await session.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0, compress=15 if deflate else 0)
        self.ws = ws
        await ws.receive()  # Engine.IO OPEN
        await ws.send_str("40")
        await ws.receive()  # Socket.IO CONNECT
        connected[0] += 1
        if connected[0] == total:
            ready.set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.data
            if data.startswith("42"):
                self.received += 1
                if self.done is not None and self.received >= self.want and not self.done.done():
                    self.done.set_result(None)
            elif data == "2":
                await ws.send_str("3")


async def measure(path: str, clients: int, messages: int, loop: str, deflate: bool = False) -> dict[str, float]:
    import aiohttp

    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", path, "--port", str(port), "--loop", loop], cwd=str(REPO))
    url = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(100):
                try:
                    async with session.get(f"{url}/socket.io/?EIO=4&transport=polling") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            ready = asyncio.Event()
            connected = [0]
            pool = [Client() for _ in range(clients)]
            tasks = []
            for i, c in enumerate(pool):
                tasks.append(asyncio.create_task(c.run(session, url, ready, connected, clients, deflate)))
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(0.5)
            results: dict[str, float] = {}
            loop_ = asyncio.get_running_loop()
            for mode in ("warm-up", "spread", "burst", "spread", "burst"):
                for c in pool:
                    c.done = loop_.create_future()
                    c.want = c.received + messages
                before = cpu_seconds(proc.pid)
                await pool[0].ws.send_str("421" + json.dumps(["burst", {"messages": messages, "spread": mode == "spread"}]))
                await asyncio.wait_for(asyncio.gather(*(c.done for c in pool if c.done is not None)), 300)
                after = cpu_seconds(proc.pid)
                if mode != "warm-up":  # best of two
                    us = (after - before) / (clients * messages) * 1e6
                    results[mode] = min(us, results.get(mode, us))
                await asyncio.sleep(0.3)
            for c in pool:
                await c.ws.close()
            for t in tasks:
                t.cancel()
            return results
    finally:
        proc.terminate()
        proc.wait(10)


async def main(args: argparse.Namespace) -> None:
    size = len(json.dumps(["new_message", PAYLOAD], separators=(",", ":")))
    print(f"{args.clients} WebSocket clients in one room, {args.messages} broadcasts of {size} bytes JSON per round, "
          f"{args.loop} loop on the server.  Server CPU (user+system) per delivery:")
    columns = [("stock path", await measure("stock", args.clients, args.messages, args.loop))]
    if args.deflate:
        # Clients that offer permessage-deflate, as browsers do: the stock server accepts it.
        columns.append(("stock+deflate", await measure("stock", args.clients, args.messages, args.loop, deflate=True)))
    fast = await measure("fast", args.clients, args.messages, args.loop, deflate=args.deflate)
    columns.append(("fast path", fast))
    print(f"{'':34}" + "".join(f"{name:>15}" for name, _ in columns))
    for mode, what in (("spread", "one broadcast per loop iteration"), ("burst", "broadcasts back to back")):
        stock = columns[0][1][mode]
        ratio = f"(fast: {stock / fast[mode]:.1f}x less than stock)" if fast[mode] else "(below the CPU clock's resolution: raise --messages)"
        print(f"  {what:32}" + "".join(f"{values[mode]:12.2f} us" for _, values in columns) + "   " + ratio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--deflate", action="store_true",
                        help="clients offer permessage-deflate (as browsers do); adds a stock+deflate column")
    parser.add_argument("--serve", choices=("stock", "fast"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.serve, args.loop)
    else:
        asyncio.run(main(args))
