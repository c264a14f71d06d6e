"""The demo stream page (``/``), the embeddable chat panel (``/embed/{room_id}``) and
their static files (``/static/...``), all from ``chat_server/web/``.

Only the files listed in ``STATIC_FILES`` are served (never the folder: it sits next to
the npm tooling).  ``socket.io-client`` is the npm package's ESM bundle, copied into
``web/vendor/`` by ``npm ci`` (see ``scripts/vendor-socketio-client.mjs``); in a checkout
where that copy is missing it is read from ``node_modules/`` directly.  Nothing is ever
loaded from a CDN.

The pages carry a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script): chat content is rendered as text or as the server's own
``content_html``, and the policy is a second line of defence.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp_apigami import docs

from ..errors import ChatError
from ..services.rooms import check_room_id

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# A checkout's node_modules, for when the postinstall copy into web/vendor/ is missing.
NODE_MODULES_DIST = WEB_DIR.parent.parent / "node_modules" / "socket.io-client" / "dist"
SOCKET_IO_BUNDLE = "socket.io.esm.min.js"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".map": "application/json",
    ".png": "image/png",
}

STATIC_FILES = (
    "app.js", "chat-client.js", "use-chat.js", "style.css", "poster.svg", "favicon.svg",
    f"vendor/{SOCKET_IO_BUNDLE}", f"vendor/{SOCKET_IO_BUNDLE}.map", "vendor/socket.io-client.LICENSE",
)

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}")


def _page_headers(*, embeddable: bool) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": _CSP.format(ancestors="*" if embeddable else "'self'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    if not embeddable:
        headers["X-Frame-Options"] = "SAMEORIGIN"
    return headers


def _static_path(name: str) -> Path | None:
    if name not in STATIC_FILES:
        return None
    path = WEB_DIR / name
    if path.is_file():
        return path
    if name.startswith("vendor/socket.io.esm"):
        fallback = NODE_MODULES_DIST / name.removeprefix("vendor/")
        if fallback.is_file():
            return fallback
    return None


class PagesApi:
    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self._html = (web_dir / "index.html").read_text(encoding="utf-8")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/embed/{room_id}", self.embed)
        app.router.add_get("/static/{name:.+}", self.static)

    @docs(tags=["pages"], summary="Demo stream page: a video area with the chat panel (HTML)",
          description="`?room=<room_id>` picks the room (default `lobby`). Signs in through `POST /api/dev/token` "
                      "outside production, or takes a token from the URL fragment `#token=<jwt>`.",
          responses={200: {"description": "HTML page"}})
    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=self._html, content_type="text/html", charset="utf-8", headers=_page_headers(embeddable=False))

    @docs(tags=["pages"], summary="The chat panel of one room, to embed in an iframe (HTML)",
          description="Token from the URL fragment `#token=<jwt>` (never sent to servers), else the development sign-in.",
          responses={200: {"description": "HTML page"}, 404: {"description": "Not a valid room id"}})
    async def embed(self, request: web.Request) -> web.Response:
        try:
            check_room_id(request.match_info["room_id"])
        except ChatError:
            raise web.HTTPNotFound(text="No such room") from None
        # The room id is read from the URL by the page's script, never written into HTML.
        html = self._html.replace('data-mode="page"', 'data-mode="embed"', 1)
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_page_headers(embeddable=True))

    @docs(tags=["pages"], summary="Static files of the pages (scripts, styles, the socket.io-client bundle)",
          responses={200: {"description": "The file"}, 404: {"description": "Unknown file"}})
    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = _static_path(name)
        if path is None:
            if name.startswith("vendor/socket.io"):
                raise web.HTTPNotFound(text="socket.io-client is not installed: run `make install` (npm ci)")
            raise web.HTTPNotFound()
        headers = {"Content-Type": _TYPES.get(Path(name).suffix, "application/octet-stream"), "X-Content-Type-Options": "nosniff",
                   "Cache-Control": "no-cache"}
        return web.FileResponse(path, headers=headers)
