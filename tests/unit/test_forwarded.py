"""X-Forwarded-For is believed from trusted proxies only, and cannot be forged."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chat_server.rest.forwarded import TrustedProxies, forwarded_middleware


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # from the proxy: the client it saw
        ("10.0.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # a forged first hop is ignored
        ("10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # a chain of trusted proxies
        ("203.0.113.50", "1.2.3.4", "203.0.113.50"),  # not a proxy: the header is not believed
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "not-an-address", "10.0.0.5"),
    ],
)
def test_client_address(peer, header, expected):
    assert TrustedProxies(["10.0.0.0/8"]).client(peer, header) == expected


def test_nothing_trusted_by_default():
    assert TrustedProxies([]).client("10.0.0.5", "203.0.113.7") == "10.0.0.5"


async def test_middleware_rewrites_request_remote():
    async def remote(request: web.Request) -> web.Response:
        return web.Response(text=str(request.remote))

    app = web.Application(middlewares=[forwarded_middleware(TrustedProxies(["127.0.0.0/8"]))])
    app.router.add_get("/", remote)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/", headers={"X-Forwarded-For": "203.0.113.7"})
        assert await resp.text() == "203.0.113.7"
        resp = await client.get("/")
        assert await resp.text() == "127.0.0.1"
