"""Statements leave nothing for Python's cycle collector: an aiopg cursor and its helper
used to form a reference cycle per statement, so under load the collector ran often and
each young collection walked thousands of dead cursors (milliseconds of pause)."""

from __future__ import annotations

import gc

from chat_server.storage import history
from chat_server.storage.db import Database
from tests.conftest import unique


async def test_statements_leave_no_reference_cycles(db: Database):
    room = unique()

    async def some_statements() -> None:
        await db.fetchrow("SELECT 1 AS one")
        await db.fetch("SELECT generate_series(1, 3) AS n")
        await db.execute("SELECT 1")
        await history.before(db, room, None, 10, viewer="alice")
        await history.page(db, room, 2, 10, viewer="alice")
        async with db.transaction() as cur:
            await cur.execute("SELECT 1")

    await some_statements()  # warm: connections, prepared statements
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            await some_statements()
        assert gc.collect() == 0
    finally:
        gc.enable()
