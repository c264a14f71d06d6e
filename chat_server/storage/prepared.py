"""Statements PostgreSQL parses and plans once per connection, not once per call.

Sent as text, a statement is parsed, analysed and planned by PostgreSQL every time it
runs.  For the batch insert of new messages (a long CTE, ``storage.messages``) that is
most of the statement's cost when batches are small: about 0.4 ms of the server's CPU per
batch out of 0.75 ms for a one-message batch.  A ``Prepared`` statement is ``PREPARE``d
the first time a pooled connection runs it and ``EXECUTE``d from then on (PostgreSQL keeps
the plan with the connection, and re-plans by itself when the schema changes).

The statement's name is its label (what ``pg_stat_activity`` shows: ``EXECUTE label_…``)
and a digest of its text, so one name always means one text (two versions of the
application sharing a database never run each other's statement).

If the server loses a statement it was just given (a proxy that pools connections per
transaction hands each statement to any server connection), prepared statements are
turned off for the ``Database`` and every statement is sent as text, as before.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg2.errors

log = logging.getLogger(__name__)


class Prepared(str):
    """A statement to prepare once per connection.

    The string itself is the statement with psycopg2 placeholders (``%(name)s``), run as
    text when prepared statements are off; ``params`` names each placeholder with its
    PostgreSQL type, in the order of the prepared statement's ``$1``, ``$2`` …; ``label``
    (an SQL identifier) starts the statement's name.
    """

    name: str
    prepare_sql: str
    execute_sql: str

    def __new__(cls, sql: str, params: Sequence[tuple[str, str]], *, label: str) -> Prepared:
        if not label.isidentifier() or not label.isascii():
            raise ValueError(f"label {label!r} is not an identifier")
        self = super().__new__(cls, sql)
        body = sql
        for position, (param, _type) in enumerate(params, start=1):
            placeholder = f"%({param})s"
            if placeholder not in body:
                raise ValueError(f"{placeholder} does not occur in the statement")
            body = body.replace(placeholder, f"${position}")
        self.name = f"{label}_{hashlib.sha1(body.encode()).hexdigest()[:12]}"
        self.prepare_sql = f"PREPARE {self.name} ({', '.join(t for _, t in params)}) AS {body}"
        self.execute_sql = f"EXECUTE {self.name} ({', '.join(f'%({p})s' for p, _ in params)})"
        return self


class PreparedStatements:
    """Which statements each pooled connection has prepared (forgotten with the connection)."""

    def __init__(self) -> None:
        self._known: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self.enabled = True

    async def execute(self, cur: Any, statement: Prepared, params: Any) -> None:
        """Run ``statement`` on the aiopg cursor ``cur`` (outside an explicit transaction:
        a failed ``EXECUTE`` is retried on the same connection)."""
        if not self.enabled:
            await cur.execute(statement, params)
            return
        known = self._known.setdefault(cur.connection, set())
        for _attempt in range(2):
            just_prepared = statement.name not in known
            if just_prepared:
                try:
                    await cur.execute(statement.prepare_sql)
                except psycopg2.errors.DuplicatePreparedStatement:
                    pass  # prepared before we could note it; the name stands for this text
                known.add(statement.name)
            try:
                await cur.execute(statement.execute_sql, params)
                return
            except psycopg2.errors.InvalidSqlStatementName:
                known.discard(statement.name)
                if just_prepared:
                    break  # gone right after PREPARE: not the same server connection
        log.warning("PostgreSQL does not keep prepared statements on a connection (a pooling proxy?); "
                    "sending statements as text from now on")
        self.enabled = False
        await cur.execute(statement, params)
