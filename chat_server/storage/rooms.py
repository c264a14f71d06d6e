"""Rooms and memberships: SQL and row mapping only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..domain import Membership, Principal, Room
from ..errors import Conflict, Unavailable
from .db import Database, Json, UniqueViolation
from .group_commit import GroupCommit, one_by_one

_ROOM_COLUMNS = "id, name, type, settings, created_by, created_at, message_count, last_seq"


def _room(row: Mapping[str, Any]) -> Room:
    return Room(
        id=row["id"],
        name=row["name"],
        type=row["type"],
        settings=row["settings"] or {},
        created_by=row["created_by"],
        created_at=row["created_at"],
        message_count=int(row["message_count"]),
        last_seq=int(row["last_seq"]),
    )


def _membership(row: Mapping[str, Any]) -> Membership:
    return Membership(
        room_id=row["room_id"],
        user_id=row["user_id"],
        username=row["username"],
        avatar=row["avatar"],
        role=row["role"],
        joined_at=row["joined_at"],
    )


# Memberships recorded by joins, several at once: rows in (room, user) order, so that two
# batches (on any nodes) sharing rows lock them in the same order instead of deadlocking.
_TOUCH_MEMBERS = """INSERT INTO room_members (room_id, user_id, username, avatar)
SELECT * FROM unnest(%(rooms)s::text[], %(users)s::text[], %(names)s::text[], %(avatars)s::text[])
ON CONFLICT (room_id, user_id) DO UPDATE
SET username = EXCLUDED.username, avatar = EXCLUDED.avatar, last_seen_at = now()"""


class RoomStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Every join records its membership: those that arrive while one write is in
        # flight (a wave of joins) share the next statement.
        self._touches: GroupCommit[tuple[str, Principal], None] = GroupCommit(self._touch_many, max_batch=500)

    async def get(self, room_id: str) -> Room | None:
        row = await self._db.fetchrow(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = %s", (room_id,))
        return _room(row) if row else None

    async def get_many(self, room_ids: Sequence[str]) -> dict[str, Room]:
        """The rooms of ``room_ids`` that exist, by id (one read)."""
        rows = await self._db.fetch(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = ANY(%s)", (list(room_ids),))
        return {row["id"]: _room(row) for row in rows}

    async def create(
        self,
        room_id: str,
        *,
        name: str,
        type: str,
        settings: Mapping[str, Any],
        owner: Principal | None,
        members: list[str] | None = None,
    ) -> Room:
        """Insert a room with its owner (and initial members) in one transaction."""
        try:
            async with self._db.transaction() as cur:
                await cur.execute(
                    f"INSERT INTO rooms (id, name, type, settings, created_by) VALUES (%s, %s, %s, %s, %s) RETURNING {_ROOM_COLUMNS}",
                    (room_id, name, type, Json(dict(settings)), owner.user_id if owner else None),
                )
                row = await cur.fetchone()
                if owner is not None:
                    await cur.execute(
                        "INSERT INTO room_members (room_id, user_id, username, avatar, role) VALUES (%s, %s, %s, %s, 'owner')",
                        (room_id, owner.user_id, owner.username, owner.avatar),
                    )
                for user_id in members or []:
                    if owner is not None and user_id == owner.user_id:
                        continue
                    await cur.execute(
                        "INSERT INTO room_members (room_id, user_id, username, role) VALUES (%s, %s, %s, 'member') ON CONFLICT DO NOTHING",
                        (room_id, user_id, user_id),
                    )
        except UniqueViolation:
            raise Conflict(f"Room {room_id!r} already exists") from None
        return _room(row)

    async def ensure(self, room_id: str, *, name: str, type: str) -> Room:
        """Get the room, creating it with defaults when it does not exist (race-free)."""
        await self._db.execute(
            "INSERT INTO rooms (id, name, type) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (room_id, name, type),
        )
        room = await self.get(room_id)
        assert room is not None
        return room

    async def update(self, room_id: str, *, name: str | None, settings: Mapping[str, Any] | None) -> Room | None:
        row = await self._db.fetchrow(
            f"""UPDATE rooms SET name = COALESCE(%s, name),
                                 settings = CASE WHEN %s::jsonb IS NULL THEN settings ELSE settings || %s::jsonb END
                WHERE id = %s RETURNING {_ROOM_COLUMNS}""",
            (name, Json(dict(settings)) if settings is not None else None, Json(dict(settings)) if settings is not None else None, room_id),
        )
        return _room(row) if row else None

    async def membership(self, room_id: str, user_id: str) -> Membership | None:
        row = await self._db.fetchrow(
            "SELECT room_id, user_id, username, avatar, role, joined_at FROM room_members WHERE room_id = %s AND user_id = %s",
            (room_id, user_id),
        )
        return _membership(row) if row else None

    async def touch_member(self, room_id: str, user: Principal) -> None:
        """Record (or refresh) that ``user`` is a member; keeps a granted role."""
        await self._touches.submit((room_id, user))

    async def _touch_many(self, items: list[tuple[str, Principal]]) -> list[None | BaseException]:
        # One row per (room, user), the latest name winning: a statement may not upsert a
        # row twice.
        rows = sorted({(room_id, user.user_id): (room_id, user) for room_id, user in items}.items())
        try:
            await self._write_touches([row for _, row in rows])
            return [None] * len(items)
        except Unavailable:
            raise  # the database is down: every join of the batch hears it
        except Exception:
            if len(items) == 1:
                raise
        # A row the statement refused (a room deleted meanwhile) fails its own join only.
        return await one_by_one(items, lambda item: self._write_touches([item]))

    async def _write_touches(self, rows: list[tuple[str, Principal]]) -> None:
        await self._db.execute(_TOUCH_MEMBERS, {
            "rooms": [room_id for room_id, _ in rows], "users": [user.user_id for _, user in rows],
            "names": [user.username for _, user in rows], "avatars": [user.avatar for _, user in rows],
        })

    async def add_member(self, room_id: str, user_id: str, *, role: str = "member") -> None:
        await self._db.execute(
            """INSERT INTO room_members (room_id, user_id, username, role) VALUES (%s, %s, %s, %s)
               ON CONFLICT (room_id, user_id) DO UPDATE SET role = EXCLUDED.role""",
            (room_id, user_id, user_id, role),
        )

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        return await self._db.execute("DELETE FROM room_members WHERE room_id = %s AND user_id = %s", (room_id, user_id)) > 0

    async def members(self, room_id: str, *, limit: int = 1000) -> list[Membership]:
        rows = await self._db.fetch(
            """SELECT room_id, user_id, username, avatar, role, joined_at FROM room_members
               WHERE room_id = %s ORDER BY joined_at, user_id LIMIT %s""",
            (room_id, limit),
        )
        return [_membership(r) for r in rows]

    async def message_counts(self, room_ids: list[str]) -> dict[str, int]:
        """``message_count`` of each of ``room_ids`` that exists, in one statement."""
        rows = await self._db.fetch("SELECT id, message_count FROM rooms WHERE id = ANY(%s)", (room_ids,))
        return {row["id"]: int(row["message_count"]) for row in rows}

    async def resolve_mentions(self, room_id: str, tokens: list[str]) -> dict[str, str]:
        """Map ``@tokens`` (lower-cased) to user ids of the room's members, matching a
        user id exactly or a username case-insensitively."""
        if not tokens:
            return {}
        rows = await self._db.fetch(
            """SELECT user_id, username FROM room_members
               WHERE room_id = %s AND (user_id = ANY(%s) OR lower(username) = ANY(%s))""",
            (room_id, tokens, [t.lower() for t in tokens]),
        )
        resolved: dict[str, str] = {}
        wanted = {t.lower() for t in tokens}
        for row in rows:
            # An exact user-id match wins over a username match.
            if row["user_id"].lower() in wanted:
                resolved[row["user_id"].lower()] = row["user_id"]
        for row in rows:
            name = row["username"].lower()
            if name in wanted and name not in resolved:
                resolved[name] = row["user_id"]
        return resolved
