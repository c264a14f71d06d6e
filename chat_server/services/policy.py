"""The send policy: every rule a message must pass before it is stored, in one place.

``MessageService.send`` calls :meth:`MessageGuard.check` with the sender, the room and the
plain text (after sanitising, before rendering) and stores what it returns: the same text,
or the text with profanity censored.  After a message is stored it calls
:meth:`MessageGuard.accepted`, which remembers it for the duplicate rules.  Reactions go
through :meth:`MessageGuard.check_reaction` ("rate-limited like messages").  Edits use
:meth:`MessageGuard.check_content`: the rules about what a text may say, not how often.

Order of the checks (cheap and stateless first; the slow-mode slot is taken last so a
refused message does not cost the sender their turn):

1. gating: the room's ``min_role`` / ``required_claim`` → ``forbidden``;
2. rate limit per user and per client IP (``RATE_LIMIT_*``; loopback and private
   addresses, ``RATE_LIMIT_IP_EXEMPT``, only get the per-user limit) → ``rate_limited``;
3. room modes on the text: ``emoji_only`` → ``message_rejected/emoji_only``,
   ``links_allowed: false`` → ``message_rejected/links_not_allowed``;
4. spam rules (``ENABLE_SPAM_DETECTION``): links per message, repeated characters →
   ``message_rejected/spam``;
5. profanity (``ENABLE_PROFANITY_FILTER``): the room's ``profanity_mode`` ``censor``
   (default) replaces matches with ``****``, ``reject`` → ``message_rejected/profanity``;
   matched on the lookalike-folded text (``services.confusables``);
6. repeats of the user's own recent messages → ``message_rejected/duplicate``, and in
   ``unique_chat`` rooms repeats of any recent message of the room → ``duplicate``;
7. slow mode (``slow_mode_seconds``) per user per room → ``slow_mode`` + ``retry_after_ms``.

Content rules (3-6) skip encrypted messages, whose content is opaque.  Spam and profanity
are server-wide filters under ``ENABLE_MODERATION``; room modes are what a room's
moderators asked for and always apply.  Global moderators/admins and the room's own
moderators are exempt from everything except the profanity filter; whether a user moderates
the room is only looked up when a rule would refuse them, so the common path costs no
extra query.

A retry of a stored message (same ``client_msg_id``) must return the original, not be
refused as a duplicate or as slow mode: when a check refuses a message that carries a
``client_msg_id`` the guard asks whether it was already stored and, if so, lets it through
(the store then returns the original).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import emoji

from ..domain import ROLE_ADMIN, ROLE_MODERATOR, ROLE_USER, Message, Principal, Room
from ..errors import ChatError, Forbidden, MessageRejected, RateLimited, SlowMode
from .confusables import fold_confusables
from .profanity import CENSOR_REPLACEMENT, ProfanityFilter
from .ratelimit import AddressPolicy, Limit, RateLimitStore
from .spam import RecentStore, SpamDetector, count_links, normalise

log = logging.getLogger(__name__)

ROLE_RANK = {ROLE_USER: 0, ROLE_MODERATOR: 1, ROLE_ADMIN: 2}
PROFANITY_MODES = ("censor", "reject")


def _terms(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(sorted({t.strip().lower() for t in value if isinstance(t, str) and t.strip()}))


def _truthy_claim(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no")
    return bool(value)


def build_text_tables() -> None:
    """Build the content pipeline's lazily built tables now: the profanity index, the
    punctuation table of the repeat rule and the link finder.  Called at start-up, before
    the process moves what it built out of the garbage collector's way (``gc.freeze``):
    built by the first messages instead, those tens of thousands of objects stayed in
    every full collection's walk (up to ~45 ms a pause), and the first message paid for
    building them."""
    from .content import render

    sample = "Ünïcode ťext, www.example.com @someone"
    ProfanityFilter.default().profane_spans(fold_confusables(sample))
    normalise(sample)
    render(sample, mentions={"someone": "u1"})


@dataclass(frozen=True)
class RoomModes:
    """A room's moderation settings (``Room.settings``), read tolerantly: REST validates
    what moderators write (``schemas.RoomSettingsIn``); anything else stored there from
    before falls back to the defaults here."""

    slow_mode_seconds: float = 0
    emoji_only: bool = False
    links_allowed: bool = True
    unique_chat: bool = False
    min_role: str | None = None
    required_claim: str | None = None
    profanity_mode: str = "censor"
    blocked_terms: tuple[str, ...] = ()
    allowed_terms: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Mapping[str, Any] | None) -> RoomModes:
        if not settings:
            return _DEFAULT_MODES
        slow = settings.get("slow_mode_seconds")
        min_role = settings.get("min_role")
        claim = settings.get("required_claim")
        mode = settings.get("profanity_mode")
        return cls(
            slow_mode_seconds=float(slow) if isinstance(slow, int | float) and not isinstance(slow, bool) and slow > 0 else 0,
            emoji_only=settings.get("emoji_only") is True,
            links_allowed=settings.get("links_allowed") is not False,
            unique_chat=settings.get("unique_chat") is True,
            min_role=min_role if min_role in ROLE_RANK else None,
            required_claim=claim if isinstance(claim, str) and claim else None,
            profanity_mode=mode if mode in PROFANITY_MODES else "censor",
            blocked_terms=_terms(settings.get("blocked_terms")),
            allowed_terms=_terms(settings.get("allowed_terms")),
        )

    @property
    def slow_mode_ms(self) -> int:
        return round(self.slow_mode_seconds * 1000)

    @property
    def gated(self) -> bool:
        return self.required_claim is not None or (self.min_role is not None and self.min_role != ROLE_USER)

    def may_post(self, user: Principal) -> bool:
        """Role at least ``min_role``, or a truthy ``required_claim`` (either one suffices
        when both are set)."""
        if not self.gated:
            return True
        if self.min_role is not None and ROLE_RANK.get(user.role, 0) >= ROLE_RANK[self.min_role]:
            return True
        return self.required_claim is not None and _truthy_claim(user.claims.get(self.required_claim))


_DEFAULT_MODES = RoomModes()


def is_emoji_only(text: str) -> bool:
    compact = "".join(text.split())
    return bool(compact) and emoji.purely_emoji(compact)


@dataclass(frozen=True)
class GuardPolicy:
    """Server-wide knobs (from ``Settings``)."""

    rate_window_ms: int = 60_000
    rate_max_per_user: int = 30
    rate_max_per_ip: int = 120  # 0: no per-IP limit
    moderation: bool = True  # ENABLE_MODERATION: master switch of the filters below
    profanity: bool = True  # ENABLE_PROFANITY_FILTER
    spam: bool = True  # ENABLE_SPAM_DETECTION
    unique_window_ms: int = 300_000
    unique_history: int = 100


class ModeratorLookup(Protocol):
    """What the guard needs from ``RoomService``."""

    async def can_moderate(self, user: Principal, room: Room) -> bool: ...
    async def visible(self, user: Principal, room_id: str) -> Room: ...


ProfanityFactory = Callable[[Iterable[str], Iterable[str]], ProfanityFilter]
Replayed = Callable[[str, str, str], Awaitable[Any]]


class _Exemption:
    """Whether the user moderates the room, asked at most once and only when needed."""

    __slots__ = ("_lookup", "_user", "_room", "_room_id", "_answer")

    def __init__(self, lookup: ModeratorLookup, user: Principal, room: Room | None, room_id: str) -> None:
        self._lookup = lookup
        self._user = user
        self._room = room
        self._room_id = room_id
        self._answer: bool | None = True if user.is_global_moderator else None

    async def __call__(self) -> bool:
        if self._answer is None:
            room = self._room if self._room is not None else await self._lookup.visible(self._user, self._room_id)
            self._answer = await self._lookup.can_moderate(self._user, room)
        return self._answer


@dataclass(frozen=True)
class UniqueClaim:
    """A ``unique_chat`` room's hold on a text, taken when the message passed the rule:
    released when the message is not stored after all (so it cannot block the text)."""

    key: str
    handle: object


@dataclass(frozen=True)
class Unsaved:
    """A checked text the repeat rule counts before it is stored and remembered (see
    ``MessageGuard``): the user, and the text as ``spam.normalise`` makes it."""

    user_id: str
    normalised: str


@dataclass(frozen=True)
class Checked:
    """What the guard let through: the text to store (possibly censored), in a
    ``unique_chat`` room the claim on it, and its hold on the repeat rule until stored."""

    text: str
    claim: UniqueClaim | None = None
    unsaved: Unsaved | None = None


class MessageGuard:
    def __init__(
        self,
        *,
        limiter: RateLimitStore,
        recent: RecentStore,
        moderators: ModeratorLookup,
        spam: SpamDetector,
        policy: GuardPolicy | None = None,
        profanity: ProfanityFactory = ProfanityFilter.with_terms,
        replayed: Replayed | None = None,
        addresses: AddressPolicy | None = None,
    ) -> None:
        self._addresses = addresses or AddressPolicy()
        self._limiter = limiter
        self._recent = recent
        self._moderators = moderators
        self._spam = spam
        self._policy = policy or GuardPolicy()
        self._profanity = profanity
        self._replayed = replayed
        # Per user, the normalised texts of messages that passed the repeat rule and are
        # not stored (and remembered) yet: the rule counts them too.  A connection's next
        # message is checked while this one's commit is under way (chat_server/pipelining.py);
        # without these, a client that does not wait for acks would get every copy of a
        # text past the rule.  This node's only: the shared store has them once stored.
        self._unsaved: dict[str, list[str]] = {}

    @property
    def policy(self) -> GuardPolicy:
        return self._policy

    # --- the send path ------------------------------------------------------------------

    async def check(
        self,
        user: Principal,
        room: Room,
        text: str,
        *,
        encrypted: bool = False,
        client_msg_id: str | None = None,
        address: str | None = None,
    ) -> Checked:
        """The text to store (possibly censored) and its unique-chat claim, or a
        ``ChatError`` saying why not.  The caller releases the claim (``release``) when it
        does not store the message after all."""
        try:
            return await self._check(user, room, text, encrypted=encrypted, address=address)
        except ChatError:
            if client_msg_id is not None and self._replayed is not None:
                if await self._replayed(room.id, user.user_id, client_msg_id) is not None:
                    return Checked(text)  # a retry of a stored message: the store returns the original
            raise

    async def not_stored(self, checked: Checked) -> None:
        """A checked message was not stored by this call (refused later, failed, or a resend
        of a stored one): give back its unique-chat claim and its hold on the repeat rule
        (never raises)."""
        self._forget_unsaved(checked.unsaved)
        if checked.claim is not None:
            await self.release(checked.claim)

    def _forget_unsaved(self, unsaved: Unsaved | None) -> None:
        if unsaved is None:
            return
        texts = self._unsaved.get(unsaved.user_id)
        if texts is not None:
            try:
                texts.remove(unsaved.normalised)
            except ValueError:
                pass
            if not texts:
                del self._unsaved[unsaved.user_id]

    async def release(self, claim: UniqueClaim) -> None:
        """Take back a unique-chat claim whose message was not stored (never raises)."""
        try:
            await self._recent.release(claim.key, claim.handle)
        except Exception:
            log.warning("could not release a unique-chat claim in %s", claim.key, exc_info=True)

    async def check_content(self, user: Principal, room: Room, text: str, *, encrypted: bool = False) -> str:
        """The rules about what a text may say, without the ones about how often: gating,
        emoji-only, links, spam rules on the text, profanity (possibly censoring).  For
        edits: an edit is not a new message, so rate limit, slow mode and the repeat and
        unique-chat rules (which would compare the edit with its own original) do not apply."""
        modes = RoomModes.of(room.settings)
        exempt = _Exemption(self._moderators, user, room, room.id)
        if not modes.may_post(user):
            await self._refuse_gated(modes, exempt)
        return text if encrypted else await self._content(user, text, modes, exempt)

    @staticmethod
    async def _refuse_gated(modes: RoomModes, exempt: _Exemption) -> None:
        """The user may not post under the room's gate: refuse unless they moderate it."""
        if not await exempt():
            raise Forbidden("Only some users may post in this room",
                            details={"rule": "gated", "min_role": modes.min_role, "required_claim": modes.required_claim})

    async def _content(self, user: Principal, text: str, modes: RoomModes, exempt: _Exemption) -> str:
        """Room modes on the text, spam rules on the text, profanity (may censor)."""
        policy = self._policy
        if modes.emoji_only and not is_emoji_only(text) and not await exempt():
            raise MessageRejected("emoji_only", "Only emoji may be posted in this room", details={"rule": "emoji_only"})
        if not modes.links_allowed and count_links(text) > 0 and not await exempt():
            raise MessageRejected("links_not_allowed", "Links are not allowed in this room", details={"rule": "links_allowed"})
        if policy.moderation and policy.spam:
            try:
                self._spam.check_text(text)
            except MessageRejected:
                if not await exempt():
                    raise
        if policy.moderation and policy.profanity:
            text = self._filter_profanity(text, modes)
        return text

    async def _check(self, user: Principal, room: Room, text: str, *, encrypted: bool, address: str | None) -> Checked:
        modes = RoomModes.of(room.settings)
        exempt = _Exemption(self._moderators, user, room, room.id)
        policy = self._policy

        if not modes.may_post(user):
            await self._refuse_gated(modes, exempt)

        # The user's recent messages (repeat rule) are read while the rate limit is hit:
        # a read has no effect, and with Redis both commands share one round trip
        # (storage.redis_pipeline).  Unused if the message is refused before that rule.
        # The in-memory store is read when the rule runs (None here: no task per message).
        repeats = not encrypted and policy.moderation and policy.spam
        claim: UniqueClaim | None = None
        own_recent = self._spam.prefetch_recent(user.user_id) if repeats else None
        try:
            await self._rate_limit("msg", user, address, exempt)

            if not encrypted:
                text = await self._content(user, text, modes, exempt)
                if repeats:
                    try:
                        recent = await own_recent if own_recent is not None else None  # None: read by check_repeats
                        await self._spam.check_repeats(user.user_id, text, recent=recent,
                                                       unsaved=self._unsaved.get(user.user_id, ()))
                    except MessageRejected:
                        if not await exempt():
                            raise
                if modes.unique_chat:
                    # Look and remember in one atomic step: of two users posting the same
                    # text at once (on any nodes), one gets it.  The claim is taken back if
                    # the message is refused later or not stored.
                    key = _unique_key(room.id)
                    handle = await self._recent.claim(key, normalise(text), policy.unique_window_ms, policy.unique_history)
                    if handle is not None:
                        claim = UniqueClaim(key, handle)
                    elif not await exempt():
                        raise MessageRejected("duplicate", "This message was posted in this room recently (unique chat)",
                                              details={"rule": "unique_chat", "window_ms": policy.unique_window_ms})
        finally:
            if own_recent is not None:
                if not own_recent.done():
                    own_recent.cancel()
                    own_recent.add_done_callback(_retrieve)
                else:
                    _retrieve(own_recent)

        slow_ms = modes.slow_mode_ms
        if slow_ms > 0 and not user.is_global_moderator:
            try:
                decision = await self._limiter.hit([Limit(f"slow:{room.id}:{user.user_id}", 1, slow_ms)])
                if not decision.allowed and not await exempt():
                    raise SlowMode(f"Slow mode: one message every {modes.slow_mode_seconds:g} s",
                                   retry_after_ms=decision.retry_after_ms, details={"slow_mode_seconds": modes.slow_mode_seconds})
            except BaseException:
                if claim is not None:
                    await self.release(claim)
                raise
        unsaved = None
        if repeats:  # nothing awaits from here to the caller's insert
            unsaved = Unsaved(user.user_id, normalise(text))
            self._unsaved.setdefault(user.user_id, []).append(unsaved.normalised)
        return Checked(text, claim, unsaved)

    def _filter_profanity(self, text: str, modes: RoomModes) -> str:
        flt = self._profanity(modes.blocked_terms, modes.allowed_terms)
        folded = fold_confusables(text)  # same length: spans carry over to the original
        spans = flt.profane_spans(folded)
        if not any(folded[start:end] != CENSOR_REPLACEMENT for start, end in spans):
            return text
        if modes.profanity_mode == "reject":
            raise MessageRejected("profanity", "The message contains words not allowed here", details={"rule": "profanity"})
        out: list[str] = []
        position = 0
        for start, end in spans:
            out.append(text[position:start])
            out.append(CENSOR_REPLACEMENT)
            position = end
        out.append(text[position:])
        return "".join(out)

    async def accepted(self, user: Principal, room: Room, message: Message, checked: Checked) -> None:
        """Remember a stored message for the duplicate rules, in place of its hold from
        ``check`` (never raises: the message is already committed)."""
        # Dropped before the store has it, not after: with a shared store the text is
        # counted neither here nor there for one round trip, rather than twice (which would
        # refuse a message that is not a repeat).
        self._forget_unsaved(checked.unsaved)
        if message.type == "encrypted":
            return
        try:
            policy = self._policy
            if policy.moderation and policy.spam:
                await self._spam.remember(user.user_id, message.content)
            # A unique_chat room's texts are remembered when claimed (``check``).
        except Exception:
            log.warning("could not remember message %s for duplicate checks", message.message_id, exc_info=True)

    # --- reactions ----------------------------------------------------------------------

    async def check_reaction(self, user: Principal, room_id: str, *, address: str | None = None) -> None:
        """Reactions are rate-limited like messages (their own budget, same numbers)."""
        await self._rate_limit("react", user, address, _Exemption(self._moderators, user, None, room_id))

    # --- shared -------------------------------------------------------------------------

    async def _rate_limit(self, action: str, user: Principal, address: str | None, exempt: _Exemption) -> None:
        if user.is_global_moderator:
            return
        policy = self._policy
        limits = [Limit(f"{action}:u:{user.user_id}", policy.rate_max_per_user, policy.rate_window_ms)]
        ip = self._addresses.limited(address) if policy.rate_max_per_ip > 0 else None
        if ip is not None:
            limits.append(Limit(f"{action}:ip:{ip}", policy.rate_max_per_ip, policy.rate_window_ms))
        decision = await self._limiter.hit(limits)
        if not decision.allowed and not await exempt():
            scope = "ip" if decision.refused_by is not None and ":ip:" in decision.refused_by.key else "user"
            what = "reactions" if action == "react" else "messages"
            raise RateLimited(f"Too many {what}, slow down", retry_after_ms=decision.retry_after_ms,
                              details={"scope": scope, "window_ms": policy.rate_window_ms})


def _unique_key(room_id: str) -> str:
    return f"uc:{room_id}"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned read: nothing to report
