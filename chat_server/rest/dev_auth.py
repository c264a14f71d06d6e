"""Development sign-in: ``POST /api/dev/token {name, role?}`` → a signed JWT.

For the demo page and local experiments only.  It trusts whatever name and role it is
given (anyone may become a moderator), so ``create_app`` registers it only outside
production (``APP_ENV``/``NODE_ENV`` ≠ ``production``) and only when tokens are HS256
with the server's own secret; in production the path answers 404 like any unknown route.

The user id is derived from the name (lower-cased, runs of other characters turned into
``-``), so signing in again with the same name is the same user, and ``@id`` mentions
work for names with spaces.
"""

from __future__ import annotations

import re
import time

from aiohttp import web
from aiohttp_apigami import docs, request_schema, response_schema
from marshmallow import fields, validate

from ..auth import TokenIssuer
from ..domain import ROLE_USER, ROLES
from ..errors import ValidationFailed
from ..schemas import ErrorOut, InSchema, OutSchema

DEV_TOKEN_TTL_S = 12 * 3600
_NOT_ID = re.compile(r"[^\w.\-]+")


class DevTokenIn(InSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=32))
    role = fields.String(load_default=ROLE_USER, validate=validate.OneOf(ROLES))


class DevUserOut(OutSchema):
    user_id = fields.String(required=True)
    username = fields.String(required=True)
    role = fields.String(required=True)


class DevTokenOut(OutSchema):
    token = fields.String(required=True)
    user = fields.Nested(DevUserOut, required=True)
    expires_at = fields.Integer(required=True, metadata={"description": "Unix time"})


def user_id_for(name: str) -> str:
    """``"Zoë Smith"`` → ``"zoë-smith"``: a stable id that the mention syntax can name."""
    return _NOT_ID.sub("-", name.strip().lower()).strip("-.")[:64]


class DevTokenApi:
    def __init__(self, issuer: TokenIssuer, *, ttl_seconds: int = DEV_TOKEN_TTL_S) -> None:
        self._issuer = issuer
        self._ttl = ttl_seconds

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/dev/token", self.token)

    @docs(tags=["development"], summary="Development sign-in: a token for a name and role (not in production)",
          description="Mints an HS256 token signed with the server's JWT_SECRET for `{name, role?}` "
                      "(`role`: user, moderator or admin). Anyone may pick any role, so this route exists only "
                      "when APP_ENV/NODE_ENV is not `production`; there it answers 404. The user id is the name "
                      "lower-cased with other characters turned into `-`. No Authorization header needed.",
          security=[],
          responses={200: {"schema": DevTokenOut, "description": "A token valid for 12 hours"},
                     422: {"schema": ErrorOut, "description": "Invalid name or role"}})
    @request_schema(DevTokenIn)
    @response_schema(DevTokenOut, 200)
    async def token(self, request: web.Request) -> web.Response:
        data = request["data"]
        name = " ".join(data["name"].split())
        user_id = user_id_for(name)
        if not user_id:
            raise ValidationFailed("The name needs a letter or digit", details={"name": ["Needs a letter or digit."]})
        token = self._issuer.issue(user_id, name=name, role=data["role"], ttl_seconds=self._ttl)
        return web.json_response({
            "token": token,
            "user": {"user_id": user_id, "username": name, "role": data["role"]},
            "expires_at": int(time.time()) + self._ttl,
        })
