"""Schema migrations: apply, roll back, re-apply on an empty database; audit log is append-only."""

from __future__ import annotations

import psycopg2
import pytest

from chat_server.migrate import apply_migrations, migrations_dir, rollback_migrations

TABLES = {"rooms", "room_members", "messages", "reactions", "bans", "reports", "audit_log", "blocks", "user_presence"}


def public_tables(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def migration_count() -> int:
    return len([p for p in migrations_dir().glob("*.sql") if not p.name.endswith(".rollback.sql")])


def test_apply_rollback_reapply(fresh_database):
    assert not TABLES & public_tables(fresh_database)
    total = migration_count()
    assert total >= 1

    assert apply_migrations(fresh_database) == total
    assert TABLES <= public_tables(fresh_database)
    assert apply_migrations(fresh_database) == 0  # idempotent: nothing pending

    assert rollback_migrations(fresh_database) == total
    assert not TABLES & public_tables(fresh_database)
    conn = psycopg2.connect(fresh_database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_proc WHERE proname = 'audit_log_append_only'")
            assert cur.fetchone()[0] == 0  # the trigger function went too
    finally:
        conn.close()

    assert apply_migrations(fresh_database) == total
    assert TABLES <= public_tables(fresh_database)


def test_partial_rollback(fresh_database):
    total = apply_migrations(fresh_database)
    assert rollback_migrations(fresh_database, count=1) == 1
    assert apply_migrations(fresh_database) == 1
    assert TABLES <= public_tables(fresh_database)
    assert total >= 1


@pytest.fixture
def audit_conn(fresh_database):
    apply_migrations(fresh_database)
    conn = psycopg2.connect(fresh_database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO audit_log (room_id, actor_id, action, reason) VALUES ('r1', 'mod', 'ban', 'spam') RETURNING id")
        row_id = cur.fetchone()[0]
    yield conn, row_id
    conn.close()


def test_audit_log_accepts_inserts(audit_conn):
    conn, _ = audit_conn
    with conn.cursor() as cur:
        cur.execute("INSERT INTO audit_log (actor_id, action) VALUES ('mod', 'unban')")
        cur.execute("SELECT count(*) FROM audit_log")
        assert cur.fetchone()[0] == 2


def test_audit_log_refuses_update(audit_conn):
    conn, row_id = audit_conn
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error, match="append-only"):
            cur.execute("UPDATE audit_log SET reason = 'nothing happened' WHERE id = %s", (row_id,))
        cur.execute("SELECT reason FROM audit_log WHERE id = %s", (row_id,))
        assert cur.fetchone()[0] == "spam"


def test_audit_log_refuses_delete(audit_conn):
    conn, row_id = audit_conn
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error, match="append-only"):
            cur.execute("DELETE FROM audit_log WHERE id = %s", (row_id,))
        cur.execute("SELECT count(*) FROM audit_log")
        assert cur.fetchone()[0] == 1
