"""One contract for every RateLimitStore: the in-memory one and the Redis one.

The Redis variant talks to the real Redis (``REDIS_URL``) under a key prefix unique to
each test, removed afterwards.  Time comes from a fake clock, so windows are tested
without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from chat_server.services.ratelimit import Limit, MemoryRateLimitStore, RateLimitStore
from chat_server.storage.ratelimit_redis import RedisRateLimitStore
from chat_server.storage.redis_pipeline import AutoPipeline
from tests.conftest import FakeClock

StoreFactory = Callable[[], RateLimitStore]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis", "redis-pipelined"])
async def make_store(request: pytest.FixtureRequest, clock: FakeClock, redis_scratch: tuple[Redis, str]) -> AsyncIterator[StoreFactory]:
    """Factory of stores that share state (several nodes of one deployment)."""
    if request.param == "memory":
        shared = MemoryRateLimitStore(clock)
        yield lambda: shared
        return
    client, prefix = redis_scratch
    pipeline = AutoPipeline(client) if request.param == "redis-pipelined" else None
    yield lambda: RedisRateLimitStore(client, prefix=prefix, clock=clock, pipeline=pipeline)


async def test_allows_max_hits_then_refuses_with_retry_after(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store()
    limit = Limit("u:alice", 3, 10_000)
    for _ in range(3):
        assert (await store.hit([limit])).allowed
        clock.advance(1)
    decision = await store.hit([limit])
    assert not decision.allowed
    # The first hit was 3 s ago; it leaves the 10 s window in 7 s.
    assert decision.retry_after_ms == 7000
    assert decision.refused_by == limit


async def test_waiting_retry_after_is_exactly_enough(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store()
    limit = Limit("k", 2, 1000)
    assert (await store.hit([limit])).allowed
    clock.advance(0.25)
    assert (await store.hit([limit])).allowed
    refused = await store.hit([limit])
    assert refused.retry_after_ms == 750
    clock.advance(0.749)
    assert not (await store.hit([limit])).allowed
    clock.advance(0.001)
    assert (await store.hit([limit])).allowed
    # Sliding, not fixed: the second hit (at 0.25 s) is still inside the window.
    again = await store.hit([limit])
    assert not again.allowed
    assert again.retry_after_ms == 250


async def test_refused_attempts_are_not_counted(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store()
    limit = Limit("k", 1, 1000)
    assert (await store.hit([limit])).allowed
    for _ in range(10):
        clock.advance(0.05)
        assert not (await store.hit([limit])).allowed
    clock.advance(0.5)  # 1.0 s after the only recorded hit
    assert (await store.hit([limit])).allowed


async def test_several_limits_are_all_or_nothing(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store()
    user_a, user_b, ip = Limit("u:a", 5, 60_000), Limit("u:b", 5, 60_000), Limit("ip:1", 3, 60_000)
    assert (await store.hit([user_a, ip])).allowed
    assert (await store.hit([user_a, ip])).allowed
    assert (await store.hit([user_b, ip])).allowed
    refused = await store.hit([user_b, ip])
    assert not refused.allowed and refused.refused_by == ip
    # The refused attempt did not consume user_b's budget: 4 more fit without the IP limit.
    for _ in range(4):
        assert (await store.hit([user_b])).allowed
    assert not (await store.hit([user_b])).allowed


async def test_longest_wait_wins(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store()
    short, long = Limit("short", 1, 1000), Limit("long", 1, 5000)
    assert (await store.hit([short, long])).allowed
    decision = await store.hit([short, long])
    assert decision.retry_after_ms == 5000 and decision.refused_by == long


async def test_keys_are_independent_and_reset_forgets(make_store: StoreFactory, clock: FakeClock) -> None:
    store = make_store()
    assert (await store.hit([Limit("a", 1, 1000)])).allowed
    assert (await store.hit([Limit("b", 1, 1000)])).allowed
    assert not (await store.hit([Limit("a", 1, 1000)])).allowed
    await store.reset("a")
    assert (await store.hit([Limit("a", 1, 1000)])).allowed
    assert not (await store.hit([Limit("b", 1, 1000)])).allowed


async def test_no_limits_is_allowed(make_store: StoreFactory) -> None:
    assert (await make_store().hit([])).allowed


async def test_exact_under_concurrency_across_stores(make_store: StoreFactory) -> None:
    """Two "nodes" racing for the same budget hand out exactly max_hits."""
    first, second = make_store(), make_store()
    limit = Limit("race", 7, 60_000)
    results = await asyncio.gather(*(store.hit([limit]) for store in (first, second) * 10))
    assert sum(d.allowed for d in results) == 7
    assert all(d.retry_after_ms > 0 for d in results if not d.allowed)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Limit("k", 0, 1000)
    with pytest.raises(ValueError):
        Limit("k", 1, 0)
