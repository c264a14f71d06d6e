"""Turn a handler's outcome into the acknowledgement PROTOCOL.md §2 promises.

python-socketio does not answer an ack when a handler raises (the client would wait
forever), so every handler runs through ``acknowledge``: success becomes
``{"ok": true, ...}``, a ``ChatError`` becomes ``{"ok": false, "error": {...}}``, and
anything else is logged with context and answered ``internal_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ChatError, InternalError
from .drain import Drain

log = logging.getLogger("chat_server.events")

Outcome = Callable[[], Awaitable[dict[str, Any] | None]]


async def acknowledge(
    event: str,
    context: dict[str, Any],
    run: Outcome,
    on_result: Callable[[str, str], None] | None = None,
    drain: Drain | None = None,
) -> dict[str, Any]:
    try:
        if drain is None:
            result = await run()
        else:
            drain.enter()
            try:
                result = await run()
            finally:
                drain.leave()
    except ChatError as exc:
        if exc.http_status >= 500:
            log.warning("%s failed: %s", event, exc.code, extra=context)
        if on_result:
            on_result(event, exc.code)
        return {"ok": False, "error": exc.to_dict()}
    except Exception:
        log.exception("%s crashed", event, extra=context)
        if on_result:
            on_result(event, "internal_error")
        return {"ok": False, "error": InternalError().to_dict()}
    if on_result:
        on_result(event, "ok")
    return {"ok": True, **(result or {})}
