"""Runs the JavaScript tests (``node --test tests/js/``) as part of the pytest run: unit
tests of chat_server/web/chat-client.js and use-chat.js against fakes, plus the client
with the real socket.io-client against a server started here.

Needs ``node`` and the npm dependencies (``npm ci``, done by ``make install`` and
``.ci/run``); without them this test fails and says what to run, it does not skip."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def node_tools_or_fail(*packages: str) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JavaScript tests need Node.js >= 18 (apt-get install nodejs npm)")
    missing = [p for p in packages if not (REPO / "node_modules" / p / "package.json").is_file()]
    if missing:
        pytest.fail(f"npm dependencies are missing ({', '.join(missing)}): run `npm ci` in {REPO} (make install does it)")
    return node


async def run_node(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace") + f"\n(killed after {timeout}s)"
    return int(proc.returncode or 0), out.decode(errors="replace")


async def test_javascript_client_unit_and_real_server_tests(start_node):
    node = node_tools_or_fail("socket.io-client", "react", "react-test-renderer")
    server = await start_node()
    env = {**os.environ, "CHAT_TEST_URL": server.url, "NO_COLOR": "1"}
    code, output = await run_node([node, "--test", "--test-reporter=spec", "tests/js/"], env, timeout=120)
    assert code == 0, f"node --test failed:\n{output[-6000:]}"
    passed = re.search(r"\bpass (\d+)", output)
    assert passed and int(passed.group(1)) >= 40, f"too few JavaScript tests ran:\n{output[-3000:]}"
    skipped = re.search(r"\bskipped (\d+)", output)
    assert skipped is None or skipped.group(1) == "0", f"JavaScript tests were skipped:\n{output[-3000:]}"
