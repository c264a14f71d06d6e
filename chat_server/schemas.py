"""marshmallow schemas: what clients send (In), what the server answers and emits (Out).

The In schemas validate Socket.IO payloads and REST bodies/queries; the Out schemas
document REST responses in OpenAPI and let the tests check every emitted event.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from .errors import ValidationFailed

_ROOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")
ROOM_ID = validate.Regexp(_ROOM_ID_PATTERN, error="Room ids are 1-128 letters, digits or _ - . : @")


class InSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # clients of both source designs send extra fields; ignore them


# --- Socket.IO payloads -------------------------------------------------------------

class JoinRoomIn(InSchema):
    room_id = fields.String(required=True, validate=ROOM_ID)
    user_token = fields.String(load_default=None, allow_none=True)
    since_seq = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=0))


class LeaveRoomIn(InSchema):
    room_id = fields.String(required=True, validate=ROOM_ID)


class SendMessageIn(InSchema):
    room_id = fields.String(required=True, validate=ROOM_ID)
    # Length is checked by the service (message_rejected/too_long, PROTOCOL.md) before
    # any other work; absurd payloads are already bounded by the transport's buffer size
    # (MAX_HTTP_BODY), so no second, differently-coded bound here.
    content = fields.String(required=True)
    type = fields.String(load_default="text", validate=validate.OneOf(["text", "encrypted"]))
    client_msg_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=128))
    reply_to = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=128))


class TypingIn(InSchema):
    room_id = fields.String(required=True, validate=ROOM_ID)
    is_typing = fields.Boolean(required=True)


class ReactIn(InSchema):
    message_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    reaction = fields.String(required=True, validate=validate.Length(min=1, max=32))
    remove = fields.Boolean(load_default=None, allow_none=True)


class EditMessageIn(InSchema):
    message_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    content = fields.String(required=True, validate=validate.Length(max=100_000))


class DeleteMessageIn(InSchema):
    message_id = fields.String(required=True, validate=validate.Length(min=1, max=128))


@cache
def schema_of(cls: type[Schema]) -> Schema:
    """One reusable instance per In schema class, for the per-event paths: building a
    schema costs ~70 µs, a load ~10 µs, and ``load`` keeps no state on the instance."""
    return cls()


def load(schema: Schema, payload: Any) -> dict[str, Any]:
    """Validate ``payload``; raise ``ValidationFailed`` with per-field details."""
    if not isinstance(payload, dict):
        raise ValidationFailed("The payload must be a JSON object", details={"_schema": ["Expected an object."]})
    try:
        return dict(schema.load(payload))
    except ValidationError as exc:
        raise ValidationFailed("The payload is not valid", details=exc.messages) from None


_MESSAGE_TYPES = ("text", "encrypted")


def _short_id(value: Any) -> bool:
    """``None`` or a string of 1-128 characters (``client_msg_id``, ``reply_to``)."""
    return value is None or (type(value) is str and 0 < len(value) <= 128)


def load_send_message(payload: Any) -> dict[str, Any]:
    """``load(schema_of(SendMessageIn), payload)``, the hottest payload of all, with the
    usual well-formed case checked directly (marshmallow costs ~10 µs a message): every
    value exactly of the type the schema accepts and within its rules gives the dict the
    schema gives; anything else goes through the schema, for its exact errors.
    Equivalence: tests/unit/test_schemas.py."""
    if type(payload) is dict:
        room_id = payload.get("room_id")
        content = payload.get("content")
        kind = payload.get("type", "text")
        client_msg_id = payload.get("client_msg_id")
        reply_to = payload.get("reply_to")
        if (type(room_id) is str and _ROOM_ID_PATTERN.match(room_id) is not None and type(content) is str
                and type(kind) is str and kind in _MESSAGE_TYPES and _short_id(client_msg_id) and _short_id(reply_to)):
            return {"room_id": room_id, "content": content, "type": kind, "client_msg_id": client_msg_id, "reply_to": reply_to}
    return load(schema_of(SendMessageIn), payload)


# --- Out: shared shapes ----------------------------------------------------------------

class OutSchema(Schema):
    pass


class UserOut(OutSchema):
    user_id = fields.String(required=True)
    username = fields.String(required=True)
    avatar = fields.String(allow_none=True, required=True)


class MessageOut(OutSchema):
    message_id = fields.String(required=True)
    room_id = fields.String(required=True)
    seq = fields.Integer(required=True, strict=True)
    user = fields.Nested(UserOut, required=True)
    content = fields.String(required=True)
    content_html = fields.String(allow_none=True, required=True)
    type = fields.String(required=True, validate=validate.OneOf(["text", "encrypted", "system"]))
    timestamp = fields.String(required=True)
    edited_at = fields.String(allow_none=True, required=True)
    reactions = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    mentions = fields.List(fields.String(), required=True)
    reply_to = fields.String(allow_none=True, required=True)
    client_msg_id = fields.String(allow_none=True, required=True)


class RoomOut(OutSchema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["public", "private", "dm"]))
    settings = fields.Dict(required=True)
    created_by = fields.String(allow_none=True, required=True)
    created_at = fields.String(required=True)
    message_count = fields.Integer(required=True)
    last_seq = fields.Integer(required=True)


class RoomWithStatsOut(RoomOut):
    online_users = fields.Integer(required=True)


class ErrorBodyOut(OutSchema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    retry_after_ms = fields.Integer()
    details = fields.Raw()


class ErrorOut(OutSchema):
    error = fields.Nested(ErrorBodyOut, required=True)


# --- Out: server events (PROTOCOL.md §2) ----------------------------------------------

class UserJoinedOut(OutSchema):
    room_id = fields.String(required=True)
    user_id = fields.String(required=True)
    username = fields.String(required=True)
    avatar = fields.String(allow_none=True, required=True)


class UserLeftOut(OutSchema):
    room_id = fields.String(required=True)
    user_id = fields.String(required=True)
    username = fields.String(required=True)


class UserTypingOut(OutSchema):
    room_id = fields.String(required=True)
    user_id = fields.String(required=True)
    username = fields.String(required=True)
    is_typing = fields.Boolean(required=True)


class RoomStatsOut(OutSchema):
    room_id = fields.String(required=True)
    online_users = fields.Integer(required=True, strict=True)
    message_count = fields.Integer(required=True, strict=True)


class PresenceOut(OutSchema):
    user_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["online", "offline"]))


class MessageReactionOut(OutSchema):
    room_id = fields.String(required=True)
    message_id = fields.String(required=True)
    reactions = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    user_id = fields.String(required=True)
    reaction = fields.String(required=True)
    action = fields.String(required=True, validate=validate.OneOf(["added", "removed"]))


class JoinRoomAckOut(OutSchema):
    ok = fields.Boolean(required=True)
    room = fields.Nested(RoomOut, required=True)
    history = fields.List(fields.Nested(MessageOut), required=True)
    has_more = fields.Boolean(required=True)
    online_users = fields.List(fields.Nested(UserOut), required=True)


class SendMessageAckOut(OutSchema):
    ok = fields.Boolean(required=True)
    message = fields.Nested(MessageOut, required=True)


class ErrorAckOut(OutSchema):
    ok = fields.Boolean(required=True, validate=validate.Equal(False))
    error = fields.Nested(ErrorBodyOut, required=True)


class RoomUpdatedOut(OutSchema):
    room_id = fields.String(required=True)
    name = fields.String(required=True)
    settings = fields.Dict(required=True)


class MessageDeletedOut(OutSchema):
    room_id = fields.String(required=True)
    message_id = fields.String(required=True)
    seq = fields.Integer(required=True, strict=True)


class BannedOut(OutSchema):
    room_id = fields.String(required=True, allow_none=True)  # null: banned from the whole chat
    until = fields.String(required=True, allow_none=True)  # null: permanent
    reason = fields.String(required=True, allow_none=True)


class UnbannedOut(OutSchema):
    room_id = fields.String(required=True, allow_none=True)


class EditMessageAckOut(OutSchema):
    ok = fields.Boolean(required=True)
    message = fields.Nested(MessageOut, required=True)


# Event name -> schema that its payload must satisfy; the tests check every event seen.
SERVER_EVENTS: dict[str, type[Schema]] = {
    "new_message": MessageOut,
    "message_updated": MessageOut,
    "mentioned": MessageOut,
    "user_joined": UserJoinedOut,
    "user_left": UserLeftOut,
    "user_typing": UserTypingOut,
    "room_stats": RoomStatsOut,
    "presence": PresenceOut,
    "message_reaction": MessageReactionOut,
    "room_updated": RoomUpdatedOut,
    "message_deleted": MessageDeletedOut,
    "banned": BannedOut,
    "unbanned": UnbannedOut,
}


# --- REST -------------------------------------------------------------------------------

def _terms() -> fields.List:
    return fields.List(fields.String(validate=validate.Length(min=1, max=100)), validate=validate.Length(max=1000))


class RoomSettingsIn(Schema):
    """Room settings moderators may set (docs/protocol.md §6 "Room modes", enforced by
    services/policy.py).  Unknown keys are refused, so a typo is never silently ignored;
    ``null`` clears ``min_role`` / ``required_claim``."""

    class Meta:
        unknown = RAISE

    slow_mode_seconds = fields.Integer(validate=validate.Range(min=0, max=86_400))
    emoji_only = fields.Boolean()
    links_allowed = fields.Boolean()
    unique_chat = fields.Boolean()
    min_role = fields.String(allow_none=True, validate=validate.OneOf(["user", "moderator", "admin"]))
    required_claim = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))
    profanity_mode = fields.String(validate=validate.OneOf(["censor", "reject"]))
    blocked_terms = _terms()
    allowed_terms = _terms()


class RoomCreateIn(InSchema):
    id = fields.String(load_default=None, validate=ROOM_ID)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(load_default="public", validate=validate.OneOf(["public", "private", "dm"]))
    settings = fields.Nested(RoomSettingsIn, load_default=dict)
    members = fields.List(fields.String(validate=validate.Length(min=1, max=128)), load_default=list, validate=validate.Length(max=1000))


class RoomPatchIn(InSchema):
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=200))
    settings = fields.Nested(RoomSettingsIn, load_default=None)


class HistoryQueryIn(InSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    limit = fields.Integer(load_default=None, validate=validate.Range(min=1))
    before_seq = fields.Integer(load_default=None, validate=validate.Range(min=1))
    after_seq = fields.Integer(load_default=None, validate=validate.Range(min=0))


class HistoryOut(OutSchema):
    messages = fields.List(fields.Nested(MessageOut), required=True)
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    has_more = fields.Boolean(required=True)
    # Present when the page is not empty (the REST handler adds them for cursor walking).
    first_seq = fields.Integer()
    last_seq = fields.Integer()


class MemberOut(OutSchema):
    user_id = fields.String(required=True)
    username = fields.String(required=True)
    avatar = fields.String(allow_none=True, required=True)
    role = fields.String(required=True)
    online = fields.Boolean(required=True)


class MembersOut(OutSchema):
    members = fields.List(fields.Nested(MemberOut), required=True)


class HealthOut(OutSchema):
    status = fields.String(required=True)


class ReadyOut(OutSchema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


# --- REST: moderation (rest/moderation.py) --------------------------------------------

USER_ID = validate.Length(min=1, max=128)


class BanIn(InSchema):
    user_id = fields.String(required=True, validate=USER_ID)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))
    duration_seconds = fields.Integer(load_default=None, allow_none=True, strict=True,
                                      validate=validate.Range(min=1, max=366 * 24 * 3600),
                                      metadata={"description": "A timeout; absent or null: a permanent ban"})
    purge = fields.Boolean(load_default=False, metadata={"description": "Also delete the user's messages of the last 24 h"})
    shadow = fields.Boolean(load_default=False, metadata={"description": "Shadow ban: the user's messages reach only themselves"})


class BanOut(OutSchema):
    id = fields.Integer(required=True)
    room_id = fields.String(required=True, allow_none=True)
    user_id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["ban", "timeout"]))
    reason = fields.String(required=True, allow_none=True)
    shadow = fields.Boolean(required=True)
    created_by = fields.String(required=True)
    created_at = fields.String(required=True)
    until = fields.String(required=True, allow_none=True)


class BansOut(OutSchema):
    bans = fields.List(fields.Nested(BanOut), required=True)


class ReportIn(InSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class ReportOut(OutSchema):
    id = fields.Integer(required=True)
    message_id = fields.String(required=True)
    room_id = fields.String(required=True)
    reporter_id = fields.String(required=True)
    reason = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["open", "resolved", "dismissed"]))
    created_at = fields.String(required=True)
    resolved_at = fields.String(required=True, allow_none=True)
    resolved_by = fields.String(required=True, allow_none=True)
    action = fields.String(required=True, allow_none=True)
    note = fields.String(required=True, allow_none=True)


class ReportWithMessageOut(ReportOut):
    message = fields.Nested(MessageOut, allow_none=True, metadata={"description": "The reported message (also when deleted)"})
    message_deleted = fields.Boolean()


class ReportsQueryIn(InSchema):
    status = fields.String(load_default="open", validate=validate.OneOf(["open", "resolved", "dismissed", "all"]))
    room_id = fields.String(load_default=None, validate=ROOM_ID)
    limit = fields.Integer(load_default=None, validate=validate.Range(min=1, max=200))
    before_id = fields.Integer(load_default=None, validate=validate.Range(min=1))


class ReportsOut(OutSchema):
    reports = fields.List(fields.Nested(ReportWithMessageOut), required=True)


class ResolveReportIn(InSchema):
    action = fields.String(required=True, validate=validate.OneOf(["dismiss", "delete_message", "ban_user"]))
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    duration_seconds = fields.Integer(load_default=None, allow_none=True, strict=True,
                                      validate=validate.Range(min=1, max=366 * 24 * 3600),
                                      metadata={"description": "ban_user only: a timeout instead of a permanent ban"})


class AuditQueryIn(InSchema):
    room_id = fields.String(load_default=None, validate=ROOM_ID)
    limit = fields.Integer(load_default=None, validate=validate.Range(min=1, max=200))
    before_id = fields.Integer(load_default=None, validate=validate.Range(min=1))


class AuditEntryOut(OutSchema):
    id = fields.Integer(required=True)
    room_id = fields.String(required=True, allow_none=True)
    actor_id = fields.String(required=True)
    action = fields.String(required=True)
    target_user_id = fields.String(required=True, allow_none=True)
    target_message_id = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    details = fields.Dict(required=True)
    created_at = fields.String(required=True)


class AuditOut(OutSchema):
    entries = fields.List(fields.Nested(AuditEntryOut), required=True)


class BlockIn(InSchema):
    user_id = fields.String(required=True, validate=USER_ID)


class BlockOut(OutSchema):
    user_id = fields.String(required=True)
    created_at = fields.String(required=True)


class BlocksOut(OutSchema):
    blocks = fields.List(fields.Nested(BlockOut), required=True)


class ModeratorOut(OutSchema):
    room_id = fields.String(required=True)
    user_id = fields.String(required=True)
    role = fields.String(required=True)
    changed = fields.Boolean(required=True)
