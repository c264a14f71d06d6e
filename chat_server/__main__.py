"""Command line: ``chat-server run | migrate | token`` (also ``python -m chat_server``)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, Settings

log = logging.getLogger("chat_server")


def _dev_secret(settings: Settings) -> Settings:
    """In development without JWT_SECRET: a random secret kept in DATA_DIR, so the
    server and ``chat-server token`` agree across runs."""
    if not settings.jwt_secret_generated:
        return settings
    path = settings.data_dir / "jwt_secret"
    try:
        if path.is_file() and path.read_text().strip():
            secret = path.read_text().strip()
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_urlsafe(48)
            path.write_text(secret)
            os.chmod(path, 0o600)
    except OSError:
        return settings
    return settings.with_overrides(jwt_secret=secret)


def _load_settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if overrides:
        settings = settings.with_overrides(**overrides)
    return _dev_secret(settings)


def _database(settings: Settings) -> tuple[Settings, object | None]:
    if settings.database_url:
        return settings, None
    from .embedded_db import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir)
    dsn = embedded.start()
    return settings.with_overrides(database_url=dsn, database_embedded=True), embedded


def cmd_run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app
    from .logging_setup import configure_logging
    from .services.policy import build_text_tables

    settings = _load_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    if settings.jwt_secret_generated:
        log.warning("JWT_SECRET is not set: using a generated development secret stored in %s/jwt_secret "
                    "(set JWT_SECRET for anything real; production refuses to start without it)", settings.data_dir)
    settings, embedded = _database(settings)
    try:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - optional speed-up
            pass
        app = create_app(settings, migrate=not args.no_migrate)
        build_text_tables()
        # What start-up built (modules, schemas, the app, the text tables) lives as long as
        # the process: keep it out of the collector's full passes, which would otherwise walk
        # all of it (30-60 ms pauses, every few thousand history requests, before this).
        gc.collect()
        gc.freeze()
        # Under load a few thousand young objects are alive at any moment (the coroutines
        # and futures of messages waiting for their batch's commit).  With the default first
        # threshold (700) the collector ran ~100 times a second at 4,000 messages/s, walking
        # them and promoting them to older generations just before they died: ~5 % of the
        # CPU and 10-20 ms pauses of the older generations.  Ten times the threshold: a
        # dozen young collections a minute, each a few ms.
        gc.set_threshold(7_000, 10, 10)
        shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{shown}:{settings.port}"

        def announce(_: str) -> None:
            print(f"Chat server listening on {url}  (bound to {settings.host}:{settings.port})", flush=True)
            print(f"Mode: {settings.mode}; environment: {settings.environment}", flush=True)
            print(f"API docs: {url}/api/chats/docs  ·  Socket.IO: {url}/socket.io/  ·  health: {url}/healthz", flush=True)
            print(f"Demo page: {url}/  ·  embeddable chat panel: {url}/embed/<room_id>", flush=True)

        web.run_app(app, host=settings.host, port=settings.port, print=announce, access_log=None,
                    shutdown_timeout=settings.shutdown_timeout_s, handle_signals=True)
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    return 0


def _migrate_with_retry(dsn: str, apply: object, attempts: int = 30) -> None:
    import time

    import psycopg2

    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            applied = apply(dsn)  # type: ignore[operator]
            log.info("database schema is up to date (%d migration(s) applied now)", applied)
            return
        except psycopg2.OperationalError as exc:
            if attempt == attempts:
                raise
            log.warning("PostgreSQL is not reachable (%s); retrying in %.1fs", str(exc).strip().splitlines()[0], delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def cmd_migrate(args: argparse.Namespace) -> int:
    from .logging_setup import configure_logging
    from .migrate import apply_migrations, rollback_migrations

    settings = _load_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    settings, embedded = _database(settings)
    try:
        if args.rollback:
            n = rollback_migrations(settings.database_url or "", count=args.rollback)
            print(f"rolled back {n} migration(s)")
        else:
            _migrate_with_retry(settings.database_url or "", apply_migrations)
            print("database schema is up to date")
    finally:
        if embedded is not None:
            embedded.stop()  # type: ignore[attr-defined]
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import TokenIssuer

    settings = _load_settings(args)
    issuer = TokenIssuer(settings)
    print(issuer.issue(args.sub, name=args.name, role=args.role, avatar=args.avatar, ttl_seconds=args.ttl))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chat-server", description="Real-time chat service (Socket.IO + REST).")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the server (embedded PostgreSQL unless DATABASE_URL is set)")
    run.add_argument("--host", help="address to bind (default HOST or 0.0.0.0)")
    run.add_argument("--port", type=int, help="port to listen on (default PORT or 8000)")
    run.add_argument("--data-dir", help="where the embedded database and dev secret live (default DATA_DIR)")
    run.add_argument("--no-migrate", action="store_true", help="do not apply pending migrations at start-up")
    run.set_defaults(func=cmd_run)

    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--data-dir", help="embedded database folder (default DATA_DIR)")
    migrate.add_argument("--rollback", type=int, metavar="N", help="roll back the last N migrations instead")
    migrate.set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="mint a development JWT signed with JWT_SECRET")
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--name", help="display name (default: the user id)")
    token.add_argument("--role", default="user", choices=["user", "moderator", "admin"])
    token.add_argument("--avatar", help="avatar URL")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default 86400)")
    token.add_argument("--data-dir", help="where the generated development secret lives (default DATA_DIR)")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"chat-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
