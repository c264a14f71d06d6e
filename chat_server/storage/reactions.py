"""Reactions: one row per (message, emoji, user); counts are aggregated on read."""

from __future__ import annotations

from .db import Database


class ReactionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, message_id: str, user_id: str, reaction: str) -> bool:
        """True when the reaction was new (a user counts once per emoji)."""
        return await self._db.execute(
            "INSERT INTO reactions (message_id, user_id, reaction) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (message_id, user_id, reaction),
        ) > 0

    async def remove(self, message_id: str, user_id: str, reaction: str) -> bool:
        return await self._db.execute(
            "DELETE FROM reactions WHERE message_id = %s AND user_id = %s AND reaction = %s",
            (message_id, user_id, reaction),
        ) > 0

    async def has(self, message_id: str, user_id: str, reaction: str) -> bool:
        row = await self._db.fetchrow(
            "SELECT 1 AS one FROM reactions WHERE message_id = %s AND user_id = %s AND reaction = %s",
            (message_id, user_id, reaction),
        )
        return row is not None

    async def counts(self, message_id: str) -> dict[str, int]:
        rows = await self._db.fetch(
            "SELECT reaction, count(*) AS n FROM reactions WHERE message_id = %s GROUP BY reaction ORDER BY min(created_at)",
            (message_id,),
        )
        return {r["reaction"]: int(r["n"]) for r in rows}
