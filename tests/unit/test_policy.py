"""MessageGuard (services/policy.py) against in-memory stores and fakes, with a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from chat_server import errors
from chat_server.domain import Message, Principal, Room
from chat_server.services.policy import Checked, GuardPolicy, MessageGuard, RoomModes, is_emoji_only
from chat_server.services.ratelimit import MemoryRateLimitStore
from chat_server.services.spam import MemoryRecentStore, SpamDetector, SpamRules
from tests.conftest import FakeClock

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
ALICE = Principal("alice", "Alice")
BOB = Principal("bob", "Bob")
ROOM_MOD = Principal("carol", "Carol")  # moderator of ROOM only (a membership role)
MOD = Principal("mod", "Mod", role="moderator")


class FakeModerators:
    """RoomService's can_moderate/visible; counts lookups (they should be rare)."""

    def __init__(self, rooms: dict[str, Room]) -> None:
        self.rooms = rooms
        self.lookups = 0

    async def can_moderate(self, user: Principal, room: Room) -> bool:
        self.lookups += 1
        return user.is_global_moderator or user.user_id == ROOM_MOD.user_id

    async def visible(self, user: Principal, room_id: str) -> Room:
        return self.rooms[room_id]


def room(**settings: Any) -> Room:
    return Room("r1", "Room", "public", settings, None, NOW)


class World:
    def __init__(self, *, policy: GuardPolicy | None = None, rules: SpamRules | None = None, stored: set[str] | None = None) -> None:
        self.clock = FakeClock()
        self.limiter = MemoryRateLimitStore(self.clock)
        self.recent = MemoryRecentStore(self.clock)
        self.moderators = FakeModerators({"r1": room()})
        self.stored = stored or set()

        async def replayed(room_id: str, user_id: str, client_msg_id: str) -> object | None:
            return object() if client_msg_id in self.stored else None

        self.guard = MessageGuard(
            limiter=self.limiter, recent=self.recent, moderators=self.moderators,
            spam=SpamDetector(rules or SpamRules(), self.recent),
            policy=policy or GuardPolicy(rate_window_ms=10_000, rate_max_per_user=3, rate_max_per_ip=5),
            replayed=replayed,
        )

    async def send(self, user: Principal, text: str, the_room: Room | None = None, **kwargs: Any) -> str:
        """check, then remember as stored (what MessageService.send does)."""
        target = the_room or room()
        checked = await self.guard.check(user, target, text, **kwargs)
        message = Message("m", target.id, 1, user.user_id, user.username, None, checked.text, None,
                          "encrypted" if kwargs.get("encrypted") else "text", NOW)
        await self.guard.accepted(user, target, message, checked)
        return checked.text


async def refused(coro: Any) -> errors.ChatError:
    with pytest.raises(errors.ChatError) as exc:
        await coro
    return exc.value


# --- rate limits ------------------------------------------------------------------------------


async def test_rate_limit_per_user_with_retry_after() -> None:
    w = World()
    for text in ("good morning", "what a play", "see you later"):
        await w.send(ALICE, text)
        w.clock.advance(1)
    error = await refused(w.send(ALICE, "one more"))
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after_ms == 7000 and error.details["scope"] == "user"
    await w.send(BOB, "bob is fine")
    w.clock.advance(7)
    await w.send(ALICE, "allowed again")


async def test_rate_limit_per_ip_across_users() -> None:
    w = World()
    users = [Principal(f"u{i}", f"U{i}") for i in range(6)]
    for user in users[:5]:
        await w.send(user, f"hello from {user.user_id}", address="203.0.113.1")
    error = await refused(w.send(users[5], "hello from u5", address="203.0.113.1"))
    assert isinstance(error, errors.RateLimited) and error.details["scope"] == "ip"
    await w.send(users[5], "hello from u5", address="203.0.113.2")
    # Loopback and private addresses (a proxy, a container network) get no per-IP limit.
    for user in users:
        await w.send(user, f"via the proxy {user.user_id} says hi", address="127.0.0.1")


async def test_moderators_are_exempt_from_chat_limits_and_looked_up_only_when_refused() -> None:
    w = World()
    for i in range(10):
        await w.send(MOD, f"mod message {i}")  # also exempt from the repeat rule
    assert w.moderators.lookups == 0  # a global role needs no lookup
    for text in ("first words", "another thing", "third remark"):
        await w.send(ROOM_MOD, text)
    assert w.moderators.lookups == 0  # nothing refused yet: no lookup
    for text in ("fourth point", "fifth idea", "sixth answer"):
        await w.send(ROOM_MOD, text)
    assert w.moderators.lookups == 3  # once per refused check, answered "exempt"


async def test_reactions_are_rate_limited_with_their_own_budget() -> None:
    w = World()
    for _ in range(3):
        await w.guard.check_reaction(ALICE, "r1", address="203.0.113.1")
    error = await refused(w.guard.check_reaction(ALICE, "r1"))
    assert isinstance(error, errors.RateLimited) and error.retry_after_ms == 10_000
    await w.send(ALICE, "messages still have their budget")
    await w.guard.check_reaction(ROOM_MOD, "r1")  # room moderators: exempt (room looked up)
    for _ in range(5):
        await w.guard.check_reaction(ROOM_MOD, "r1")


# --- room modes ---------------------------------------------------------------------------------


async def test_slow_mode_per_user_per_room() -> None:
    w = World(policy=GuardPolicy(rate_max_per_user=100))
    slow = room(slow_mode_seconds=30)
    await w.send(ALICE, "first", slow)
    w.clock.advance(10)
    error = await refused(w.send(ALICE, "second", slow))
    assert isinstance(error, errors.SlowMode) and error.code == "slow_mode" and error.retry_after_ms == 20_000
    await w.send(BOB, "bob has his own turn", slow)
    await w.send(ALICE, "another room is not slow")
    await w.send(MOD, "mods", slow)
    await w.send(MOD, "are exempt", slow)
    await w.send(ROOM_MOD, "room mods", slow)
    await w.send(ROOM_MOD, "too", slow)
    w.clock.advance(20)
    await w.send(ALICE, "third", slow)


async def test_a_refused_message_does_not_cost_the_slow_mode_turn() -> None:
    w = World()
    strict = room(slow_mode_seconds=60, links_allowed=False)
    assert isinstance(await refused(w.send(ALICE, "see example.com", strict)), errors.MessageRejected)
    await w.send(ALICE, "a message without links", strict)


async def test_emoji_only() -> None:
    w = World()
    emoji_room = room(emoji_only=True)
    for text in ("👍", "👍 🎉 ❤️", "👩‍👩‍👧👍🏽"):
        await w.send(ALICE, text, emoji_room)
        w.clock.advance(10)
    error = await refused(w.send(ALICE, "hello 👍", emoji_room))
    assert isinstance(error, errors.MessageRejected) and error.reason == "emoji_only"
    await w.send(ROOM_MOD, "moderators may write words", emoji_room)
    assert is_emoji_only("🎉🎉") and not is_emoji_only("ok")


async def test_links_not_allowed() -> None:
    w = World(policy=GuardPolicy(rate_max_per_user=100))
    no_links = room(links_allowed=False)
    for text in ("see https://example.com/x", "go to example.com", "www.spam.io"):
        error = await refused(w.send(ALICE, text, no_links))
        assert isinstance(error, errors.MessageRejected) and error.reason == "links_not_allowed"
    await w.send(ALICE, "no links at all", no_links)
    await w.send(MOD, "official link: example.com", no_links)


async def test_unique_chat_refuses_recent_repeats_of_anyone() -> None:
    w = World()
    unique = room(unique_chat=True)
    await w.send(ALICE, "Nice goal!", unique)
    error = await refused(w.send(BOB, "nice   GOAL", unique))
    assert isinstance(error, errors.MessageRejected) and error.reason == "duplicate" and error.details["rule"] == "unique_chat"
    await w.send(BOB, "what a goal", unique)
    await w.send(ALICE, "Nice goal!")  # other rooms do not care
    w.clock.advance(301)  # past UNIQUE_CHAT_WINDOW_MS (default 5 min)
    await w.send(BOB, "nice goal", unique)


async def test_unique_chat_skips_encrypted_messages_and_comes_after_the_rate_limit() -> None:
    w = World()
    unique = room(unique_chat=True)
    await w.send(ALICE, "Y2lwaGVy", unique, encrypted=True)
    await w.send(BOB, "Y2lwaGVy", unique, encrypted=True)  # opaque: no content rule applies
    await w.send(BOB, "Y2lwaGVy", unique)  # as text: first time the room sees it
    error = await refused(w.send(BOB, "y2lwaGVy", unique))
    assert isinstance(error, errors.MessageRejected) and error.details["rule"] == "unique_chat"
    # Over the rate limit, a repeat is refused for the rate, before any content rule.
    error = await refused(w.send(BOB, "Y2lwaGVy", unique))
    assert isinstance(error, errors.RateLimited)


async def test_gating_by_role_or_claim() -> None:
    w = World()
    subscribers = room(min_role="moderator", required_claim="subscriber")
    error = await refused(w.send(ALICE, "let me in", subscribers))
    assert isinstance(error, errors.Forbidden) and error.code == "forbidden"
    subscriber = replace(BOB, claims={"subscriber": True})
    await w.send(subscriber, "I subscribed", subscribers)
    await w.send(MOD, "moderator role", subscribers)
    await w.send(ROOM_MOD, "room moderator", subscribers)
    false_claim = replace(ALICE, claims={"subscriber": "false"})
    assert isinstance(await refused(w.send(false_claim, "nope", subscribers)), errors.Forbidden)


async def test_min_role_admin_refuses_non_admins_except_room_moderators() -> None:
    w = World()
    admins_only = room(min_role="admin")
    error = await refused(w.send(ALICE, "hi", admins_only))
    assert isinstance(error, errors.Forbidden)
    await w.send(Principal("root", "Root", role="admin"), "hi", admins_only)
    # Moderators moderate: they are exempt from the room's gate.
    await w.send(MOD, "hi there", admins_only)


# --- profanity ----------------------------------------------------------------------------------


async def test_profanity_is_censored_by_default_including_lookalikes() -> None:
    w = World()
    assert await w.send(ALICE, "what the shit") == "what the ****"
    assert await w.send(BOB, "fսck this") == "**** this"  # Armenian ս
    assert await w.send(ROOM_MOD, "ѕһit happens") == "**** happens"  # Cyrillic ѕ, һ
    assert await w.send(MOD, "clean text") == "clean text"


async def test_profanity_reject_mode_and_room_terms() -> None:
    w = World(policy=GuardPolicy(rate_max_per_user=100))
    strict = room(profanity_mode="reject", blocked_terms=["banana"], allowed_terms=["hell"])
    error = await refused(w.send(ALICE, "what the shit", strict))
    assert isinstance(error, errors.MessageRejected) and error.reason == "profanity"
    assert isinstance(await refused(w.send(ALICE, "BANANA time", strict)), errors.MessageRejected)
    assert isinstance(await refused(w.send(ALICE, "bаnаnа time", strict)), errors.MessageRejected)  # Cyrillic а
    assert await w.send(ALICE, "what the hell", strict) == "what the hell"
    censoring = room(blocked_terms=["banana"])
    assert await w.send(BOB, "a banana split", censoring) == "a **** split"


async def test_filters_can_be_switched_off_but_room_modes_stay() -> None:
    w = World(policy=GuardPolicy(moderation=False))
    assert await w.send(ALICE, "what the shit") == "what the shit"
    assert await w.send(ALICE, "a" * 40) == "a" * 40
    error = await refused(w.send(ALICE, "example.com", room(links_allowed=False)))
    assert isinstance(error, errors.MessageRejected) and error.reason == "links_not_allowed"
    w2 = World(policy=GuardPolicy(profanity=False))
    assert await w2.send(ALICE, "what the shit") == "what the shit"


# --- spam ---------------------------------------------------------------------------------------


async def test_spam_rules_apply_to_users_not_moderators() -> None:
    w = World(policy=GuardPolicy(rate_max_per_user=100), rules=SpamRules(max_links=1, max_repeats=2))
    error = await refused(w.send(ALICE, "a.com b.com"))
    assert isinstance(error, errors.MessageRejected) and error.reason == "spam" and error.details["rule"] == "links"
    error = await refused(w.send(ALICE, "z" * 30))
    assert isinstance(error, errors.MessageRejected) and error.details["rule"] == "repeated_chars"
    await w.send(ALICE, "follow me please")
    await w.send(ALICE, "Follow me, please!")
    error = await refused(w.send(ALICE, "follow me pleaseee"))
    assert isinstance(error, errors.MessageRejected) and error.reason == "duplicate"
    for _ in range(3):
        await w.send(MOD, "a.com b.com")


async def test_messages_checked_but_not_stored_yet_count_as_repeats_until_given_back() -> None:
    """A client that does not wait for acks has its next message checked while the last one
    is still being stored: those count for the repeat rule as if already remembered."""
    w = World(policy=GuardPolicy(rate_max_per_user=100), rules=SpamRules(max_repeats=2))
    first = await w.guard.check(ALICE, room(), "buy my stuff")
    second = await w.guard.check(ALICE, room(), "Buy my stuff!")  # neither stored yet
    error = await refused(w.guard.check(ALICE, room(), "buy my stuff"))
    assert isinstance(error, errors.MessageRejected) and error.details["rule"] == "repeated_message"
    assert (await w.guard.check(BOB, room(), "buy my stuff")).text == "buy my stuff"  # per user
    await w.guard.not_stored(second)  # e.g. its insert failed: the text is free again
    third = await w.guard.check(ALICE, room(), "buy my stuff")
    message = Message("m", "r1", 1, "alice", "Alice", None, "buy my stuff", None, "text", NOW)
    await w.guard.accepted(ALICE, room(), message, first)  # stored: remembered in place of its hold
    await w.guard.accepted(ALICE, room(), message, third)
    error = await refused(w.guard.check(ALICE, room(), "buy my stuff"))
    assert isinstance(error, errors.MessageRejected) and error.details["rule"] == "repeated_message"
    w.clock.advance(61)  # past the window: nothing held, nothing remembered
    assert (await w.guard.check(ALICE, room(), "buy my stuff")).unsaved is not None


async def test_encrypted_messages_skip_content_rules_but_not_limits() -> None:
    w = World()
    strict = room(emoji_only=True, slow_mode_seconds=5, profanity_mode="reject")
    assert await w.send(ALICE, "c2hpdCBzaGl0", strict, encrypted=True) == "c2hpdCBzaGl0"
    assert isinstance(await refused(w.send(ALICE, "b3RoZXI=", strict, encrypted=True)), errors.SlowMode)


async def test_a_retry_of_a_stored_message_is_let_through() -> None:
    w = World(stored={"cid-1"})
    slow = room(slow_mode_seconds=60, unique_chat=True)
    await w.send(ALICE, "hello there", slow, client_msg_id="cid-1")
    # The same client_msg_id again (the ack was lost): not slow mode, not a duplicate.
    assert await w.guard.check(ALICE, slow, "hello there", client_msg_id="cid-1") == Checked("hello there")  # no claim
    assert isinstance(await refused(w.guard.check(ALICE, slow, "hello there", client_msg_id="cid-2")), errors.ChatError)


async def test_unique_chat_claims_a_text_at_once_and_a_released_claim_frees_it() -> None:
    """Two users sending the same text at the same moment: the first check holds it
    before either message is stored (the look and the hold are one step), and a message
    refused or not stored later gives it back."""
    w = World()
    unique = room(unique_chat=True)
    first = await w.guard.check(ALICE, unique, "same words")
    assert first.claim is not None
    error = await refused(w.guard.check(BOB, unique, "Same words!"))  # nothing stored yet
    assert isinstance(error, errors.MessageRejected) and error.details["rule"] == "unique_chat"
    await w.guard.release(first.claim)  # e.g. the insert failed
    again = await w.guard.check(BOB, unique, "same words")
    assert again.claim is not None and again.text == "same words"


async def test_a_message_refused_by_slow_mode_gives_its_unique_claim_back() -> None:
    w = World()
    strict = room(unique_chat=True, slow_mode_seconds=60)
    await w.send(ALICE, "first words", strict)
    assert isinstance(await refused(w.send(ALICE, "second words", strict)), errors.SlowMode)
    await w.send(BOB, "second words", strict)  # Alice's refused text did not keep it


def test_room_modes_are_read_tolerantly() -> None:
    modes = RoomModes.of({"slow_mode_seconds": "x", "emoji_only": "yes", "min_role": "king", "profanity_mode": "shout",
                          "blocked_terms": "notalist", "allowed_terms": [" Hell ", 5, ""], "unknown": 1})
    assert modes == RoomModes(allowed_terms=("hell",))
    assert RoomModes.of(None) == RoomModes()
    assert RoomModes.of({"slow_mode_seconds": 3}).slow_mode_ms == 3000


def test_address_policy_exempts_loopback_and_private_networks() -> None:
    from chat_server.config import Settings
    from chat_server.services.ratelimit import DEFAULT_IP_EXEMPT, AddressPolicy

    assert Settings().rate_limit_ip_exempt == DEFAULT_IP_EXEMPT
    policy = AddressPolicy()
    for exempt in ("127.0.0.1", "::1", "10.1.2.3", "172.20.0.5", "192.168.1.1", "::ffff:10.0.0.1", "fd00::1", None, "", "unix:/x"):
        assert policy.limited(exempt) is None, exempt
    assert policy.limited("203.0.113.7") == "203.0.113.7"
    assert policy.limited("::ffff:203.0.113.7") == "203.0.113.7"
    assert AddressPolicy(()).limited("127.0.0.1") == "127.0.0.1"


def test_new_settings_are_read_and_validated(tmp_path: Any) -> None:
    from chat_server.config import ConfigError, Settings

    env = {"DATA_DIR": str(tmp_path), "RATE_LIMIT_MAX_MESSAGES": "10", "SPAM_SIMILARITY": "0.8", "SPAM_MAX_LINKS": "0",
           "RATE_LIMIT_IP_EXEMPT": "none", "REST_RATE_LIMIT_MAX_REQUESTS": "5", "REST_RATE_LIMIT_IP_MAX_REQUESTS": "0"}
    s = Settings.from_env(env, dotenv_path=None)
    assert (s.chat_ip_limit, s.spam_similarity, s.spam_max_links, s.rate_limit_ip_exempt) == (40, 0.8, 0, ())
    assert (s.rest_rate_limit_max_requests, s.rest_ip_limit) == (5, 0)
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "RATE_LIMIT_IP_MAX_MESSAGES": "7"}, dotenv_path=None).chat_ip_limit == 7
    for name, bad in (("SPAM_SIMILARITY", "1.5"), ("SPAM_MAX_REPEATS", "0"), ("RATE_LIMIT_IP_EXEMPT", "nonsense"), ("UNIQUE_CHAT_HISTORY", "-1")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({"DATA_DIR": str(tmp_path), name: bad}, dotenv_path=None)


async def test_check_content_for_edits_skips_rate_slow_and_repeat_rules() -> None:
    w = World(policy=GuardPolicy(rate_max_per_user=1))
    strict = room(slow_mode_seconds=60, unique_chat=True, links_allowed=False)
    await w.send(ALICE, "hello wrold", strict)
    # An edit right after sending: no slow mode, no rate limit, not a duplicate of itself.
    assert await w.guard.check_content(ALICE, strict, "hello world") == "hello world"
    assert await w.guard.check_content(ALICE, strict, "hello shit") == "hello ****"
    error = await refused(w.guard.check_content(ALICE, strict, "hello example.com"))
    assert isinstance(error, errors.MessageRejected) and error.reason == "links_not_allowed"
    gated = room(required_claim="vip")
    assert isinstance(await refused(w.guard.check_content(ALICE, gated, "hi")), errors.Forbidden)


def test_start_up_builds_the_text_tables_the_first_message_would_otherwise_build():
    # Built before the server freezes its start-up objects out of the collector's walks.
    from chat_server.services import content, profanity, spam
    from chat_server.services.policy import build_text_tables

    lazy = (profanity._default_index, spam._bmp_punctuation, content._linker)
    for table in (*lazy, profanity._cached_filter, profanity._filter_for_tuples):
        table.cache_clear()
    build_text_tables()
    assert [table.cache_info().currsize for table in lazy] == [1, 1, 1]
