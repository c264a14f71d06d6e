"""Moderation rules: bans and timeouts (room and global, shadow, purge), message removal and
edits, reports, per-room moderators, personal blocks and the audit log.

No aiohttp, socketio or SQL here.  Who may do what:

* room moderation (ban, unban, list bans, delete others' messages, reports of the room,
  the room's audit log) needs ``RoomService.can_moderate``: the room's ``moderator`` or
  ``owner`` members, and JWT ``moderator``/``admin`` everywhere.  For anyone else the room
  answers ``not_found``, exactly as a missing room does;
* granting and revoking room moderators: admins and the room's owner;
* global bans: admins (global moderators may list them).

Ban checks on the hot path (every message) go through :class:`BanCache`, a per-node cache
of "which bans apply to this user in this room" with a short TTL.  Every ban change
invalidates it on every node: the service announces the change through the Socket.IO bus
(``ModerationEvents.moderation_changed``), whose local delivery on each node calls
:meth:`BanChecks.forget`; the TTL only bounds staleness if the bus lost a message.
Joins always read the database.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..domain import AuditEntry, AuditRecord, Ban, Block, Message, NewBan, Principal, Removed, Report, Room
from ..errors import Banned, Conflict, Forbidden, MessageRejected, NotFound, ValidationFailed
from . import content as content_pipeline
from .cache import Freshness, Refresher
from .messages import MessageService
from .rooms import RoomService, check_room_id

log = logging.getLogger(__name__)

REPORT_ACTIONS = ("dismiss", "delete_message", "ban_user")

# Room settings (``PATCH /api/rooms``) that are chat modes, with their Twitch-style audit
# action when turned on; ``<action>off`` when turned off.  Other settings changes are
# audited as ``settings``.
MODE_ACTIONS: Mapping[str, str] = {
    "slow_mode_seconds": "slow",
    "emoji_only": "emoteonly",
    "unique_chat": "uniquechat",
    "links_allowed": "links",
    "followers_only": "followers",
    "subscribers_only": "subscribers",
}


class ModerationRepository(Protocol):
    """``storage.moderation.ModerationStore``: every write and its audit entries in one
    transaction."""

    async def active_bans_for(self, user_id: str, room_id: str | None, now: datetime) -> list[Ban]: ...
    async def active_bans_for_many(self, keys: Sequence[tuple[str, str]], now: datetime) -> dict[tuple[str, str], list[Ban]]: ...
    async def active_bans(self, room_id: str | None, now: datetime, *, limit: int = 1000) -> list[Ban]: ...
    async def ban(self, ban: NewBan, audit: AuditEntry, now: datetime, *, purge_since: datetime | None = None,
                  purge_limit: int = 500) -> tuple[Ban, list[Removed]]: ...
    async def lift(self, room_id: str | None, user_id: str, actor_id: str, now: datetime,
                   audit_for: Callable[[list[Ban]], AuditEntry]) -> list[Ban]: ...
    async def soft_delete(self, message_id: str, actor_id: str, audit: AuditEntry | None) -> Removed | None: ...
    async def edit(self, message_id: str, *, content: str, content_html: str | None, mentions: Sequence[str]) -> Message | None: ...
    async def message(self, message_id: str) -> Message | None: ...
    async def create_report(self, message: Message, reporter_id: str, reason: str) -> tuple[Report, bool]: ...
    async def get_report(self, report_id: int) -> Report | None: ...
    async def reports(self, *, status: str | None, room_id: str | None, moderated_by: str | None, limit: int,
                      before_id: int | None) -> list[tuple[Report, Message | None]]: ...
    async def resolve_report(self, report: Report, *, actor_id: str, status: str, action: str, note: str | None,
                             audits: Sequence[AuditEntry], delete_message: bool, ban: NewBan | None,
                             now: datetime) -> tuple[list[Report], Removed | None, Ban | None] | None: ...
    async def set_member_role(self, room_id: str, user_id: str, role: str, audit: AuditEntry) -> bool: ...
    async def demote_moderator(self, room_id: str, user_id: str, audit: AuditEntry) -> bool: ...
    async def update_room(self, room_id: str, *, name: str | None, settings: Mapping[str, Any] | None,
                          audits: Callable[[Room, Room], list[AuditEntry]]) -> Room | None: ...
    async def audit_log(self, *, room_id: str | None, room_ids: Sequence[str] | None, limit: int,
                        before_id: int | None) -> list[AuditRecord]: ...
    async def moderated_rooms(self, user_id: str) -> list[str]: ...
    async def blocks(self, user_id: str) -> list[Block]: ...
    async def blocked_ids(self, user_id: str) -> set[str]: ...
    async def add_block(self, user_id: str, blocked_user_id: str) -> tuple[Block, bool]: ...
    async def remove_block(self, user_id: str, blocked_user_id: str) -> bool: ...


class ModerationEvents(Protocol):
    """What the service announces after a commit (implemented by the broadcaster)."""

    async def banned(self, user_id: str, payload: dict[str, Any]) -> None: ...
    async def unbanned(self, user_id: str, payload: dict[str, Any]) -> None: ...
    async def message_deleted(self, room_id: str, message_id: str, seq: int, *, only_user: str | None = None) -> None: ...
    async def message_updated(self, message: Message) -> None: ...
    async def moderation_changed(self, change: dict[str, Any]) -> None: ...


class ContentGuard(Protocol):
    """The send path's policy (``services.policy.MessageGuard``): for edits, only the rules
    about what a text may say (an edit is not a new message: no rate limit, slow mode or
    repeat rules, which would compare the edit with its own original)."""

    async def check_content(self, user: Principal, room: Room, text: str, *, encrypted: bool = False) -> str: ...


class MemberLookup(Protocol):
    async def membership(self, room_id: str, user_id: str) -> Any: ...
    async def resolve_mentions(self, room_id: str, tokens: list[str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class ModerationLimits:
    purge_window_s: float = 24 * 3600.0
    purge_max: int = 500
    max_page: int = 200


class BanCache:
    """Per-node cache: (user, room) → the bans that apply there (room and global), kept
    for ``ttl_s`` seconds (``clock`` is monotonic) and reloaded in the background ahead of
    that while it is read (``services.cache``).  Expiry of a timeout is checked on read,
    so an expired timeout needs no invalidation."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic, *, max_users: int = 100_000,
                 rng: Callable[[], float] = random.random) -> None:
        self._freshness = Freshness(ttl_s, clock, rng)
        self._max = max_users
        self._entries: dict[str, dict[str, tuple[float, float, tuple[Ban, ...]]]] = {}
        # Bumped by every ``forget``: a database read that started before a ban changed
        # must not put its (stale) answer into the cache after the change was forgotten.
        self.epoch = 0

    def lookup(self, user_id: str, room_id: str) -> tuple[tuple[Ban, ...] | None, bool]:
        """The cached bans (None: not cached or expired) and whether they are due a reload."""
        rooms = self._entries.get(user_id)
        return self._freshness.read(rooms.get(room_id) if rooms is not None else None)

    def put(self, user_id: str, room_id: str, bans: tuple[Ban, ...], *, epoch: int) -> None:
        if epoch != self.epoch:
            return
        if len(self._entries) >= self._max and user_id not in self._entries:
            self._entries.clear()  # crude but bounded; refilled from the database
        self._entries.setdefault(user_id, {})[room_id] = self._freshness.entry(bans)

    def forget(self, user_id: str | None = None) -> None:
        self.epoch += 1
        if user_id is None:
            self._entries.clear()
        else:
            self._entries.pop(user_id, None)


def _severest(bans: list[Ban] | tuple[Ban, ...]) -> Ban | None:
    """The ban to report: a permanent one before any timeout, else the longest timeout."""
    if not bans:
        return None
    far = datetime.max.replace(tzinfo=UTC)
    return max(bans, key=lambda b: (b.expires_at is None, b.expires_at.replace(tzinfo=b.expires_at.tzinfo or UTC) if b.expires_at else far))


def banned_error(ban: Ban, now: datetime) -> Banned:
    until = ban.to_dict()["until"]
    where = "from this room" if ban.room_id is not None else "from the chat"
    message = f"You are banned {where}" if until is None else f"You are timed out {where} until {until}"
    return Banned(message, details={"room_id": ban.room_id, "until": until, "reason": ban.reason, "global": ban.room_id is None},
                  retry_after_ms=ban.retry_after_ms(now))


class BanStore(Protocol):
    async def active_bans_for(self, user_id: str, room_id: str | None, now: datetime) -> list[Ban]: ...
    async def active_bans_for_many(self, keys: Sequence[tuple[str, str]], now: datetime) -> dict[tuple[str, str], list[Ban]]: ...


class BanChecks:
    """Whether a user may join or post in a room, for the send and join paths.

    Posting is checked against :class:`BanCache` (no database round trip for an unbanned
    user while the entry is fresh); joining always reads the database."""

    def __init__(self, store: BanStore, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self.cache = BanCache(ttl_s, monotonic)
        self.refresher: Refresher[tuple[str, str]] = Refresher("bans", self._reload_many)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def bans_for(self, user_id: str, room_id: str, *, fresh: bool = False) -> list[Ban]:
        """Active bans of ``user_id`` that apply in ``room_id`` (room and global)."""
        bans, due = (None, False) if fresh else self.cache.lookup(user_id, room_id)
        if bans is None:
            bans = await self._load(user_id, room_id)
        elif due:
            self.refresher.start((user_id, room_id))
        if not bans:
            return []  # the usual answer, without reading the clock
        now = self.now()
        return [b for b in bans if b.active_at(now)]

    async def _load(self, user_id: str, room_id: str) -> tuple[Ban, ...]:
        epoch = self.cache.epoch
        bans = tuple(await self._store.active_bans_for(user_id, room_id, self.now()))
        self.cache.put(user_id, room_id, bans, epoch=epoch)
        return bans

    async def _reload_many(self, keys: list[tuple[str, str]]) -> None:
        """The background reload of due ``(user, room)`` entries: one read for all of them."""
        epoch = self.cache.epoch
        found = await self._store.active_bans_for_many(keys, self.now())
        for user_id, room_id in keys:
            self.cache.put(user_id, room_id, tuple(found.get((user_id, room_id), ())), epoch=epoch)

    async def check_join(self, user: Principal, room_id: str) -> None:
        """Raise ``banned`` when a (visible) ban keeps the user out.  A shadow ban lets
        them in: they must not notice it."""
        check_room_id(room_id)
        ban = _severest([b for b in await self.bans_for(user.user_id, room_id, fresh=True) if not b.shadow])
        if ban is not None:
            raise banned_error(ban, self.now())

    async def check_post(self, user: Principal, room_id: str) -> bool:
        """Raise ``banned`` when the user may not post in the room; True when they are
        shadow banned (their messages reach only themselves)."""
        check_room_id(room_id)
        bans = await self.bans_for(user.user_id, room_id)
        if not bans:
            return False
        # Cached bans are confirmed before they refuse or hide anything: a ban lifted on
        # another node a moment ago (its invalidation still on the bus) must not cost the
        # user a message.  Only banned users pay this read.
        bans = await self.bans_for(user.user_id, room_id, fresh=True)
        if not bans:
            return False
        ban = _severest([b for b in bans if not b.shadow])
        if ban is not None:
            raise banned_error(ban, self.now())
        return True

    def forget(self, user_id: str | None) -> None:
        """Drop cached ban state of ``user_id`` (everyone's with None); called on every
        node when a ban changes."""
        self.cache.forget(user_id)


def mode_changes(actor: Principal, before: Room, after: Room) -> list[AuditEntry]:
    """Audit entries for a room update: one per changed mode setting (``slow``/``slowoff``,
    ``emoteonly``/``emoteonlyoff`` ...), ``settings`` for other settings, ``rename``."""
    entries: list[AuditEntry] = []
    old, new = dict(before.settings), dict(after.settings)
    other: dict[str, Any] = {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        action = MODE_ACTIONS.get(key)
        if action is None:
            other[key] = {"from": old.get(key), "to": new.get(key)}
            continue
        value = new.get(key)
        on = bool(value) if key != "links_allowed" else value is not False
        entries.append(AuditEntry(actor.user_id, action if on else action + "off", before.id,
                                  details={"setting": key, "from": old.get(key), "to": value}))
    if other:
        entries.append(AuditEntry(actor.user_id, "settings", before.id, details={"changes": other}))
    if before.name != after.name:
        entries.append(AuditEntry(actor.user_id, "rename", before.id, details={"from": before.name, "to": after.name}))
    return entries


class ModerationService:
    def __init__(
        self,
        store: ModerationRepository,
        bans: BanChecks,
        rooms: RoomService,
        members: MemberLookup,
        messages: MessageService,
        events: ModerationEvents,
        *,
        limits: ModerationLimits | None = None,
        guard: ContentGuard | None = None,
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._members = members
        self._messages = messages
        self._events = events
        self._limits = limits or ModerationLimits()
        self._guard = guard
        self.bans = bans

    def _now(self) -> datetime:
        return self.bans.now()

    def _page(self, limit: int | None) -> int:
        cap = self._limits.max_page
        if limit is None:
            return min(50, cap)
        if not 1 <= limit <= cap:
            raise ValidationFailed(f"limit must be between 1 and {cap}", details={"limit": [f"Must be between 1 and {cap}."]})
        return limit

    # --- who may act -----------------------------------------------------------------------

    async def moderated_room(self, user: Principal, room_id: str) -> Room:
        """The room if ``user`` moderates it; otherwise it looks missing (``not_found``)."""
        room = await self._rooms.visible(user, room_id)
        if not await self._rooms.can_moderate(user, room):
            raise NotFound("Room not found")
        return room

    async def _role_in(self, room_id: str, user_id: str) -> str | None:
        membership = await self._members.membership(room_id, user_id)
        return membership.role if membership is not None else None

    async def _check_target(self, actor: Principal, room: Room | None, user_id: str) -> None:
        if user_id == actor.user_id:
            raise ValidationFailed("You cannot ban yourself", details={"user_id": ["That is you."]})
        if room is None:
            return
        target_role = await self._role_in(room.id, user_id)
        if target_role == "owner":
            raise Forbidden("The room's owner cannot be banned from it")
        if target_role == "moderator" and not actor.is_global_moderator and await self._role_in(room.id, actor.user_id) != "owner":
            raise Forbidden("Only the room's owner or an admin can ban one of its moderators")

    # --- bans --------------------------------------------------------------------------------

    async def ban(self, actor: Principal, room_id: str | None, user_id: str, *, reason: str | None = None,
                  duration_seconds: int | None = None, purge: bool = False, shadow: bool = False) -> Ban:
        """Ban (or, with ``duration_seconds``, time out) ``user_id`` in a room, or
        everywhere when ``room_id`` is None (admins only)."""
        room: Room | None = None
        if room_id is None:
            if not actor.is_admin:
                raise Forbidden("Only admins can ban users from the whole chat")
        else:
            room = await self.moderated_room(actor, room_id)
        await self._check_target(actor, room, user_id)
        now = self._now()
        expires = now + timedelta(seconds=duration_seconds) if duration_seconds else None
        action = "timeout" if expires else "ban"
        details: dict[str, Any] = {"shadow": shadow, "purge": purge, "global": room is None}
        if duration_seconds:
            details["duration_seconds"] = duration_seconds
        audit = AuditEntry(actor.user_id, action, room.id if room else None, target_user_id=user_id, reason=reason, details=details)
        stored, removed = await self._store.ban(
            NewBan(room.id if room else None, user_id, reason, shadow, actor.user_id, expires), audit, now,
            purge_since=now - timedelta(seconds=self._limits.purge_window_s) if purge else None,
            purge_limit=self._limits.purge_max,
        )
        await self._announce_ban(stored)
        for message in removed:
            await self._announce_removed(message)
        return stored

    async def _announce_ban(self, ban: Ban) -> None:
        self.bans.forget(ban.user_id)
        try:
            # Every node forgets its cached ban state first, then (visible bans only) the
            # user's sockets are told and, on the node holding each, removed from the room.
            await self._events.moderation_changed({"kind": "ban", "user_id": ban.user_id, "room_id": ban.room_id})
            if not ban.shadow:
                await self._events.banned(ban.user_id, {"room_id": ban.room_id, "until": ban.to_dict()["until"], "reason": ban.reason})
        except Exception:
            log.exception("announcing the ban of %s in %s failed", ban.user_id, ban.room_id)

    async def _announce_removed(self, removed: Removed) -> None:
        try:
            await self._events.message_deleted(removed.room_id, removed.message_id, removed.seq,
                                               only_user=removed.user_id if removed.shadow else None)
        except Exception:
            log.exception("announcing the deletion of %s failed", removed.message_id)

    async def unban(self, actor: Principal, room_id: str | None, user_id: str) -> list[Ban]:
        """Lift the user's active ban or timeout in the room (or the global one); lifting
        nothing is not an error (the call is idempotent)."""
        if room_id is None:
            if not actor.is_admin:
                raise Forbidden("Only admins can lift global bans")
        else:
            room_id = (await self.moderated_room(actor, room_id)).id

        def audit_for(lifted: list[Ban]) -> AuditEntry:
            timeouts_only = all(b.kind == "timeout" for b in lifted)
            return AuditEntry(actor.user_id, "untimeout" if timeouts_only else "unban", room_id, target_user_id=user_id,
                              details={"ban_ids": [b.id for b in lifted], "global": room_id is None})

        lifted = await self._store.lift(room_id, user_id, actor.user_id, self._now(), audit_for)
        if lifted:
            self.bans.forget(user_id)
            try:
                await self._events.moderation_changed({"kind": "unban", "user_id": user_id, "room_id": room_id})
                if any(not b.shadow for b in lifted):
                    await self._events.unbanned(user_id, {"room_id": room_id})
            except Exception:
                log.exception("announcing the unban of %s in %s failed", user_id, room_id)
        return lifted

    async def list_bans(self, actor: Principal, room_id: str | None) -> list[Ban]:
        if room_id is None:
            if not actor.is_global_moderator:
                raise Forbidden("Only moderators and admins can list global bans")
        else:
            room_id = (await self.moderated_room(actor, room_id)).id
        return await self._store.active_bans(room_id, self._now())

    # --- messages ----------------------------------------------------------------------------

    async def delete_message(self, actor: Principal, message_id: str) -> Removed:
        """Soft delete by the author, or by a moderator of the message's room (audited)."""
        message = await self._messages.get_visible(actor, message_id)
        audit = None
        if message.user_id != actor.user_id:
            room = await self._rooms.visible(actor, message.room_id)
            if not await self._rooms.can_moderate(actor, room):
                raise Forbidden("Only the author or a moderator can delete this message")
            audit = AuditEntry(actor.user_id, "delete", message.room_id, target_user_id=message.user_id,
                               target_message_id=message.message_id, details={"seq": message.seq, "content": message.content[:500]})
        removed = await self._store.soft_delete(message.message_id, actor.user_id, audit)
        if removed is None:
            raise NotFound("Message not found")
        await self._announce_removed(removed)
        return removed

    async def edit_message(self, actor: Principal, message_id: str, content: str) -> Message:
        """The author changes their message: the same content pipeline (and send policy)
        as a new message; ``message_updated`` goes to the room."""
        message = await self._messages.get_visible(actor, message_id)
        if message.user_id != actor.user_id:
            raise Forbidden("Only the author can edit this message")
        room = await self._rooms.visible(actor, message.room_id)
        await self.bans.check_post(actor, room.id)
        encrypted = message.type == "encrypted"
        max_length = self._messages.limits.max_length * (2 if encrypted else 1)
        if len(content) > max_length:
            raise MessageRejected("too_long", f"Message is longer than {max_length} characters", details={"max_length": max_length})
        text = content.strip() if encrypted else content_pipeline.to_plain_text(content)
        if not text:
            raise MessageRejected("empty", "Message is empty")
        if self._guard is not None:
            text = await self._guard.check_content(actor, room, text, encrypted=encrypted)
        tokens = [] if encrypted else content_pipeline.find_mentions(text)
        if len(tokens) > self._messages.limits.max_mentions:
            raise MessageRejected("spam", f"Too many mentions (at most {self._messages.limits.max_mentions})",
                                  details={"rule": "mentions", "max_mentions": self._messages.limits.max_mentions})
        resolved = await self._members.resolve_mentions(room.id, tokens) if tokens else {}
        html = None if encrypted else content_pipeline.to_html(text, resolved)
        edited = await self._store.edit(message.message_id, content=text, content_html=html,
                                        mentions=tuple(dict.fromkeys(resolved.values())))
        if edited is None:
            raise NotFound("Message not found")
        try:
            await self._events.message_updated(edited)
        except Exception:
            log.exception("announcing the edit of %s failed", edited.message_id)
        return edited

    # --- reports ------------------------------------------------------------------------------

    async def report(self, actor: Principal, message_id: str, reason: str) -> tuple[Report, bool]:
        """Report a message the actor can see; a repeat by the same user returns the
        existing report (``created`` False)."""
        message = await self._messages.get_visible(actor, message_id)
        return await self._store.create_report(message, actor.user_id, reason)

    async def list_reports(self, actor: Principal, *, status: str | None, room_id: str | None, limit: int | None = None,
                           before_id: int | None = None) -> list[tuple[Report, Message | None]]:
        n = self._page(limit)
        if room_id is not None:
            room = await self.moderated_room(actor, room_id)
            return await self._store.reports(status=status, room_id=room.id, moderated_by=None, limit=n, before_id=before_id)
        moderated_by = None if actor.is_global_moderator else actor.user_id
        return await self._store.reports(status=status, room_id=None, moderated_by=moderated_by, limit=n, before_id=before_id)

    async def resolve_report(self, actor: Principal, report_id: int, *, action: str, note: str | None = None,
                             duration_seconds: int | None = None) -> Report:
        """Close a report with ``dismiss``, ``delete_message`` (soft delete) or ``ban_user``
        (ban, or time out with ``duration_seconds``, the author in the room).  Actions on the
        message also close the message's other open reports.  All audited."""
        if action not in REPORT_ACTIONS:
            raise ValidationFailed("unknown action", details={"action": [f"Must be one of: {', '.join(REPORT_ACTIONS)}."]})
        report = await self._store.get_report(report_id)
        if report is None:
            raise NotFound("Report not found")
        try:
            room = await self.moderated_room(actor, report.room_id)
        except NotFound:
            raise NotFound("Report not found") from None
        if report.status != "open":
            raise Conflict("The report is already closed", details={"status": report.status})
        now = self._now()
        # The moderator may act on the message even if it was deleted meanwhile (the report
        # still needs closing; a ban still applies to its author).
        message = await self._store.message(report.message_id)
        if message is None:
            raise NotFound("Report not found")
        audits = []
        ban: NewBan | None = None
        if action == "delete_message" and message.deleted_at is None:
            audits.append(AuditEntry(actor.user_id, "delete", room.id, target_user_id=message.user_id,
                                     target_message_id=message.message_id, reason=note or report.reason,
                                     details={"seq": message.seq, "report_id": report.id, "content": message.content[:500]}))
        elif action == "ban_user":
            await self._check_target(actor, room, message.user_id)
            expires = now + timedelta(seconds=duration_seconds) if duration_seconds else None
            ban = NewBan(room.id, message.user_id, note or report.reason, False, actor.user_id, expires)
            audits.append(AuditEntry(actor.user_id, "timeout" if expires else "ban", room.id, target_user_id=message.user_id,
                                     target_message_id=message.message_id, reason=note or report.reason,
                                     details={"report_id": report.id, "global": False, "shadow": False, "purge": False,
                                              **({"duration_seconds": duration_seconds} if duration_seconds else {})}))
        audits.append(AuditEntry(actor.user_id, "dismiss" if action == "dismiss" else "resolve", room.id,
                                 target_user_id=message.user_id, target_message_id=report.message_id,
                                 reason=note, details={"report_id": report.id, "report_action": action}))
        outcome = await self._store.resolve_report(
            report, actor_id=actor.user_id, status="dismissed" if action == "dismiss" else "resolved", action=action,
            note=note, audits=audits, delete_message=action == "delete_message", ban=ban, now=now,
        )
        if outcome is None:
            raise Conflict("The report is already closed")
        resolved, removed, stored_ban = outcome
        if removed is not None:
            await self._announce_removed(removed)
        if stored_ban is not None:
            await self._announce_ban(stored_ban)
        return resolved[0]

    # --- roles ----------------------------------------------------------------------------

    async def _owned_room(self, actor: Principal, room_id: str) -> Room:
        room = await self._rooms.visible(actor, room_id)
        if actor.is_admin or await self._role_in(room.id, actor.user_id) == "owner":
            return room
        raise NotFound("Room not found")

    async def grant_moderator(self, actor: Principal, room_id: str, user_id: str) -> bool:
        room = await self._owned_room(actor, room_id)
        if await self._role_in(room.id, user_id) == "owner":
            raise Conflict("The room's owner keeps the owner role")
        return await self._store.set_member_role(room.id, user_id, "moderator",
                                                 AuditEntry(actor.user_id, "mod", room.id, target_user_id=user_id))

    async def revoke_moderator(self, actor: Principal, room_id: str, user_id: str) -> bool:
        room = await self._owned_room(actor, room_id)
        if await self._role_in(room.id, user_id) == "owner":
            raise Conflict("The room's owner keeps the owner role")
        return await self._store.demote_moderator(room.id, user_id, AuditEntry(actor.user_id, "unmod", room.id, target_user_id=user_id))

    async def update_room(self, actor: Principal, room: Room, *, name: str | None, settings: Mapping[str, Any] | None) -> Room | None:
        """The room update of ``PATCH /api/rooms`` with its mode changes audited in the same
        transaction (the caller has checked that ``actor`` moderates ``room``)."""
        return await self._store.update_room(room.id, name=name, settings=settings,
                                             audits=lambda before, after: mode_changes(actor, before, after))

    # --- audit log ---------------------------------------------------------------------------

    async def audit_log(self, actor: Principal, *, room_id: str | None, limit: int | None = None,
                        before_id: int | None = None) -> list[AuditRecord]:
        n = self._page(limit)
        if room_id is not None:
            room = await self.moderated_room(actor, room_id)
            return await self._store.audit_log(room_id=room.id, room_ids=None, limit=n, before_id=before_id)
        if actor.is_global_moderator:
            return await self._store.audit_log(room_id=None, room_ids=None, limit=n, before_id=before_id)
        rooms = await self._store.moderated_rooms(actor.user_id)
        if not rooms:
            raise Forbidden("Only admins and room moderators can read the audit log")
        return await self._store.audit_log(room_id=None, room_ids=rooms, limit=n, before_id=before_id)

    # --- personal blocks ----------------------------------------------------------------------

    async def blocks(self, user: Principal) -> list[Block]:
        return await self._store.blocks(user.user_id)

    async def block(self, user: Principal, blocked_user_id: str) -> tuple[Block, bool]:
        if blocked_user_id == user.user_id:
            raise ValidationFailed("You cannot block yourself", details={"user_id": ["That is you."]})
        block, created = await self._store.add_block(user.user_id, blocked_user_id)
        await self._blocks_changed(user.user_id, blocked_user_id, True)
        return block, created

    async def unblock(self, user: Principal, blocked_user_id: str) -> bool:
        removed = await self._store.remove_block(user.user_id, blocked_user_id)
        await self._blocks_changed(user.user_id, blocked_user_id, False)
        return removed

    async def _blocks_changed(self, user_id: str, blocked_user_id: str, blocked: bool) -> None:
        try:
            await self._events.moderation_changed({"kind": "block", "user_id": user_id, "blocked_user_id": blocked_user_id,
                                                   "blocked": blocked})
        except Exception:
            log.exception("announcing a block change of %s failed", user_id)

    async def blocked_by(self, user_id: str) -> set[str]:
        """Who ``user_id`` blocks (loaded when one of their connections arrives on a node)."""
        return await self._store.blocked_ids(user_id)
