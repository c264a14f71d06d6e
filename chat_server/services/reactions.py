"""Reactions: one user counts once per emoji; counts are aggregated per emoji."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import emoji

from ..domain import Message, Principal
from ..errors import ValidationFailed
from .messages import MessageService
from .moderation import BanChecks
from .policy import MessageGuard

DEFAULT_REACTION_NAMES = ("like", "love", "laugh", "wow", "sad", "angry", "fire", "clap")


class ReactionRepository(Protocol):
    async def add(self, message_id: str, user_id: str, reaction: str) -> bool: ...
    async def remove(self, message_id: str, user_id: str, reaction: str) -> bool: ...
    async def has(self, message_id: str, user_id: str, reaction: str) -> bool: ...
    async def counts(self, message_id: str) -> dict[str, int]: ...


class ReactionEvents(Protocol):
    async def message_reaction(self, message: Message, reactions: dict[str, int], *, user_id: str, reaction: str, action: str) -> None: ...


@dataclass(frozen=True)
class ReactionChange:
    message: Message
    reactions: dict[str, int]
    action: str  # "added" | "removed"
    changed: bool


def check_reaction(reaction: object, names: frozenset[str]) -> str:
    """A single emoji (any skin tone / ZWJ sequence) or one of the configured names."""
    if isinstance(reaction, str) and len(reaction) <= 32 and (reaction in names or emoji.is_emoji(reaction)):
        return reaction
    raise ValidationFailed(
        "reaction must be a single emoji or one of: " + ", ".join(sorted(names)),
        details={"reaction": ["Not a single emoji or a known reaction name."]},
    )


class ReactionService:
    def __init__(self, reactions: ReactionRepository, messages: MessageService, events: ReactionEvents,
                 *, names: tuple[str, ...] = DEFAULT_REACTION_NAMES, guard: MessageGuard | None = None,
                 bans: BanChecks | None = None) -> None:
        self._guard = guard  # rate limits (services/policy.py)
        self._bans = bans  # a reaction is a post: the same bans apply as to messages
        self._reactions = reactions
        self._messages = messages
        self._events = events
        self._names = frozenset(names)

    async def react(self, user: Principal, message_id: str, reaction: str, *, remove: bool | None = None,
                    address: str | None = None) -> ReactionChange:
        """Add or remove ``user``'s ``reaction``; ``remove=None`` toggles."""
        reaction = check_reaction(reaction, self._names)
        message = await self._messages.get_visible(user, message_id)
        # Banned (or timed out) users are refused, as for messages; a shadow-banned user's
        # reaction is acknowledged as if it counted but is neither stored nor shown to
        # anyone (they must not notice the ban, and others must not see them).
        shadow = await self._bans.check_post(user, message.room_id) if self._bans is not None else False
        if self._guard is not None:
            await self._guard.check_reaction(user, message.room_id, address=address)
        if shadow:
            counts = await self._reactions.counts(message.message_id)
            if remove:
                return ReactionChange(message, counts, "removed", False)
            return ReactionChange(message, {**counts, reaction: counts.get(reaction, 0) + 1}, "added", True)
        if remove is None:
            remove = await self._reactions.has(message.message_id, user.user_id, reaction)
        if remove:
            changed = await self._reactions.remove(message.message_id, user.user_id, reaction)
        else:
            changed = await self._reactions.add(message.message_id, user.user_id, reaction)
        counts = await self._reactions.counts(message.message_id)
        action = "removed" if remove else "added"
        if changed:
            await self._events.message_reaction(message, counts, user_id=user.user_id, reaction=reaction, action=action)
        return ReactionChange(message, counts, action, changed)
