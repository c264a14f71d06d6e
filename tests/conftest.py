"""Shared fixtures: a private database per test run, real servers on real ports, real
Socket.IO clients whose every received event is checked against its Out schema.

``DATABASE_URL`` / ``REDIS_URL`` point the tests at other servers; by default they use
the machine's PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379).
Each run creates its own database (dropped at the end) and its own Redis key prefix,
so runs never collide.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import jwt
import psycopg2
import pytest
import socketio
from aiohttp.test_utils import TestServer

from chat_server.app import COMPONENTS_KEY, create_app
from chat_server.config import Settings
from chat_server.migrate import apply_migrations
from chat_server.schemas import SERVER_EVENTS

BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
JWT_SECRET = "test-secret-" + "x" * 40
RUN_ID = uuid.uuid4().hex[:8]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def create_database(name: str) -> str:
    conn = psycopg2.connect(BASE_DATABASE_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return _with_database(BASE_DATABASE_URL, name)


def drop_database(name: str) -> None:
    conn = psycopg2.connect(BASE_DATABASE_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def database_url() -> Any:
    """A migrated database private to this test run."""
    name = f"chat_test_{RUN_ID}"
    url = create_database(name)
    apply_migrations(url)
    yield url
    drop_database(name)


@pytest.fixture
async def redis_scratch() -> Any:
    """A Redis client and a key prefix private to one test; its keys are removed after."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    prefix = f"chattest:{uuid.uuid4().hex}"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def fresh_database() -> Any:
    """An empty (unmigrated) database private to one test."""
    name = f"chat_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    yield url
    drop_database(name)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        environment="test",
        jwt_secret=JWT_SECRET,
        database_url=database_url,
        redis_url=None,
        redis_prefix=f"chattest:{RUN_ID}",
        log_level="WARNING",
        room_stats_interval_s=0.2,
        db_timeout_s=5.0,
    )
    return base.with_overrides(**overrides)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


def make_token(sub: str, *, name: str | None = None, role: str = "user", ttl: int = 3600, secret: str = JWT_SECRET, **extra: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "name": name or sub, "role": role, "iat": now, "exp": now + ttl, **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


def unique(prefix: str = "room") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class FakeClock:
    """Time that moves only when a test says so (limits, expiry and windows without sleeping)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SchemaViolation(AssertionError):
    pass


class ChatClient:
    """A real ``socketio.AsyncClient`` that records events and validates each one."""

    def __init__(self, url: str, token: str | None, *, client_options: dict[str, Any] | None = None, **connect_kwargs: Any) -> None:
        self.url = url
        self.token = token
        self.sio = socketio.AsyncClient(**{"reconnection": False, **(client_options or {})})
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.violations: list[str] = []
        self._waiters: list[tuple[str, Callable[[Any], bool], asyncio.Future[Any]]] = []
        self._connect_kwargs = connect_kwargs
        self.sio.on("*", self._on_any)

    async def _on_any(self, event: str, data: Any = None) -> None:
        schema = SERVER_EVENTS.get(event)
        if schema is None:
            self.violations.append(f"unexpected event {event!r}")
        else:
            errors = schema().validate(data)
            if errors:
                self.violations.append(f"{event}: {errors} in {data!r}")
        self.events[event].append(data)
        for waiter in list(self._waiters):
            name, predicate, future = waiter
            if name == event and not future.done() and predicate(data):
                future.set_result(data)
                self._waiters.remove(waiter)

    async def connect(self, **kwargs: Any) -> ChatClient:
        options = {"transports": ["websocket"], "wait_timeout": 5, **self._connect_kwargs, **kwargs}
        if self.token is not None and "auth" not in options:
            options["auth"] = {"token": self.token}
        await self.sio.connect(self.url, socketio_path="socket.io", **options)
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 5) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def wait_for(self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 5) -> Any:
        for data in self.events.get(event, []):
            if predicate(data):
                return data
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((event, predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"no {event!r} event matching within {timeout}s; saw {dict(self.events)}") from None

    async def disconnect(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()

    def assert_valid(self) -> None:
        if self.violations:
            raise SchemaViolation("; ".join(self.violations))


class Node:
    """One running chat server (an aiohttp TestServer on a real port)."""

    def __init__(self, server: TestServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def components(self) -> Any:
        return self.server.app[COMPONENTS_KEY]


@pytest.fixture
async def start_node(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    started: list[TestServer] = []

    async def start(**overrides: Any) -> Node:
        app = create_app(settings.with_overrides(**overrides))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        started.append(server)
        return Node(server)

    yield start
    for server in reversed(started):
        await server.close()


@pytest.fixture
async def node(start_node: Callable[..., Awaitable[Node]]) -> Node:
    return await start_node()


@pytest.fixture
async def connect(node: Node) -> AsyncIterator[Callable[..., Awaitable[ChatClient]]]:
    """``await connect("alice")`` → a connected, schema-checking client of ``node``."""
    clients: list[ChatClient] = []

    async def factory(user: str | None = None, *, role: str = "user", token: str | None = None, url: str | None = None, **kwargs: Any) -> ChatClient:
        client = ChatClient(url or node.url, token if token is not None else (make_token(user, role=role) if user else None))
        clients.append(client)
        return await client.connect(**kwargs)

    yield factory
    for client in clients:
        await client.disconnect()
    for client in clients:
        client.assert_valid()


async def rest(
    node: Node,
    method: str,
    path: str,
    user: str | None = None,
    *,
    role: str = "user",
    token: str | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """One REST call against ``node`` as ``user`` (or with ``token``); returns
    ``(status, body)`` with the body parsed as JSON when it is JSON."""
    headers = dict(kwargs.pop("headers", {}) or {})
    if token is None and user is not None:
        token = make_token(user, role=role)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, node.url + path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real ``chat-server run`` process (for tests that kill or restart a node)."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20) -> ServerProcess:
        import subprocess
        import sys
        import tempfile

        import aiohttp

        # Output goes to a file: a pipe nobody reads could fill up and stall the server.
        self.log = tempfile.NamedTemporaryFile(prefix="chat-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat_server", "run", "--port", str(self.port), "--host", "127.0.0.1"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited: {self.output()[-3000:]}")
                try:
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("server did not become ready")

    def output(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            return int(self.proc.wait(timeout))
        return int(self.proc.returncode) if self.proc else 0


@pytest.fixture
def spawn_server(database_url: str) -> Any:
    """``await spawn_server(**env)`` → a started ``chat-server run`` process on a free port."""
    servers: list[ServerProcess] = []

    async def spawn(**env: str) -> ServerProcess:
        base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        base.update({
            "DATABASE_URL": database_url,
            "JWT_SECRET": JWT_SECRET,
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "REDIS_PREFIX": f"chattest:{RUN_ID}",
        })
        base.update(env)
        server = ServerProcess(base, free_port())
        servers.append(server)
        return await server.start()

    yield spawn
    for server in servers:
        server.kill()
