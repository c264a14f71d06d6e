"""The demo page in a real headless Chromium (playwright-core driving /usr/bin/chromium).

The scenario is tests/browser/chat_page.mjs; this test starts a server node for it and
runs it with node.  Screenshots land in artifacts/screenshots/ (gitignored).

Chromium comes from Debian (``apt-get install chromium``; .ci/run installs it) and
playwright-core from npm (``npm ci``); Playwright's own browser download is not used.
When either is missing the test FAILS saying what to install: a browser test that skips
silently would let the page break unnoticed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.js.test_node_unit import REPO, node_tools_or_fail, run_node

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "artifacts" / "screenshots"
BOB_RATE_LIMIT = 8  # messages per window for non-moderators on this node


def chromium_or_fail() -> str:
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not Path(path).is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the browser tests need it. "
                    "Install it with `apt-get install -y chromium` (.ci/run does) or point CHROMIUM at a Chromium binary.")
    return path


async def test_chat_page_two_users_in_a_real_browser(start_node):
    node = node_tools_or_fail("playwright-core", "socket.io-client")
    chromium = chromium_or_fail()
    server = await start_node(rate_limit_max_messages=BOB_RATE_LIMIT, rate_limit_window_ms=60_000)
    env = {
        **os.environ,
        "CHAT_URL": server.url,
        "CHAT_ROOM": unique("stream"),
        "CHROMIUM": chromium,
        "SCREENSHOTS": str(SCREENSHOTS),
        "NODE_PROJECT": str(REPO),
        "RATE_LIMIT": str(BOB_RATE_LIMIT),
        "NO_COLOR": "1",
    }
    started = time.monotonic()
    code, output = await run_node([node, "tests/browser/chat_page.mjs"], env, timeout=150)
    took = time.monotonic() - started
    assert code == 0, f"browser scenario failed after {took:.1f}s (screenshots in {SCREENSHOTS}):\n{output[-8000:]}"
    assert "done" in output, output
    shots = sorted(p.name for p in SCREENSHOTS.glob("*.png"))
    assert {"02-desktop-chat-moderator.png", "07-phone-banned.png", "08-embed.png"} <= set(shots), shots
