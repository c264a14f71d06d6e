"""Graceful shutdown of live connections.

On SIGTERM the node stops taking new events (they are answered ``unavailable`` with a
retry hint, so clients resend elsewhere), waits for the events already being handled to
finish (so every ack that was promised is sent), then closes the connections at the
transport level: clients see a dropped transport, reconnect (through the load balancer,
to another node) and catch up with ``join_room {since_seq}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from ..errors import Unavailable

RETRY_AFTER_MS = 1000


class Drain:
    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        """An event starts being handled (refused with ``unavailable`` while closing);
        pair with ``leave``.  Plain calls, not a context manager: this runs for every
        event, and an ``asynccontextmanager`` costs several µs each time."""
        if self.closing:
            raise Unavailable("This server is restarting; retry", retry_after_ms=RETRY_AFTER_MS)
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def close(self, timeout_s: float) -> bool:
        """Refuse new work and wait for work in flight; False if it did not finish in time."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


class Departures:
    """Disconnect cleanups (leaving rooms: ``user_left`` on every node, presence), each in a
    task of its own.  The connection's handler that starts one may be cancelled (the client
    dropped the TCP connection, or the HTTP server shuts down and cancels its handlers); a
    departure cut short would strand presence and be announced only a presence TTL later,
    by another node's sweep.  Shutdown ``wait``s for them while the stores are still open.
    Both transports (Socket.IO and /ws) use it."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[None]] = {}

    async def run(self, key: Hashable, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Start ``cleanup()`` for ``key`` (once: a call for a key whose cleanup is running
        joins it) and wait for it; a cancellation of the caller does not stop it."""
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(cleanup())
            task.add_done_callback(lambda _: self._running.pop(key, None))
        await asyncio.shield(task)

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the cleanups under way; False if some still run after ``timeout_s``."""
        if not self._running:
            return True
        _, pending = await asyncio.wait(set(self._running.values()), timeout=timeout_s)
        return not pending
