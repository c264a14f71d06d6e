"""JSON response bodies encoded with orjson (the hot REST routes).

``web.json_response`` encodes with the standard library: about 130 µs for a history page of
50 messages, against 10 µs here.  The values are the same; the bytes differ only where
JSON allows it (no spaces after separators, non-ASCII as UTF-8 rather than ``\\uXXXX``).
Anything orjson refuses (a non-string key, an integer beyond 64 bits) falls back to the
standard library, so a response never fails because of the encoder.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web


def json_response(data: Any, *, status: int = 200) -> web.Response:
    try:
        body = orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        body = json.dumps(data).encode()
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")
