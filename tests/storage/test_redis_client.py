"""Redis clients that wait for a free connection (chat_server/storage/redis_client.py), on the
machine's Redis: more commands in flight than the pool has connections all succeed, for our
stores and for the Socket.IO manager's publishes."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chat_server.realtime.manager import RedisManager
from chat_server.storage import redis_client
from tests.conftest import REDIS_URL, unique

POOL = 4
IN_FLIGHT = 200


async def test_the_stock_pool_fails_commands_beyond_its_connections():
    # What this module is for: redis-py's own pool refuses the command after its last connection.
    client = Redis.from_url(REDIS_URL, max_connections=POOL)
    try:
        results = await asyncio.gather(*(client.ping() for _ in range(IN_FLIGHT)), return_exceptions=True)
    finally:
        await client.aclose()
    assert any(isinstance(r, RedisConnectionError) for r in results)


async def test_commands_beyond_the_pool_wait_for_a_connection(monkeypatch):
    monkeypatch.setattr(redis_client, "MAX_CONNECTIONS", POOL)
    client = redis_client.waiting_client(REDIS_URL, socket_timeout=2.0)
    key = f"chattest:{unique()}"
    try:
        results = await asyncio.gather(*(client.incr(key) for _ in range(IN_FLIGHT)))
        assert sorted(results) == list(range(1, IN_FLIGHT + 1))
        pool = client.connection_pool
        assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == POOL
        await client.delete(key)
    finally:
        await client.aclose()


async def test_a_burst_of_publishes_is_never_given_up(monkeypatch, caplog):
    # Thousands of clients leaving at once each publish their user_left: python-socketio
    # gives a publish up after one failed retry, and the broadcast is lost for other nodes.
    monkeypatch.setattr(redis_client, "MAX_CONNECTIONS", POOL)
    channel = f"chattest:{unique()}"
    manager = RedisManager(REDIS_URL, channel=channel)
    listener = Redis.from_url(REDIS_URL)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        manager._redis_connect()
        with caplog.at_level(logging.ERROR):
            counts = await asyncio.gather(*(manager._publish({"method": "emit", "n": i}) for i in range(IN_FLIGHT)))
        assert counts == [1] * IN_FLIGHT  # each reached the one subscriber
        assert "Cannot publish" not in caplog.text
        received = 0
        deadline = asyncio.get_running_loop().time() + 5
        while received < IN_FLIGHT and asyncio.get_running_loop().time() < deadline:
            if await pubsub.get_message(timeout=0.5) is not None:  # None: the subscribe confirmation, or nothing yet
                received += 1
        assert received == IN_FLIGHT
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await manager.redis.aclose()


@pytest.mark.parametrize("url", ["redis+sentinel://127.0.0.1:26379/0/mymaster"])
def test_sentinel_urls_keep_the_library_client(url):
    manager = RedisManager(url, channel="chattest:sentinel")
    manager._redis_connect()  # builds the Sentinel client without connecting
    assert not isinstance(manager.redis.connection_pool, BlockingConnectionPool)
