"""Round trips of the send path (``MessageService.send`` as the app wires it, real
PostgreSQL and Redis): under concurrent senders, well under one database statement and
one guard pipeline per message (group commit, the room cache, the ban cache, Redis
auto-pipelining).  A regression here is a throughput regression."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from chat_server.app import COMPONENTS_KEY, create_app
from chat_server.domain import Principal
from tests.conftest import REDIS_URL, make_settings, unique


async def test_concurrent_sends_share_statements_and_pipelines(database_url):
    app = create_app(make_settings(database_url, redis_url=REDIS_URL, rate_limit_max_messages=10_000))
    components = app[COMPONENTS_KEY]
    db = components.db
    await db.connect()
    statements: Counter[str] = Counter()
    for name in ("fetch", "fetchrow", "execute", "fetch_tuples"):
        original = getattr(db, name)

        def counted(sql: str, params: Any = None, _original: Any = original) -> Any:
            statements[" ".join(sql.split()[:6]) if "jsonb_to_recordset" not in sql else "batch insert"] += 1
            return _original(sql, params)

        setattr(db, name, counted)
    try:
        users = [Principal(f"u{i}", f"u{i}") for i in range(10)]
        rooms = [unique() for _ in range(3)]
        for room in rooms:
            await components.rooms.join(users[0], room)
        rng = random.Random(3)

        async def sender(user: Principal, n: int, tag: str) -> None:
            for i in range(n):
                await components.messages.send(user, rooms[i % 3], content=f"{rng.getrandbits(64):x} {rng.getrandbits(64):x}",
                                               client_msg_id=f"{tag}-{user.user_id}-{i}")

        await asyncio.gather(*(sender(u, 3, "warm") for u in users))  # warm: ban and room caches
        statements.clear()
        pipelined = components.redis_pipeline.stats
        commands_before, pipelines_before = pipelined.items, pipelined.batches

        await asyncio.gather(*(sender(u, 20, "run") for u in users))
        sent = 200

        assert sum(statements.values()) < 0.5 * sent, statements  # one by one: 2 per message (3 with the room lookup)
        assert set(statements) == {"batch insert"}, statements  # no room lookups, no client_msg_id pre-checks
        commands, pipelines = pipelined.items - commands_before, pipelined.batches - pipelines_before
        assert commands == 3 * sent  # rate limit hit, recent-message read, remember
        # Three commands per message in fewer than one round trip per message (one by one:
        # three each); how far below depends on how slow Redis answers.
        assert pipelines < sent, (commands, pipelines)
        store = components.message_store
        assert store is not None and store.batch_stats is not None and store.batch_stats.largest > 1
    finally:
        if components.redis is not None:
            await components.redis.aclose()
        await db.close()
