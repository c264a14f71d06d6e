"""REST abuse limit: writes (POST, PUT, PATCH, DELETE under ``/api/``) per user and per IP.

Refusals are ``rate_limited`` answered 429 with ``Retry-After`` (seconds, rounded up) by
the error middleware.  Unlike the chat limits, moderators are not exempt: this protects
the service, not the conversation.  Reads are not limited here.

The middleware runs after authentication (so the user is known) and inside the error
middleware (so the refusal is mapped like every other error).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import RateLimited
from ..services.ratelimit import AddressPolicy, Limit, RateLimitStore
from .middleware import PUBLIC_API_PREFIXES, principal

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class RestLimits:
    window_ms: int = 60_000
    max_per_user: int = 60
    max_per_ip: int = 240  # 0: no per-IP limit


def rest_rate_limit_middleware(store: RateLimitStore, limits: RestLimits, addresses: AddressPolicy | None = None) -> Middleware:
    addresses = addresses or AddressPolicy()

    @web.middleware
    async def rest_rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in WRITE_METHODS and request.path.startswith("/api/") and not request.path.startswith(PUBLIC_API_PREFIXES):
            checks = [Limit(f"rest:u:{principal(request).user_id}", limits.max_per_user, limits.window_ms)]
            ip = addresses.limited(request.remote) if limits.max_per_ip > 0 else None
            if ip is not None:
                checks.append(Limit(f"rest:ip:{ip}", limits.max_per_ip, limits.window_ms))
            decision = await store.hit(checks)
            if not decision.allowed:
                scope = "ip" if decision.refused_by is not None and decision.refused_by.key.startswith("rest:ip:") else "user"
                raise RateLimited("Too many requests, slow down", retry_after_ms=decision.retry_after_ms,
                                  details={"scope": scope, "window_ms": limits.window_ms})
        return await handler(request)

    return rest_rate_limit
