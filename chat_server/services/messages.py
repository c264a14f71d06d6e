"""Message rules: validate, render, store (gapless seq, idempotent), then announce."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..domain import HistoryPage, Message, NewMessage, Principal
from ..errors import MessageRejected, NotFound, ValidationFailed
from . import content as content_pipeline
from .rooms import RoomService

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("text", "encrypted")


class MessageRepository(Protocol):
    async def insert(self, new: NewMessage) -> tuple[Message, bool]: ...
    async def get(self, message_id: str) -> Message | None: ...
    async def before(self, room_id: str, before_seq: int | None, limit: int) -> HistoryPage: ...
    async def after(self, room_id: str, after_seq: int, limit: int) -> HistoryPage: ...
    async def page(self, room_id: str, page: int, limit: int) -> HistoryPage: ...


class MessageEvents(Protocol):
    """What the service announces after a commit (implemented by the broadcaster)."""

    async def message_created(self, message: Message) -> None: ...
    async def mentioned(self, user_id: str, message: Message) -> None: ...


class MentionResolver(Protocol):
    async def resolve_mentions(self, room_id: str, tokens: list[str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class MessageLimits:
    max_length: int = 1000
    history_limit: int = 100
    max_mentions: int = 10


def new_message_id() -> str:
    return uuid.uuid4().hex


class MessageService:
    def __init__(
        self,
        messages: MessageRepository,
        rooms: RoomService,
        events: MessageEvents,
        limits: MessageLimits,
        *,
        mentions: MentionResolver | None = None,
        id_factory: Callable[[], str] = new_message_id,
    ) -> None:
        self._mentions = mentions
        self._messages = messages
        self._rooms = rooms
        self._events = events
        self._limits = limits
        self._new_id = id_factory

    @property
    def limits(self) -> MessageLimits:
        return self._limits

    async def send(
        self,
        user: Principal,
        room_id: str,
        *,
        content: str,
        type: str = "text",
        client_msg_id: str | None = None,
        reply_to: str | None = None,
    ) -> Message:
        if type not in MESSAGE_TYPES:
            raise ValidationFailed("type must be text or encrypted", details={"type": ["Must be one of: text, encrypted."]})
        encrypted = type == "encrypted"
        # Ciphertext is base64 (4/3 of the plaintext) plus framing; give it room.
        max_length = self._limits.max_length * 2 if encrypted else self._limits.max_length
        if len(content) > max_length:
            raise MessageRejected("too_long", f"Message is longer than {max_length} characters", details={"max_length": max_length})
        text = content.strip() if encrypted else content_pipeline.to_plain_text(content)
        if not text:
            raise MessageRejected("empty", "Message is empty")
        room = await self._rooms.visible(user, room_id)
        tokens = [] if encrypted else content_pipeline.find_mentions(text)
        if len(tokens) > self._limits.max_mentions:
            raise MessageRejected("spam", f"Too many mentions (at most {self._limits.max_mentions})",
                                  details={"rule": "mentions", "max_mentions": self._limits.max_mentions})
        resolved = await self._mentions.resolve_mentions(room.id, tokens) if tokens and self._mentions else {}
        html = None if encrypted else content_pipeline.to_html(text, resolved)
        if reply_to is not None:
            parent = await self._messages.get(reply_to)
            if parent is None or parent.room_id != room.id or parent.deleted_at is not None:
                raise ValidationFailed("reply_to does not name a message in this room", details={"reply_to": ["Unknown message."]})
        new = NewMessage(
            message_id=self._new_id(),
            room_id=room.id,
            user=user,
            content=text,
            content_html=html,
            type=type,
            client_msg_id=client_msg_id,
            reply_to=reply_to,
            mentions=tuple(dict.fromkeys(resolved.values())),
        )
        message, created = await self._messages.insert(new)
        if created:
            # After commit, through the one door.  A failed broadcast must not turn a
            # stored message into an error: clients catch up by seq.
            try:
                await self._events.message_created(message)
                for mentioned in message.mentions:
                    if mentioned != user.user_id:
                        await self._events.mentioned(mentioned, message)
            except Exception:
                log.exception("broadcast of message %s in %s failed", message.message_id, message.room_id)
        return message

    def _limit(self, limit: int | None) -> int:
        cap = self._limits.history_limit
        if limit is None:
            return cap
        if limit < 1 or limit > cap:
            raise ValidationFailed(f"limit must be between 1 and {cap}", details={"limit": [f"Must be between 1 and {cap}."]})
        return limit

    async def recent(self, user: Principal, room_id: str, *, since_seq: int | None = None, limit: int | None = None) -> HistoryPage:
        """History for a join: the last ``limit`` messages, or everything after ``since_seq``."""
        room = await self._rooms.visible(user, room_id)
        n = self._limit(limit)
        if since_seq is not None:
            return await self._messages.after(room.id, since_seq, n)
        return await self._messages.before(room.id, None, n)

    async def history(
        self,
        user: Principal,
        room_id: str,
        *,
        page: int = 1,
        limit: int | None = None,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> HistoryPage:
        room = await self._rooms.visible(user, room_id)
        n = self._limit(limit)
        if before_seq is not None and after_seq is not None:
            raise ValidationFailed("use before_seq or after_seq, not both", details={"before_seq": ["Not with after_seq."]})
        if after_seq is not None:
            return await self._messages.after(room.id, after_seq, n)
        if before_seq is not None:
            return await self._messages.before(room.id, before_seq, n)
        return await self._messages.page(room.id, page, n)

    async def get_visible(self, user: Principal, message_id: str) -> Message:
        message = await self._messages.get(message_id)
        if message is None or message.deleted_at is not None:
            raise NotFound("Message not found")
        await self._rooms.visible(user, message.room_id)
        return message
