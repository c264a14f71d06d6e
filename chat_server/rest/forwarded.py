"""The client's address behind a reverse proxy (``X-Forwarded-For``), from trusted proxies only.

Per-address rate limits and logs need the viewer's address, not the load balancer's.
``X-Forwarded-For`` is honoured only when the direct peer is a configured trusted proxy
(``TRUSTED_PROXIES``), and the client is the right-most address in the header that is
not itself a trusted proxy, so a client cannot forge its address by sending the header.
Every transport (Socket.IO, /ws, REST) reads ``request.remote`` after this middleware.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        return ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None


class TrustedProxies:
    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusted(self, address: str | None) -> bool:
        ip = _parse(address)
        return ip is not None and any(ip in n for n in self._networks)

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address given the direct ``peer`` and the X-Forwarded-For value."""
        if not forwarded_for or not self.trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if _parse(hop) is None:
                return peer  # a malformed chain is not believed
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer


def forwarded_middleware(proxies: TrustedProxies) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = proxies.client(request.remote, request.headers.get("X-Forwarded-For"))
        if client is not None and client != request.remote:
            request = request.clone(remote=client)
        return await handler(request)

    return middleware
