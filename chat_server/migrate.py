"""Schema migrations with yoyo (SQL files in ``migrations/``, each with a rollback)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """The ``migrations/`` folder: next to the package in a checkout (or editable
    install), else where the wheel installs its data files."""
    candidates = [
        Path(os.environ.get("CHAT_MIGRATIONS_DIR", "")) if os.environ.get("CHAT_MIGRATIONS_DIR") else None,
        Path(__file__).resolve().parent.parent / "migrations",
        Path(sys.prefix) / "share" / "chat-server" / "migrations",
    ]
    for candidate in candidates:
        if candidate is not None and candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise FileNotFoundError("cannot find the migrations folder (set CHAT_MIGRATIONS_DIR)")


def _yoyo_url(database_url: str) -> str:
    # yoyo wants the psycopg2 backend's scheme.
    return "postgresql" + database_url[database_url.index("://"):]


def apply_migrations(database_url: str, *, directory: Path | None = None) -> int:
    """Apply every pending migration; returns how many were applied."""
    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(directory or migrations_dir()))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    if len(pending):
        log.info("applied %d migration(s): %s", len(pending), ", ".join(m.id for m in pending))
    return len(pending)


def rollback_migrations(database_url: str, *, count: int | None = None, directory: Path | None = None) -> int:
    """Roll back the last ``count`` applied migrations (all when None)."""
    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(directory or migrations_dir()))
    with backend.lock():
        applied = backend.to_rollback(migrations)
        if count is not None:
            applied = applied[:count]
        backend.rollback_migrations(applied)
    return len(applied)
