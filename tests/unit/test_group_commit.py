"""GroupCommit (storage/group_commit.py) with fake batch handlers: no network."""

from __future__ import annotations

import asyncio

import pytest

from chat_server.errors import Unavailable
from chat_server.storage.group_commit import RESOLVE_SLICE, GroupCommit


class Recorder:
    """A batch handler that records its batches and can be held and released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.hold = False

    async def __call__(self, items: list[int]) -> list[object]:
        self.batches.append(list(items))
        if self.hold:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_lone_item_goes_at_once_without_a_timer():
    handler = Recorder()
    commit = GroupCommit(handler)
    task = asyncio.ensure_future(commit.submit(1))
    await turns(2)  # the caller's turn (queues the item, schedules the runner), the runner's turn
    assert handler.batches == [[1]]
    assert await task == 10


async def test_items_arriving_while_a_batch_is_in_flight_form_the_next_batch():
    handler = Recorder()
    handler.hold = True
    commit = GroupCommit(handler)
    first = asyncio.ensure_future(commit.submit(1))
    await turns(2)
    later = [asyncio.ensure_future(commit.submit(i)) for i in range(2, 7)]
    await turns(2)
    assert handler.batches == [[1]]  # the others wait for the batch in flight
    handler.gates[0].set()
    await turns(3)
    assert handler.batches == [[1], [2, 3, 4, 5, 6]]
    handler.gates[1].set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40, 50, 60]
    assert (commit.stats.batches, commit.stats.items, commit.stats.largest) == (2, 6, 5)


async def test_max_batch_splits_a_long_queue():
    handler = Recorder()
    commit = GroupCommit(handler, max_batch=3)
    results = await asyncio.gather(*(commit.submit(i) for i in range(8)))
    assert results == [i * 10 for i in range(8)]
    assert [len(b) for b in handler.batches] == [3, 3, 2]


async def test_an_exception_in_the_results_fails_only_its_caller():
    commit = GroupCommit(Recorder())
    results = await asyncio.gather(commit.submit(1), commit.submit(-2), commit.submit(3), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError)


async def test_a_failed_batch_fails_exactly_its_callers():
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.01)
            raise Unavailable("database unavailable")
        return items

    commit = GroupCommit(flaky)
    doomed = [asyncio.ensure_future(commit.submit(i)) for i in range(3)]
    await turns(2)
    survivors = [asyncio.ensure_future(commit.submit(i)) for i in range(3, 5)]
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(o, Unavailable) for o in outcomes)
    assert await asyncio.gather(*survivors) == [3, 4]
    assert commit.stats.failed_batches == 1


async def test_results_are_handed_out_in_batch_order_when_batches_overlap():
    """Two batches in flight; the second comes back first.  Its callers still resume
    after the first batch's (callers rely on resuming in commit order)."""
    release_first = asyncio.Event()

    async def handler(items: list[str]) -> list[str]:
        if items[0] == "a":
            await release_first.wait()
        return items

    commit = GroupCommit(handler, max_in_flight=2)
    resumed: list[str] = []

    async def caller(item: str) -> None:
        resumed.append(await commit.submit(item))

    first = asyncio.ensure_future(caller("a"))
    await turns(2)
    second = [asyncio.ensure_future(caller(x)) for x in ("b", "c")]
    await turns(5)
    assert resumed == []  # "b", "c" are stored but wait for "a"'s batch
    release_first.set()
    await asyncio.gather(first, *second)
    assert resumed == ["a", "b", "c"]


async def test_a_caller_that_gave_up_before_its_batch_left_is_not_written():
    handler = Recorder()
    handler.hold = True
    commit = GroupCommit(handler)
    first = asyncio.ensure_future(commit.submit(1))
    await turns(2)
    quitter = asyncio.ensure_future(commit.submit(2))
    stayer = asyncio.ensure_future(commit.submit(3))
    await turns(1)
    quitter.cancel()
    handler.gates[0].set()
    await turns(3)
    handler.gates[1].set()
    assert await first == 10 and await stayer == 30
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert handler.batches == [[1], [3]]


async def test_close_waits_for_what_is_in_flight():
    handler = Recorder()
    commit = GroupCommit(handler)
    pending = [asyncio.ensure_future(commit.submit(i)) for i in range(4)]
    await turns(1)
    await commit.close()
    assert all(p.done() for p in pending)


async def test_a_big_batch_is_answered_a_slice_at_a_time_and_the_next_batch_leaves_meanwhile():
    """Callers of a big batch resume in item order, RESOLVE_SLICE per event-loop turn; what
    the first ones submit next leaves as the next batch before the last ones have resumed
    (a server whose every client waits for its previous message keeps the database busy)."""
    handler = Recorder()
    handler.hold = True
    commit = GroupCommit(handler)
    events: list[str] = []
    size = 3 * RESOLVE_SLICE + 5

    async def client(i: int) -> None:
        assert await commit.submit(i) == i * 10
        events.append(f"resumed {i}")
        await commit.submit(1000 + i)  # the client's next message

    blocker = asyncio.ensure_future(commit.submit(0))
    await turns(2)
    clients = [asyncio.ensure_future(client(i)) for i in range(1, size + 1)]
    await turns(2)
    handler.gates[0].set()  # the blocker's batch returns; the big one leaves
    await turns(3)
    assert handler.batches[1] == list(range(1, size + 1))
    handler.hold = False
    handler.gates[1].set()  # the big batch returns
    await asyncio.wait_for(asyncio.gather(*clients), 5)
    assert await blocker == 0
    assert events == [f"resumed {i}" for i in range(1, size + 1)]  # item order
    follow_ups = handler.batches[2:]
    assert sorted(i for b in follow_ups for i in b) == [1000 + i for i in range(1, size + 1)]
    assert follow_ups[0] == [1000 + i for i in range(1, RESOLVE_SLICE + 1)]  # left after the first slice
    assert len(follow_ups) > 1


async def test_on_batch_hears_each_batch_with_its_size_and_how_long_it_took():
    heard: list[tuple[int, float]] = []
    handler = Recorder()
    handler.hold = True
    commit = GroupCommit(handler, on_batch=lambda size, seconds: heard.append((size, seconds)))
    first = asyncio.ensure_future(commit.submit(1))
    await turns(2)
    later = [asyncio.ensure_future(commit.submit(i)) for i in (2, -3)]
    await turns(2)
    assert heard == []  # nothing is reported while the handler has not answered
    await asyncio.sleep(0.05)
    handler.gates[0].set()
    await turns(3)
    handler.gates[1].set()
    assert await first == 10
    assert [r if not isinstance(r, BaseException) else "refused" for r in await asyncio.gather(*later, return_exceptions=True)] \
        == [20, "refused"]
    assert [size for size, _ in heard] == [1, 2]  # a refused item is still part of its batch
    assert heard[0][1] >= 0.045  # the time the first batch was held
    assert heard[1][1] < heard[0][1]


async def test_on_batch_hears_a_failed_batch_too():
    heard: list[tuple[int, float]] = []

    async def down(items: list[int]) -> list[int]:
        await asyncio.sleep(0.02)
        raise Unavailable("database down")

    commit = GroupCommit(down, on_batch=lambda size, seconds: heard.append((size, seconds)))
    results = await asyncio.gather(commit.submit(1), commit.submit(2), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    assert len(heard) == 1 and heard[0][0] == 2 and heard[0][1] >= 0.015
