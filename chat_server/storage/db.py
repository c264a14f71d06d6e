"""The PostgreSQL pool (aiopg) and the few query helpers every store uses.

aiopg connections are autocommit: a single statement is its own transaction, and a
multi-statement transaction needs an explicit ``BEGIN``/``COMMIT`` (``transaction()``).
Connection-level failures are turned into ``Unavailable`` here, once, so services and
transports see one error whatever the driver raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiopg
import psycopg2
import psycopg2.extensions
import psycopg2.extras

from ..errors import Unavailable
from .prepared import Prepared, PreparedStatements

log = logging.getLogger(__name__)

# Errors that mean "the database is not reachable right now", as opposed to a bad query.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)

Json = psycopg2.extras.Json


class Database:
    def __init__(self, dsn: str, *, pool_size: int = 20, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._timeout = timeout_s
        self._pool: aiopg.Pool | None = None
        self._lock = asyncio.Lock()
        self._prepared = PreparedStatements()

    @property
    def dsn(self) -> str:
        return self._dsn

    async def connect(self) -> None:
        """Create the pool; raises ``Unavailable`` when the server does not answer."""
        async with self._lock:
            if self._pool is not None:
                return
            try:
                self._pool = await aiopg.create_pool(
                    self._dsn,
                    minsize=1,
                    maxsize=self._pool_size,
                    timeout=self._timeout,
                    pool_recycle=300,
                    cursor_factory=psycopg2.extras.RealDictCursor,
                )
            except _CONNECTION_ERRORS as exc:
                raise Unavailable("database unavailable") from exc

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    @asynccontextmanager
    async def _cursor(self, factory: Any = None) -> AsyncIterator[Any]:
        if self._pool is None:
            await self.connect()
        assert self._pool is not None
        try:
            try:
                acquired = self._pool.acquire()
                conn = await acquired.__aenter__()
            except RuntimeError as exc:
                # aiopg under uvloop: opening a connection while the server is down can
                # trip over a closed poll handle of a previous attempt.  It is still "the
                # database is not reachable", not a bug of the caller.
                raise OSError(str(exc)) from exc
            cur = None
            try:
                async with conn.cursor(cursor_factory=factory) as cur:
                    yield cur
            finally:
                # An aiopg cursor and its Transaction helper point at each other, so every
                # statement left a reference cycle for the collector: thousands of objects
                # per young collection under load (5 ms each on the history benchmark).
                # Closed, the cursor needs neither; unlinked, it is freed at once.
                if cur is not None:
                    vars(cur).pop("_transaction", None)
                await acquired.__aexit__(None, None, None)
        except _CONNECTION_ERRORS as exc:
            log.warning("database call failed: %s", exc)
            raise Unavailable("database unavailable") from exc

    async def _run(self, cur: Any, sql: str, params: Sequence[Any] | dict[str, Any] | None) -> None:
        if isinstance(sql, Prepared):
            await self._prepared.execute(cur, sql, params)  # parsed and planned once per connection
        else:
            await cur.execute(sql, params)

    async def fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        async with self._cursor() as cur:
            await self._run(cur, sql, params)
            return list(await cur.fetchall())

    async def fetch_tuples(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Like ``fetch`` with plain tuples: for hot reads of many rows, where building a
        dict per row (``RealDictCursor``, Python code per column) costs more than the query
        (about 0.3 ms for 50 messages)."""
        async with self._cursor(psycopg2.extensions.cursor) as cur:
            await self._run(cur, sql, params)
            return list(await cur.fetchall())

    async def fetchrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> dict[str, Any] | None:
        async with self._cursor() as cur:
            await self._run(cur, sql, params)
            row = await cur.fetchone()
            return dict(row) if row is not None else None

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> int:
        async with self._cursor() as cur:
            await self._run(cur, sql, params)
            return int(cur.rowcount)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A cursor inside ``BEGIN`` … ``COMMIT`` (``ROLLBACK`` on any exception)."""
        async with self._cursor() as cur:
            await cur.execute("BEGIN")
            try:
                yield cur
            except BaseException:
                try:
                    await cur.execute("ROLLBACK")
                except Exception:  # the connection may be gone; the pool discards it
                    pass
                raise
            else:
                await cur.execute("COMMIT")

    async def ping(self) -> bool:
        try:
            row = await self.fetchrow("SELECT 1 AS ok")
            return bool(row and row["ok"] == 1)
        except Exception:
            return False


UniqueViolation = psycopg2.errors.UniqueViolation
TransactionRollbackError = psycopg2.extensions.TransactionRollbackError  # deadlock, serialization failure
ForeignKeyViolation = psycopg2.errors.ForeignKeyViolation
