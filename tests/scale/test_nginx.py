"""Three server processes behind a real nginx (docker/nginx.test.conf.template): Socket.IO
clients on both transports through the load balancer, long-polling kept on one node,
cross-node chat, and a node killed and another restarted under load."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REDIS_URL, ChatClient, free_port, make_token, unique
from tests.scale.conftest import LOAD_LIMITS, new_id, stored_messages, wait_until

TEMPLATE = Path(__file__).resolve().parents[2] / "docker" / "nginx.test.conf.template"


class Nginx:
    def __init__(self, upstream_ports: list[int]) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            pytest.fail("nginx is not installed (apt-get install nginx-light); .ci/run installs it")
        self.binary = binary
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="chat-nginx-"))
        upstreams = "\n        ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports)
        conf = TEMPLATE.read_text().replace("__LISTEN_PORT__", str(self.port)).replace("__UPSTREAMS__", upstreams)
        conf = conf.replace("__PREFIX__", str(self.prefix))
        (self.prefix / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-e", str(self.prefix / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(self.url + "/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        assert await wait_until(up, timeout=10), (self.prefix / "error.log").read_text()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self.prefix, ignore_errors=True)


def _client(url: str, user: str, source: str, transport: str) -> ChatClient:
    # Each client connects from its own loopback address, so the balancer's per-address
    # stickiness spreads them over the nodes like clients of different machines.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
    client = ChatClient(
        url, make_token(user),
        client_options={"reconnection": True, "reconnection_delay": 0.2, "reconnection_delay_max": 1, "http_session": session},
        transports=[transport],
    )
    client.session = session  # type: ignore[attr-defined]
    return client


async def _call_retrying(client: ChatClient, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """Call until answered ``ok``, across reconnects, as a real client does: a
    long-polling client learns that its node went away only at its next poll."""
    last: Any = None
    for _ in range(30):
        try:
            await wait_until(lambda: client.sio.connected, timeout=5)
            last = await client.call(event, data, timeout=3)
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.3)
            continue
        if last["ok"]:
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.3)
    raise AssertionError(f"{event} never succeeded: {last!r}")


async def test_three_nodes_behind_nginx(spawn_server, database_url):
    env = {"REDIS_URL": REDIS_URL, "SHUTDOWN_TIMEOUT_MS": "4000", **LOAD_LIMITS}
    nodes = [await spawn_server(**env) for _ in range(3)]
    nginx = Nginx([n.port for n in nodes])
    await nginx.start()
    room = unique()
    clients: list[ChatClient] = []
    try:
        # Which node the balancer picks for each source address; pick two addresses per
        # node so that every node has a WebSocket and a long-polling client.
        by_node: dict[str, list[str]] = {}
        for last in range(2, 60):
            source = f"127.0.0.{last}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))) as http:
                async with http.get(nginx.url + "/healthz") as resp:
                    by_node.setdefault(resp.headers["X-Upstream-Addr"], []).append(source)
        assert len(by_node) == 3, f"the balancer did not spread 58 addresses over 3 nodes: {by_node}"
        sources = [addr for addrs in by_node.values() for addr in addrs[:2]]
        for i, source in enumerate(sources):
            transport = "polling" if i % 2 else "websocket"
            client = _client(nginx.url, f"user{i}", source, transport)
            await client.connect()
            clients.append(client)

            def on_connect(client: ChatClient = client) -> Any:
                # What a real client does on every (re)connect: join with since_seq.
                async def rejoin() -> None:
                    since = max((m["seq"] for m in client.events["new_message"]), default=0)
                    ack = await client.call("join_room", {"room_id": room, "since_seq": since})
                    for m in ack.get("history", []):
                        client.events["caught_up"].append(m)

                return asyncio.ensure_future(rejoin())

            client.sio.on("connect", on_connect)
            assert (await client.call("join_room", {"room_id": room}))["ok"]

        # Long-polling clients stay on one node; clients are spread over the nodes.
        log = (nginx.prefix / "access.log").read_text().splitlines()
        by_source: dict[str, set[str]] = {}
        for line in log:
            if "/socket.io/" in line:
                source = line.split()[0]
                upstream = line.split("upstream=")[1].split()[0]
                by_source.setdefault(source, set()).add(upstream)
        for source, upstreams in by_source.items():
            assert len(upstreams) == 1, f"{source} was balanced over {upstreams}"
        assert len({u for ups in by_source.values() for u in ups}) == 3, by_source  # a polling client on each node

        # Cross-node chat on both transports.
        for i, client in enumerate(clients):
            ack = await client.call("send_message", {"room_id": room, "content": f"hello from {i}", "client_msg_id": f"hello-{i}"})
            assert ack["ok"], ack
        for client in clients:
            for i in range(6):
                await client.wait_for("new_message", lambda m, i=i: m["client_msg_id"] == f"hello-{i}")

        # Load, then a node is killed and another restarted under it.
        acked: dict[str, str] = {}
        pending: list[tuple[ChatClient, str]] = []
        stop = asyncio.Event()

        async def load(client: ChatClient, name: str) -> None:
            while not stop.is_set():
                cid = f"{name}-{new_id()}"
                try:
                    ack = await client.call("send_message", {"room_id": room, "content": "load", "client_msg_id": cid}, timeout=3)
                    if ack["ok"]:
                        acked[cid] = ack["message"]["message_id"]
                    else:
                        pending.append((client, cid))
                except Exception:
                    pending.append((client, cid))
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(load(c, f"c{i}")) for i, c in enumerate(clients)]
        await asyncio.sleep(1.0)
        nodes[1].kill()
        await asyncio.sleep(1.5)
        code = await asyncio.get_running_loop().run_in_executor(None, nodes[2].terminate, 15)
        assert code == 0
        nodes[2] = await nodes[2].start()  # restarted on the same port, rejoins the pool
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*tasks)

        for client in clients:
            assert await wait_until(lambda c=client: c.sio.connected, timeout=10), "client did not reconnect"
        # Resend what was not acknowledged (same client_msg_id: stored at most once).
        for client, cid in pending:
            ack = await _call_retrying(client, "send_message", {"room_id": room, "content": "load", "client_msg_id": cid})
            acked[cid] = ack["message"]["message_id"]
        await asyncio.sleep(1.0)

        stored = stored_messages(database_url, room)
        stored_cids = [r[1] for r in stored]
        assert len(stored_cids) == len(set(stored_cids)), "stored exactly once"
        assert set(acked) <= set(stored_cids), "every acknowledged message is stored"
        assert [r[0] for r in stored] == list(range(1, len(stored) + 1)), "seq gapless"
        for client in clients:
            since = 0
            seen = {m["message_id"] for m in client.events["new_message"]} | {m["message_id"] for m in client.events["caught_up"]}
            while True:  # final catch-up, like a client noticing gaps in seq
                ack = await _call_retrying(client, "join_room", {"room_id": room, "since_seq": since})
                seen |= {m["message_id"] for m in ack["history"]}
                since = max([since] + [m["seq"] for m in ack["history"]])
                if not ack["has_more"]:
                    break
            assert {r[2] for r in stored} <= seen
        live_total = sum(len({m["message_id"] for m in c.events["new_message"]}) for c in clients)
        print(f"\nnginx + 3 nodes: {len(acked)} acked ({len(pending)} after resend), {len(stored)} stored, "
              f"{live_total} live deliveries to {len(clients)} clients, all caught up")
    finally:
        for client in clients:
            # Drop the transport the way a closing browser tab does (python-engineio's
            # polling client otherwise waits for its pending long-poll to time out).
            await client.sio.eio.disconnect(abort=True)
            await client.session.close()  # type: ignore[attr-defined]
        nginx.stop()
