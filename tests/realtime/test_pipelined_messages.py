"""A client that sends messages without waiting for each ack (chat_server/pipelining.py):
its next message is checked while the last one is being stored, so one connection is not
held to one message per commit, and everything it sees stays in the order it sent."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from tests.conftest import ChatClient, make_token, unique
from tests.realtime.test_lean_transport import RawWebSocket

BURST = 40


def texts(n: int) -> list[str]:
    """Texts far enough apart that the repeat rule (near-identical texts) leaves them alone."""
    return [f"note {i}: {secrets.token_hex(8)}" for i in range(n)]


async def client(url: str, user: str) -> ChatClient:
    return await ChatClient(url, make_token(user)).connect()


async def emit_all(sender: ChatClient, events: list[tuple[str, dict[str, Any]]]) -> list[tuple[int, Any]]:
    """Emit every event without waiting for acks; the acks, in the order they arrived."""
    acks: list[tuple[int, Any]] = []
    all_in = asyncio.Event()

    def on_ack(index: int) -> Any:
        def record(data: Any = None) -> None:
            acks.append((index, data))
            if len(acks) == len(events):
                all_in.set()
        return record

    for index, (event, data) in enumerate(events):
        await sender.sio.emit(event, data, callback=on_ack(index))
    await asyncio.wait_for(all_in.wait(), 10)
    return acks


async def test_a_burst_is_stored_and_announced_in_send_order_and_shares_commits(start_node):
    node = await start_node(rate_limit_max_messages=1000)
    room = unique()
    alice, bob = await client(node.url, "alice"), await client(node.url, "bob")
    for member in (alice, bob):
        assert (await member.call("join_room", {"room_id": room}))["ok"]
    stats = node.components.message_store.batch_stats
    batches_before = stats.batches

    sent = texts(BURST)
    acks = await emit_all(alice, [("send_message", {"room_id": room, "content": text}) for text in sent])

    assert [index for index, _ in acks] == list(range(BURST))  # acks in send order
    assert all(ack["ok"] for _, ack in acks), [ack for _, ack in acks if not ack["ok"]][:3]
    seqs = [ack["message"]["seq"] for _, ack in acks]
    assert seqs == list(range(seqs[0], seqs[0] + BURST))  # stored in send order, no gap
    assert [ack["message"]["content"] for _, ack in acks] == sent
    await bob.wait_for("new_message", lambda m: m["seq"] == seqs[-1])
    assert [m["seq"] for m in bob.events["new_message"]] == seqs  # announced in order
    # One connection's messages shared commits: checked while the one before was stored.
    # One at a time, each message would have been a batch of its own.
    assert stats.batches - batches_before <= BURST // 2
    for member in (alice, bob):
        await member.disconnect()
        member.assert_valid()


async def test_a_repeated_text_sent_without_waiting_is_still_refused_as_a_duplicate(start_node):
    node = await start_node(rate_limit_max_messages=1000)
    room = unique()
    alice = await client(node.url, "alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    acks = await emit_all(alice, [("send_message", {"room_id": room, "content": "Follow my channel!"})] * 4)
    outcomes = [ack["ok"] or ack["error"]["details"]["rule"] for _, ack in sorted(acks, key=lambda a: a[0])]
    assert outcomes == [True, True, "repeated_message", "repeated_message"]  # SPAM_MAX_REPEATS = 2
    await alice.disconnect()


async def test_an_event_after_a_burst_waits_for_the_burst(start_node):
    node = await start_node(rate_limit_max_messages=1000)
    room = unique()
    alice = await client(node.url, "alice")
    assert (await alice.call("join_room", {"room_id": room}))["ok"]
    events = [("send_message", {"room_id": room, "content": text}) for text in texts(10)]
    acks = await emit_all(alice, [*events, ("leave_room", {"room_id": room})])
    assert [index for index, _ in acks] == list(range(11))
    assert all(ack["ok"] for _, ack in acks)  # every message was sent while still in the room
    await alice.disconnect()


async def test_messages_under_way_at_a_disconnect_are_stored_and_announced_before_the_departure(start_node):
    node = await start_node(rate_limit_max_messages=1000)
    room = unique()
    bob = await client(node.url, "bob")
    assert (await bob.call("join_room", {"room_id": room}))["ok"]
    alice = await RawWebSocket().connect(node.url, "alice")
    assert (await alice.call("join_room", {"room_id": room}, 1))["ok"]
    sent = texts(10)
    for text in sent:  # no ack asked, and the connection ends right after the last
        alice.send_text("42" + json.dumps(["send_message", {"room_id": room, "content": text}]))
    alice.close()
    left = await bob.wait_for("user_left", lambda e: e["user_id"] == "alice")
    contents = [m["content"] for m in bob.events["new_message"]]
    assert contents == sent
    assert left["room_id"] == room
    await bob.disconnect()
    bob.assert_valid()
