"""One error vocabulary for acknowledgements and REST (PROTOCOL.md §2 "Error codes").

Services raise ``ChatError`` subclasses; each transport maps them once: Socket.IO acks
become ``{"ok": false, "error": {...}}``, REST answers ``{"error": {...}}`` with the
status below.  Anything that is not a ``ChatError`` is logged and answered as
``internal_error`` so internals never reach a client.
"""

from __future__ import annotations

from typing import Any


class ChatError(Exception):
    code = "internal_error"
    http_status = 500
    default_message = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        retry_after_ms: int | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.retry_after_ms = retry_after_ms
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        if self.details is not None:
            body["details"] = self.details
        return body


class Unauthorized(ChatError):
    code = "unauthorized"
    http_status = 401
    default_message = "unauthorized"


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403
    default_message = "You are not allowed to do that"


class NotFound(ChatError):
    code = "not_found"
    http_status = 404
    default_message = "Not found"


class ValidationFailed(ChatError):
    code = "validation_error"
    http_status = 422
    default_message = "The request is not valid"


class PayloadTooLarge(ValidationFailed):
    http_status = 413
    default_message = "The request body is too large"


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429
    default_message = "Too many requests, slow down"


class SlowMode(ChatError):
    code = "slow_mode"
    http_status = 429
    default_message = "Slow mode is on in this room"


class Banned(ChatError):
    code = "banned"
    http_status = 403
    default_message = "You are banned from this room"


class MessageRejected(ChatError):
    code = "message_rejected"
    http_status = 422
    default_message = "The message was rejected"

    def __init__(self, reason: str, message: str | None = None, **kwargs: Any) -> None:
        details = {"reason": reason, **(kwargs.pop("details", None) or {})}
        super().__init__(message or f"Message rejected: {reason}", details=details, **kwargs)
        self.reason = reason


class NotInRoom(ChatError):
    code = "not_in_room"
    http_status = 409
    default_message = "Join the room first"


class Conflict(ChatError):
    code = "conflict"
    http_status = 409
    default_message = "Conflict"


class Unavailable(ChatError):
    code = "unavailable"
    http_status = 503
    default_message = "A dependency is unavailable, retry shortly"

    def __init__(self, message: str | None = None, *, retry_after_ms: int | None = 1000, **kwargs: Any) -> None:
        super().__init__(message, retry_after_ms=retry_after_ms, **kwargs)


class InternalError(ChatError):
    pass
