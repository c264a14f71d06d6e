"""Redis clients whose connection pool waits for a free connection instead of failing.

Why.  redis-py (8.x) caps a client's pool at 100 connections and raises "Too many
connections" at once for the 101st command in flight.  A node has that many when its event
loop is busy (each command holds a connection until its reply is read) and at once when
thousands of clients leave together (a network blip, a balancer restart, a load test
ending): every ``disconnect`` publishes its ``user_left``.  python-socketio then "gives up"
the publish after one retry, so the broadcast is lost for every other node, and each retry
replaced the manager's client with a new pool.  Seen in the multi-node benchmark: 3,933
publishes given up when 4,000 clients disconnected at once, and our presence and rate-limit
stores degrading to their in-memory fallback.

Here a command beyond ``MAX_CONNECTIONS`` waits (up to ``POOL_WAIT_S``) for a connection to
come back to the pool: the same number of connections, no failure, the commands in order
of arrival.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

#: Connections per client (redis-py's default cap); the Redis server allows 10,000 clients.
MAX_CONNECTIONS = 100
#: How long a command waits for a free connection before it fails like a lost connection.
POOL_WAIT_S = 10.0


def waiting_client(url: str, **options: Any) -> Redis:
    """A client for ``url`` (``options``: connection settings such as ``socket_timeout``)
    whose pool makes commands wait for a free connection."""
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S, **options)
    return Redis.from_pool(pool)
