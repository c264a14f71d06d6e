"""Settings.from_env: defaults, both source designs' names, validation that names the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chat_server.config import ConfigError, Settings

# Everything from_env reads, so tests that go through os.environ start from a clean slate.
CONFIG_VARS = [
    "PORT", "HOST", "JWT_SECRET", "JWT_ALGORITHM", "JWT_PUBLIC_KEY", "JWT_PUBLIC_KEY_FILE", "JWT_ISSUER",
    "JWT_AUDIENCE", "DATABASE_URL", "DATA_DIR", "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
    "REDIS_PREFIX", "RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_WINDOW", "RATE_LIMIT_MAX_MESSAGES", "RATE_LIMIT_MESSAGES",
    "ENABLE_MODERATION", "ENABLE_PROFANITY_FILTER", "ENABLE_SPAM_DETECTION", "MAX_MESSAGE_LENGTH",
    "MESSAGE_HISTORY_LIMIT", "CORS_ALLOWED_ORIGINS", "CORS_ORIGIN", "LOG_LEVEL", "LOG_FORMAT", "NODE_ENV", "APP_ENV",
]


def settings(tmp_path: Path, **env: str) -> Settings:
    # DATA_DIR is always given so the tests never create the user's real data folder.
    return Settings.from_env({"DATA_DIR": str(tmp_path), **env})


def test_defaults(tmp_path):
    s = settings(tmp_path)
    assert s.port == 8000
    assert s.host == "0.0.0.0"
    assert s.max_message_length == 1000
    assert s.message_history_limit == 100
    assert s.environment == "development"
    assert s.database_url is None  # embedded PostgreSQL
    assert s.redis_url is None  # single node
    assert s.cors_allowed_origins == "*"
    assert s.jwt_algorithm == "HS256"
    assert s.data_dir == tmp_path


def test_plain_values_are_read(tmp_path):
    s = settings(
        tmp_path, PORT="9001", HOST="127.0.0.1", MAX_MESSAGE_LENGTH="500", MESSAGE_HISTORY_LIMIT="20",
        ENABLE_MODERATION="false", ENABLE_PROFANITY_FILTER="0", ENABLE_SPAM_DETECTION="yes",
        LOG_LEVEL="debug", LOG_FORMAT="json", DATABASE_URL="postgresql://u:p@db:5432/chat",
    )
    assert (s.port, s.host, s.max_message_length, s.message_history_limit) == (9001, "127.0.0.1", 500, 20)
    assert s.enable_moderation is False
    assert s.enable_profanity_filter is False
    assert s.enable_spam_detection is True
    assert s.log_level == "DEBUG"
    assert s.log_format == "json"
    assert s.database_url == "postgresql://u:p@db:5432/chat"


@pytest.mark.parametrize("name", ["RATE_LIMIT_WINDOW_MS", "RATE_LIMIT_WINDOW"])
def test_rate_limit_window_both_names(tmp_path, name):
    assert settings(tmp_path, **{name: "15000"}).rate_limit_window_ms == 15000


@pytest.mark.parametrize("name", ["RATE_LIMIT_MAX_MESSAGES", "RATE_LIMIT_MESSAGES"])
def test_rate_limit_max_both_names(tmp_path, name):
    assert settings(tmp_path, **{name: "7"}).rate_limit_max_messages == 7


@pytest.mark.parametrize("name", ["NODE_ENV", "APP_ENV"])
def test_environment_both_names(tmp_path, name):
    s = settings(tmp_path, **{name: "production", "JWT_SECRET": "s" * 40})
    assert s.environment == "production"
    assert s.is_production
    assert s.log_format == "json"  # production default


@pytest.mark.parametrize("name", ["NODE_ENV", "APP_ENV"])
def test_environment_both_names_test_env(tmp_path, name):
    assert settings(tmp_path, **{name: "test"}).environment == "test"


def test_redis_url(tmp_path):
    assert settings(tmp_path, REDIS_URL="redis://cache:6380/2").redis_url == "redis://cache:6380/2"


def test_redis_host_and_port(tmp_path):
    assert settings(tmp_path, REDIS_HOST="cache", REDIS_PORT="6380").redis_url == "redis://cache:6380/0"
    assert settings(tmp_path, REDIS_HOST="cache").redis_url == "redis://cache:6379/0"


def test_redis_url_wins_over_host(tmp_path):
    s = settings(tmp_path, REDIS_URL="redis://primary:6379/0", REDIS_HOST="other", REDIS_PORT="1234")
    assert s.redis_url == "redis://primary:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("MAX_MESSAGE_LENGTH", "-1"),
        ("MAX_MESSAGE_LENGTH", "0"),
        ("MESSAGE_HISTORY_LIMIT", "many"),
        ("ENABLE_MODERATION", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_URL", "mysql://root@db/chat"),
        ("REDIS_URL", "http://cache:6379"),
        ("REDIS_PORT", "nope"),
        ("RATE_LIMIT_WINDOW", "-5"),
        ("RATE_LIMIT_MESSAGES", "x"),
        ("NODE_ENV", "staging"),
    ],
)
def test_bad_value_names_the_variable(tmp_path, name, value):
    env = {name: value}
    if name == "REDIS_PORT":
        env["REDIS_HOST"] = "cache"
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **env)
    assert name in str(info.value)


def test_missing_secret_in_development_is_generated_and_flagged(tmp_path):
    first = settings(tmp_path)
    second = settings(tmp_path)
    assert first.jwt_secret_generated is True
    assert len(first.jwt_secret) >= 32
    # Random each time (the CLI persists one in DATA_DIR): never a well-known default.
    assert first.jwt_secret != second.jwt_secret


def test_given_secret_is_not_flagged(tmp_path):
    s = settings(tmp_path, JWT_SECRET="my-secret")
    assert s.jwt_secret == "my-secret"
    assert s.jwt_secret_generated is False


@pytest.mark.parametrize("name", ["NODE_ENV", "APP_ENV"])
def test_missing_secret_in_production_refused(tmp_path, name):
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **{name: "production"})
    assert "JWT_SECRET" in str(info.value)


def test_short_secret_in_production_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, APP_ENV="production", JWT_SECRET="short")
    assert "JWT_SECRET" in str(info.value)


def test_rs256_needs_a_public_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, JWT_ALGORITHM="RS256")
    assert "JWT_PUBLIC_KEY" in str(info.value)


def test_cors_list_parsing(tmp_path):
    s = settings(tmp_path, CORS_ALLOWED_ORIGINS=" https://a.example.com, http://localhost:3000/ ,,https://b.example.com")
    assert s.cors_allowed_origins == ("https://a.example.com", "http://localhost:3000", "https://b.example.com")


def test_cors_star_and_alias(tmp_path):
    assert settings(tmp_path, CORS_ALLOWED_ORIGINS="*").cors_allowed_origins == "*"
    assert settings(tmp_path, CORS_ORIGIN="https://site.example").cors_allowed_origins == ("https://site.example",)


@pytest.fixture
def clean_environ(monkeypatch, tmp_path):
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no stray ./.env of the checkout
    return monkeypatch


def test_dotenv_file_is_read(clean_environ, tmp_path):
    dotenv = tmp_path / "custom.env"
    dotenv.write_text("PORT=9100\nRATE_LIMIT_WINDOW=2000\n# a comment\nCORS_ALLOWED_ORIGINS=https://x.example\n")
    s = Settings.from_env(dotenv_path=str(dotenv))
    assert s.port == 9100
    assert s.rate_limit_window_ms == 2000
    assert s.cors_allowed_origins == ("https://x.example",)


def test_environment_overrides_dotenv(clean_environ, tmp_path):
    dotenv = tmp_path / "custom.env"
    dotenv.write_text("PORT=9100\nHOST=10.0.0.1\n")
    clean_environ.setenv("PORT", "9200")
    s = Settings.from_env(dotenv_path=str(dotenv))
    assert s.port == 9200  # the real environment wins
    assert s.host == "10.0.0.1"  # the file still fills the rest


def test_bad_value_in_dotenv_names_the_variable(clean_environ, tmp_path):
    dotenv = tmp_path / "custom.env"
    dotenv.write_text("MAX_MESSAGE_LENGTH=-3\n")
    with pytest.raises(ConfigError, match="MAX_MESSAGE_LENGTH"):
        Settings.from_env(dotenv_path=str(dotenv))


def test_default_dotenv_is_dot_env_in_working_directory(clean_environ, tmp_path):
    (tmp_path / ".env").write_text("PORT=9300\n")
    assert os.getcwd() == str(tmp_path)
    assert Settings.from_env().port == 9300


def test_missing_dotenv_file_is_fine(clean_environ, tmp_path):
    assert Settings.from_env(dotenv_path=str(tmp_path / "absent.env")).port == 8000
