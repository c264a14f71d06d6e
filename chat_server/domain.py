"""Plain data the services pass around; no I/O, no framework types."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Generic, TypeVar

ROLE_USER = "user"
ROLE_MODERATOR = "moderator"
ROLE_ADMIN = "admin"
ROLES = (ROLE_USER, ROLE_MODERATOR, ROLE_ADMIN)

ROOM_PUBLIC = "public"
ROOM_PRIVATE = "private"
ROOM_DM = "dm"
ROOM_TYPES = (ROOM_PUBLIC, ROOM_PRIVATE, ROOM_DM)

MEMBER_ROLES = ("member", "moderator", "owner")


_T = TypeVar("_T")


_FIELD_NAMES: dict[type, frozenset[str] | None] = {}


def _field_names(cls: type) -> frozenset[str] | None:
    """The fields of a dataclass whose instances ``build`` may fill directly (plain: no
    ``__slots__``, nothing run at init), else None."""
    if cls not in _FIELD_NAMES:
        plain = "__slots__" not in cls.__dict__ and not hasattr(cls, "__post_init__")
        _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls)) if plain else None
    return _FIELD_NAMES[cls]


def build(cls: type[_T], fields: dict[str, Any]) -> _T:
    """``cls(**fields)`` for a plain frozen dataclass, every field given, without the
    ``object.__setattr__`` per field that a frozen dataclass's ``__init__`` does (about
    3 µs for a ``Message``, on every message sent).  Same object, same equality and hash."""
    names = _field_names(cls)
    if names is None or fields.keys() != names:
        return cls(**fields)
    instance: _T = object.__new__(cls)
    instance.__dict__.update(fields)
    return instance


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

    @cached_property
    def timestamp(self) -> str | None:
        """``created_at`` as the wire writes it; computed once (a new message is written
        twice: its broadcast and its sender's ack)."""
        return utc_iso(self.created_at)

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
            "timestamp": self.timestamp,
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


# A message in its wire form (PROTOCOL.md §2 "Message"): what ``Message.to_dict`` returns.
WireMessage = dict[str, Any]

_Item = TypeVar("_Item")


@dataclass(frozen=True)
class HistoryPage(Generic[_Item]):
    """Messages oldest first (``Message`` objects, or ``WireMessage``s where only the wire
    form is wanted), and whether older (or, after a seq, newer) ones exist."""

    messages: list[_Item]
    has_more: bool


# --- moderation -------------------------------------------------------------------------

def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class Ban:
    """A room ban (``room_id``) or a global one (``room_id is None``); a timeout is a ban
    with ``expires_at``.  A shadow ban hides the user's messages from everyone else."""

    id: int
    room_id: str | None
    user_id: str
    reason: str | None
    shadow: bool
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None
    lifted_at: datetime | None = None
    lifted_by: str | None = None

    @property
    def kind(self) -> str:
        return "timeout" if self.expires_at is not None else "ban"

    def active_at(self, now: datetime) -> bool:
        return self.lifted_at is None and (self.expires_at is None or _as_utc(self.expires_at) > now)

    def retry_after_ms(self, now: datetime) -> int | None:
        if self.expires_at is None:
            return None
        return max(1, int((_as_utc(self.expires_at) - now).total_seconds() * 1000))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "reason": self.reason,
            "shadow": self.shadow,
            "created_by": self.created_by,
            "created_at": utc_iso(self.created_at),
            "until": utc_iso(self.expires_at),
        }


@dataclass(frozen=True)
class NewBan:
    """A ban about to be stored (``room_id`` None: global; ``expires_at`` None: permanent)."""

    room_id: str | None
    user_id: str
    reason: str | None
    shadow: bool
    created_by: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Removed:
    """A message that a soft delete just hid (``shadow``: only its author ever saw it)."""

    message_id: str
    room_id: str
    seq: int
    user_id: str
    shadow: bool


@dataclass(frozen=True)
class Report:
    id: int
    message_id: str
    room_id: str
    reporter_id: str
    reason: str
    status: str  # open | resolved | dismissed
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    action: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "room_id": self.room_id,
            "reporter_id": self.reporter_id,
            "reason": self.reason,
            "status": self.status,
            "created_at": utc_iso(self.created_at),
            "resolved_at": utc_iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "action": self.action,
            "note": self.note,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One moderation action, written in the same transaction as the action itself."""

    actor_id: str
    action: str  # Twitch-style: ban, timeout, unban, untimeout, delete, slow, slowoff, mod, unmod, ...
    room_id: str | None = None
    target_user_id: str | None = None
    target_message_id: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    id: int
    entry: AuditEntry
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "id": self.id,
            "room_id": e.room_id,
            "actor_id": e.actor_id,
            "action": e.action,
            "target_user_id": e.target_user_id,
            "target_message_id": e.target_message_id,
            "reason": e.reason,
            "details": dict(e.details),
            "created_at": utc_iso(self.created_at),
        }


@dataclass(frozen=True)
class Block:
    user_id: str
    blocked_user_id: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.blocked_user_id, "created_at": utc_iso(self.created_at)}
