"""Rate limits: a sliding-window log per key, checked and recorded all-or-nothing.

One store answers "may this action happen now under *all* of these limits?" (for example
the sender's per-user limit and the per-IP limit of their address) and, when it may,
records the hit under every limit at once; a refused attempt records nothing.  The
window is exact: a key allows ``max_hits`` hits in any span of ``window_ms``
milliseconds, and a refusal says how long until the next hit would be allowed
(``retry_after_ms``), so a client that waits exactly that long succeeds.

Two implementations share one contract (``tests/unit/test_ratelimit_contract.py``):
:class:`MemoryRateLimitStore` here (single node) and
``storage.ratelimit_redis.RedisRateLimitStore`` (one Lua script, exact across nodes).
Slow mode is the same thing with ``max_hits=1`` and the room's interval as the window.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol


@dataclass(frozen=True)
class Limit:
    """At most ``max_hits`` hits of ``key`` in any ``window_ms`` milliseconds."""

    key: str
    max_hits: int
    window_ms: int

    def __post_init__(self) -> None:
        if self.max_hits < 1 or self.window_ms < 1:
            raise ValueError(f"limit {self.key!r} needs max_hits >= 1 and window_ms >= 1")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # 0 when allowed; otherwise milliseconds until a hit would be allowed under every limit.
    retry_after_ms: int = 0
    # The limit that refused (the one with the longest wait), None when allowed.
    refused_by: Limit | None = field(default=None)


ALLOWED = Decision(True)


class RateLimitStore(Protocol):
    async def hit(self, limits: Sequence[Limit]) -> Decision:
        """Check every limit; when all allow, record one hit under each (atomically)."""
        ...

    async def reset(self, key: str) -> None:
        """Forget the hits of ``key`` (tests, and moderators lifting a slow mode)."""
        ...


def _wait_ms(hits: Sequence[int], limit: Limit, now_ms: int) -> int:
    """Milliseconds until fewer than ``max_hits`` of ``hits`` (ascending, all inside the
    window) remain inside it: the ``len - max_hits``-th oldest must have left."""
    oldest_to_leave = hits[len(hits) - limit.max_hits]
    return max(1, math.ceil(oldest_to_leave + limit.window_ms - now_ms))


class MemoryRateLimitStore:
    """In-process sliding-window log (one node).  ``clock`` returns seconds."""

    def __init__(self, clock: Callable[[], float] = time.time, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        # key -> (longest window it was used with, hit times in ms, ascending)
        self._hits: dict[str, tuple[int, deque[int]]] = {}
        self._max_keys = max_keys

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        now_ms = round(self._clock() * 1000)  # whole milliseconds, like the Redis store
        worst: Decision | None = None
        for limit in limits:
            entry = self._hits.get(limit.key)
            if entry is None:
                continue
            hits = entry[1]
            # The window is (now - window, now]: a hit exactly window_ms old has left it.
            while hits and hits[0] <= now_ms - limit.window_ms:
                hits.popleft()
            if len(hits) >= limit.max_hits:
                wait = _wait_ms(hits, limit, now_ms)
                if worst is None or wait > worst.retry_after_ms:
                    worst = Decision(False, wait, limit)
        if worst is not None:
            return worst
        for limit in limits:
            entry = self._hits.get(limit.key)
            if entry is None or entry[0] < limit.window_ms:
                entry = (limit.window_ms, entry[1] if entry else deque())
                self._hits[limit.key] = entry
            entry[1].append(now_ms)
        if len(self._hits) > self._max_keys:
            self._sweep(now_ms)
        return ALLOWED

    def _sweep(self, now_ms: int) -> None:
        # Bound memory: a key whose newest hit has left its window can refuse nothing.
        self._hits = {k: v for k, v in self._hits.items() if v[1] and v[1][-1] > now_ms - v[0]}

    async def reset(self, key: str) -> None:
        self._hits.pop(key, None)


# Loopback and private networks: behind a reverse proxy or a container network every
# client arrives from one of these, so limiting "per IP" there would throttle everybody
# together.  Per-IP limits apply to the other (public) addresses.
DEFAULT_IP_EXEMPT = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


class AddressPolicy:
    """Which client addresses get a per-IP limit (all but the exempt networks)."""

    def __init__(self, exempt_networks: Iterable[str] = DEFAULT_IP_EXEMPT) -> None:
        self._exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt_networks)
        self.limited = lru_cache(maxsize=4096)(self._limited)

    def _limited(self, address: str | None) -> str | None:
        """The address to limit, or None (no address, not an IP, or exempt)."""
        if not address:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self._exempt):
            return None
        return str(ip)
