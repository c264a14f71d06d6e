"""The demo page, the embeddable panel, their static files and the development sign-in."""

from __future__ import annotations

import re

import aiohttp
import pytest

from chat_server.auth import TokenVerifier
from chat_server.rest.dev_auth import user_id_for
from chat_server.rest.pages import STATIC_FILES, WEB_DIR
from tests.conftest import rest


async def get(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            return response.status, dict(response.headers), await response.text(errors="replace")


async def test_demo_page_is_served_with_a_strict_policy(node):
    status, headers, html = await get(node.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert 'data-mode="page"' in html
    assert '<script type="module" src="/static/app.js">' in html
    assert not re.search(r"(src|href)=\"https?://", html), "the page loads something from another host"
    # labelled controls and a live region for new messages
    for control in ("message-input", "sign-in-name", "sign-in-role"):
        assert f'for="{control}"' in html
    assert 'role="log"' in html and 'aria-live="polite"' in html


async def test_embed_page_is_frameable_and_checks_the_room_id(node):
    status, headers, html = await get(node.url + "/embed/video_123")
    assert status == 200
    assert 'data-mode="embed"' in html
    assert "frame-ancestors *" in headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in headers
    assert "video_123" not in html, "the room id is read by the script, never written into the HTML"
    status, _, _ = await get(node.url + "/embed/" + "bad%20room%3Cscript%3E")
    assert status == 404


@pytest.mark.parametrize("name", ["app.js", "chat-client.js", "use-chat.js", "style.css", "poster.svg"])
async def test_static_files(node, name):
    status, headers, body = await get(f"{node.url}/static/{name}")
    assert status == 200, name
    assert headers["X-Content-Type-Options"] == "nosniff"
    expected = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}[name.rsplit(".", 1)[1]]
    assert headers["Content-Type"].startswith(expected)
    assert body == (WEB_DIR / name).read_text(encoding="utf-8")


async def test_socket_io_client_bundle_is_served_from_the_npm_package(node):
    status, headers, body = await get(f"{node.url}/static/vendor/socket.io.esm.min.js")
    assert status == 200, "socket.io-client is not installed: run `npm ci` (make install does)"
    assert headers["Content-Type"].startswith("text/javascript")
    assert "export{" in body.replace(" ", "") and " as io" in body


@pytest.mark.parametrize("path", ["/static/../setup.cfg", "/static/index.html", "/static/%2e%2e/app.py",
                                  "/static/node_modules/react/package.json", "/static/vendor/../chat-client.js.bak",
                                  "/package.json"])
async def test_only_listed_static_files_are_served(node, path):
    status, _, _ = await get(node.url + path)
    assert status == 404, path


def test_static_files_listed_exist():
    for name in STATIC_FILES:
        if not name.startswith("vendor/"):
            assert (WEB_DIR / name).is_file(), name


async def test_dev_token_signs_in_with_a_name_and_role(node, settings):
    status, body = await rest(node, "POST", "/api/dev/token", json={"name": "  Zoë   Smith ", "role": "moderator"})
    assert status == 200, body
    assert body["user"] == {"user_id": "zoë-smith", "username": "Zoë Smith", "role": "moderator"}
    user = TokenVerifier(settings).verify(body["token"])
    assert (user.user_id, user.username, user.role) == ("zoë-smith", "Zoë Smith", "moderator")
    # the token works on the API
    status, _ = await rest(node, "GET", "/api/rooms/lobby/members", token=body["token"])
    assert status in (200, 404)

    status, body = await rest(node, "POST", "/api/dev/token", json={"name": "bob"})
    assert status == 200 and body["user"]["role"] == "user"


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": "x" * 33}, {"name": "bob", "role": "root"}, {"name": "!!!"}])
async def test_dev_token_refuses_bad_input(node, payload):
    status, body = await rest(node, "POST", "/api/dev/token", json=payload)
    assert status in (400, 422), body
    assert body["error"]["code"] == "validation_error"


async def test_dev_token_is_off_in_production(start_node):
    node = await start_node(environment="production")
    status, body = await rest(node, "POST", "/api/dev/token", json={"name": "mallory", "role": "admin"})
    assert status == 404
    assert body["error"]["code"] == "not_found"
    # the page itself is still there (it then asks for a #token=)
    status, _, _ = await get(node.url + "/")
    assert status == 200


async def test_dev_token_is_documented(node):
    status, doc = await rest(node, "GET", "/api/chats/openapi.json")
    operation = doc["paths"]["/api/dev/token"]["post"]
    assert operation["security"] == []
    assert "production" in operation["description"]
    assert "requestBody" in operation


def test_user_ids_from_names():
    assert user_id_for("Alice") == "alice"
    assert user_id_for(" Bob  the Builder ") == "bob-the-builder"
    assert user_id_for("a/b\\c<d>") == "a-b-c-d"
    assert user_id_for("???") == ""
