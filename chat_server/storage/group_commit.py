"""Group commit: concurrent writes collected into batches, one round trip per batch.

Reads that many callers make at once use it the same way (the block lists and ban reads of a
wave of connections and joins, ``storage.moderation``): an item's batch leaves after the
item was submitted, so a read answered this way is never older than the call.

Callers ``await submit(item)``; a runner hands every item waiting at that moment to the
batch handler at once and resolves each caller's future with its own result.  Batching
is *natural*: there is no timer.  When nothing is in flight, a lone item starts a batch
on the next turn of the event loop (so it waits for nothing); while a batch is in flight,
new items queue up and form the next batch.  Under load, batches grow exactly as much as
the round trip is slow, which keeps the number of round trips per item well below one.

Results are handed out in batch order, each batch's in item order: when several batches
are in flight, a later one is not resolved before an earlier one even if its round trip
came back first.  Callers that resume in the order their futures resolve therefore see
commit order (``MessageService`` relies on this to broadcast a room's messages in ``seq``
order).  A big batch is handed out ``RESOLVE_SLICE`` callers per event-loop turn, so that
what its first callers submit next (a client whose next message waited for this one's
ack) leaves as the next batch while the rest are still being answered: the database and
the event loop work at the same time instead of in turns.

The handler returns one result per item; an exception *instance* in that list fails only
that item's caller.  An exception raised by the handler fails every caller of the batch
(and nobody else): a database outage answers exactly the messages that were in it.

``on_batch(size, seconds)`` hears of every batch once its handler has answered (or
failed): how many items it held and how long the handler took (for the message inserts,
the commit round trip every sender of the batch waited for).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BatchHandler = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]

#: Callers resumed per event-loop turn when a batch's results are handed out (see ``_run``).
RESOLVE_SLICE = 32


@dataclass
class BatchStats:
    """Counters, for tests, benchmarks and metrics."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failed_batches: int = 0

    @property
    def mean_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


async def one_by_one(items: Sequence[T], call: Callable[[T], Awaitable[R]]) -> list[R | BaseException]:
    """A batch handler's fallback when its batch statement was refused: each item in its own
    call, in order, each caller with its own outcome (an exception fails only its item)."""
    results: list[R | BaseException] = []
    for item in items:
        try:
            results.append(await call(item))
        except Exception as exc:
            results.append(exc)
    return results


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        handler: BatchHandler[T, R],
        *,
        max_batch: int = 256,
        max_in_flight: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._handler = handler
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._on_batch = on_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._starting = False
        self._tail: asyncio.Future[None] | None = None  # resolution of the latest batch
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, item: T) -> R:
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """``submit`` in two steps: ``item`` takes its place in the batch order now, and the
        returned future is its result.  Items enqueued later are written in a later batch
        or later in the same one."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._starting and self._in_flight < self._max_in_flight:
            self._start(loop)
        # A caller that gives up (cancelled) cancels its future but does not take its item
        # out of the batch (the write may already be on its way): the runner skips
        # futures that are done.
        return future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._in_flight += 1
        self._starting = True  # that runner takes everything pending when it starts
        task = loop.create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        # Items are taken when the runner starts (one loop turn after the first submit), so
        # everything submitted in the same turn shares the batch.
        self._starting = False
        taken = self._pending[: self._max_batch]
        del self._pending[: len(taken)]
        # Callers that gave up before the batch left are not written.
        batch = [entry for entry in taken if not entry[1].done()]
        if self._pending and self._in_flight < self._max_in_flight:
            self._start(asyncio.get_running_loop())  # more than one batch is waiting
        previous = self._tail
        resolved: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tail = resolved
        results: Sequence[Any] | None = None
        handed = 0  # callers resumed so far
        try:
            try:
                if batch:
                    self.stats.batches += 1
                    self.stats.items += len(batch)
                    self.stats.largest = max(self.stats.largest, len(batch))
                    started = time.perf_counter()
                    try:
                        results = await self._handler([item for item, _ in batch])
                        if len(results) != len(batch):
                            raise RuntimeError(f"batch handler returned {len(results)} results for {len(batch)} items")
                    except Exception as exc:  # every caller of the batch hears about it, nobody else
                        self.stats.failed_batches += 1
                        results = [exc] * len(batch)
                    if self._on_batch is not None:
                        self._on_batch(len(batch), time.perf_counter() - started)
            finally:
                self._in_flight -= 1
                if self._pending and not self._starting and self._in_flight < self._max_in_flight:
                    self._start(asyncio.get_running_loop())
            if batch and previous is not None and not previous.done():
                await asyncio.shield(previous)  # hand results out in batch order
            # A big batch is handed out a slice at a time, one event-loop turn each: the
            # callers of a slice run (and, when their clients have more to send, submit
            # the next items) before the next slice resumes, so the next batch leaves while
            # the rest of this one is still being answered instead of after all of it.
            while results is not None and len(batch) - handed > RESOLVE_SLICE:
                self._resolve(batch[handed:handed + RESOLVE_SLICE], results[handed:handed + RESOLVE_SLICE])
                handed += RESOLVE_SLICE
                await asyncio.sleep(0)
        finally:
            # None (cancelled at shutdown before the results): the callers are cancelled too.
            self._resolve(batch[handed:], results[handed:] if results is not None else None)
            resolved.set_result(None)
            if self._tail is resolved:
                self._tail = None

    @staticmethod
    def _resolve(batch: list[tuple[Any, asyncio.Future[Any]]], results: Sequence[Any] | None) -> None:
        for index, (_, future) in enumerate(batch):
            if future.done():
                continue
            if results is None:
                future.cancel()
                continue
            result = results[index]
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Wait for the batches in flight (and those still queued) to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
