"""A connection's events in order, with the next message overlapping this one's commit.

Why.  A connection's events are handled one after the other, so that what a client sends
takes effect in the order it was sent.  For messages that made one client's throughput
one message per commit: the next message's checks waited for this one's round trip to
PostgreSQL, and its insert then waited for the batch in flight, about two commit cycles a
message.  Ten clients sending 500 messages a second each could not be served at 5,000/s
on a node that serves 200 clients at 25/s each at that rate with room to spare
(docs/protocol.md §6 "Messages from one connection").

What.  ``EventPipeline.run`` starts a connection's events in order.  An event run with
``overlap=True`` lets the connection's next event start as soon as the event calls
:func:`next_event_may_start`: the message store calls it once the message has its place
in the commit order (it is in a batch that will be written after every earlier one).  The
rest of the event (the commit, the broadcast, the ack) goes on in its own task.  Every
check that runs before that point (room, bans, rate limit, slow mode, spam and duplicate
rules) therefore still sees the connection's earlier messages, and the messages of one
connection are stored, and broadcast, in the order they were sent.  An event that does
not call it (it failed its checks, or its store does not batch) lets the next one start
when it ends, as before.

An event run with ``overlap=False`` (joins, leaves, typing, reactions, edits...) starts
only once every earlier event of the connection has ended, acks included: only
consecutive messages overlap.  At most ``MAX_OVERLAP`` events of a connection are under
way at once; the connection's reader waits (and its input backs up into TCP) beyond that.

The signal travels in a context variable set only in the task an overlapping event runs
in, so code that runs outside such a task (REST, tests, the stock Socket.IO path) calls
``next_event_may_start`` for nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

#: Events of one connection under way at once (overlapping messages).
MAX_OVERLAP = 32

_next_may_start: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "chat_server_next_event_may_start", default=None)


def next_event_may_start() -> None:
    """The current event's effects are in order: its connection's next event may start.
    Nothing happens outside an overlapping event, or when it was already said."""
    release = _next_may_start.get()
    if release is not None:
        release()


class EventPipeline:
    """The events of one connection (see the module's docstring)."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> int:
        """Overlapping events still under way."""
        return len(self._running)

    async def run(self, event: Coroutine[Any, Any, Any], *, overlap: bool, more_waiting: bool = True) -> None:
        """Run ``event`` after the connection's earlier events: to its end, or (``overlap``)
        until it calls :func:`next_event_may_start`.  ``event`` handles its own errors.

        ``more_waiting``: the connection's next input has arrived already.  When it has not,
        an overlapping event runs here to its end all the same: a task costs more than the
        overlap could save (a few µs against nothing), and input that arrives meanwhile
        piles up and is then checked while the pile's first message is stored."""
        if not overlap:
            await self.settle()
            await event
            return
        if not more_waiting:
            await event  # after the earlier ones' signals: its checks already come after theirs
            return
        running = self._running
        while len(running) >= MAX_OVERLAP:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        loop = asyncio.get_running_loop()
        may_start: asyncio.Future[None] = loop.create_future()

        def release(_task: object = None) -> None:
            if not may_start.done():
                may_start.set_result(None)

        context = contextvars.copy_context()
        context.run(_next_may_start.set, release)
        task = loop.create_task(event, context=context)
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(release)
        # The reader being cancelled (shutdown) cancels this wait, not the event: its ack is
        # owed, and the shutdown's drain waits for it.
        await may_start

    async def settle(self) -> None:
        """Wait until every overlapping event has ended (before a non-overlapping event, and
        before the connection's disconnect is handled)."""
        while self._running:
            await asyncio.wait(set(self._running))
