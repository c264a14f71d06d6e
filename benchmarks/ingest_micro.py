"""Ingest micro-benchmark: stored messages per second and ack latency of ``send_message``.

    python benchmarks/ingest_micro.py [--senders 200] [--rooms 50] [--seconds 10]
                                      [--rate 5000] [--modes unbatched,batched] [--no-redis]

For each mode it starts a real server process (``python -m chat_server run``) on a fresh,
migrated database (and, unless ``--no-redis``, the machine's Redis under a private key
prefix), connects ``--senders`` raw Engine.IO/Socket.IO WebSocket clients spread over
``--rooms`` rooms, and measures two things:

* ``closed loop``: every sender sends its next message as soon as the previous one is
  acknowledged (the server handles one client's events in order, so at most ``senders``
  messages are in flight): the most the node stores per second, and the ack latency at
  that load;
* ``open loop`` at ``--rate`` messages/s in total (each sender on its own schedule): the
  ack latency at a given offered load, measured from the moment the message was due, so
  a sender held up by a slow ack counts the wait.

Modes: ``unbatched`` (``MESSAGE_BATCHING=false``: one INSERT statement per message, as
before group commit) and ``batched`` (the default server configuration).  Stored counts
are checked against the database at the end of each run.

The clients speak the Socket.IO wire protocol directly over one aiohttp WebSocket each
(no python-socketio client): the benchmark shares the machine with the server, PostgreSQL
and Redis, and a lighter client leaves more of it to what is measured.  Broadcast
``new_message`` frames are counted but not decoded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import psycopg2

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "ingest-bench-" + "s" * 40


def _db_url(name: str) -> str:
    base, _, _ = BASE_DATABASE_URL.rpartition("/")
    return f"{base}/{name}"


def _admin(sql: str) -> None:
    conn = psycopg2.connect(BASE_DATABASE_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(user_id: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user_id, "name": user_id, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


def words(rng: random.Random) -> str:
    # Random text, so the spam rules (near-duplicate detection) see distinct messages.
    return " ".join(f"{rng.getrandbits(40):x}" for _ in range(4))


class Server:
    def __init__(self, *, batching: bool, redis: bool, extra_env: dict[str, str]) -> None:
        self.db_name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.batching = batching
        self.redis = redis
        self.extra_env = extra_env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def database_url(self) -> str:
        return _db_url(self.db_name)

    async def start(self) -> None:
        _admin(f'CREATE DATABASE "{self.db_name}"')
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "JWT_SECRET": SECRET,
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_MAX_MESSAGES": "1000000",
            "MESSAGE_BATCHING": "true" if self.batching else "false",
            **self.extra_env,
        }
        env.pop("REDIS_HOST", None)
        if self.redis:
            env["REDIS_URL"] = REDIS_URL
            env["REDIS_PREFIX"] = f"bench:{self.db_name}"
        else:
            env.pop("REDIS_URL", None)
        self.proc = subprocess.Popen([PYTHON, "-m", "chat_server", "run"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        if os.environ.get("INGEST_BENCH_PID_FILE"):  # lets a profiler attach (py-spy record --pid)
            Path(os.environ["INGEST_BENCH_PID_FILE"]).write_text(str(self.proc.pid))
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not become ready")
                await asyncio.sleep(0.1)

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as response:
            return await response.text()

    def stored(self) -> int:
        conn = psycopg2.connect(self.database_url)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM messages")
            (count,) = cur.fetchone()  # type: ignore[misc]
            cur.execute("SELECT count(*) FROM rooms WHERE last_seq <> (SELECT count(*) FROM messages m WHERE m.room_id = rooms.id)"
                        " OR last_seq <> COALESCE((SELECT max(seq) FROM messages m WHERE m.room_id = rooms.id), 0)")
            (gapped,) = cur.fetchone()  # type: ignore[misc]
        conn.close()
        if gapped:
            raise AssertionError(f"{gapped} room(s) with gaps in seq")
        return int(count)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(Exception):
            _admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


class Sender:
    """One Socket.IO connection over a raw WebSocket (Engine.IO v4, Socket.IO v5 text)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, user_id: str, room_id: str, seed: int) -> None:
        self.http = http
        self.base = base
        self.user_id = user_id
        self.room_id = room_id
        self.rng = random.Random(seed)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.broadcasts = 0
        self.reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        url = self.base.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.ws = await self.http.ws_connect(url, autoping=False, max_msg_size=0)
        opened = await self.ws.receive_str()
        assert opened.startswith("0"), opened
        await self.ws.send_str("40" + json.dumps({"token": token(self.user_id)}))
        while True:
            frame = await self.ws.receive_str()
            if frame.startswith("40"):
                break
            if frame.startswith("44"):
                raise RuntimeError(f"connect refused: {frame}")
        self.reader = asyncio.create_task(self._read())
        ack = await self.call("join_room", {"room_id": self.room_id})
        assert ack.get("ok"), ack

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data: str = msg.data
            if data == "2":
                await self.ws.send_str("3")
            elif data.startswith("43"):
                bracket = data.index("[")
                future = self.acks.pop(int(data[2:bracket]), None)
                if future is not None and not future.done():
                    future.set_result(json.loads(data[bracket:])[0])
            elif data.startswith("42"):
                self.broadcasts += 1
        for future in self.acks.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))

    def emit(self, event: str, payload: Any) -> asyncio.Future[Any]:
        assert self.ws is not None
        self.next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[self.next_id] = future
        asyncio.ensure_future(self.ws.send_str(f"42{self.next_id}" + json.dumps([event, payload])))
        return future

    async def call(self, event: str, payload: Any) -> Any:
        return await asyncio.wait_for(self.emit(event, payload), 30)

    def message(self) -> dict[str, Any]:
        return {"room_id": self.room_id, "content": words(self.rng), "client_msg_id": uuid.uuid4().hex}

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Result:
    label: str
    seconds: float
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    machine_busy: float = 0.0  # fraction of all CPUs busy during the run (everything on the machine)

    def record(self, ack: Any, latency_ms: float) -> None:
        if isinstance(ack, dict) and ack.get("ok"):
            self.ok += 1
            self.latencies_ms.append(latency_ms)
        else:
            code = ack.get("error", {}).get("code", "?") if isinstance(ack, dict) else repr(ack)
            self.errors[code] = self.errors.get(code, 0) + 1

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self) -> str:
        errors = f"  errors {self.errors}" if self.errors else ""
        cpu = f"  server {self.server_cpu_s / max(self.ok, 1) * 1e6:5.0f} µs CPU/msg, machine {self.machine_busy:4.0%} busy"
        return (f"{self.label:<28} {self.ok / self.seconds:>8.0f} msg/s   ack p50 {self.pct(50):6.1f} ms  "
                f"p99 {self.pct(99):6.1f} ms  max {max(self.latencies_ms, default=float('nan')):6.1f} ms{cpu}{errors}")


async def measured(server: Server, run: Any) -> Result:
    cpu, (busy, total) = server.cpu_seconds(), machine_busy()
    result: Result = await run
    busy_after, total_after = machine_busy()
    result.server_cpu_s = server.cpu_seconds() - cpu
    result.machine_busy = (busy_after - busy) / max(total_after - total, 1)
    return result


async def closed_loop(senders: list[Sender], seconds: float, label: str) -> Result:
    result = Result(label, seconds)
    stop_at = time.perf_counter() + seconds

    async def run(sender: Sender) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            ack = await sender.call("send_message", sender.message())
            result.record(ack, (time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(run(s) for s in senders))
    result.seconds = time.perf_counter() - began
    return result


async def open_loop(senders: list[Sender], seconds: float, rate: float, label: str) -> Result:
    """Each sender sends on its own fixed schedule (rate / senders per second, random
    phase); latency counts from when the message was due."""
    result = Result(label, seconds)
    interval = len(senders) / rate
    began = time.perf_counter()

    async def run(sender: Sender) -> None:
        due = began + sender.rng.random() * interval
        pending: list[asyncio.Task[None]] = []
        while due < began + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_due = due

            async def one(at: float = sent_due) -> None:
                ack = await sender.call("send_message", sender.message())
                result.record(ack, (time.perf_counter() - at) * 1000)

            pending.append(asyncio.create_task(one()))
            due += interval
        await asyncio.gather(*pending)

    await asyncio.gather(*(run(s) for s in senders))
    return result


def batch_stats(metrics: str) -> str:
    values = {}
    for line in metrics.splitlines():
        if line.startswith(("chat_message_batches_total ", "chat_message_batched_total ")):
            name, value = line.split()
            values[name] = float(value)
    batches = values.get("chat_message_batches_total", 0)
    if not batches:
        return "batches: none"
    return f"batches: {batches:.0f}, mean size {values.get('chat_message_batched_total', 0) / batches:.1f}"


async def run_mode(args: argparse.Namespace, mode: str) -> list[str]:
    server = Server(batching=mode == "batched", redis=not args.no_redis, extra_env={})
    lines: list[str] = []
    try:
        await server.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            senders = [Sender(http, server.url, f"u{i}", f"bench_{i % args.rooms}", seed=i) for i in range(args.senders)]
            for start in range(0, len(senders), 50):
                await asyncio.gather(*(s.connect() for s in senders[start:start + 50]))
            # Warm up: caches, connections, JIT-less but still: first messages of each sender.
            await closed_loop(senders, 1.0, "warm-up")
            before = server.stored()
            results = [await measured(server, closed_loop(senders, args.seconds, f"{mode} closed loop"))]
            if args.rate > 0:
                await asyncio.sleep(0.5)
                results.append(await measured(server, open_loop(senders, args.seconds, args.rate, f"{mode} open {args.rate:.0f}/s")))
            await asyncio.sleep(0.3)
            stored = server.stored() - before
            acked = sum(r.ok for r in results)
            stats = batch_stats(await server.metrics())
            for s in senders:
                await s.close()
        lines.extend(r.line() for r in results)
        lines.append(f"{'':<28} stored {stored} (acked {acked}), {stats}")
        if stored != acked:
            lines.append(f"{'':<28} WARNING: stored != acked")
    finally:
        server.stop()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered load of the open-loop run (0: skip it)")
    parser.add_argument("--modes", default="unbatched,batched")
    parser.add_argument("--no-redis", action="store_true", help="single node without Redis (in-process fan-out and limits)")
    args = parser.parse_args()
    print(f"{args.senders} senders over {args.rooms} rooms, {args.seconds:g} s per run, "
          f"{'no Redis' if args.no_redis else 'Redis'}, {os.cpu_count()} CPU(s)", flush=True)
    report: list[str] = []
    for mode in args.modes.split(","):
        lines = await run_mode(args, mode.strip())
        for line in lines:
            print(line, flush=True)
        report.extend(lines)
    print("\nsummary")
    print("\n".join(report))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main())
