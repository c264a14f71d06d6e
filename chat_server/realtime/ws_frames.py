"""The plain WebSocket (``/ws``) JSON protocol (PROTOCOL.md §3): what clients send, what
the server sends, and the translation of server events into frames.

Server events are produced once, by the broadcaster, in their Socket.IO form (snake_case,
PROTOCOL.md §2).  ``translate`` turns one such event into the camelCase frame that /ws
clients read; the /ws hub calls it once per event and sends the same encoded bytes to
every recipient.  Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from marshmallow import Schema, fields, validate

from ..schemas import ROOM_ID, InSchema

# --- client → server ---------------------------------------------------------------------


class StrictBoolean(fields.Boolean):
    """Only JSON ``true`` / ``false`` (marshmallow's Boolean also takes "yes", 1, "on" ...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class WsMessageIn(InSchema):
    room_id = fields.String(required=True, data_key="roomId", validate=ROOM_ID)
    # The length rule is the service's (message_rejected/too_long); this bound only stops
    # absurd payloads before any work is done, as for Socket.IO.
    content = fields.String(required=True, validate=validate.Length(max=100_000))
    # The client's clock is not trusted: accepted (source design) and ignored.
    timestamp = fields.Raw(load_default=None, allow_none=True)
    client_msg_id = fields.String(load_default=None, allow_none=True, data_key="clientMsgId", validate=validate.Length(min=1, max=128))
    message_type = fields.String(load_default="text", data_key="messageType", validate=validate.OneOf(["text", "encrypted"]))
    reply_to = fields.String(load_default=None, allow_none=True, data_key="replyTo", validate=validate.Length(min=1, max=128))


class WsJoinRoomIn(InSchema):
    room_id = fields.String(required=True, data_key="roomId", validate=ROOM_ID)
    since_seq = fields.Integer(load_default=None, allow_none=True, strict=True, data_key="sinceSeq", validate=validate.Range(min=0))


class WsLeaveRoomIn(InSchema):
    room_id = fields.String(required=True, data_key="roomId", validate=ROOM_ID)


class WsReactIn(InSchema):
    message_id = fields.String(required=True, data_key="messageId", validate=validate.Length(min=1, max=128))
    reaction = fields.String(required=True, validate=validate.Length(min=1, max=32))
    remove = StrictBoolean(load_default=None, allow_none=True)


class WsTypingIn(InSchema):
    room_id = fields.String(required=True, data_key="roomId", validate=ROOM_ID)
    is_typing = StrictBoolean(required=True, data_key="isTyping")


# Frame type → the Socket.IO event it corresponds to (metrics and logs use one vocabulary).
CLIENT_FRAME_EVENTS: dict[str, str] = {
    "message": "send_message",
    "join_room": "join_room",
    "leave_room": "leave_room",
    "typing": "typing",
    "react": "react",
}


# --- server → client ---------------------------------------------------------------------


def encode(frame: Mapping[str, Any]) -> bytes:
    return orjson.dumps(frame)


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def message_frame(message: Mapping[str, Any], frame_type: str = "message") -> dict[str, Any]:
    """A Message (PROTOCOL.md §2 wire form) as a /ws frame: the §3 fields first, then
    extras in camelCase (the frame's own ``type`` is taken, so the message's is ``messageType``)."""
    user = message.get("user") or {}
    return {
        "type": frame_type,
        "messageId": message["message_id"],
        "userId": user.get("user_id"),
        "username": user.get("username"),
        "roomId": message["room_id"],
        "content": message["content"],
        "timestamp": message["timestamp"],
        "seq": message["seq"],
        "avatar": user.get("avatar"),
        "contentHtml": message.get("content_html"),
        "messageType": message.get("type", "text"),
        "clientMsgId": message.get("client_msg_id"),
        "replyTo": message.get("reply_to"),
        "mentions": list(message.get("mentions") or []),
        "reactions": dict(message.get("reactions") or {}),
        "editedAt": message.get("edited_at"),
    }


def user_frame(user: Mapping[str, Any]) -> dict[str, Any]:
    return {"userId": user.get("user_id"), "username": user.get("username"), "avatar": user.get("avatar")}


def room_joined_frame(room_id: str, member_count: int, joined: Mapping[str, Any]) -> dict[str, Any]:
    """``joined`` is what ``ChatSessions.join`` returns (the Socket.IO join_room ack body)."""
    return {
        "type": "room_joined",
        "roomId": room_id,
        "memberCount": member_count,
        "history": [message_frame(m) for m in joined.get("history", [])],
        "hasMore": bool(joined.get("has_more", False)),
        "onlineUsers": [user_frame(u) for u in joined.get("online_users", [])],
    }


def room_left_frame(room_id: str) -> dict[str, Any]:
    return {"type": "room_left", "roomId": room_id}


def message_ack_frame(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "message_ack",
        "clientMsgId": message.get("client_msg_id"),
        "messageId": message["message_id"],
        "roomId": message["room_id"],
        "seq": message["seq"],
        "timestamp": message["timestamp"],
    }


def error_frame(error: Mapping[str, Any], *, request_type: str | None = None, room_id: str | None = None,
                client_msg_id: str | None = None) -> dict[str, Any]:
    """``error`` is a ``ChatError.to_dict()`` body ({code, message, retry_after_ms?, details?});
    the request's type, room and clientMsgId are added when known so the client can tell
    which of its frames failed."""
    frame: dict[str, Any] = {"type": "error", **error}
    if request_type is not None:
        frame["requestType"] = request_type
    if room_id is not None:
        frame["roomId"] = room_id
    if client_msg_id is not None:
        frame["clientMsgId"] = client_msg_id
    return frame


_MESSAGE_EVENTS = {"new_message": "message", "message_updated": "message_updated", "mentioned": "mentioned"}


def translate(event: str, data: Any, channel_room: str | None) -> dict[str, Any] | None:
    """The /ws frame for a server event emitted to a room (``channel_room`` is the chat
    room id when the event went to a room channel), or None when it has no /ws form."""
    if not isinstance(data, Mapping):
        return None
    if event in _MESSAGE_EVENTS:
        return message_frame(data, _MESSAGE_EVENTS[event])
    if event == "user_joined":
        return {"type": "presence", "userId": data["user_id"], "status": "online", "roomId": data["room_id"],
                "username": data.get("username"), "avatar": data.get("avatar")}
    if event == "user_left":
        return {"type": "presence", "userId": data["user_id"], "status": "offline", "roomId": data["room_id"],
                "username": data.get("username")}
    if event == "presence":
        # The sessions emit ``presence`` for a room together with ``user_joined`` /
        # ``user_left`` for the same user and room; /ws gets one presence frame per change,
        # from the latter (they carry the username).  A ``presence`` event without a room
        # (addressed to a user channel) has no such twin and is forwarded.
        if channel_room is not None:
            return None
        return {"type": "presence", "userId": data["user_id"], "status": data["status"]}
    if event == "user_typing":
        return {"type": "typing_indicator", "userId": data["user_id"], "roomId": data["room_id"],
                "isTyping": bool(data["is_typing"]), "username": data.get("username")}
    # Every other event (room_stats, message_deleted, message_reaction, banned, ...) keeps
    # its name as the frame type and its top-level keys in camelCase.
    return {**{camel(str(k)): v for k, v in data.items()}, "type": event}


# --- Out schemas: what the tests check every received frame against ----------------------


class FrameOut(Schema):
    type = fields.String(required=True)


class MessageFrameOut(FrameOut):
    messageId = fields.String(required=True)
    userId = fields.String(required=True)
    username = fields.String(required=True)
    roomId = fields.String(required=True)
    content = fields.String(required=True)
    timestamp = fields.String(required=True)
    seq = fields.Integer(required=True, strict=True)
    avatar = fields.String(allow_none=True, required=True)
    contentHtml = fields.String(allow_none=True, required=True)
    messageType = fields.String(required=True, validate=validate.OneOf(["text", "encrypted", "system"]))
    clientMsgId = fields.String(allow_none=True, required=True)
    replyTo = fields.String(allow_none=True, required=True)
    mentions = fields.List(fields.String(), required=True)
    reactions = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    editedAt = fields.String(allow_none=True, required=True)


class UserFrameOut(Schema):
    userId = fields.String(required=True)
    username = fields.String(required=True)
    avatar = fields.String(allow_none=True, required=True)


class RoomJoinedFrameOut(FrameOut):
    roomId = fields.String(required=True)
    memberCount = fields.Integer(required=True, strict=True)
    history = fields.List(fields.Nested(MessageFrameOut), required=True)
    hasMore = fields.Boolean(required=True)
    onlineUsers = fields.List(fields.Nested(UserFrameOut), required=True)


class RoomLeftFrameOut(FrameOut):
    roomId = fields.String(required=True)


class MessageAckFrameOut(FrameOut):
    clientMsgId = fields.String(allow_none=True, required=True)
    messageId = fields.String(required=True)
    roomId = fields.String(required=True)
    seq = fields.Integer(required=True, strict=True)
    timestamp = fields.String(required=True)


class PresenceFrameOut(FrameOut):
    userId = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["online", "offline"]))
    roomId = fields.String()
    username = fields.String()
    avatar = fields.String(allow_none=True)


class TypingIndicatorFrameOut(FrameOut):
    userId = fields.String(required=True)
    roomId = fields.String(required=True)
    isTyping = fields.Boolean(required=True)
    username = fields.String()


class RoomStatsFrameOut(FrameOut):
    roomId = fields.String(required=True)
    onlineUsers = fields.Integer(required=True, strict=True)
    messageCount = fields.Integer(required=True, strict=True)


class MessageReactionFrameOut(FrameOut):
    roomId = fields.String(required=True)
    messageId = fields.String(required=True)
    reactions = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    userId = fields.String(required=True)
    reaction = fields.String(required=True)
    action = fields.String(required=True, validate=validate.OneOf(["added", "removed"]))


class ErrorFrameOut(FrameOut):
    code = fields.String(required=True)
    message = fields.String(required=True)
    retry_after_ms = fields.Integer()
    details = fields.Raw()
    requestType = fields.String()
    roomId = fields.String()
    clientMsgId = fields.String()


SERVER_FRAMES: dict[str, type[Schema]] = {
    "message": MessageFrameOut,
    "message_updated": MessageFrameOut,
    "mentioned": MessageFrameOut,
    "message_ack": MessageAckFrameOut,
    "room_joined": RoomJoinedFrameOut,
    "room_left": RoomLeftFrameOut,
    "presence": PresenceFrameOut,
    "typing_indicator": TypingIndicatorFrameOut,
    "room_stats": RoomStatsFrameOut,
    "message_reaction": MessageReactionFrameOut,
    "error": ErrorFrameOut,
}
