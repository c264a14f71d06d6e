"""Prepared statements (``storage.prepared``) on a real PostgreSQL: prepared once per
pooled connection, same results as the text, and a server that loses them (a pooling
proxy) turns them off instead of failing."""

from __future__ import annotations

import pytest

from chat_server.storage.db import Database
from chat_server.storage.prepared import Prepared

DOUBLE = Prepared("SELECT %(n)s * 2 AS doubled, %(label)s::text AS label", [("n", "int"), ("label", "text")], label="test_double")


def test_the_statement_has_a_readable_name_derived_from_its_text():
    assert DOUBLE.name.startswith("test_double_")
    again = Prepared(str(DOUBLE), [("n", "int"), ("label", "text")], label="test_double")
    other = Prepared("SELECT %(n)s * 3 AS tripled, %(label)s::text AS label", [("n", "int"), ("label", "text")], label="test_double")
    assert again.name == DOUBLE.name and other.name != DOUBLE.name
    assert DOUBLE.prepare_sql.startswith(f"PREPARE {DOUBLE.name} (int, text) AS SELECT $1 * 2")
    with pytest.raises(ValueError):
        Prepared("SELECT 1", [("missing", "int")], label="test_missing")
    with pytest.raises(ValueError):
        Prepared("SELECT %(n)s", [("n", "int")], label="not an identifier")


async def _prepared_on_server(db: Database, name: str) -> int:
    """Whether the connection that answers (the only one: pools of one here) has ``name``
    prepared (0 or 1)."""
    row = await db.fetchrow("SELECT count(*) AS n FROM pg_prepared_statements WHERE name = %s", (name,))
    assert row is not None
    return int(row["n"])


async def test_prepared_once_per_connection_and_answers_like_the_text(database_url):
    db = Database(database_url, pool_size=1, timeout_s=10.0)
    await db.connect()
    try:
        assert await _prepared_on_server(db, DOUBLE.name) == 0
        for n in range(3):
            assert await db.fetch(DOUBLE, {"n": n, "label": "it's"}) == [{"doubled": 2 * n, "label": "it's"}]
        assert await db.fetchrow(DOUBLE, {"n": 21, "label": None}) == {"doubled": 42, "label": None}
        assert await _prepared_on_server(db, DOUBLE.name) == 1
    finally:
        await db.close()


async def test_a_statement_the_server_forgot_is_prepared_again(database_url):
    db = Database(database_url, pool_size=1, timeout_s=10.0)
    await db.connect()
    try:
        assert (await db.fetchrow(DOUBLE, {"n": 1, "label": "a"}) or {})["doubled"] == 2
        await db.execute("DEALLOCATE ALL")  # e.g. an operator's DISCARD ALL
        assert (await db.fetchrow(DOUBLE, {"n": 2, "label": "b"}) or {})["doubled"] == 4
        assert await _prepared_on_server(db, DOUBLE.name) == 1
    finally:
        await db.close()


async def test_a_server_that_does_not_keep_prepared_statements_gets_text(database_url):
    """Behind a proxy that pools per transaction, ``EXECUTE`` may reach a server connection
    that never saw the ``PREPARE``: the statement is then sent as text, now and later."""
    db = Database(database_url, pool_size=1, timeout_s=10.0)
    await db.connect()
    try:
        forgetful = Prepared(str(DOUBLE), [("n", "int"), ("label", "text")], label="test_forgetful")
        # PREPARE then DEALLOCATE in one go: what a per-transaction pool looks like from here.
        forgetful.prepare_sql = f"{forgetful.prepare_sql}; DEALLOCATE {forgetful.name}"
        assert await db.fetch(forgetful, {"n": 5, "label": "x"}) == [{"doubled": 10, "label": "x"}]
        assert await db.fetch(forgetful, {"n": 6, "label": "y"}) == [{"doubled": 12, "label": "y"}]
        assert await _prepared_on_server(db, forgetful.name) == 0
        assert await db.fetch(DOUBLE, {"n": 7, "label": "z"}) == [{"doubled": 14, "label": "z"}]  # text from now on
        assert await _prepared_on_server(db, DOUBLE.name) == 0
    finally:
        await db.close()
