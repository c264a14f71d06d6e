"""Moderation storage: bans, soft deletes and edits, reports, roles, blocks and the audit
log.  SQL and row mapping only; the rules live in ``services.moderation``.

Every moderation action is written together with its audit entry in ONE transaction
(``Database.transaction()``): either both are stored or neither is.  The audit log is
append-only (the database refuses UPDATE and DELETE on it, see migration 0001).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..domain import AuditEntry, AuditRecord, Ban, Block, Message, NewBan, Removed, Report, Room
from .db import Database, Json
from .group_commit import GroupCommit
from .messages import _COLUMNS as _MESSAGE_COLUMNS
from .messages import message_from_row
from .prepared import Prepared
from .rooms import _ROOM_COLUMNS, _room

_BAN_COLUMNS = "id, room_id, user_id, reason, shadow, created_by, created_at, expires_at, lifted_at, lifted_by"
_REPORT_COLUMNS = "id, message_id, room_id, reporter_id, reason, status, created_at, resolved_at, resolved_by, action, note"
_ACTIVE = "lifted_at IS NULL AND (expires_at IS NULL OR expires_at > %(now)s)"


def ban_from_row(row: Mapping[str, Any]) -> Ban:
    return Ban(
        id=int(row["id"]), room_id=row["room_id"], user_id=row["user_id"], reason=row["reason"], shadow=bool(row["shadow"]),
        created_by=row["created_by"], created_at=row["created_at"], expires_at=row["expires_at"],
        lifted_at=row["lifted_at"], lifted_by=row["lifted_by"],
    )


def report_from_row(row: Mapping[str, Any]) -> Report:
    return Report(
        id=int(row["id"]), message_id=row["message_id"], room_id=row["room_id"], reporter_id=row["reporter_id"],
        reason=row["reason"], status=row["status"], created_at=row["created_at"], resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"], action=row["action"], note=row["note"],
    )


async def _audit(cur: Any, entry: AuditEntry) -> None:
    await cur.execute(
        """INSERT INTO audit_log (room_id, actor_id, action, target_user_id, target_message_id, reason, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (entry.room_id, entry.actor_id, entry.action, entry.target_user_id, entry.target_message_id, entry.reason,
         Json(dict(entry.details))),
    )


def _removed(row: Mapping[str, Any]) -> Removed:
    return Removed(row["message_id"], row["room_id"], int(row["seq"]), row["user_id"], bool((row["metadata"] or {}).get("shadow")))


async def _insert_ban(cur: Any, ban: NewBan, now: datetime) -> Ban:
    # A new ban replaces the user's active ban in the same scope (one active ban per scope).
    await cur.execute(
        """UPDATE bans SET lifted_at = %(now)s, lifted_by = %(by)s
            WHERE user_id = %(user)s AND room_id IS NOT DISTINCT FROM %(room)s AND lifted_at IS NULL""",
        {"now": now, "by": ban.created_by, "user": ban.user_id, "room": ban.room_id},
    )
    await cur.execute(
        f"""INSERT INTO bans (room_id, user_id, reason, shadow, created_by, created_at, expires_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_BAN_COLUMNS}""",
        (ban.room_id, ban.user_id, ban.reason, ban.shadow, ban.created_by, now, ban.expires_at),
    )
    return ban_from_row(await cur.fetchone())


async def _soft_delete(cur: Any, message_id: str, actor_id: str) -> Removed | None:
    await cur.execute(
        """UPDATE messages SET deleted_at = clock_timestamp(), deleted_by = %s
           WHERE message_id = %s AND deleted_at IS NULL
           RETURNING message_id, room_id, seq, user_id, metadata""",
        (actor_id, message_id),
    )
    row = await cur.fetchone()
    return _removed(row) if row else None


# Whom each of several users blocks: the block lists of a wave of connections, in one read.
_BLOCK_LISTS = Prepared("SELECT user_id, blocked_user_id FROM blocks WHERE user_id = ANY(%(users)s)",
                        [("users", "text[]")], label="block_lists")


class ModerationStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # A node loads a user's block list when their first connection arrives (the live
        # filter, ``realtime/moderation_relay.py``): that read was a quarter of a connect's
        # CPU.  Loads waiting while one is in flight share the next statement (the batching
        # of ``GroupCommit``, used here for reads).
        self._block_lists: GroupCommit[str, set[str]] = GroupCommit(self._load_block_lists, max_batch=1000)
        self._ban_reads: GroupCommit[tuple[str, str | None, datetime], list[Ban]] = GroupCommit(self._read_bans, max_batch=1000)

    # --- bans ----------------------------------------------------------------------------

    async def active_bans_for(self, user_id: str, room_id: str | None, now: datetime) -> list[Ban]:
        """The user's active bans that apply in ``room_id``: the room's and the global one.
        Every join reads them (a ban must keep the user out at once); reads that arrive
        while one is in flight (a wave of joins) share the next statement, which starts
        after they were asked for, so none is answered from older data."""
        return await self._ban_reads.submit((user_id, room_id, now))

    async def _read_bans(self, keys: list[tuple[str, str | None, datetime]]) -> list[list[Ban]]:
        if len(keys) > 1:
            # A room of None (global bans only) reads the same way: NULL matches no room.
            pairs: list[Any] = [(user_id, room_id) for user_id, room_id, _ in keys]
            found = await self.active_bans_for_many(pairs, max(now for _, _, now in keys))
            return [list(found[pair]) for pair in pairs]
        user_id, room_id, now = keys[0]
        rows = await self._db.fetch(
            f"""SELECT {_BAN_COLUMNS} FROM bans
                WHERE user_id = %(user)s AND (room_id IS NULL OR room_id = %(room)s) AND {_ACTIVE}""",
            {"user": user_id, "room": room_id, "now": now},
        )
        return [[ban_from_row(r) for r in rows]]

    async def active_bans_for_many(self, keys: Sequence[tuple[str, str]], now: datetime) -> dict[tuple[str, str], list[Ban]]:
        """``active_bans_for`` of many ``(user, room)`` pairs in one read (every pair is in
        the answer, most with no bans)."""
        rows = await self._db.fetch(
            f"""SELECT {_BAN_COLUMNS} FROM bans
                WHERE user_id = ANY(%(users)s) AND (room_id IS NULL OR room_id = ANY(%(rooms)s)) AND {_ACTIVE}""",
            {"users": list({user for user, _ in keys}), "rooms": list({room for _, room in keys}), "now": now},
        )
        found: dict[tuple[str, str], list[Ban]] = {key: [] for key in keys}
        if not rows:
            return found
        by_user: dict[str, list[Ban]] = {}
        for row in rows:
            ban = ban_from_row(row)
            by_user.setdefault(ban.user_id, []).append(ban)
        for user_id, room_id in keys:
            # The read pairs every user with every room asked about: keep each pair's own.
            found[(user_id, room_id)] = [b for b in by_user.get(user_id, ()) if b.room_id in (None, room_id)]
        return found

    async def active_bans(self, room_id: str | None, now: datetime, *, limit: int = 1000) -> list[Ban]:
        """Active bans of a room (``None``: the global bans), newest first."""
        rows = await self._db.fetch(
            f"""SELECT {_BAN_COLUMNS} FROM bans WHERE room_id IS NOT DISTINCT FROM %(room)s AND {_ACTIVE}
                ORDER BY created_at DESC, id DESC LIMIT %(limit)s""",
            {"room": room_id, "now": now, "limit": limit},
        )
        return [ban_from_row(r) for r in rows]

    async def ban(self, ban: NewBan, audit: AuditEntry, now: datetime, *, purge_since: datetime | None = None,
                  purge_limit: int = 500) -> tuple[Ban, list[Removed]]:
        """Store ``ban`` (replacing an active one in the same scope), optionally soft-delete
        the user's messages since ``purge_since`` (in the room, or everywhere for a global
        ban), and write the audit entry; all in one transaction."""
        async with self._db.transaction() as cur:
            stored = await _insert_ban(cur, ban, now)
            removed: list[Removed] = []
            if purge_since is not None:
                await cur.execute(
                    """UPDATE messages SET deleted_at = clock_timestamp(), deleted_by = %(by)s
                       WHERE message_id IN (
                           SELECT message_id FROM messages
                           WHERE user_id = %(user)s AND (%(room)s::text IS NULL OR room_id = %(room)s)
                             AND deleted_at IS NULL AND created_at >= %(since)s
                           ORDER BY created_at DESC LIMIT %(limit)s)
                       RETURNING message_id, room_id, seq, user_id, metadata""",
                    {"by": ban.created_by, "user": ban.user_id, "room": ban.room_id, "since": purge_since, "limit": purge_limit},
                )
                removed = sorted((_removed(r) for r in await cur.fetchall()), key=lambda r: (r.room_id, r.seq))
            details = {**audit.details, "ban_id": stored.id}
            if purge_since is not None:
                details["purged"] = len(removed)
            await _audit(cur, replace(audit, details=details))
        return stored, removed

    async def lift(self, room_id: str | None, user_id: str, actor_id: str, now: datetime,
                   audit_for: Callable[[list[Ban]], AuditEntry]) -> list[Ban]:
        """Lift the user's active bans in the scope; audits when something was lifted."""
        async with self._db.transaction() as cur:
            await cur.execute(
                f"""UPDATE bans SET lifted_at = %(now)s, lifted_by = %(by)s
                    WHERE user_id = %(user)s AND room_id IS NOT DISTINCT FROM %(room)s AND {_ACTIVE}
                    RETURNING {_BAN_COLUMNS}""",
                {"now": now, "by": actor_id, "user": user_id, "room": room_id},
            )
            lifted = [ban_from_row(r) for r in await cur.fetchall()]
            if lifted:
                await _audit(cur, audit_for(lifted))
        return lifted

    # --- messages --------------------------------------------------------------------------

    async def soft_delete(self, message_id: str, actor_id: str, audit: AuditEntry | None) -> Removed | None:
        async with self._db.transaction() as cur:
            removed = await _soft_delete(cur, message_id, actor_id)
            if removed is not None and audit is not None:
                await _audit(cur, audit)
        return removed

    async def edit(self, message_id: str, *, content: str, content_html: str | None, mentions: Sequence[str]) -> Message | None:
        row = await self._db.fetchrow(
            f"""WITH m AS (
                    UPDATE messages SET content = %s, content_html = %s, mentions = %s, edited_at = clock_timestamp()
                    WHERE message_id = %s AND deleted_at IS NULL RETURNING *)
                SELECT {_MESSAGE_COLUMNS} FROM m""",
            (content, content_html, list(mentions), message_id),
        )
        return message_from_row(row) if row else None

    async def message(self, message_id: str) -> Message | None:
        """A message whether or not it was deleted (for moderators handling reports)."""
        row = await self._db.fetchrow(f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = %s", (message_id,))
        return message_from_row(row) if row else None

    # --- reports ---------------------------------------------------------------------------

    async def create_report(self, message: Message, reporter_id: str, reason: str) -> tuple[Report, bool]:
        """``(report, created)``: one report per (message, reporter); a repeat returns the
        existing one."""
        row = await self._db.fetchrow(
            f"""INSERT INTO reports (message_id, room_id, reporter_id, reason) VALUES (%s, %s, %s, %s)
                ON CONFLICT (message_id, reporter_id) DO NOTHING RETURNING {_REPORT_COLUMNS}""",
            (message.message_id, message.room_id, reporter_id, reason),
        )
        if row is not None:
            return report_from_row(row), True
        row = await self._db.fetchrow(
            f"SELECT {_REPORT_COLUMNS} FROM reports WHERE message_id = %s AND reporter_id = %s", (message.message_id, reporter_id)
        )
        assert row is not None
        return report_from_row(row), False

    async def get_report(self, report_id: int) -> Report | None:
        row = await self._db.fetchrow(f"SELECT {_REPORT_COLUMNS} FROM reports WHERE id = %s", (report_id,))
        return report_from_row(row) if row else None

    async def reports(self, *, status: str | None, room_id: str | None, moderated_by: str | None, limit: int,
                      before_id: int | None) -> list[tuple[Report, Message | None]]:
        """Reports, newest first, with the reported message.  ``moderated_by``: only rooms
        where that user is a moderator or the owner."""
        rows = await self._db.fetch(
            f"""SELECT {", ".join("r." + c.strip() for c in _REPORT_COLUMNS.split(","))},
                       row_to_json(msg) AS message
                FROM reports r
                LEFT JOIN LATERAL (SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.message_id = r.message_id) msg ON true
                WHERE (%(status)s::text IS NULL OR r.status = %(status)s)
                  AND (%(room)s::text IS NULL OR r.room_id = %(room)s)
                  AND (%(before)s::bigint IS NULL OR r.id < %(before)s)
                  AND (%(mod)s::text IS NULL OR EXISTS (
                        SELECT 1 FROM room_members rm WHERE rm.room_id = r.room_id AND rm.user_id = %(mod)s
                          AND rm.role IN ('moderator', 'owner')))
                ORDER BY r.id DESC LIMIT %(limit)s""",
            {"status": status, "room": room_id, "before": before_id, "mod": moderated_by, "limit": limit},
        )
        result: list[tuple[Report, Message | None]] = []
        for row in rows:
            message = None
            if row["message"] is not None:
                m = dict(row["message"])
                for key in ("created_at", "edited_at", "deleted_at"):
                    if m.get(key) is not None:
                        m[key] = datetime.fromisoformat(m[key])
                message = message_from_row(m)
            result.append((report_from_row(row), message))
        return result

    async def resolve_report(self, report: Report, *, actor_id: str, status: str, action: str, note: str | None,
                             audits: Sequence[AuditEntry], delete_message: bool, ban: NewBan | None,
                             now: datetime) -> tuple[list[Report], Removed | None, Ban | None] | None:
        """Resolve ``report`` (and, for actions on the message, every other open report of
        the same message) together with the action and its audit entries.  ``None`` when
        the report is no longer open."""
        async with self._db.transaction() as cur:
            await cur.execute("SELECT status FROM reports WHERE id = %s FOR UPDATE", (report.id,))
            row = await cur.fetchone()
            if row is None or row["status"] != "open":
                return None
            removed = await _soft_delete(cur, report.message_id, actor_id) if delete_message else None
            stored_ban = await _insert_ban(cur, ban, now) if ban is not None else None
            await cur.execute(
                f"""UPDATE reports SET status = %(status)s, resolved_at = %(now)s, resolved_by = %(by)s,
                                       action = %(action)s, note = %(note)s
                    WHERE id = %(id)s OR (%(all)s AND message_id = %(message)s AND status = 'open')
                    RETURNING {_REPORT_COLUMNS}""",
                {"status": status, "now": now, "by": actor_id, "action": action, "note": note, "id": report.id,
                 "all": action != "dismiss", "message": report.message_id},
            )
            resolved = [report_from_row(r) for r in await cur.fetchall()]
            for entry in audits:
                await _audit(cur, entry)
        return sorted(resolved, key=lambda r: r.id != report.id), removed, stored_ban

    # --- roles and room settings -----------------------------------------------------------

    async def set_member_role(self, room_id: str, user_id: str, role: str, audit: AuditEntry) -> bool:
        """Set a (non-owner) member's role, adding the membership if needed; audits a change.
        False when nothing changed."""
        async with self._db.transaction() as cur:
            await cur.execute(
                """INSERT INTO room_members (room_id, user_id, username, role) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (room_id, user_id) DO UPDATE SET role = EXCLUDED.role
                   WHERE room_members.role <> 'owner' AND room_members.role <> EXCLUDED.role
                   RETURNING role""",
                (room_id, user_id, user_id, role),
            )
            changed = await cur.fetchone() is not None
            if changed:
                await _audit(cur, audit)
        return changed

    async def demote_moderator(self, room_id: str, user_id: str, audit: AuditEntry) -> bool:
        async with self._db.transaction() as cur:
            await cur.execute(
                "UPDATE room_members SET role = 'member' WHERE room_id = %s AND user_id = %s AND role = 'moderator' RETURNING role",
                (room_id, user_id),
            )
            changed = await cur.fetchone() is not None
            if changed:
                await _audit(cur, audit)
        return changed

    async def update_room(self, room_id: str, *, name: str | None, settings: Mapping[str, Any] | None,
                          audits: Callable[[Room, Room], list[AuditEntry]]) -> Room | None:
        """``RoomStore.update`` with the audit entries of the change in the same
        transaction (``audits(before, after)`` computes them from the locked row)."""
        async with self._db.transaction() as cur:
            await cur.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = %s FOR UPDATE", (room_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            before = _room(row)
            await cur.execute(
                f"""UPDATE rooms SET name = COALESCE(%s, name),
                                     settings = CASE WHEN %s::jsonb IS NULL THEN settings ELSE settings || %s::jsonb END
                    WHERE id = %s RETURNING {_ROOM_COLUMNS}""",
                (name, Json(dict(settings)) if settings is not None else None,
                 Json(dict(settings)) if settings is not None else None, room_id),
            )
            after = _room(await cur.fetchone())
            for entry in audits(before, after):
                await _audit(cur, entry)
        return after

    # --- audit -----------------------------------------------------------------------------

    async def audit_log(self, *, room_id: str | None, room_ids: Sequence[str] | None, limit: int,
                        before_id: int | None) -> list[AuditRecord]:
        """Newest first.  ``room_id``: one room (``None`` with ``room_ids=None``: everything);
        ``room_ids``: only these rooms."""
        rows = await self._db.fetch(
            """SELECT id, room_id, actor_id, action, target_user_id, target_message_id, reason, details, created_at
               FROM audit_log
               WHERE (%(room)s::text IS NULL OR room_id = %(room)s)
                 AND (%(rooms)s::text[] IS NULL OR room_id = ANY(%(rooms)s))
                 AND (%(before)s::bigint IS NULL OR id < %(before)s)
               ORDER BY id DESC LIMIT %(limit)s""",
            {"room": room_id, "rooms": list(room_ids) if room_ids is not None else None, "before": before_id, "limit": limit},
        )
        return [
            AuditRecord(
                id=int(r["id"]),
                entry=AuditEntry(actor_id=r["actor_id"], action=r["action"], room_id=r["room_id"],
                                 target_user_id=r["target_user_id"], target_message_id=r["target_message_id"],
                                 reason=r["reason"], details=r["details"] or {}),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def moderated_rooms(self, user_id: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT room_id FROM room_members WHERE user_id = %s AND role IN ('moderator', 'owner')", (user_id,)
        )
        return [r["room_id"] for r in rows]

    # --- blocks ----------------------------------------------------------------------------

    async def blocks(self, user_id: str) -> list[Block]:
        rows = await self._db.fetch(
            "SELECT user_id, blocked_user_id, created_at FROM blocks WHERE user_id = %s ORDER BY created_at, blocked_user_id",
            (user_id,),
        )
        return [Block(r["user_id"], r["blocked_user_id"], r["created_at"]) for r in rows]

    async def blocked_ids(self, user_id: str) -> set[str]:
        """Whom ``user_id`` blocks (a set of its own for each caller)."""
        return await self._block_lists.submit(user_id)

    async def _load_block_lists(self, users: list[str]) -> list[set[str]]:
        rows = await self._db.fetch_tuples(_BLOCK_LISTS, {"users": list(set(users))})
        lists: dict[str, set[str]] = {user_id: set() for user_id in users}
        for user_id, blocked_user_id in rows:
            lists[user_id].add(blocked_user_id)
        return [set(lists[user_id]) for user_id in users]

    async def add_block(self, user_id: str, blocked_user_id: str) -> tuple[Block, bool]:
        row = await self._db.fetchrow(
            """INSERT INTO blocks (user_id, blocked_user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING
               RETURNING user_id, blocked_user_id, created_at""",
            (user_id, blocked_user_id),
        )
        created = row is not None
        if row is None:
            row = await self._db.fetchrow(
                "SELECT user_id, blocked_user_id, created_at FROM blocks WHERE user_id = %s AND blocked_user_id = %s",
                (user_id, blocked_user_id),
            )
            assert row is not None
        return Block(row["user_id"], row["blocked_user_id"], row["created_at"]), created

    async def remove_block(self, user_id: str, blocked_user_id: str) -> bool:
        return await self._db.execute(
            "DELETE FROM blocks WHERE user_id = %s AND blocked_user_id = %s", (user_id, blocked_user_id)
        ) > 0
