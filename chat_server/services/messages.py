"""Message rules: validate, render, store (gapless seq, idempotent), then announce."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..domain import HistoryPage, Message, NewMessage, Principal, Room, WireMessage, build
from ..errors import MessageRejected, NotFound, ValidationFailed
from . import content as content_pipeline
from .policy import Checked, MessageGuard
from .rooms import RoomService

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("text", "encrypted")


class HistoryReader(Protocol):
    """A room's history as one viewer sees it, each message in its wire form."""

    async def before(self, room_id: str, before_seq: int | None, limit: int) -> HistoryPage[WireMessage]: ...
    async def after(self, room_id: str, after_seq: int, limit: int) -> HistoryPage[WireMessage]: ...
    async def page(self, room_id: str, page: int, limit: int) -> HistoryPage[WireMessage]: ...


class MessageRepository(Protocol):
    async def insert(self, new: NewMessage) -> tuple[Message, bool]: ...
    async def get(self, message_id: str) -> Message | None: ...
    def for_viewer(self, viewer: str) -> HistoryReader: ...


class MessageEvents(Protocol):
    """What the service announces after a commit (implemented by the broadcaster)."""

    async def message_created(self, message: Message) -> None: ...
    async def mentioned(self, user_id: str, message: Message) -> None: ...


class BanCheck(Protocol):
    """``services.moderation.BanChecks``: raises ``banned``; True when shadow banned."""

    async def check_post(self, user: Principal, room_id: str) -> bool: ...


class MentionResolver(Protocol):
    async def resolve_mentions(self, room_id: str, tokens: list[str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class MessageLimits:
    max_length: int = 1000
    history_limit: int = 100
    max_mentions: int = 10


class _MessageIds:
    """Message ids: time-ordered UUIDs (version 7, RFC 9562), as 32 hex digits.

    The id is the messages table's primary key.  A random id (version 4) lands on a random
    leaf page of that index, and after every checkpoint PostgreSQL writes a page's first
    change as the whole 8 kB page into the WAL: until every leaf page had been touched once,
    each message cost a page image (3.7 to 4.0 kB of WAL per message after a checkpoint in a
    500,000-message table, against 1.9 to 2.1 kB with these ids; docs/protocol.md §6 "WAL
    per message").  Ids that grow with time touch only the index's newest pages, which also
    keeps the part of a big index that inserts need small enough to stay cached.  The first
    48 bits are the Unix time in milliseconds (the instant the message's ``timestamp`` shows
    anyway); the other 74 bits are random, drawn from the OS's random source 256 ids at a
    time (one ``getrandom`` system call per id cost about 5 µs of the send path)."""

    _BATCH = 256

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pool = b""
        self._offset = 0
        # A forked child must not hand out the random bits its parent still holds.
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._pool = b""
        self._offset = 0

    def __call__(self) -> str:
        if self._offset >= len(self._pool):
            self._pool = os.urandom(10 * self._BATCH)
            self._offset = 0
        raw = bytearray(int(self._clock() * 1000).to_bytes(6, "big"))
        raw += self._pool[self._offset:self._offset + 10]
        self._offset += 10
        raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        return raw.hex()


new_message_id = _MessageIds()


class BroadcastOrder:
    """This node announces a room's new messages in the order they were stored.

    A sender takes its turn synchronously when its insert returns (callers resume in
    commit order: ``storage.group_commit`` hands a batch's results out in ``seq`` order,
    and batches in batch order), then waits for the previous turn of the room before it
    broadcasts.  Rooms do not wait for each other.  A broadcast that hangs does not hold
    the room up for more than ``max_wait_s``: order is then given up for liveness."""

    def __init__(self, max_wait_s: float = 5.0) -> None:
        self._max_wait = max_wait_s
        self._tails: dict[str, asyncio.Future[None]] = {}

    def take(self, room_id: str) -> _Turn:
        previous = self._tails.get(room_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[room_id] = mine
        return _Turn(self._tails, room_id, previous, mine, self._max_wait)


class _Turn:
    __slots__ = ("_tails", "_room_id", "_previous", "_mine", "_max_wait")

    def __init__(self, tails: dict[str, asyncio.Future[None]], room_id: str, previous: asyncio.Future[None] | None,
                 mine: asyncio.Future[None], max_wait: float) -> None:
        self._tails = tails
        self._room_id = room_id
        self._previous = previous
        self._mine = mine
        self._max_wait = max_wait

    async def wait(self) -> None:
        previous = self._previous
        if previous is not None and not previous.done():
            await asyncio.wait((previous,), timeout=self._max_wait)  # never cancels ``previous``

    def release(self) -> None:
        if not self._mine.done():
            self._mine.set_result(None)
        if self._tails.get(self._room_id) is self._mine:
            del self._tails[self._room_id]


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
        guard: MessageGuard | None = None,
        bans: BanCheck | None = None,
    ) -> None:
        self._guard = guard  # moderation and limits (services/policy.py)
        self._bans = bans  # bans, timeouts and shadow bans (services/moderation.py)
        self._mentions = mentions
        self._messages = messages
        self._rooms = rooms
        self._events = events
        self._limits = limits
        self._new_id = id_factory
        self._order = BroadcastOrder()

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
        address: str | None = None,
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
        room = await self._rooms.visible(user, room_id, cached=True)
        # Banned users are refused before anything else; a shadow-banned user's message is
        # stored marked, shown only to them (broadcaster) and hidden from others' history.
        shadow = await self._bans.check_post(user, room.id) if self._bans is not None else False
        checked = None
        if self._guard is not None:  # limits, room modes, spam, profanity (may censor)
            checked = await self._guard.check(user, room, text, encrypted=encrypted, client_msg_id=client_msg_id, address=address)
            text = checked.text
        try:
            message, created = await self._store_new(user, room, text, type, encrypted, shadow, client_msg_id, reply_to)
        except BaseException:
            await self._not_stored(checked)  # the text stays free
            raise
        if not created:
            await self._not_stored(checked)  # a resend of a stored message
        if created:
            # Taken before anything else awaits (the insert's return did not): see BroadcastOrder.
            turn = self._order.take(message.room_id)
            try:
                if self._guard is not None and checked is not None:
                    await self._guard.accepted(user, room, message, checked)
                await turn.wait()
                # After commit, through the one door.  A failed broadcast must not turn a
                # stored message into an error: clients catch up by seq.
                try:
                    await self._events.message_created(message)
                    for mentioned in message.mentions:
                        if mentioned != user.user_id:
                            await self._events.mentioned(mentioned, message)
                except Exception:
                    log.exception("broadcast of message %s in %s failed", message.message_id, message.room_id)
            finally:
                turn.release()
        return message

    async def _not_stored(self, checked: Checked | None) -> None:
        """Give back what the guard's check held for a message not stored by this call."""
        if checked is not None and self._guard is not None:
            await self._guard.not_stored(checked)

    async def _store_new(self, user: Principal, room: Room, text: str, type: str, encrypted: bool, shadow: bool,
                         client_msg_id: str | None, reply_to: str | None) -> tuple[Message, bool]:
        """Mentions, HTML and the reply target of a checked text, then the insert: the
        stored message and whether this call created it (False: a resend)."""
        tokens = [] if encrypted else content_pipeline.find_mentions(text)
        if len(tokens) > self._limits.max_mentions:
            raise MessageRejected("spam", f"Too many mentions (at most {self._limits.max_mentions})",
                                  details={"rule": "mentions", "max_mentions": self._limits.max_mentions})
        resolved = await self._mentions.resolve_mentions(room.id, tokens) if tokens and self._mentions else {}
        html = None if encrypted else content_pipeline.to_html(text, resolved)
        if reply_to is not None:
            parent = await self._messages.get(reply_to)
            if parent is None or parent.room_id != room.id or parent.deleted_at is not None or (
                    parent.metadata.get("shadow") and parent.user_id != user.user_id):
                raise ValidationFailed("reply_to does not name a message in this room", details={"reply_to": ["Unknown message."]})
        new = build(NewMessage, {
            "message_id": self._new_id(), "room_id": room.id, "user": user, "content": text, "content_html": html,
            "type": type, "client_msg_id": client_msg_id, "reply_to": reply_to,
            "mentions": tuple(dict.fromkeys(resolved.values())) if resolved else (),
            "metadata": {"shadow": True} if shadow else {},
        })
        return await self._messages.insert(new)

    def _limit(self, limit: int | None) -> int:
        cap = self._limits.history_limit
        if limit is None:
            return cap
        if limit < 1 or limit > cap:
            raise ValidationFailed(f"limit must be between 1 and {cap}", details={"limit": [f"Must be between 1 and {cap}."]})
        return limit

    async def recent(self, user: Principal, room_id: str, *, since_seq: int | None = None,
                     limit: int | None = None) -> HistoryPage[WireMessage]:
        """History for a join: the last ``limit`` messages, or everything after ``since_seq``.
        The room's row may come from the node's cache, as for ``history`` (the join has
        just read it fresh; only its id and type are used here)."""
        room = await self._rooms.visible(user, room_id, cached=True)
        n = self._limit(limit)
        reader = self._messages.for_viewer(user.user_id)
        if since_seq is not None:
            return await reader.after(room.id, since_seq, n)
        return await reader.before(room.id, None, n)

    async def history(
        self,
        user: Principal,
        room_id: str,
        *,
        page: int = 1,
        limit: int | None = None,
        before_seq: int | None = None,
        after_seq: int | None = None,
    ) -> HistoryPage[WireMessage]:
        # The room's row may come from the node's cache (one round trip less per page): only
        # its id and type are used here, and a room's type never changes.  Membership of a
        # private room is still read every time.
        room = await self._rooms.visible(user, room_id, cached=True)
        n = self._limit(limit)
        if before_seq is not None and after_seq is not None:
            raise ValidationFailed("use before_seq or after_seq, not both", details={"before_seq": ["Not with after_seq."]})
        reader = self._messages.for_viewer(user.user_id)
        if after_seq is not None:
            return await reader.after(room.id, after_seq, n)
        if before_seq is not None:
            return await reader.before(room.id, before_seq, n)
        return await reader.page(room.id, page, n)

    async def get_visible(self, user: Principal, message_id: str) -> Message:
        message = await self._messages.get(message_id)
        if message is None or message.deleted_at is not None:
            raise NotFound("Message not found")
        if message.metadata.get("shadow") and message.user_id != user.user_id:
            raise NotFound("Message not found")  # a shadow-banned user's message exists only for them
        await self._rooms.visible(user, message.room_id)
        return message
