"""Where the server's memory per idle Socket.IO connection goes.

    DATABASE_URL=postgresql://... .venv/bin/python benchmarks/conn_memory.py [--clients 1000] [--trace] [--types]

Builds the full app (``create_app``, as ``chat-server run`` does, uvloop included) in this
process, serves it on a free port, and runs the benchmark's load generator
(benchmarks/loadgen/loadgen.mjs, mode ``connect``: N raw WebSocket Socket.IO clients with JWT
auth, then each joins a room of 50) against it.  At the generator's marks (before the
connects, connected, joined) it collects garbage and samples RSS, and with ``--trace`` a
tracemalloc snapshot (Python allocations, grouped by the innermost frame outside asyncio
and the standard library), with ``--types`` the live objects by type.  Prints per connection:
RSS, traced bytes, and the biggest allocation sites / object types between "before" and
"connected".  ``--trace`` slows everything down and inflates RSS (its own bookkeeping): read
RSS from a run without it.  The database (``DATABASE_URL``) is migrated first.
Settings come from the environment as for the server (e.g. ``LEAN_WEBSOCKETS=false``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import socket
import sys
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SKIP = ("asyncio/", "_weakrefset", "json/", "weakref", "contextlib", "typing", "functools", "<frozen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short(path: str) -> str:
    for prefix in ("site-packages/", str(REPO) + "/", "python3.11/", "python3.12/"):
        if prefix in path:
            return path.split(prefix, 1)[1]
    return path


def sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[tuple[str, int, int]]:
    """(site, bytes, blocks) allocated between the snapshots and still alive, by the innermost
    frame that is not asyncio or the standard library's plumbing."""
    size: collections.Counter[str] = collections.Counter()
    blocks: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        frames = [f"{short(f.filename)}:{f.lineno}" for f in reversed(stat.traceback)]
        site = next((f for f in frames if not f.startswith(SKIP)), frames[0])
        if site.startswith("benchmarks/conn_memory.py"):
            site = "(no Python frame: allocated from C, mostly uvloop's transports and timers)"
        size[site] += stat.size_diff
        blocks[site] += stat.count_diff
    return [(site, n, blocks[site]) for site, n in size.most_common()]


async def run(args: argparse.Namespace) -> None:
    import psutil
    from aiohttp import web

    from chat_server.app import create_app
    from chat_server.config import Settings
    from chat_server.logging_setup import configure_logging
    from chat_server.migrate import apply_migrations

    port = free_port()
    settings = Settings.from_env(dotenv_path=None).with_overrides(host="127.0.0.1", port=port)
    configure_logging("WARNING", settings.log_format)
    await asyncio.get_running_loop().run_in_executor(None, apply_migrations, settings.database_url or "")
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.sleep(1.0)  # ready (database connected)
    process = psutil.Process()
    config = {"mode": "connect", "urls": [f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"], "clients": args.clients,
              "concurrency": 100, "idle_room_size": 50, "room_prefix": f"mem_{os.getpid()}_", "warmup": 50,
              "secret": settings.jwt_secret, "tag": "mem", "userPrefix": f"mem{os.getpid()}_"}
    child = await asyncio.create_subprocess_exec("node", str(REPO / "benchmarks/loadgen/loadgen.mjs"), json.dumps(config),
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO / "benchmarks")
    assert child.stdin is not None and child.stdout is not None
    marks: dict[str, tuple[int, int, Any, Any]] = {}
    result: dict[str, Any] = {}
    while line := await child.stdout.readline():
        message = json.loads(line)
        if message["type"] == "sync":
            gc.collect()
            types = collections.Counter(type(o).__qualname__ for o in gc.get_objects()) if args.types else None
            snapshot = tracemalloc.take_snapshot() if args.trace else None
            traced = tracemalloc.get_traced_memory()[0] if args.trace else 0
            marks[message["name"]] = (process.memory_info().rss, traced, snapshot, types)
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        elif message["type"] == "result":
            result = message
    await child.wait()
    await runner.cleanup()
    n = result["connect"]["connected"]
    print(f"{n} connected, {result['connect']['connects_per_s']:.0f} connects/s")
    rss0, traced0, snap0, types0 = marks["before_connect"]
    for mark in ("connected", "joined"):
        if mark in marks:
            rss, traced, _, _ = marks[mark]
            extra = f", traced {(traced - traced0) / n / 1024:.1f} KiB" if args.trace else ""
            print(f"{mark}: RSS {(rss - rss0) / n / 1024:.1f} KiB per connection{extra}")
    if args.trace:
        print("\nallocated per connection (connected - before), by site:")
        for site, size, blocks in sites(snap0, marks["connected"][2])[:args.top]:
            print(f"  {size / n:8.0f} B {blocks / n:6.2f} blocks  {site}")
    if args.types:
        print("\nlive objects per connection, by type:")
        for name, count in (marks["connected"][3] - types0).most_common(args.top):
            print(f"  {count / n:8.2f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc snapshots (slow; RSS figures inflated)")
    parser.add_argument("--types", action="store_true", help="count live objects by type")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        parser.error("set DATABASE_URL (a database this may migrate)")
    os.environ.setdefault("JWT_SECRET", "conn-memory-" + "x" * 32)
    os.environ.setdefault("APP_ENV", "production")
    os.environ.setdefault("RATE_LIMIT_MAX_MESSAGES", "100000000")
    if args.trace:
        tracemalloc.start(12)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
