"""Settings: read once from the environment (and `.env`), validated, then frozen.

Nothing else in the package reads ``os.environ``; the composition root receives a
``Settings`` and passes the pieces each object needs.  Both source designs' variable
names are accepted (``RATE_LIMIT_WINDOW_MS`` / ``RATE_LIMIT_WINDOW`` and so on); a value
that does not parse stops start-up with a message that names the variable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _first(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = env.get(name)
        if value is not None and value.strip() != "":
            return name, value.strip()
    return None


def _parse(env: Mapping[str, str], names: tuple[str, ...], default: T, convert: Callable[[str], T], what: str) -> T:
    found = _first(env, *names)
    if found is None:
        return default
    name, raw = found
    try:
        return convert(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"{name}={raw!r} is not valid: expected {what}") from None


def _to_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError(raw)
    return value


def _networks(raw: str) -> tuple[str, ...]:
    if raw.strip().lower() == "none":
        return ()
    import ipaddress

    return tuple(str(ipaddress.ip_network(n.strip(), strict=False)) for n in raw.split(",") if n.strip())


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(raw)
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(raw)
        return raw.lower()

    return convert


def _origins(raw: str) -> tuple[str, ...] | str:
    if raw.strip() == "*":
        return "*"
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    if not names or any(len(n) > 32 for n in names):
        raise ValueError(raw)
    return names


def default_data_dir() -> Path:
    """The user's data dir when it can be created, else ``./var``."""
    try:
        import platformdirs

        path = Path(platformdirs.user_data_dir("chat-server", appauthor=False))
        path.mkdir(parents=True, exist_ok=True)
        return path
    except Exception:  # pragma: no cover - read-only home directories
        return Path("var").resolve()


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8000
    environment: str = "development"
    jwt_secret: str = ""
    jwt_secret_generated: bool = False
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    database_url: str | None = None
    database_embedded: bool = False  # set by the CLI when it started the embedded server
    data_dir: Path = field(default_factory=lambda: Path("var"))
    redis_url: str | None = None
    redis_prefix: str = "chat"
    rate_limit_window_ms: int = 60_000
    rate_limit_max_messages: int = 30
    enable_moderation: bool = True
    enable_profanity_filter: bool = True
    enable_spam_detection: bool = True
    max_message_length: int = 1000
    message_history_limit: int = 100
    cors_allowed_origins: tuple[str, ...] | str = "*"
    log_level: str = "INFO"
    log_format: str = "console"
    default_room: str = "lobby"
    auto_join_default_room: bool = False
    auto_create_rooms: bool = True
    metrics_enabled: bool = True
    db_pool_size: int = 20
    db_timeout_s: float = 5.0
    # Group commit of new messages (storage/group_commit.py): concurrent sends share one
    # INSERT statement.  Off: one statement per message.
    message_batching: bool = True
    message_batch_max: int = 256
    message_batch_in_flight: int = 1
    # Per-node cache of room rows on the send path (services/rooms.py RoomCache); every
    # room update invalidates it on every node at once, the TTL bounds a lost invalidation.
    room_cache_ttl_s: float = 5.0
    room_stats_interval_s: float = 1.0
    presence_ttl_s: float = 30.0
    typing_ttl_s: float = 5.0
    shutdown_timeout_s: float = 10.0
    typing_throttle_s: float = 2.0
    big_room_threshold: int = 1000
    max_mentions: int = 10
    reaction_names: tuple[str, ...] = ("like", "love", "laugh", "wow", "sad", "angry", "fire", "clap")
    # Moderation limits (services/policy.py, rest/ratelimit.py).  A per-IP limit of None
    # means 4x the per-user one (several users may share an address); 0 turns it off.
    rate_limit_ip_max_messages: int | None = None
    # Addresses that get no per-IP limit (a proxy or container network in front of the
    # service makes every client look like one of these).
    trusted_proxies: tuple[str, ...] = ()
    rate_limit_ip_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
    rest_rate_limit_window_ms: int = 60_000
    rest_rate_limit_max_requests: int = 60
    rest_rate_limit_ip_max_requests: int | None = None
    spam_max_links: int = 3
    spam_max_repeated_chars: int = 20
    spam_duplicate_window_ms: int = 60_000
    spam_max_repeats: int = 2
    spam_similarity: float = 0.9
    unique_chat_window_ms: int = 300_000
    unique_chat_history: int = 100
    # Socket.IO delivery (realtime/fanout.py): one encode and one frame per event, written
    # straight to each WebSocket; a client with more unsent bytes than this is dropped.
    fast_fanout: bool = True
    slow_client_buffer_bytes: int = 1024 * 1024
    # Broadcast frames of a busy room to a WebSocket may wait up to this long for more, until
    # a socket has fanout_write_batch of them (several events per send system call); other
    # rooms' broadcasts are written at once (realtime/fanout.py).
    fanout_write_delay_s: float = 0.05
    fanout_write_batch: int = 3
    # Socket.IO clients opening a WebSocket directly are served on the raw connection
    # (realtime/lean_transport.py: a fraction of the memory per connection); needs fast_fanout.
    lean_websockets: bool = True

    @property
    def chat_ip_limit(self) -> int:
        """Messages (and, separately, reactions) per window from one IP; 0 = no limit."""
        if self.rate_limit_ip_max_messages is None:
            return 4 * self.rate_limit_max_messages
        return self.rate_limit_ip_max_messages

    @property
    def rest_ip_limit(self) -> int:
        """REST writes per window from one IP; 0 = no limit."""
        if self.rest_rate_limit_ip_max_requests is None:
            return 4 * self.rest_rate_limit_max_requests
        return self.rest_rate_limit_ip_max_requests

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def mode(self) -> str:
        storage = "embedded PostgreSQL" if self.database_embedded or self.database_url is None else "external PostgreSQL"
        fanout = "Redis (multi-node)" if self.redis_url else "in-process (single node)"
        return f"{storage}, {fanout}"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, dotenv_path: str | None = ".env") -> Settings:
        """Build settings from ``env`` (default: ``os.environ`` over ``.env``)."""
        if env is None:
            merged: dict[str, str] = {}
            if dotenv_path and Path(dotenv_path).is_file():
                from dotenv import dotenv_values

                merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
            merged.update(os.environ)
            env = merged

        environment = _parse(env, ("APP_ENV", "NODE_ENV"), "development", _choice("development", "production", "test"), "development, production or test")

        algorithm = _parse(env, ("JWT_ALGORITHM",), "HS256", _choice("hs256", "rs256", "es256"), "HS256, RS256 or ES256").upper()
        public_key = _first(env, "JWT_PUBLIC_KEY")
        public_key_file = _first(env, "JWT_PUBLIC_KEY_FILE")
        public_key_text: str | None = public_key[1].replace("\\n", "\n") if public_key else None
        if public_key_file:
            try:
                public_key_text = Path(public_key_file[1]).read_text()
            except OSError as exc:
                raise ConfigError(f"JWT_PUBLIC_KEY_FILE={public_key_file[1]!r} cannot be read: {exc}") from None
        if algorithm != "HS256" and not public_key_text:
            raise ConfigError(f"JWT_ALGORITHM={algorithm} needs JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE")

        secret_found = _first(env, "JWT_SECRET")
        generated = False
        if secret_found:
            secret = secret_found[1]
            if environment == "production" and len(secret) < 32 and algorithm == "HS256":
                raise ConfigError("JWT_SECRET is too short for production: use at least 32 characters")
        elif algorithm == "HS256":
            if environment == "production":
                raise ConfigError("JWT_SECRET is required in production (NODE_ENV/APP_ENV=production)")
            secret = secrets.token_urlsafe(48)
            generated = True
        else:
            secret = ""

        redis_url: str | None = None
        found_url = _first(env, "REDIS_URL")
        if found_url:
            if not found_url[1].startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(f"REDIS_URL={found_url[1]!r} is not valid: expected redis://host:port/db")
            redis_url = found_url[1]
        elif _first(env, "REDIS_HOST"):
            host = _first(env, "REDIS_HOST")[1]  # type: ignore[index]
            redis_port = _parse(env, ("REDIS_PORT",), 6379, _port, "a port number")
            password = _first(env, "REDIS_PASSWORD")
            auth = f":{password[1]}@" if password else ""
            redis_url = f"redis://{auth}{host}:{redis_port}/0"

        database_url = None
        found_db = _first(env, "DATABASE_URL")
        if found_db:
            if not found_db[1].startswith(("postgresql://", "postgres://")):
                raise ConfigError(f"DATABASE_URL={found_db[1]!r} is not valid: expected postgresql://user:password@host:port/db")
            database_url = found_db[1]

        data_dir = _first(env, "DATA_DIR")

        return cls(
            host=_parse(env, ("HOST",), "0.0.0.0", str, "a host name or address"),
            port=_parse(env, ("PORT",), 8000, _port, "a port number (0-65535)"),
            environment=environment,
            jwt_secret=secret,
            jwt_secret_generated=generated,
            jwt_algorithm=algorithm,
            jwt_public_key=public_key_text,
            jwt_issuer=_first(env, "JWT_ISSUER")[1] if _first(env, "JWT_ISSUER") else None,  # type: ignore[index]
            jwt_audience=_first(env, "JWT_AUDIENCE")[1] if _first(env, "JWT_AUDIENCE") else None,  # type: ignore[index]
            database_url=database_url,
            data_dir=Path(data_dir[1]).expanduser() if data_dir else default_data_dir(),
            redis_url=redis_url,
            redis_prefix=_parse(env, ("REDIS_PREFIX",), "chat", str, "a key prefix"),
            rate_limit_window_ms=_parse(env, ("RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_WINDOW"), 60_000, _positive_int, "a positive number of milliseconds"),
            rate_limit_max_messages=_parse(env, ("RATE_LIMIT_MAX_MESSAGES", "RATE_LIMIT_MESSAGES"), 30, _positive_int, "a positive integer"),
            enable_moderation=_parse(env, ("ENABLE_MODERATION",), True, _to_bool, "true or false"),
            enable_profanity_filter=_parse(env, ("ENABLE_PROFANITY_FILTER",), True, _to_bool, "true or false"),
            enable_spam_detection=_parse(env, ("ENABLE_SPAM_DETECTION",), True, _to_bool, "true or false"),
            max_message_length=_parse(env, ("MAX_MESSAGE_LENGTH",), 1000, _positive_int, "a positive integer"),
            message_history_limit=_parse(env, ("MESSAGE_HISTORY_LIMIT",), 100, _positive_int, "a positive integer"),
            cors_allowed_origins=_parse(env, ("CORS_ALLOWED_ORIGINS", "CORS_ORIGIN"), _origins("*"), _origins, "'*' or a comma-separated list of origins"),
            log_level=_parse(env, ("LOG_LEVEL",), "INFO", _choice("debug", "info", "warning", "error", "critical"), "debug, info, warning, error or critical").upper(),
            log_format=_parse(env, ("LOG_FORMAT",), "json" if environment == "production" else "console", _choice("json", "console"), "json or console"),
            default_room=_parse(env, ("DEFAULT_ROOM",), "lobby", str, "a room id"),
            auto_join_default_room=_parse(env, ("AUTO_JOIN_DEFAULT_ROOM",), False, _to_bool, "true or false"),
            auto_create_rooms=_parse(env, ("AUTO_CREATE_ROOMS",), True, _to_bool, "true or false"),
            metrics_enabled=_parse(env, ("METRICS_ENABLED",), True, _to_bool, "true or false"),
            db_pool_size=_parse(env, ("DB_POOL_SIZE",), 20, _positive_int, "a positive integer"),
            db_timeout_s=_parse(env, ("DB_TIMEOUT_MS",), 5000, _positive_int, "a positive number of milliseconds") / 1000,
            message_batching=_parse(env, ("MESSAGE_BATCHING",), True, _to_bool, "true or false"),
            message_batch_max=_parse(env, ("MESSAGE_BATCH_MAX",), 256, _positive_int, "a positive integer"),
            message_batch_in_flight=_parse(env, ("MESSAGE_BATCH_IN_FLIGHT",), 1, _positive_int, "a positive integer"),
            room_cache_ttl_s=_parse(env, ("ROOM_CACHE_TTL_MS",), 5000, _non_negative_int, "a non-negative number of milliseconds (0: no cache)") / 1000,
            room_stats_interval_s=_parse(env, ("ROOM_STATS_INTERVAL_MS",), 1000, _positive_int, "a positive number of milliseconds") / 1000,
            presence_ttl_s=_parse(env, ("PRESENCE_TTL_MS",), 30_000, _positive_int, "a positive number of milliseconds") / 1000,
            typing_ttl_s=_parse(env, ("TYPING_TTL_MS",), 5000, _positive_int, "a positive number of milliseconds") / 1000,
            shutdown_timeout_s=_parse(env, ("SHUTDOWN_TIMEOUT_MS",), 10_000, _positive_int, "a positive number of milliseconds") / 1000,
            typing_throttle_s=_parse(env, ("TYPING_THROTTLE_MS",), 2000, _positive_int, "a positive number of milliseconds") / 1000,
            big_room_threshold=_parse(env, ("BIG_ROOM_THRESHOLD",), 1000, _positive_int, "a positive integer"),
            max_mentions=_parse(env, ("MAX_MENTIONS",), 10, _positive_int, "a positive integer"),
            reaction_names=_parse(env, ("REACTION_NAMES",), ("like", "love", "laugh", "wow", "sad", "angry", "fire", "clap"), _names, "a comma-separated list of names"),
            rate_limit_ip_max_messages=_parse(env, ("RATE_LIMIT_IP_MAX_MESSAGES",), None, _non_negative_int, "a non-negative integer (0: no per-IP limit)"),
            trusted_proxies=_parse(env, ("TRUSTED_PROXIES",), (), _networks, "comma-separated networks (CIDR) or none"),
            rate_limit_ip_exempt=_parse(env, ("RATE_LIMIT_IP_EXEMPT",), cls.rate_limit_ip_exempt, _networks, "comma-separated networks (CIDR) or none"),
            rest_rate_limit_window_ms=_parse(env, ("REST_RATE_LIMIT_WINDOW_MS",), 60_000, _positive_int, "a positive number of milliseconds"),
            rest_rate_limit_max_requests=_parse(env, ("REST_RATE_LIMIT_MAX_REQUESTS",), 60, _positive_int, "a positive integer"),
            rest_rate_limit_ip_max_requests=_parse(env, ("REST_RATE_LIMIT_IP_MAX_REQUESTS",), None, _non_negative_int, "a non-negative integer (0: no per-IP limit)"),
            spam_max_links=_parse(env, ("SPAM_MAX_LINKS",), 3, _non_negative_int, "a non-negative integer"),
            spam_max_repeated_chars=_parse(env, ("SPAM_MAX_REPEATED_CHARS",), 20, _positive_int, "a positive integer"),
            spam_duplicate_window_ms=_parse(env, ("SPAM_DUPLICATE_WINDOW_MS",), 60_000, _positive_int, "a positive number of milliseconds"),
            spam_max_repeats=_parse(env, ("SPAM_MAX_REPEATS",), 2, _positive_int, "a positive integer"),
            spam_similarity=_parse(env, ("SPAM_SIMILARITY",), 0.9, _fraction, "a number above 0 and at most 1"),
            unique_chat_window_ms=_parse(env, ("UNIQUE_CHAT_WINDOW_MS",), 300_000, _positive_int, "a positive number of milliseconds"),
            unique_chat_history=_parse(env, ("UNIQUE_CHAT_HISTORY",), 100, _positive_int, "a positive integer"),
            fast_fanout=_parse(env, ("FAST_FANOUT",), True, _to_bool, "true or false"),
            slow_client_buffer_bytes=_parse(env, ("SLOW_CLIENT_BUFFER_BYTES",), 1024 * 1024, _positive_int, "a positive number of bytes"),
            fanout_write_delay_s=_parse(env, ("FANOUT_WRITE_DELAY_MS",), 50, _non_negative_int,
                                        "a non-negative number of milliseconds (0: write at once)") / 1000,
            fanout_write_batch=_parse(env, ("FANOUT_WRITE_BATCH",), 3, _positive_int, "a positive integer"),
            lean_websockets=_parse(env, ("LEAN_WEBSOCKETS",), True, _to_bool, "true or false"),
        )
