"""Socket.IO client managers with a hook on local delivery.

python-socketio's pub/sub managers deliver an emit on every node by calling the base
``AsyncManager.emit`` locally (on the emitting node directly, on the others when the
message arrives from Redis).  Hooking that one method gives every node a single place to
deliver the same event to connections that are not Socket.IO sockets (the plain
WebSocket endpoint), so both kinds of client share one bus and one ordering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import socketio

from ..storage.redis_client import waiting_client

if TYPE_CHECKING:
    from .fanout import FastFanout

log = logging.getLogger(__name__)


#: A ``skip_sid`` entry of this form stands for every connection of a user, on every
#: node: each node expands it into that user's local sids at delivery time (sids of
#: other nodes are unknown where the event is emitted).
SKIP_USER_PREFIX = "~user:"


def skip_user(user_id: str) -> str:
    return SKIP_USER_PREFIX + user_id


def skipped_users(skip_sid: Any) -> list[str]:
    """User ids named by ``skip_user`` markers in a ``skip_sid`` value."""
    if isinstance(skip_sid, str):
        skip_sid = [skip_sid]
    if not isinstance(skip_sid, list):
        return []
    return [s[len(SKIP_USER_PREFIX):] for s in skip_sid if isinstance(s, str) and s.startswith(SKIP_USER_PREFIX)]


class LocalListener(Protocol):
    async def deliver(self, event: str, data: Any, room: str | None, skip_sid: Any) -> None:
        """Deliver an event emitted to ``room`` on this node (skip ``skip_sid``)."""


class LocalFilter(Protocol):
    async def before_delivery(self, event: str, data: Any, room: str, skip_sid: Any) -> Any:
        """Called on this node before an event emitted to ``room`` is delivered here; returns
        the ``skip_sid`` to deliver with (a new value, never the argument mutated)."""


class LocalDeliveryHook(socketio.AsyncManager):
    """Calls registered listeners for every event delivered on this node."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local_listeners: list[LocalListener] = []
        # Run before local delivery on every node (moderation: ban removal, blocks).
        self.local_filters: list[LocalFilter] = []
        # user id -> this node's Socket.IO sids of that user (set by the composition root)
        self.local_sids_of: Callable[[str], list[str]] = lambda user_id: []
        # One encode and one frame per event for this node's WebSocket clients (fanout.py;
        # set by the composition root when installed); None: the library's delivery.
        self.fanout: FastFanout | None = None
        self._delivering = True

    def stop_local_delivery(self) -> None:
        """Deliver nothing more to this node's connections (other nodes still get every
        event through the bus).  For a node that is dropping all its connections: the
        departures it announces meanwhile would otherwise reach every user it is about to
        drop anyway, n² frames for a room of n (1,000,000 for a room at the big-room
        threshold) before the stop could finish."""
        self._delivering = False

    async def emit(self, event: str, data: Any, namespace: str | None = None, room: Any = None, skip_sid: Any = None,
                   callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        if not self._delivering:
            return
        target = to or room
        if self.local_filters and (namespace or "/") == "/" and isinstance(target, str):
            for local_filter in self.local_filters:
                try:
                    skip_sid = await local_filter.before_delivery(event, data, target, skip_sid)
                except Exception:
                    log.exception("local filter of %s to %s failed", event, target)
        users = skipped_users(skip_sid)
        local_skip = skip_sid
        if users:
            local_skip = [s for s in skip_sid if not s.startswith(SKIP_USER_PREFIX)] if isinstance(skip_sid, list) else []
            for user_id in users:
                local_skip.extend(self.local_sids_of(user_id))
        fanout = self.fanout
        if fanout is None or callback is not None or not await fanout.emit(self, event, data, namespace, target, local_skip or None):
            await super().emit(event, data, namespace=namespace, room=target, skip_sid=local_skip or None, callback=callback, **kwargs)
        if (namespace or "/") != "/" or not isinstance(target, str):
            return
        for listener in self.local_listeners:
            try:
                await listener.deliver(event, data, target, skip_sid)
            except Exception:
                log.exception("local delivery of %s to %s failed", event, target)


class LocalManager(LocalDeliveryHook):
    """Single node: everything is local."""


class RedisManager(socketio.AsyncRedisManager, LocalDeliveryHook):
    """Multi-node: Redis pub/sub carries emits; each node's local delivery is hooked.

    MRO: RedisManager → AsyncRedisManager → AsyncPubSubManager → LocalDeliveryHook →
    AsyncManager, so the pub/sub layer's local ``super().emit`` lands in the hook.
    """

    #: Longest wait between attempts to resubscribe after Redis went away.  The library
    #: doubles up to 60 s, which after a long outage leaves nodes deaf for up to a
    #: minute after Redis is back; chat wants cross-node delivery back within seconds.
    max_retry_sleep_s = 2.0

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel=channel, redis_options={"socket_connect_timeout": 2.0, "health_check_interval": 10})
        self.subscribed = False

    def _redis_connect(self) -> None:
        # As the library's, with a pool that waits for a free connection: its own pool
        # fails the 101st publish in flight, and a failed publish is given up after one
        # retry, so the broadcast is lost (storage/redis_client.py).
        if urlparse(self.redis_url).scheme.endswith("+sentinel"):
            super()._redis_connect()  # the library's Sentinel client, unchanged
            return
        self.redis = waiting_client(self.redis_url, **self.redis_options)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _redis_listen_with_retries(self) -> Any:  # pragma: no cover - exercised by the outage tests
        retry_sleep = 0.25
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = self.subscribed = True
                    if retry_sleep > 0.25:
                        log.warning("Socket.IO fan-out: resubscribed to Redis channel %s", self.channel)
                    retry_sleep = 0.25
                async for message in self.pubsub.listen():
                    yield message
            except Exception as exc:
                subscribed = self.subscribed = False
                log.error("Socket.IO fan-out: Redis subscription lost (%s); retrying in %.2fs", exc, retry_sleep)
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, self.max_retry_sleep_s)
