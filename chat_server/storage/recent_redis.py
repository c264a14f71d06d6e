"""Recent texts per key in Redis (see ``services.spam.RecentStore``), shared by every node.

Key ``{prefix}:recent:{key}``: a sorted set scored by time in milliseconds whose members
are ``<random id>:<text>`` (the id keeps two equal texts apart).  Reads and writes are one
command each (a write is one Lua script: add, trim by time and count, expire, atomically),
sent through the process's ``AutoPipeline`` when given one (sharing a round trip with
concurrent commands); the set expires one window after its last write.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..services.spam import RecentStore
from .redis_pipeline import AutoPipeline
from .resilient import OutageLog

# KEYS[1]: the set.  ARGV: now_ms, member, window_ms, keep.  What the MULTI block below
# does, as one script (so it can share a pipeline with other callers' commands).
_ADD = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


# KEYS[1]: the set.  ARGV: as ``_ADD``'s, then the text.  ``_ADD`` unless a member of the
# window already holds the text (members are ``<id>:<text>``): 0, else ``_ADD``'s 1.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[3]))
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local sep = string.find(member, ':', 1, true)
  if sep and string.sub(member, sep + 1) == ARGV[5] then return 0 end
end
""" + _ADD


def _member(text: str) -> str:
    """A set member for ``text``: a random id keeps equal texts apart."""
    return f"{os.urandom(6).hex()}:{text}"


class RedisRecentStore:
    def __init__(self, redis: Redis, *, prefix: str, clock: Callable[[], float] = time.time,
                 pipeline: AutoPipeline | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._pipeline = pipeline
        self._add_sha = redis.register_script(_ADD).sha
        self._claim = redis.register_script(_CLAIM)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:recent:{key}"

    async def recent(self, key: str, window_ms: int) -> list[str]:
        now_ms = round(self._clock() * 1000)
        members: list[bytes]
        if self._pipeline is not None:
            members = await self._pipeline.execute("ZRANGEBYSCORE", self._key(key), f"({now_ms - window_ms}", "+inf")
        else:
            members = await self._redis.zrangebyscore(self._key(key), f"({now_ms - window_ms}", "+inf")  # type: ignore[assignment]
        return [m.decode("utf-8", "replace").split(":", 1)[1] for m in members]

    async def add(self, key: str, text: str, window_ms: int, keep: int) -> None:
        now_ms = round(self._clock() * 1000)
        name = self._key(key)
        if self._pipeline is not None:
            await self._pipeline.eval_script(_ADD, self._add_sha, [name], [now_ms, _member(text), window_ms, keep])
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(name, {_member(text): now_ms})
            pipe.zremrangebyscore(name, "-inf", now_ms - window_ms)
            pipe.zremrangebyrank(name, 0, -(keep + 1))
            pipe.pexpire(name, window_ms)
            await pipe.execute()

    async def claim(self, key: str, text: str, window_ms: int, keep: int) -> object | None:
        now_ms = round(self._clock() * 1000)
        member = _member(text)
        args: list[str | int] = [now_ms, member, window_ms, keep, text]
        if self._pipeline is not None:
            added = await self._pipeline.eval_script(_CLAIM, self._claim.sha, [self._key(key)], args)
        else:
            added = await self._claim(keys=[self._key(key)], args=args)
        return member if int(added) else None

    async def release(self, key: str, claim: object) -> None:
        await self._redis.zrem(self._key(key), str(claim))


@dataclass(frozen=True)
class _Claim:
    shared: object | None  # Redis's claim (None: made while Redis failed)
    local: object | None  # the fallback's copy, for an outage later in the window


class FailSoftRecentStore:
    """The Redis store, falling back to a node-local one while Redis fails (duplicate
    checks then only see this node's recent messages)."""

    def __init__(self, primary: RecentStore, fallback: RecentStore) -> None:
        self._primary = primary
        self._fallback = fallback
        self._outage = OutageLog("Redis (recent messages)")

    async def recent(self, key: str, window_ms: int) -> list[str]:
        try:
            return await self._primary.recent(key, window_ms)
        except RedisError as exc:
            self._outage.failed("duplicate check", exc)
            return await self._fallback.recent(key, window_ms)

    async def add(self, key: str, text: str, window_ms: int, keep: int) -> None:
        await self._fallback.add(key, text, window_ms, keep)
        try:
            await self._primary.add(key, text, window_ms, keep)
        except RedisError as exc:
            self._outage.failed("remembering a message", exc)

    async def claim(self, key: str, text: str, window_ms: int, keep: int) -> object | None:
        try:
            shared = await self._primary.claim(key, text, window_ms, keep)
        except RedisError as exc:
            self._outage.failed("duplicate check", exc)
            local = await self._fallback.claim(key, text, window_ms, keep)
            return None if local is None else _Claim(None, local)
        if shared is None:
            return None
        return _Claim(shared, await self._fallback.claim(key, text, window_ms, keep))

    async def release(self, key: str, claim: object) -> None:
        if not isinstance(claim, _Claim):
            return
        if claim.local is not None:
            await self._fallback.release(key, claim.local)
        if claim.shared is not None:
            try:
                await self._primary.release(key, claim.shared)
            except RedisError as exc:
                self._outage.failed("releasing a duplicate claim", exc)
