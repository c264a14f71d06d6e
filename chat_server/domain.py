"""Plain data the services pass around; no I/O, no framework types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROLE_USER = "user"
ROLE_MODERATOR = "moderator"
ROLE_ADMIN = "admin"
ROLES = (ROLE_USER, ROLE_MODERATOR, ROLE_ADMIN)

ROOM_PUBLIC = "public"
ROOM_PRIVATE = "private"
ROOM_DM = "dm"
ROOM_TYPES = (ROOM_PUBLIC, ROOM_PRIVATE, ROOM_DM)

MEMBER_ROLES = ("member", "moderator", "owner")


def utc_iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds and a ``Z``, as PROTOCOL.md's Message shows."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Principal:
    """Who is acting: taken from a verified JWT."""

    user_id: str
    username: str
    avatar: str | None = None
    role: str = ROLE_USER
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    @property
    def is_global_moderator(self) -> bool:
        return self.role in (ROLE_MODERATOR, ROLE_ADMIN)

    def public(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "username": self.username, "avatar": self.avatar}


@dataclass(frozen=True)
class Room:
    id: str
    name: str
    type: str
    settings: Mapping[str, Any]
    created_by: str | None
    created_at: datetime
    message_count: int = 0
    last_seq: int = 0

    @property
    def is_public(self) -> bool:
        return self.type == ROOM_PUBLIC

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "settings": dict(self.settings),
            "created_by": self.created_by,
            "created_at": utc_iso(self.created_at),
            "message_count": self.message_count,
            "last_seq": self.last_seq,
        }


@dataclass(frozen=True)
class Membership:
    room_id: str
    user_id: str
    username: str
    avatar: str | None
    role: str
    joined_at: datetime


@dataclass(frozen=True)
class Message:
    message_id: str
    room_id: str
    seq: int
    user_id: str
    username: str
    avatar: str | None
    content: str
    content_html: str | None
    type: str
    created_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None
    reactions: Mapping[str, int] = field(default_factory=dict)
    mentions: tuple[str, ...] = ()
    reply_to: str | None = None
    client_msg_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (PROTOCOL.md §2 "Message")."""
        return {
            "message_id": self.message_id,
            "room_id": self.room_id,
            "seq": self.seq,
            "user": {"user_id": self.user_id, "username": self.username, "avatar": self.avatar},
            "content": self.content,
            "content_html": self.content_html,
            "type": self.type,
            "timestamp": utc_iso(self.created_at),
            "edited_at": utc_iso(self.edited_at),
            "reactions": dict(self.reactions),
            "mentions": list(self.mentions),
            "reply_to": self.reply_to,
            "client_msg_id": self.client_msg_id,
        }


@dataclass(frozen=True)
class NewMessage:
    """A message the service has accepted and is about to store."""

    message_id: str
    room_id: str
    user: Principal
    content: str
    content_html: str | None
    type: str
    client_msg_id: str | None
    reply_to: str | None
    mentions: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryPage:
    messages: list[Message]
    has_more: bool
