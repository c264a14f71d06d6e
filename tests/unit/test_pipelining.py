"""A connection's events in order, a message's successor starting once the message has its
place (chat_server/pipelining.py)."""

from __future__ import annotations

import asyncio

from chat_server import pipelining
from chat_server.pipelining import EventPipeline, next_event_may_start


class Event:
    """An event whose progress the test drives: it records when it started, optionally says
    "the next may start", then waits to be finished."""

    def __init__(self, log: list[str], name: str, *, signals: bool = True) -> None:
        self.log = log
        self.name = name
        self.signals = signals
        self.finish = asyncio.Event()
        self.ended = False

    async def run(self) -> None:
        self.log.append(f"start {self.name}")
        await asyncio.sleep(0)
        if self.signals:
            next_event_may_start()
            next_event_may_start()  # said twice: harmless
        await self.finish.wait()
        self.log.append(f"end {self.name}")
        self.ended = True


async def settle_loop() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_an_event_that_has_its_place_lets_the_next_one_start_before_it_ends() -> None:
    log: list[str] = []
    pipeline = EventPipeline()
    first, second = Event(log, "1"), Event(log, "2")
    await pipeline.run(first.run(), overlap=True)  # returns once the event said so
    await pipeline.run(second.run(), overlap=True)
    assert log == ["start 1", "start 2"] and pipeline.running == 2
    second.finish.set()
    first.finish.set()
    await pipeline.settle()
    assert first.ended and second.ended and pipeline.running == 0


async def test_an_event_that_never_says_so_holds_the_next_one_until_it_ends() -> None:
    log: list[str] = []
    pipeline = EventPipeline()
    refused = Event(log, "refused", signals=False)  # e.g. refused by its checks
    started = asyncio.ensure_future(pipeline.run(refused.run(), overlap=True))
    await settle_loop()
    assert not started.done()
    refused.finish.set()
    await started
    assert log == ["start refused", "end refused"]


async def test_an_event_that_does_not_overlap_waits_for_every_earlier_one() -> None:
    log: list[str] = []
    pipeline = EventPipeline()
    messages = [Event(log, f"m{i}") for i in range(3)]
    for message in messages:
        await pipeline.run(message.run(), overlap=True)
    leave = Event(log, "leave", signals=False)
    leave.finish.set()
    waiting = asyncio.ensure_future(pipeline.run(leave.run(), overlap=False))
    await settle_loop()
    assert "start leave" not in log
    for message in reversed(messages):
        message.finish.set()
    await waiting
    assert log[-1] == "end leave" and log.index("start leave") > max(log.index(f"end m{i}") for i in range(3))


async def test_at_most_max_overlap_events_of_a_connection_are_under_way(monkeypatch) -> None:
    monkeypatch.setattr(pipelining, "MAX_OVERLAP", 3)
    log: list[str] = []
    pipeline = EventPipeline()
    events = [Event(log, str(i)) for i in range(4)]
    for event in events[:3]:
        await pipeline.run(event.run(), overlap=True)
    fourth = asyncio.ensure_future(pipeline.run(events[3].run(), overlap=True))
    await settle_loop()
    assert not fourth.done() and "start 3" not in log
    events[0].finish.set()
    await fourth
    assert "start 3" in log
    for event in events:
        event.finish.set()
    await pipeline.settle()


async def test_the_reader_being_cancelled_does_not_cancel_an_event_under_way() -> None:
    log: list[str] = []
    pipeline = EventPipeline()
    event = Event(log, "slow", signals=False)
    reader = asyncio.ensure_future(pipeline.run(event.run(), overlap=True))
    await settle_loop()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    event.finish.set()
    await pipeline.settle()
    assert event.ended  # its ack is still owed: it ran to its end


async def test_outside_an_overlapping_event_the_signal_does_nothing() -> None:
    next_event_may_start()  # REST handlers, tests, the stock Socket.IO path: no error, no effect
    log: list[str] = []
    pipeline = EventPipeline()
    inline = Event(log, "join")  # signals, but it does not overlap: it still runs to its end
    inline.finish.set()
    await pipeline.run(inline.run(), overlap=False)
    assert inline.ended and pipeline.running == 0
