"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_apigami import docs, response_schema
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..schemas import HealthOut, ReadyOut

Check = Callable[[], Awaitable[bool]]


class HealthApi:
    def __init__(self, checks: dict[str, Check | None], registry: CollectorRegistry | None, *, check_timeout_s: float = 2.0) -> None:
        self._checks = checks
        self._registry = registry
        self._timeout = check_timeout_s

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self._registry is not None:
            app.router.add_get("/metrics", self.metrics)

    @docs(tags=["health"], summary="200 while the process serves")
    @response_schema(HealthOut, 200)
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _run(self, check: Check) -> bool:
        try:
            return await asyncio.wait_for(check(), self._timeout)
        except Exception:
            return False

    @docs(tags=["health"], summary="200 when PostgreSQL and Redis (if configured) answer, else 503 naming the failed one")
    @response_schema(ReadyOut, 200)
    async def readyz(self, request: web.Request) -> web.Response:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(c) for c in self._checks.values() if c is not None))
        it = iter(results)
        checks = {name: ("not configured" if self._checks[name] is None else ("ok" if next(it) else "unavailable")) for name in names}
        ready = all(v != "unavailable" for v in checks.values())
        return web.json_response({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)

    @docs(tags=["health"], summary="Prometheus metrics (text format)")
    async def metrics(self, request: web.Request) -> web.Response:
        assert self._registry is not None
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
