"""Departures (realtime/drain.py): disconnect cleanups that outlive their caller."""

from __future__ import annotations

import asyncio

from chat_server.realtime.drain import Departures


async def test_a_cancelled_caller_does_not_stop_its_cleanup_and_wait_sees_it_finish():
    departures = Departures()
    release = asyncio.Event()
    done: list[str] = []

    async def cleanup() -> None:
        await release.wait()
        done.append("alice")

    caller = asyncio.ensure_future(departures.run("sid-1", cleanup))
    await asyncio.sleep(0)
    caller.cancel()  # the HTTP server cancelling the connection's handler
    await asyncio.gather(caller, return_exceptions=True)
    assert not await departures.wait(0.05)  # still under way
    release.set()
    assert await departures.wait(1)
    assert done == ["alice"]
    assert await departures.wait(0)  # nothing left


async def test_a_second_call_for_the_same_key_joins_the_running_cleanup():
    departures = Departures()
    started: list[int] = []
    release = asyncio.Event()

    async def cleanup() -> None:
        started.append(1)
        await release.wait()

    first = asyncio.ensure_future(departures.run("sid-1", cleanup))
    second = asyncio.ensure_future(departures.run("sid-1", cleanup))
    await asyncio.sleep(0.01)
    assert started == [1] and not first.done() and not second.done()
    release.set()
    await asyncio.gather(first, second)
    assert started == [1]
