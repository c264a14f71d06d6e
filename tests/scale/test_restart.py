"""A node stopped gracefully (SIGTERM) or killed under load: clients move to another node,
catch up with since_seq, resend what was not acknowledged, and nothing acknowledged is
lost or duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import pytest

from tests.conftest import REDIS_URL, ChatClient, make_token, unique
from tests.scale.conftest import LOAD_LIMITS, new_id, stored_messages


class Sender:
    """Sends continuously until its connection drops; remembers what was acknowledged."""

    def __init__(self, client: ChatClient, room: str, name: str) -> None:
        self.client = client
        self.room = room
        self.name = name
        self.acked: dict[str, str] = {}
        self.pending: list[str] = []  # sent, no positive ack (refused, or lost with the node)
        self.refusals: list[str] = []

    async def run(self) -> None:
        while self.client.sio.connected:
            cid = f"{self.name}-{new_id()}"
            try:
                ack = await self.client.call("send_message", {"room_id": self.room, "content": "load", "client_msg_id": cid}, timeout=5)
            except Exception:
                self.pending.append(cid)
                return
            if ack["ok"]:
                self.acked[cid] = ack["message"]["message_id"]
            else:
                self.refusals.append(ack["error"]["code"])
                self.pending.append(cid)
            await asyncio.sleep(0.01)


async def _move_and_catch_up(sender: Sender, url: str, user: str, room: str) -> dict[str, Any]:
    """Reconnect elsewhere, resend the unacknowledged, catch up with since_seq from the
    first seq not seen (across nodes messages may arrive out of seq order, so a node that
    dies can leave a gap below the newest message a client saw)."""
    client = await ChatClient(url, make_token(user)).connect()
    seen = {m["message_id"]: m for m in sender.client.events["new_message"]}
    seen_seqs = {m["seq"] for m in seen.values()}
    since = next(s for s in range(1, max(seen_seqs, default=0) + 2) if s not in seen_seqs) - 1
    while True:
        ack = await client.call("join_room", {"room_id": room, "since_seq": since})
        assert ack["ok"], ack
        for m in ack["history"]:
            seen[m["message_id"]] = m
            since = max(since, m["seq"])
        if not ack["has_more"]:
            break
    for cid in sender.pending:
        ack = await client.call("send_message", {"room_id": room, "content": "load", "client_msg_id": cid})
        assert ack["ok"], ack
        sender.acked[cid] = ack["message"]["message_id"]
    await client.disconnect()
    return seen


@pytest.mark.parametrize("how", ["sigterm", "kill"])
async def test_node_stopped_under_load_loses_nothing(how, spawn_server, database_url):
    env = {"REDIS_URL": REDIS_URL, "SHUTDOWN_TIMEOUT_MS": "6000", **LOAD_LIMITS}
    doomed = await spawn_server(**env)
    survivor = await spawn_server(**env)
    room = unique()
    # Users of their own: their rate-limit windows live in the shared Redis, and this load
    # would fill those of common names for the tests that run after it.
    alice_id = unique("alice")
    alice = await ChatClient(doomed.url, make_token(alice_id)).connect()
    bob = await ChatClient(survivor.url, make_token(unique("bob"))).connect()
    loads: list[asyncio.Task[None]] = []
    try:
        for c in (alice, bob):
            assert (await c.call("join_room", {"room_id": room}))["ok"]
        await asyncio.sleep(0.2)
        sender = Sender(alice, room, "alice")
        bob_sender = Sender(bob, room, "bob")
        load = asyncio.create_task(sender.run())
        bob_load = asyncio.create_task(bob_sender.run())
        loads += [load, bob_load]
        await asyncio.sleep(1.0)
        started = time.monotonic()
        if how == "sigterm":
            code = await asyncio.get_running_loop().run_in_executor(None, doomed.terminate, 20)
            took = time.monotonic() - started
            assert code == 0, doomed.output()[-2000:]
            assert took < 10, f"graceful stop took {took:.1f}s"
        else:
            doomed.kill()
        # alice's connection dropped with the node.  Not wait_for, which after its timeout
        # waits without bound for the task it cancelled: this test hung once in CI (cause
        # not found; bob was still sending 20 minutes later), and every wait here and in the
        # clean-up is bounded now, so such a hang fails the test instead.
        done, _ = await asyncio.wait({load}, timeout=10)
        assert load in done, "alice's sender still running 10 s after her node stopped"
        load.result()
        assert not alice.sio.connected
        bob_load.cancel()
        await asyncio.gather(bob_load, return_exceptions=True)
        seen_by_alice = await _move_and_catch_up(sender, survivor.url, alice_id, room)
        await asyncio.sleep(0.5)

        stored = stored_messages(database_url, room)
        stored_cids = [r[1] for r in stored]
        assert len(stored_cids) == len(set(stored_cids)), "no message stored twice"
        assert set(sender.acked) | set(bob_sender.acked) <= set(stored_cids), "every acknowledged message is stored"
        assert set(sender.acked) == {c for c in stored_cids if c.startswith("alice-")}, "alice's resends completed the set"
        assert [r[0] for r in stored] == list(range(1, len(stored) + 1)), "seq gapless"
        # Everyone ends up with every stored message (live, by catch-up, or in their own acks).
        alice_view = set(seen_by_alice) | set(sender.acked.values())
        assert {r[2] for r in stored} <= alice_view
        bob_view = {m["message_id"] for m in bob.events["new_message"]} | set(bob_sender.acked.values())
        missing_for_bob = {r[2] for r in stored} - bob_view
        if how == "sigterm":
            # Bob stayed connected to the survivor; a graceful stop broadcasts everything it stored.
            assert not missing_for_bob, f"bob missed {len(missing_for_bob)} messages live"
        else:
            # A killed node may die between commit and broadcast: bob sees the gap in seq
            # and fills it, as clients do.
            live_seqs = sorted(m["seq"] for m in bob.events["new_message"])
            gaps = [s for s in range(1, max(live_seqs) + 1) if s not in set(live_seqs)] if live_seqs else []
            if gaps:
                ack = await bob.call("join_room", {"room_id": room, "since_seq": gaps[0] - 1})
                bob_view |= {m["message_id"] for m in ack["history"]}
            assert not ({r[2] for r in stored} - bob_view), "bob filled every gap from history"
        if how == "sigterm":
            # A graceful stop answers what it took in: refusals say "retry", nothing is lost silently.
            assert set(sender.refusals) <= {"unavailable"}
        print(f"\n{how}: alice acked {len(sender.acked)} (of which {len(sender.pending)} by resend after moving), "
              f"bob acked {len(bob_sender.acked)}, stored {len(stored)}, alice caught up {len(seen_by_alice)}")
    finally:
        # A failure above must not leave the senders running or the clean-up waiting forever.
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        await asyncio.wait_for(alice.disconnect(), 10)
        await asyncio.wait_for(bob.disconnect(), 10)


# Two nodes whose users count as gone 1.5 s after their node's last heartbeat.
SHORT_PRESENCE = {"REDIS_URL": REDIS_URL, "PRESENCE_TTL_MS": "1500", **LOAD_LIMITS}


async def in_room(url: str, user: str, room: str) -> ChatClient:
    client = await ChatClient(url, make_token(user)).connect()
    assert (await client.call("join_room", {"room_id": room}))["ok"]
    return client


async def test_users_of_a_killed_node_are_announced_as_left(spawn_server):
    """A node that dies cannot say goodbye for its users: once their presence expires the
    surviving node announces user_left and presence offline, once, and stops listing them."""
    doomed = await spawn_server(**SHORT_PRESENCE)
    survivor = await spawn_server(**SHORT_PRESENCE)
    room = unique()
    a, c, d = unique("alice"), unique("carol"), unique("dave")
    alice = await in_room(doomed.url, a, room)
    carol = await in_room(survivor.url, c, room)
    dave = await in_room(survivor.url, d, room)
    try:
        await carol.wait_for("user_joined", lambda e: e["user_id"] == d)
        await asyncio.sleep(2.0)  # longer than the TTL: the survivor's heartbeat keeps its own users
        assert "user_left" not in carol.events
        doomed.kill()
        left = await carol.wait_for("user_left", lambda e: e["user_id"] == a, timeout=6)
        assert left["room_id"] == room and left["username"] == a
        offline = await carol.wait_for("presence", lambda e: e["user_id"] == a and e["status"] == "offline")
        assert offline == {"user_id": a, "status": "offline"}
        await asyncio.sleep(1.5)  # further sweeps announce nothing more
        assert [e["user_id"] for e in carol.events["user_left"]] == [a]
        ack = await dave.call("join_room", {"room_id": room})
        assert sorted(u["user_id"] for u in ack["online_users"]) == sorted([c, d])
    finally:
        for client in (alice, carol, dave):
            await client.disconnect()


async def test_a_stalled_node_puts_its_users_back_after_they_were_announced_as_left(spawn_server):
    """A node frozen past the presence TTL looks dead to the others (they announce its users
    as left); when it runs again its heartbeat puts them back and announces them again."""
    frozen = await spawn_server(**SHORT_PRESENCE)
    survivor = await spawn_server(**SHORT_PRESENCE)
    room = unique()
    a, c = unique("alice"), unique("carol")
    carol = await in_room(survivor.url, c, room)
    alice = await in_room(frozen.url, a, room)
    try:
        joined = await carol.wait_for("user_joined", lambda e: e["user_id"] == a)
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            await carol.wait_for("user_left", lambda e: e["user_id"] == a, timeout=6)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        back = await carol.wait_for("user_joined", lambda e: e["user_id"] == a and e is not joined, timeout=6)
        assert back["room_id"] == room
        ack = await carol.call("join_room", {"room_id": room})
        assert sorted(u["user_id"] for u in ack["online_users"]) == sorted([a, c])
        sent = await alice.call("send_message", {"room_id": room, "content": "still here"})
        assert sent["ok"], sent  # alice's connection lived through it
    finally:
        for client in (alice, carol):
            await client.disconnect()


@pytest.mark.parametrize("who_leaves_first", ["node", "clients"])
async def test_a_node_stopped_gracefully_announces_every_departure_at_once(spawn_server, who_leaves_first):
    """A graceful stop (SIGTERM) says goodbye for its users before it lets go of Redis: the
    other nodes hear user_left for each of them at once, not a presence TTL later, and no
    departure fails, also when the users were leaving on their own as the stop began (a
    load balancer draining, a stream ending)."""
    env = {"REDIS_URL": REDIS_URL, "SHUTDOWN_TIMEOUT_MS": "8000", **LOAD_LIMITS}
    doomed = await spawn_server(**env)
    survivor = await spawn_server(**env)
    room = unique()
    c = unique("carol")
    carol = await in_room(survivor.url, c, room)
    users = [unique(f"u{i}") for i in range(150)]
    leaving: list[ChatClient] = []
    try:
        for batch in range(0, len(users), 25):
            leaving += await asyncio.gather(*(in_room(doomed.url, u, room) for u in users[batch:batch + 25]))
        for u in users:
            await carol.wait_for("user_joined", lambda e, u=u: e["user_id"] == u, timeout=10)
        if who_leaves_first == "clients":
            for client in leaving:  # the transports close now; the node sees it as it stops
                asyncio.ensure_future(client.sio.eio.disconnect(abort=True))
            await asyncio.sleep(0)
        code = await asyncio.get_running_loop().run_in_executor(None, doomed.terminate, 20)
        assert code == 0, doomed.output()[-2000:]
        # Well within the presence TTL (30 s): these are the node's own goodbyes.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len({e["user_id"] for e in carol.events["user_left"]}) < len(users):
            await asyncio.sleep(0.05)
        left = {e["user_id"] for e in carol.events["user_left"]}
        assert left == set(users), f"{len(set(users) - left)} of {len(users)} departures not announced; the node said: {doomed.output()[-2000:]}"
        assert "failed" not in doomed.output(), doomed.output()[-3000:]
        ack = await carol.call("join_room", {"room_id": room})
        assert [u["user_id"] for u in ack["online_users"]] == [c]
    finally:
        for client in (carol, *leaving):
            with contextlib.suppress(Exception):
                await client.disconnect()
