"""BanChecks (services/moderation.py): the send path's ban cache, with a fake store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from chat_server import errors
from chat_server.domain import Ban, Principal
from chat_server.services.moderation import BanChecks

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
ALICE = Principal("alice", "Alice")


class FakeBans:
    def __init__(self) -> None:
        self.bans: list[Ban] = []
        self.reads = 0

    async def active_bans_for(self, user_id: str, room_id: str | None, now: datetime) -> list[Ban]:
        self.reads += 1
        return [b for b in self.bans if b.user_id == user_id and b.room_id in (room_id, None)]

    async def active_bans_for_many(self, keys: Sequence[tuple[str, str]], now: datetime) -> dict[tuple[str, str], list[Ban]]:
        self.reads += 1
        return {(u, r): [b for b in self.bans if b.user_id == u and b.room_id in (r, None)] for u, r in keys}


async def test_unbanned_users_are_served_from_the_cache():
    store = FakeBans()
    checks = BanChecks(store, clock=lambda: NOW.timestamp())
    for _ in range(5):
        assert await checks.check_post(ALICE, "r1") is False
    assert store.reads == 1


@pytest.mark.parametrize("shadow", [False, True])
async def test_a_ban_lifted_elsewhere_applies_at_once_even_before_the_invalidation_arrives(shadow):
    """The cache still holds the ban (this node has not heard of the unban yet): it is
    confirmed with the store before it refuses or hides a message."""
    store = FakeBans()
    store.bans.append(Ban(1, "r1", "alice", None, shadow, "mod", NOW))
    checks = BanChecks(store, clock=lambda: NOW.timestamp())
    if shadow:
        assert await checks.check_post(ALICE, "r1") is True
    else:
        with pytest.raises(errors.Banned):
            await checks.check_post(ALICE, "r1")
    store.bans.clear()  # lifted on another node; no forget() here yet
    assert await checks.check_post(ALICE, "r1") is False
