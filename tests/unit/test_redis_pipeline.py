"""AutoPipeline (storage/redis_pipeline.py) against the real Redis (``REDIS_URL``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from chat_server.services.ratelimit import Limit, MemoryRateLimitStore
from chat_server.storage.ratelimit_redis import FailSoftRateLimitStore, RedisRateLimitStore
from chat_server.storage.redis_pipeline import AutoPipeline
from tests.conftest import REDIS_URL, free_port


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"chattest:{uuid.uuid4().hex}"


async def test_concurrent_commands_share_round_trips_and_each_caller_gets_its_answer(redis, prefix):
    pipeline = AutoPipeline(redis)
    try:
        await asyncio.gather(*(pipeline.execute("SET", f"{prefix}:{i}", i) for i in range(100)))
        values = await asyncio.gather(*(pipeline.execute("GET", f"{prefix}:{i}") for i in range(100)))
        assert values == [str(i).encode() for i in range(100)]
        assert pipeline.stats.items == 200 and pipeline.stats.largest > 1 and pipeline.stats.batches < 200
    finally:
        await redis.delete(*[f"{prefix}:{i}" for i in range(100)])


async def test_a_command_error_fails_only_its_caller(redis, prefix):
    pipeline = AutoPipeline(redis)
    await redis.set(f"{prefix}:s", "text")
    try:
        ok, bad, ok2 = await asyncio.gather(
            pipeline.execute("GET", f"{prefix}:s"),
            pipeline.execute("ZRANGEBYSCORE", f"{prefix}:s", "-inf", "+inf"),  # WRONGTYPE
            pipeline.execute("EXISTS", f"{prefix}:s"),
            return_exceptions=True,
        )
        assert ok == b"text" and ok2 == 1
        assert isinstance(bad, ResponseError)
    finally:
        await redis.delete(f"{prefix}:s")


async def test_a_script_redis_does_not_know_is_loaded_on_first_use(redis):
    pipeline = AutoPipeline(redis)
    script = f"-- {uuid.uuid4().hex}\nreturn tonumber(ARGV[1]) * 2"  # never seen by this Redis
    sha = redis.register_script(script).sha
    assert await redis.script_exists(sha) == [False]
    assert await asyncio.gather(*(pipeline.eval_script(script, sha, [], [i]) for i in range(5))) == [0, 2, 4, 6, 8]


async def test_redis_down_fails_the_pipeline_and_the_limits_fall_back_to_memory():
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        pipeline = AutoPipeline(dead)
        with pytest.raises(RedisError):
            await pipeline.execute("PING")
        limiter = FailSoftRateLimitStore(RedisRateLimitStore(dead, prefix="x", pipeline=pipeline), MemoryRateLimitStore())
        decisions = await asyncio.gather(*(limiter.hit([Limit("u:alice", 2, 60_000)]) for _ in range(3)))
        assert [d.allowed for d in decisions] == [True, True, False]  # still limited, per node
    finally:
        await dead.aclose()
