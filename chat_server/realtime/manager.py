"""Socket.IO client managers with a hook on local delivery.

python-socketio's pub/sub managers deliver an emit on every node by calling the base
``AsyncManager.emit`` locally (on the emitting node directly, on the others when the
message arrives from Redis).  Hooking that one method gives every node a single place to
deliver the same event to connections that are not Socket.IO sockets (the plain
WebSocket endpoint), so both kinds of client share one bus and one ordering.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import socketio

log = logging.getLogger(__name__)


class LocalListener(Protocol):
    async def deliver(self, event: str, data: Any, room: str | None, skip_sid: Any) -> None:
        """Deliver an event emitted to ``room`` on this node (skip ``skip_sid``)."""


class LocalDeliveryHook(socketio.AsyncManager):
    """Calls registered listeners for every event delivered on this node."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local_listeners: list[LocalListener] = []

    async def emit(self, event: str, data: Any, namespace: str | None = None, room: Any = None, skip_sid: Any = None,
                   callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        target = to or room
        await super().emit(event, data, namespace=namespace, room=target, skip_sid=skip_sid, callback=callback, **kwargs)
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
