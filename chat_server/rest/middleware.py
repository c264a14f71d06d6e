"""REST edge: the error vocabulary mapped to HTTP once, and the request's principal."""

from __future__ import annotations

import logging
import math
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.typedefs import Handler

from ..auth import TokenVerifier, bearer_token
from ..domain import Principal
from ..errors import ChatError, InternalError, NotFound, PayloadTooLarge, ValidationFailed

log = logging.getLogger("chat_server.rest")

VERIFIER_KEY = web.AppKey("token_verifier", TokenVerifier)


def error_response(exc: ChatError) -> web.Response:
    headers = {}
    if exc.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_ms / 1000)))
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response({"error": exc.to_dict()}, status=exc.http_status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ChatError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, exc.code)
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge())
    except web.HTTPNotFound:
        if request.path.startswith("/api/"):
            return error_response(NotFound("No such route"))
        raise
    except web.HTTPMethodNotAllowed as exc:
        if request.path.startswith("/api/"):
            return web.json_response(
                {"error": {"code": "validation_error", "message": f"Method {request.method} is not allowed here"}},
                status=405,
                headers={"Allow": ",".join(sorted(exc.allowed_methods))},
            )
        raise
    except web.HTTPBadRequest as exc:
        if request.path.startswith("/api/"):
            bad = ValidationFailed("The request body is not valid JSON" if "JSON" in (exc.text or "") else "Bad request")
            return web.json_response({"error": bad.to_dict()}, status=400)
        raise
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s crashed", request.method, request.path)
        return error_response(InternalError())


def validation_error_callback(error: Any, req: Any, schema: Any, *, error_status_code: Any = None, error_headers: Any = None) -> NoReturn:
    """webargs/aiohttp-apigami hook: report validation failures in our vocabulary."""
    messages = getattr(error, "messages", None) or {"_schema": [str(error)]}
    # webargs nests per location ({"json": {...}}); flatten when there is one location.
    if isinstance(messages, dict) and len(messages) == 1 and next(iter(messages)) in ("json", "querystring", "query", "match_info", "form"):
        messages = next(iter(messages.values()))
    raise ValidationFailed("The request is not valid", details=messages)


# No token needed: the API docs, and the development sign-in (rest/dev_auth.py; not
# registered in production, where it answers 404).
PUBLIC_API_PREFIXES = ("/api/chats/", "/api/dev/")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every ``/api/`` request before its body is validated, so a caller
    without a valid token learns nothing about the route's input rules."""
    if request.path.startswith("/api/") and not request.path.startswith(PUBLIC_API_PREFIXES) and request.method != "OPTIONS":
        principal(request)
    return await handler(request)


def principal(request: web.Request) -> Principal:
    """The authenticated user of a REST request (401 ``unauthorized`` otherwise)."""
    cached = request.get("principal")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    user = request.app[VERIFIER_KEY].verify(bearer_token(request.headers.get("Authorization")))
    request["principal"] = user
    return user
