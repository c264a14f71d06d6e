"""Automatic pipelining of Redis commands: the concurrent commands of this process share
one round trip.

Every message costs a few small Redis commands (rate limit, recent-message reads and
writes).  Sent one by one, each is a round trip and, with redis-py, about 50-80 µs of
CPU; written together as one pipeline, about 15 µs each.  :class:`AutoPipeline` batches
them the same way the message insert is batched (``storage.group_commit``): a command
waits for nothing when Redis is idle, and the commands issued while a pipeline is in
flight go out together in the next one.

It is a plain non-transactional pipeline: commands of different callers are independent
(each one that needs atomicity is a single command or Lua script, exactly as before).  A
command's own error (``NOSCRIPT``, ``WRONGTYPE`` ...) fails only its caller; a connection
error fails the callers of that pipeline, who handle it as before (the fail-soft stores
fall back to their in-memory twins).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from .group_commit import BatchStats, GroupCommit


class AutoPipeline:
    def __init__(self, redis: Redis, *, max_batch: int = 512) -> None:
        self._redis = redis
        self._batcher: GroupCommit[tuple[Any, ...], Any] = GroupCommit(self._send, max_batch=max_batch)

    @property
    def stats(self) -> BatchStats:
        return self._batcher.stats

    async def execute(self, *args: Any) -> Any:
        """Run one command (``execute("ZRANGEBYSCORE", key, low, high)``) in the next pipeline."""
        return await self._batcher.submit(args)

    async def eval_script(self, script: str, sha: str, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA``, loading the script once when Redis does not know it (first use,
        or after a restart or ``SCRIPT FLUSH``)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(script)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command(*args)
            return list(await pipe.execute(raise_on_error=False))
