"""Rate limits in Redis, exact across nodes (see ``services.ratelimit`` for the contract).

Keys: ``{prefix}:rl:{key}``, a sorted set of hit times in milliseconds (score), expiring
one window after the last hit.  Checking every limit and recording the hit is ONE Lua
script, so two nodes racing for the last slot cannot both get it.

Time comes from Redis (``TIME``) unless a clock is injected (tests): one clock for all
nodes means skewed node clocks cannot stretch or shrink a window.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..services.ratelimit import ALLOWED, Decision, Limit, RateLimitStore
from .redis_pipeline import AutoPipeline
from .resilient import OutageLog

# KEYS[i]: the sorted set of limit i.  ARGV[1]: now in ms ("" = use Redis TIME),
# ARGV[2]: a member unique to this hit, then per limit i: ARGV[1+2i] = max hits,
# ARGV[2+2i] = window in ms.  Returns {allowed, retry_after_ms, index of refusing limit}.
_HIT = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local worst, worst_i = 0, 0
for i, key in ipairs(KEYS) do
  local max = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= max then
    local oldest = redis.call('ZRANGE', key, count - max, count - max, 'WITHSCORES')
    local wait = math.ceil(tonumber(oldest[2]) + window - now)
    if wait < 1 then wait = 1 end
    if wait > worst then worst, worst_i = wait, i end
  end
end
if worst_i > 0 then return {0, worst, worst_i} end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  local window = tonumber(ARGV[2 + 2 * i])
  if redis.call('PTTL', key) < window then redis.call('PEXPIRE', key, window) end
end
return {1, 0, 0}
"""


class RedisRateLimitStore:
    """``pipeline``: send the script through the process's ``AutoPipeline`` (shares a round
    trip with concurrent commands); without it, one round trip per hit."""

    def __init__(self, redis: Redis, *, prefix: str, clock: Callable[[], float] | None = None,
                 pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._script = redis.register_script(_HIT)
        self._pipeline = pipeline

    def _key(self, key: str) -> str:
        return f"{self._prefix}:rl:{key}"

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        if not limits:
            return ALLOWED
        now = "" if self._clock is None else str(round(self._clock() * 1000))
        args: list[str | int] = [now, os.urandom(16).hex()]  # a member unique to this hit
        for limit in limits:
            args.extend((limit.max_hits, limit.window_ms))
        keys = [self._key(limit.key) for limit in limits]
        if self._pipeline is not None:
            allowed, retry_after_ms, index = await self._pipeline.eval_script(_HIT, self._script.sha, keys, args)
        else:
            allowed, retry_after_ms, index = await self._script(keys=keys, args=args)
        if int(allowed):
            return ALLOWED
        return Decision(False, int(retry_after_ms), limits[int(index) - 1])

    async def reset(self, key: str) -> None:
        await self._redis.delete(self._key(key))


class FailSoftRateLimitStore:
    """The Redis store, falling back to a node-local one while Redis fails.

    Limits keep working during an outage, per node instead of across nodes; messages are
    not refused because a limiter is unreachable (``storage.resilient`` explains why the
    service degrades rather than fails when Redis is down).
    """

    def __init__(self, primary: RateLimitStore, fallback: RateLimitStore) -> None:
        self._primary = primary
        self._fallback = fallback
        self._outage = OutageLog("Redis (rate limits)")

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        try:
            return await self._primary.hit(limits)
        except RedisError as exc:
            self._outage.failed("rate limit", exc)
            return await self._fallback.hit(limits)

    async def reset(self, key: str) -> None:
        await self._fallback.reset(key)
        try:
            await self._primary.reset(key)
        except RedisError as exc:
            self._outage.failed("rate limit reset", exc)
