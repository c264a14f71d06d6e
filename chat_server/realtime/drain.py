"""Graceful shutdown of live connections.

On SIGTERM the node stops taking new events (they are answered ``unavailable`` with a
retry hint, so clients resend elsewhere), waits for the events already being handled to
finish (so every ack that was promised is sent), then closes the connections at the
transport level: clients see a dropped transport, reconnect (through the load balancer,
to another node) and catch up with ``join_room {since_seq}``.
"""

from __future__ import annotations

import asyncio

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
