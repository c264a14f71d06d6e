"""Presence in Redis, shared by every node (see ``services.presence`` for the contract).

Keys (``{prefix}`` is the configured Redis prefix):
- ``{prefix}:pr:{room}:users``  sorted set, member user_id, score = latest connection expiry (ms)
- ``{prefix}:pr:{room}:c:{user}`` hash, field conn_id -> expiry (ms)
- ``{prefix}:pr:{room}:info`` hash, field user_id -> JSON public info
- ``{prefix}:pr:due`` sorted set, member ``room\nuser``, score = that user's latest
  connection expiry: where ``sweep`` finds the users of a node that died (nobody removed
  them, nobody refreshes them)
Add, remove and the sweep's claim are Lua scripts so "first connection" / "last
connection" / "gone with its node" are decided atomically even when nodes race.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from redis.asyncio import Redis

from ..services.presence import Connection, public_info_of

_ADD = """
local now = tonumber(ARGV[4])
local conns = redis.call('HGETALL', KEYS[2])
local live = 0
for i = 1, #conns, 2 do
  if tonumber(conns[i + 1]) <= now then
    redis.call('HDEL', KEYS[2], conns[i])
  elseif conns[i] ~= ARGV[2] then
    live = live + 1
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[7])
if live == 0 then return 1 end
return 0
"""

_REMOVE = """
if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return 0 end
local now = tonumber(ARGV[3])
local conns = redis.call('HGETALL', KEYS[2])
local latest = 0
for i = 1, #conns, 2 do
  local expiry = tonumber(conns[i + 1])
  if expiry > now and expiry > latest then latest = expiry end
end
if latest > 0 then
  -- still online, until the last remaining connection expires (not the removed one's)
  redis.call('ZADD', KEYS[1], latest, ARGV[1])
  redis.call('ZADD', KEYS[4], latest, ARGV[4])
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[4])
return 1
"""

# Extends a connection only while it still exists: a heartbeat racing a disconnect must
# not bring the removed connection (and so its user) back to life.
_REFRESH = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[5])
return 1
"""

# A due user whose connections all expired is claimed by the one node whose ZREM takes it
# off the due set (a normal leave took it off already, and was announced then); a user
# refreshed meanwhile is put back with its newest expiry.  Returns the public info ('' if
# it expired with its keys), or false when there is nothing to announce.
_SWEEP = """
local now = tonumber(ARGV[3])
local conns = redis.call('HGETALL', KEYS[2])
local latest = 0
for i = 1, #conns, 2 do
  local expiry = tonumber(conns[i + 1])
  if expiry > latest then latest = expiry end
end
if latest > now then
  redis.call('ZADD', KEYS[4], latest, ARGV[2])
  return false
end
if redis.call('ZREM', KEYS[4], ARGV[2]) == 0 then return false end
local info = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return info or ''
"""

_ONLINE = """
local now = tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
for _, user in ipairs(stale) do
  redis.call('ZREM', KEYS[1], user)  -- their info stays for the sweep's user_left
end
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
if #users == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(users))
"""


class RedisPresenceStore:
    def __init__(self, redis: Redis, *, prefix: str, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._clock = clock
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._online = redis.register_script(_ONLINE)
        self._refresh = redis.register_script(_REFRESH)
        self._sweep = redis.register_script(_SWEEP)
        self._due = f"{prefix}:pr:due"

    def _keys(self, room_id: str, user_id: str) -> list[str]:
        """users, connections, info (of the room) and the due set."""
        base = f"{self._prefix}:pr:{room_id}"
        return [f"{base}:users", f"{base}:c:{user_id}", f"{base}:info", self._due]

    @staticmethod
    def _due_member(room_id: str, user_id: str) -> str:
        return f"{room_id}\n{user_id}"  # room ids never hold a newline (check_room_id)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def add(self, room_id: str, user: dict[str, Any], conn_id: str) -> bool:
        now = self._now_ms()
        result = await self._add(
            keys=self._keys(room_id, user["user_id"]),
            args=[user["user_id"], conn_id, now + self._ttl_ms, now, json.dumps(user), self._ttl_ms * 4,
                  self._due_member(room_id, user["user_id"])],
        )
        return bool(int(result))

    async def remove(self, room_id: str, user_id: str, conn_id: str) -> bool:
        result = await self._remove(keys=self._keys(room_id, user_id),
                                    args=[user_id, conn_id, self._now_ms(), self._due_member(room_id, user_id)])
        return bool(int(result))

    async def refresh(self, connections: Iterable[Connection]) -> list[Connection]:
        expiry = self._now_ms() + self._ttl_ms
        entries = list(connections)
        if not entries:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for c in entries:
                await self._refresh(keys=self._keys(c.room_id, c.user_id),
                                    args=[c.user_id, c.conn_id, expiry, self._ttl_ms * 4, self._due_member(c.room_id, c.user_id)],
                                    client=pipe)
            results = await pipe.execute()
        return [c for c, refreshed in zip(entries, results, strict=True) if not int(refreshed)]

    async def online(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        users_key, _, info_key, _ = self._keys(room_id, "")
        raw = await self._online(keys=[users_key, info_key], args=[self._now_ms(), limit])
        return [json.loads(r) for r in raw if r]

    async def count(self, room_id: str) -> int:
        users_key = self._keys(room_id, "")[0]
        return int(await self._redis.zcount(users_key, f"({self._now_ms()}", "+inf"))

    async def is_online(self, room_id: str, user_id: str) -> bool:
        score = await self._redis.zscore(self._keys(room_id, user_id)[0], user_id)
        return score is not None and score > self._now_ms()

    async def sweep(self, limit: int = 500) -> list[tuple[str, dict[str, Any]]]:
        now = self._now_ms()
        departed: list[tuple[str, dict[str, Any]]] = []
        due = cast("list[bytes | str]", await self._redis.zrangebyscore(self._due, "-inf", now, start=0, num=limit))
        for raw in due:
            member = raw.decode() if isinstance(raw, bytes) else raw
            room_id, _, user_id = member.partition("\n")
            info = await self._sweep(keys=self._keys(room_id, user_id), args=[user_id, member, now])
            if info is None:
                continue  # still live, or not ours to announce
            departed.append((room_id, json.loads(info) if info else public_info_of(user_id)))
        return departed
