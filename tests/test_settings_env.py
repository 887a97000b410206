"""Configuration from the environment: the readers in messaging_project/env.py, the
settings they build, and start-up refusing bad values with a message naming the variable."""

import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from messaging_project import api_keys, env
from tests import server

ROOT = Path(__file__).resolve().parent.parent
OWN_PREFIXES = ("DJANGO_", "SESSION_", "SESSIONS_", "DATABASE_", "ELIZA_", "GUNICORN_")
OWN_NAMES = {"PORT", "HOST", "WEB_CONCURRENCY", "REDIS_URL"}


# -- readers ---------------------------------------------------------------------------


def test_env_str_strips_and_defaults(monkeypatch):
    monkeypatch.delenv("SA_TEST_VALUE", raising=False)
    assert env.env_str("SA_TEST_VALUE") == ""
    assert env.env_str("SA_TEST_VALUE", "fallback") == "fallback"
    monkeypatch.setenv("SA_TEST_VALUE", "  spaced  ")
    assert env.env_str("SA_TEST_VALUE", "fallback") == "spaced"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, value):
    monkeypatch.setenv("SA_TEST_FLAG", raw)
    assert env.env_bool("SA_TEST_FLAG", not value) is value


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled", "truee"])
def test_env_bool_refuses_anything_else(monkeypatch, raw):
    monkeypatch.setenv("SA_TEST_FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"^SA_TEST_FLAG='{raw}' is not a boolean"):
        env.env_bool("SA_TEST_FLAG")


def test_env_bool_default_when_unset(monkeypatch):
    monkeypatch.delenv("SA_TEST_FLAG", raising=False)
    assert env.env_bool("SA_TEST_FLAG", True) is True


@pytest.mark.parametrize("raw", ["", "  "])
@pytest.mark.parametrize("default", [True, False])
def test_env_bool_set_but_empty_is_the_default(monkeypatch, raw, default):
    # As for integers: an empty line in an env file means "not set", not "false".
    monkeypatch.setenv("SA_TEST_FLAG", raw)
    assert env.env_bool("SA_TEST_FLAG", default) is default
    assert env.env_bool("SA_TEST_FLAG", False) is False


@pytest.mark.parametrize(
    ("raw", "value"), [("42", 42), (" 7 ", 7), ("+3", 3), ("-2", -2), ("007", 7), ("", 9)]
)
def test_env_int_reads_integers(monkeypatch, raw, value):
    monkeypatch.setenv("SA_TEST_INT", raw)
    assert env.env_int("SA_TEST_INT", 9) == value


@pytest.mark.parametrize("raw", ["abc", "1.5", "1e3", "1_000", "٣٠", "0x10", "12 3", "-"])
def test_env_int_refuses_non_integers(monkeypatch, raw):
    monkeypatch.setenv("SA_TEST_INT", raw)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        env.env_int("SA_TEST_INT", 9)
    assert str(excinfo.value) == f"SA_TEST_INT={raw!r} is not an integer."


def test_env_int_bounds_are_inclusive(monkeypatch):
    monkeypatch.setenv("SA_TEST_INT", "5")
    assert env.env_int("SA_TEST_INT", 1, minimum=5, maximum=5) == 5
    with pytest.raises(ImproperlyConfigured, match=r"^SA_TEST_INT=5 is below the minimum of 6\.$"):
        env.env_int("SA_TEST_INT", 1, minimum=6)
    with pytest.raises(ImproperlyConfigured, match=r"^SA_TEST_INT=5 is above the maximum of 4\.$"):
        env.env_int("SA_TEST_INT", 1, maximum=4)


def test_env_int_checks_the_default_too(monkeypatch):
    monkeypatch.delenv("SA_TEST_INT", raising=False)
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env.env_int("SA_TEST_INT", 0, minimum=1)


def test_env_list(monkeypatch):
    monkeypatch.delenv("SA_TEST_LIST", raising=False)
    assert env.env_list("SA_TEST_LIST", ["a"]) == ["a"]
    monkeypatch.setenv("SA_TEST_LIST", " a.example , ,b.example,")
    assert env.env_list("SA_TEST_LIST", ["x"]) == ["a.example", "b.example"]
    for empty in ("", "  "):  # set but empty counts as unset, as for every variable
        monkeypatch.setenv("SA_TEST_LIST", empty)
        assert env.env_list("SA_TEST_LIST", ["x"]) == ["x"]


def test_env_choice(monkeypatch):
    monkeypatch.delenv("SA_TEST_CHOICE", raising=False)
    assert env.env_choice("SA_TEST_CHOICE", "B", ["A", "B"]) == "B"
    monkeypatch.setenv("SA_TEST_CHOICE", " a ")
    assert env.env_choice("SA_TEST_CHOICE", "B", ["A", "B"]) == "A"
    monkeypatch.setenv("SA_TEST_CHOICE", "c")
    with pytest.raises(ImproperlyConfigured, match=r"^SA_TEST_CHOICE='c' is not one of A, B\.$"):
        env.env_choice("SA_TEST_CHOICE", "B", ["A", "B"])


# -- SESSION_* timeouts ------------------------------------------------------------------

SESSION_VARS = [
    "SESSION_MIN_TIMEOUT_MINUTES",
    "SESSION_MAX_TIMEOUT_MINUTES",
    "SESSION_DEFAULT_TIMEOUT_MINUTES",
    "SESSION_MAX_DURATION_MINUTES",
    "SESSION_WARNING_THRESHOLD_MINUTES",
]


@pytest.fixture
def session_env(monkeypatch):
    for name in SESSION_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_timeout_defaults(session_env):
    assert env.session_timeout_settings() == {
        "MIN_TIMEOUT_MINUTES": 5,
        "MAX_TIMEOUT_MINUTES": 1440,
        "DEFAULT_TIMEOUT_MINUTES": 30,
        "MAX_DURATION_MINUTES": 720,
        "MAX_DURATION_CEILING_MINUTES": 20160,
        "WARNING_THRESHOLD_MINUTES": 5,
    }


def test_timeouts_can_be_configured(session_env):
    session_env.setenv("SESSION_MIN_TIMEOUT_MINUTES", "10")
    session_env.setenv("SESSION_MAX_TIMEOUT_MINUTES", "120")
    session_env.setenv("SESSION_DEFAULT_TIMEOUT_MINUTES", "60")
    session_env.setenv("SESSION_MAX_DURATION_MINUTES", "60")
    session_env.setenv("SESSION_WARNING_THRESHOLD_MINUTES", "60")

    assert env.session_timeout_settings() == {
        "MIN_TIMEOUT_MINUTES": 10,
        "MAX_TIMEOUT_MINUTES": 120,
        "DEFAULT_TIMEOUT_MINUTES": 60,
        "MAX_DURATION_MINUTES": 60,
        "MAX_DURATION_CEILING_MINUTES": 20160,
        "WARNING_THRESHOLD_MINUTES": 60,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "abc"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES='abc' is not an integer.",
        ),
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "0"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES=0 is below SESSION_MIN_TIMEOUT_MINUTES=5.",
        ),
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "4"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES=4 is below SESSION_MIN_TIMEOUT_MINUTES=5.",
        ),
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "1441"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES=1441 is above SESSION_MAX_TIMEOUT_MINUTES=1440.",
        ),
        (
            {"SESSION_WARNING_THRESHOLD_MINUTES": "31"},
            "SESSION_WARNING_THRESHOLD_MINUTES=31 is above SESSION_DEFAULT_TIMEOUT_MINUTES=30.",
        ),
        (
            {"SESSION_WARNING_THRESHOLD_MINUTES": "0"},
            "SESSION_WARNING_THRESHOLD_MINUTES=0 is below the minimum of 1.",
        ),
        (
            {"SESSION_MAX_DURATION_MINUTES": "29"},
            "SESSION_MAX_DURATION_MINUTES=29 is below SESSION_DEFAULT_TIMEOUT_MINUTES=30.",
        ),
        (
            {"SESSION_MAX_DURATION_MINUTES": "20161"},
            "SESSION_MAX_DURATION_MINUTES=20161 is above the maximum of 20160.",
        ),
        (
            {"SESSION_MIN_TIMEOUT_MINUTES": "0"},
            "SESSION_MIN_TIMEOUT_MINUTES=0 is below the minimum of 1.",
        ),
        (
            {"SESSION_MIN_TIMEOUT_MINUTES": "60", "SESSION_MAX_TIMEOUT_MINUTES": "30"},
            "SESSION_MAX_TIMEOUT_MINUTES=30 is below SESSION_MIN_TIMEOUT_MINUTES=60.",
        ),
        (
            {"SESSION_MIN_TIMEOUT_MINUTES": "100"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES=30 (its default) is below SESSION_MIN_TIMEOUT_MINUTES=100.",
        ),
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "10", "SESSION_WARNING_THRESHOLD_MINUTES": "11"},
            "SESSION_WARNING_THRESHOLD_MINUTES=11 is above SESSION_DEFAULT_TIMEOUT_MINUTES=10.",
        ),
    ],
)
def test_bad_timeouts_are_refused_by_name(session_env, values, message):
    for name, value in values.items():
        session_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        env.session_timeout_settings()
    assert str(excinfo.value) == message


# -- settings built from the environment (evaluated in-process, not installed) ------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(OWN_PREFIXES) or name in OWN_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("DJANGO_SECRET_KEY", "settings-test-secret")
    return monkeypatch


def load_settings() -> dict:
    return runpy.run_path(str(ROOT / "messaging_project" / "settings.py"))


def test_default_database_is_sqlite_in_the_project_with_wal(clean_env):
    config = load_settings()

    database = config["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(database["NAME"]) == ROOT / "db.sqlite3"
    assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in database["OPTIONS"]["init_command"]
    assert config["DEBUG"] is False
    assert config["SECRET_KEY"] == "settings-test-secret"
    assert config["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]


@pytest.mark.parametrize(("lock_timeout_ms", "busy_timeout_seconds"), [(None, 20), ("500", 0.5)])
def test_an_sqlite_writer_waits_for_the_lock_timeout(
    clean_env, lock_timeout_ms, busy_timeout_seconds
):
    # SQLite has no row locks: its busy timeout is the wait for the whole database's write lock.
    if lock_timeout_ms is not None:
        clean_env.setenv("DATABASE_LOCK_TIMEOUT_MS", lock_timeout_ms)

    database = load_settings()["DATABASES"]["default"]

    assert database["OPTIONS"]["timeout"] == busy_timeout_seconds


@pytest.mark.parametrize(
    ("variables", "options"),
    [
        ({}, None),
        ({"DATABASE_STATEMENT_TIMEOUT_MS": "10000"}, "-c statement_timeout=10000"),
        ({"DATABASE_LOCK_TIMEOUT_MS": "2000"}, "-c lock_timeout=2000"),
        (
            {"DATABASE_STATEMENT_TIMEOUT_MS": "10000", "DATABASE_LOCK_TIMEOUT_MS": "2000"},
            "-c statement_timeout=10000 -c lock_timeout=2000",
        ),
    ],
)
def test_postgres_statement_and_lock_timeouts(clean_env, variables, options):
    clean_env.setenv("DATABASE_URL", "postgres://app@db.example:5432/sessions")
    for name, value in variables.items():
        clean_env.setenv(name, value)

    database = load_settings()["DATABASES"]["default"]

    assert database["OPTIONS"].get("options") == options


def test_postgres_url(clean_env):
    clean_env.setenv("DATABASE_URL", "postgres://app:s3cret@db.example:6543/sessions")

    database = load_settings()["DATABASES"]["default"]

    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == (
        "sessions",
        "app",
        "s3cret",
    )
    assert (database["HOST"], database["PORT"]) == ("db.example", 6543)
    assert database["OPTIONS"]["connect_timeout"] == 2


def test_debug_gives_a_development_secret_key(clean_env):
    clean_env.delenv("DJANGO_SECRET_KEY")
    clean_env.setenv("DJANGO_DEBUG", "true")

    config = load_settings()

    assert config["DEBUG"] is True
    assert config["SECRET_KEY"].startswith("django-insecure-")


def test_hosts_origins_and_keys(clean_env):
    clean_env.setenv("DJANGO_ALLOWED_HOSTS", "sessions.example, api.example")
    clean_env.setenv("DJANGO_CSRF_TRUSTED_ORIGINS", "https://sessions.example")
    clean_env.setenv("SESSIONS_ADMIN_API_KEY", " admin-key ")
    clean_env.setenv("ELIZA_SERVER_AUTH_TOKEN", "eliza-token")

    config = load_settings()

    assert config["ALLOWED_HOSTS"] == ["sessions.example", "api.example"]
    assert config["CSRF_TRUSTED_ORIGINS"] == ["https://sessions.example"]
    assert config["SESSIONS_ADMIN_API_KEY"] == "admin-key"
    assert config["SESSIONS_API_KEY"] == "eliza-token"

    clean_env.setenv("SESSIONS_API_KEY", "eliza-token")  # the same key twice is fine
    assert load_settings()["SESSIONS_API_KEY"] == "eliza-token"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (
            {"SESSIONS_API_KEY": "same-key", "SESSIONS_ADMIN_API_KEY": "same-key"},
            "SESSIONS_API_KEY equals SESSIONS_ADMIN_API_KEY: every client could list every session",
        ),
        (
            {"ELIZA_SERVER_AUTH_TOKEN": "same-key", "SESSIONS_ADMIN_API_KEY": "same-key"},
            "ELIZA_SERVER_AUTH_TOKEN equals SESSIONS_ADMIN_API_KEY",
        ),
        (
            {"SESSIONS_API_KEY": "one", "ELIZA_SERVER_AUTH_TOKEN": "another"},
            "SESSIONS_API_KEY and ELIZA_SERVER_AUTH_TOKEN are both set, to different keys",
        ),
        (
            {"SESSIONS_API_KEY": "one", "SESSIONS_OPEN_CLIENT_ROUTES": "true"},
            "SESSIONS_API_KEY is set and SESSIONS_OPEN_CLIENT_ROUTES is on: the client routes "
            "cannot both need the key and be open",
        ),
        (
            {"ELIZA_SERVER_AUTH_TOKEN": "one", "SESSIONS_OPEN_CLIENT_ROUTES": "yes"},
            "ELIZA_SERVER_AUTH_TOKEN is set and SESSIONS_OPEN_CLIENT_ROUTES is on",
        ),
    ],
)
def test_keys_that_contradict_each_other_are_refused(clean_env, keys, message):
    for name, value in keys.items():
        clean_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        load_settings()


# -- keys in files (what make run generates) and open client routes ------------------


def key_file(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_with_no_key_and_no_setting_the_client_routes_are_closed(clean_env):
    config = load_settings()

    assert config["SESSIONS_OPEN_CLIENT_ROUTES"] is False
    assert (config["SESSIONS_API_KEY"], config["SESSIONS_ADMIN_API_KEY"]) == ("", "")


def test_keys_are_read_from_the_files_the_variables_name(clean_env, tmp_path):
    clean_env.setenv("SESSIONS_API_KEY_FILE", str(key_file(tmp_path, "client", "client-k3y\n")))
    clean_env.setenv("SESSIONS_ADMIN_API_KEY_FILE", str(key_file(tmp_path, "admin", " admin-k3y ")))

    config = load_settings()

    assert (config["SESSIONS_API_KEY"], config["SESSIONS_ADMIN_API_KEY"]) == (
        "client-k3y",
        "admin-k3y",
    )


def test_a_key_in_the_environment_wins_over_its_file(clean_env, tmp_path):
    clean_env.setenv("SESSIONS_API_KEY_FILE", str(key_file(tmp_path, "client", "from-file")))
    clean_env.setenv("SESSIONS_ADMIN_API_KEY_FILE", str(key_file(tmp_path, "admin", "from-file-2")))
    clean_env.setenv("ELIZA_SERVER_AUTH_TOKEN", "from-alias")
    clean_env.setenv("SESSIONS_ADMIN_API_KEY", "from-variable")

    config = load_settings()

    assert (config["SESSIONS_API_KEY"], config["SESSIONS_ADMIN_API_KEY"]) == (
        "from-alias",
        "from-variable",
    )


def test_open_client_routes_leave_the_client_key_file_unread(clean_env, tmp_path):
    """make run always names the generated file; opening the routes is the explicit choice."""
    clean_env.setenv("SESSIONS_API_KEY_FILE", str(key_file(tmp_path, "client", "from-file")))
    clean_env.setenv("SESSIONS_OPEN_CLIENT_ROUTES", "true")

    config = load_settings()

    assert config["SESSIONS_OPEN_CLIENT_ROUTES"] is True
    assert config["SESSIONS_API_KEY"] == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "SESSIONS_API_KEY_FILE='{path}' cannot be read: No such file or directory."),
        ("  \n", "SESSIONS_API_KEY_FILE='{path}' is empty: it must hold the key."),
        ("clé", "The key in SESSIONS_API_KEY_FILE='{path}' must be printable ASCII"),
        ("a\tb", "The key in SESSIONS_API_KEY_FILE='{path}' must be printable ASCII"),
    ],
    ids=["missing", "empty", "not ASCII", "tab"],
)
def test_a_key_file_that_holds_no_usable_key_is_refused(clean_env, tmp_path, text, message):
    path = tmp_path / "client"
    if text is not None:
        path.write_text(text)
    clean_env.setenv("SESSIONS_API_KEY_FILE", str(path))

    with pytest.raises(ImproperlyConfigured, match=re.escape(message.format(path=path))):
        load_settings()


def test_one_file_for_both_keys_is_refused(clean_env, tmp_path):
    path = key_file(tmp_path, "shared", "one-key-for-all")
    clean_env.setenv("SESSIONS_API_KEY_FILE", str(path))
    clean_env.setenv("SESSIONS_ADMIN_API_KEY_FILE", str(path))

    with pytest.raises(
        ImproperlyConfigured,
        match="SESSIONS_API_KEY_FILE equals SESSIONS_ADMIN_API_KEY_FILE: every client could list",
    ):
        load_settings()


def test_the_proxy_header_may_be_switched_off_explicitly(clean_env):
    for off in ("", "off", "false", "0"):
        clean_env.setenv("DJANGO_SECURE_PROXY_SSL_HEADER", off)
        assert load_settings()["SECURE_PROXY_SSL_HEADER"] is None
    clean_env.setenv("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto")
    assert load_settings()["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")


def test_log_level(clean_env):
    clean_env.setenv("DJANGO_LOG_LEVEL", "info")
    assert load_settings()["LOGGING"]["root"]["level"] == "INFO"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG='maybe' is not a boolean"),
        ("DJANGO_SECRET_KEY", "", "DJANGO_SECRET_KEY must be set"),
        ("DATABASE_URL", "nonsense", "DATABASE_URL is not a valid database URL"),
        (
            "DATABASE_URL",
            "postgres://db.example:notaport/x",
            "DATABASE_URL is not a valid database URL",
        ),
        ("DATABASE_URL", "postgres://db.example", "DATABASE_URL must name the database"),
        ("DATABASE_URL", "mysql://db.example/x", "DATABASE_URL must point at SQLite"),
        ("DATABASE_CONNECT_TIMEOUT", "0", "DATABASE_CONNECT_TIMEOUT=0 is below the minimum of 1."),
        ("DATABASE_CONN_MAX_AGE", "-1", "DATABASE_CONN_MAX_AGE=-1 is below the minimum of 0."),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "abc", "DATABASE_STATEMENT_TIMEOUT_MS='abc' is not an integer."),
        ("DATABASE_LOCK_TIMEOUT_MS", "-1", "DATABASE_LOCK_TIMEOUT_MS=-1 is below the minimum of 0"),
        ("DJANGO_ALLOWED_HOSTS", " , ", "DJANGO_ALLOWED_HOSTS is empty"),
        ("SESSIONS_ADMIN_API_KEY", "k€y", "SESSIONS_ADMIN_API_KEY must be printable ASCII"),
        ("SESSIONS_API_KEY", "clé-client", "SESSIONS_API_KEY must be printable ASCII"),
        ("ELIZA_SERVER_AUTH_TOKEN", "tab\tkey", "ELIZA_SERVER_AUTH_TOKEN must be printable ASCII"),
        (
            "DJANGO_CSRF_TRUSTED_ORIGINS",
            "https://ok.example,sessions.example.com",
            "DJANGO_CSRF_TRUSTED_ORIGINS: 'sessions.example.com' must be https:// or http:// "
            "followed by a host name.",
        ),
        (
            "DJANGO_CSRF_TRUSTED_ORIGINS",
            "https://",
            "DJANGO_CSRF_TRUSTED_ORIGINS: 'https://' must be https:// or http:// followed by a host",
        ),
        (
            "DJANGO_ALLOWED_HOSTS",
            "sessions.example, https://api.example/",
            "DJANGO_ALLOWED_HOSTS: 'https://api.example/' is not a host name",
        ),
        (
            "DJANGO_ALLOWED_HOSTS",
            "sessions.example api.example",
            "DJANGO_ALLOWED_HOSTS: 'sessions.example api.example' is not a host name",
        ),
        ("DJANGO_LOG_LEVEL", "verbose", "DJANGO_LOG_LEVEL='verbose' is not one of DEBUG"),
        ("SESSION_DEFAULT_TIMEOUT_MINUTES", "abc", "SESSION_DEFAULT_TIMEOUT_MINUTES='abc'"),
        ("SESSIONS_HEALTH_CACHE_MS", "-1", "SESSIONS_HEALTH_CACHE_MS=-1 is below the minimum of 0."),
        ("SESSIONS_HEALTH_CACHE_MS", "1s", "SESSIONS_HEALTH_CACHE_MS='1s'"),
        (
            "SESSIONS_HEALTH_CACHE_MS",
            "99999999999999999999",
            "SESSIONS_HEALTH_CACHE_MS='99999999999999999999' is out of range (0 to 60000).",
        ),
        ("DATABASE_URL", "sqlite://", "DATABASE_URL='sqlite://' names no SQLite file"),
        (
            "DATABASE_URL",
            "sqlite:////no/such/directory/db.sqlite3",
            "the directory '/no/such/directory' does not exist.",
        ),
        (
            "DJANGO_SECURE_PROXY_SSL_HEADER",
            "true",
            "DJANGO_SECURE_PROXY_SSL_HEADER='true' must be the name of the header your proxy sets",
        ),
    ],
)
def test_bad_settings_are_refused_in_process(clean_env, name, value, message):
    if name == "DATABASE_CONNECT_TIMEOUT":
        clean_env.setenv("DATABASE_URL", "postgres://db.example/x")
    clean_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load_settings()
    assert message in str(excinfo.value)


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_allowed_hosts_take_the_default(clean_env, blank):
    clean_env.setenv("DJANGO_ALLOWED_HOSTS", blank)
    assert load_settings()["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret-pw@cache.example:99999/0", "redis://***@cache.example:99999/0"),
        ("rediss://app:s3cret:pw@cache.example/x", "rediss://***@cache.example/x"),
        ("redis://app:s3c/ret@cache.example:6379/0", "redis://***@cache.example:6379/0"),
        ("redis://app:s3c#ret@cache.example:99999/0", "redis://***@cache.example:99999/0"),
        ("redis://cache.example/x?password=s3cret", "redis://cache.example/x?password=***"),
        ("unix://?password=s3cret&db=1", "unix://?password=***&db=1"),
        ("redi://app:s3cret@cache.example", "redi://***@cache.example"),
    ],
)
def test_redis_errors_do_not_echo_the_password(clean_env, url, shown):
    clean_env.setenv("REDIS_URL", url)
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load_settings()
    assert "s3c" not in str(excinfo.value)
    assert f"REDIS_URL={shown!r}" in str(excinfo.value)


def test_database_errors_do_not_echo_the_password(clean_env):
    clean_env.setenv("DATABASE_URL", "postgres://app:hunter2@db.example:notaport/x")
    with pytest.raises(ImproperlyConfigured) as excinfo:
        load_settings()
    assert "hunter2" not in str(excinfo.value)


# -- start-up: `manage.py check` and gunicorn's config in a fresh process -----------------


def environment(tmp_path: Path, **variables: str | None) -> dict:
    """This process's environment without the project's variables, plus ``variables`` (None unsets)."""
    chosen = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(OWN_PREFIXES) and name not in OWN_NAMES
    }
    chosen.update(
        DJANGO_SETTINGS_MODULE="messaging_project.settings",
        DJANGO_SECRET_KEY="startup-test-secret",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SESSIONS_API_KEY="startup-client-key",
    )
    for name, value in variables.items():
        if value is None:
            chosen.pop(name, None)
        else:
            chosen[name] = value
    return chosen


def run(args: list[str], tmp_path: Path, **variables: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=ROOT, env=environment(tmp_path, **variables), capture_output=True, text=True,
        timeout=60,
    )


def manage_check(tmp_path, **variables):
    return run([sys.executable, "manage.py", "check"], tmp_path, **variables)


def assert_refused(result, message, *, exit_status=1):
    """The process ended with the one-line message naming the variable, and no traceback."""
    assert result.returncode == exit_status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Configuration error: "), result.stderr
    assert message in lines[-1], lines[-1]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "abc"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES='abc' is not an integer.",
        ),
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "0"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES=0 is below SESSION_MIN_TIMEOUT_MINUTES=5.",
        ),
        (
            {"SESSION_DEFAULT_TIMEOUT_MINUTES": "2000"},
            "SESSION_DEFAULT_TIMEOUT_MINUTES=2000 is above SESSION_MAX_TIMEOUT_MINUTES=1440.",
        ),
        (
            {"SESSION_WARNING_THRESHOLD_MINUTES": "45"},
            "SESSION_WARNING_THRESHOLD_MINUTES=45 is above SESSION_DEFAULT_TIMEOUT_MINUTES=30.",
        ),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL is not a valid database URL"),
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"),
        ({"DJANGO_LOG_LEVEL": "loud"}, "DJANGO_LOG_LEVEL='loud' is not one of"),
    ],
)
def test_startup_refuses_bad_values(tmp_path, variables, message):
    assert_refused(manage_check(tmp_path, **variables), message)


def test_startup_with_good_values(tmp_path):
    result = manage_check(
        tmp_path,
        SESSION_DEFAULT_TIMEOUT_MINUTES="60",
        SESSION_WARNING_THRESHOLD_MINUTES="10",
        SESSION_MAX_DURATION_MINUTES="1440",
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="sessions.example",
        DJANGO_LOG_LEVEL="info",
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_startup_without_a_secret_key_in_debug(tmp_path):
    result = manage_check(tmp_path, DJANGO_SECRET_KEY=None, DJANGO_DEBUG="true")

    assert result.returncode == 0, result.stderr


def test_open_client_routes_are_a_warning_not_an_error(tmp_path):
    result = manage_check(tmp_path, SESSIONS_API_KEY=None, SESSIONS_OPEN_CLIENT_ROUTES="true")

    assert result.returncode == 0, result.stderr
    assert "sessions_admin.W001" in result.stderr


GUNICORN = [
    str(Path(sys.executable).with_name("gunicorn")),
    "--check-config",
    "--config",
    "gunicorn.conf.py",
    "messaging_project.asgi:application",
]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"PORT": "abc"}, "PORT='abc' is not an integer."),
        ({"PORT": "0"}, "PORT=0 is below the minimum of 1."),
        ({"PORT": "70000"}, "PORT=70000 is above the maximum of 65535."),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY=0 is below the minimum of 1."),
        ({"GUNICORN_PRELOAD": "maybe"}, "GUNICORN_PRELOAD='maybe' is not a boolean"),
        ({"GUNICORN_READ_TIMEOUT": "0"}, "GUNICORN_READ_TIMEOUT=0 is below the minimum of 1."),
        ({"GUNICORN_READ_TIMEOUT": "2.5"}, "GUNICORN_READ_TIMEOUT='2.5' is not an integer."),
        ({"GUNICORN_THREADS": "0"}, "GUNICORN_THREADS=0 is below the minimum of 1."),
        ({"HOST": "127.0.0.1:3492"}, "HOST='127.0.0.1:3492' must be an address such as 127.0.0.1"),
        ({"HOST": "http://127.0.0.1"}, "(the port goes in PORT)."),
        ({"HOST": "no-such-host.invalid"}, "HOST='no-such-host.invalid' does not resolve"),
    ],
)
def test_gunicorn_refuses_bad_values(tmp_path, variables, message):
    assert_refused(run(GUNICORN, tmp_path, **variables), message)


def test_gunicorn_refuses_a_bad_django_setting_without_a_traceback(tmp_path):
    # Read while the application loads; 4 is gunicorn's "App failed to load".
    result = run(GUNICORN, tmp_path, SESSION_DEFAULT_TIMEOUT_MINUTES="abc")

    assert_refused(result, "SESSION_DEFAULT_TIMEOUT_MINUTES='abc' is not an integer.", exit_status=4)


def test_gunicorn_config_with_good_values(tmp_path):
    result = run(GUNICORN, tmp_path, PORT="3109", HOST="127.0.0.1", WEB_CONCURRENCY="2")

    assert result.returncode == 0, result.stdout + result.stderr


PRINT_CONFIG = [GUNICORN[0], "--print-config", *GUNICORN[2:]]


def gunicorn_bind(tmp_path, **variables) -> str:
    result = run(PRINT_CONFIG, tmp_path, **variables)
    assert result.returncode == 0, result.stdout + result.stderr
    binds = [line for line in result.stdout.splitlines() if line.split(" ", 1)[0] == "bind"]
    assert len(binds) == 1, result.stdout
    return binds[0].split("=", 1)[1].strip()


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_gunicorn_sets_a_statement_timeout_unless_one_is_given(monkeypatch, raw):
    """10 s for the web server when the variable is unset or empty (empty is not "no limit")."""
    monkeypatch.delenv("DATABASE_STATEMENT_TIMEOUT_MS", raising=False)
    if raw is not None:
        monkeypatch.setenv("DATABASE_STATEMENT_TIMEOUT_MS", raw)
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert os.environ["DATABASE_STATEMENT_TIMEOUT_MS"] == "10000"
    monkeypatch.setenv("DATABASE_STATEMENT_TIMEOUT_MS", "2500")
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert os.environ["DATABASE_STATEMENT_TIMEOUT_MS"] == "2500"


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_gunicorn_sets_a_lock_timeout_unless_one_is_given(monkeypatch, raw):
    """2 s for the web server when the variable is unset or empty."""
    monkeypatch.delenv("DATABASE_LOCK_TIMEOUT_MS", raising=False)
    if raw is not None:
        monkeypatch.setenv("DATABASE_LOCK_TIMEOUT_MS", raw)
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert os.environ["DATABASE_LOCK_TIMEOUT_MS"] == "2000"
    monkeypatch.setenv("DATABASE_LOCK_TIMEOUT_MS", "750")
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert os.environ["DATABASE_LOCK_TIMEOUT_MS"] == "750"


def test_gunicorn_preloads_when_the_variable_is_empty(tmp_path):
    result = run(PRINT_CONFIG, tmp_path, GUNICORN_PRELOAD="")
    assert result.returncode == 0, result.stdout + result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    settings = {name.strip(): value.strip() for name, value in printed.items()}
    assert settings["preload_app"] == "True", result.stdout


def test_gunicorn_serves_on_port_3000_by_default(tmp_path):
    # SPEC §6, like the elizaOS server; run() leaves PORT and HOST unset.
    assert gunicorn_bind(tmp_path) == "['127.0.0.1:3000']"


@pytest.mark.parametrize(
    ("variables", "bind"),
    [
        ({"PORT": "8123"}, "['127.0.0.1:8123']"),
        ({"PORT": "8123", "HOST": "0.0.0.0"}, "['0.0.0.0:8123']"),
        ({"HOST": "::1"}, "['[::1]:3000']"),
        ({"HOST": "localhost"}, "['localhost:3000']"),
        ({"HOST": ""}, "['127.0.0.1:3000']"),
    ],
)
def test_gunicorn_port_and_host_come_from_the_environment(tmp_path, variables, bind):
    assert gunicorn_bind(tmp_path, **variables) == bind


MAKE_RUN = ["make", "--no-print-directory", "-s", f"VENV={sys.prefix}", "run"]
needs_make_venv = pytest.mark.skipif(
    not (Path(sys.prefix) / ".runtime").exists() or shutil.which("make") is None,
    reason="make run needs make and a virtual environment that make installed",
)


@needs_make_venv
def test_make_run_refuses_a_worker_count_that_is_not_a_number_in_one_line(tmp_path):
    """gunicorn itself would read WEB_CONCURRENCY first and fail with a traceback."""
    result = run(MAKE_RUN, tmp_path, WEB_CONCURRENCY="abc", DJANGO_STATIC_ROOT=str(tmp_path))

    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Configuration error: WEB_CONCURRENCY='abc' is not an integer." in result.stderr


@needs_make_venv
@pytest.mark.server
@pytest.mark.parametrize("blank", ["", "  "], ids=["empty", "blank"])
def test_make_run_takes_an_empty_worker_count_as_the_default(tmp_path, blank):
    port = server.free_port()
    process = subprocess.Popen(
        MAKE_RUN,
        cwd=ROOT,
        env=environment(
            tmp_path, DJANGO_STATIC_ROOT=str(tmp_path), PORT=str(port), WEB_CONCURRENCY=blank
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, answer = server.request(
                    "GET", f"http://127.0.0.1:{port}/api/messaging/sessions/health", timeout=5
                )
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "make run did not serve within 60 s"
                time.sleep(0.2)
        assert status == 200, answer
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert "Traceback" not in output, output


@needs_make_venv
@pytest.mark.server
def test_make_run_with_no_configuration_generates_the_keys_and_requires_them(tmp_path):
    """Secure by default: the first run writes both keys (mode 600), says where, and uses them."""
    port = server.free_port()
    client_file, admin_file = tmp_path / "client-key", tmp_path / "admin-key"
    log = tmp_path / "make-run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*MAKE_RUN, f"CLIENT_KEY_FILE={client_file}", f"ADMIN_KEY_FILE={admin_file}"],
            cwd=ROOT,
            env=environment(
                tmp_path, DJANGO_STATIC_ROOT=str(tmp_path), PORT=str(port), SESSIONS_API_KEY=None
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api/messaging/sessions"
    try:
        deadline = time.monotonic() + 60
        # The keys are said just before gunicorn starts: only then is it ours that answers.
        while "Admin key:" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "make run did not start within 60 s"
            time.sleep(0.2)
        while True:
            try:
                server.request("GET", f"{api}/health", timeout=5)
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "make run did not serve within 60 s"
                time.sleep(0.2)
        client_key, admin_key = client_file.read_text().strip(), admin_file.read_text().strip()
        assert len(client_key) >= 40 and len(admin_key) >= 40 and client_key != admin_key
        assert client_file.stat().st_mode & 0o777 == 0o600
        assert admin_file.stat().st_mode & 0o777 == 0o600
        body = {
            "agentId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a11",
            "userId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a12",
        }
        status, _, answer = server.request("POST", api, body=body)
        assert status == 401, answer
        client = {"X-API-KEY": client_key}
        status, _, created = server.request("POST", api, body=body, headers=client)
        assert status == 201, created
        session = f"{api}/{created['sessionId']}"
        assert server.request("DELETE", session)[0] == 401
        assert server.request("GET", api, headers=client)[0] == 403
        assert server.request("GET", api, headers={"X-API-KEY": admin_key})[0] == 200
        assert server.request("DELETE", session, headers=client)[0] == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text()
    assert f"Client key: in {client_file} (clients send it as X-API-KEY)." in output, output
    assert f"Admin key: in {admin_file}" in output, output
    key = f"$(cat {admin_file})"
    curl = f'curl -H "X-API-KEY: {key}" http://127.0.0.1:{port}/api/messaging/sessions'
    assert curl in output, output


@pytest.mark.parametrize(
    ("variables", "lines"),
    [
        (
            {"SESSIONS_OPEN_CLIENT_ROUTES": "true", "SESSIONS_ADMIN_API_KEY": "admin-k3y"},
            [
                "Client routes: open to anyone (SESSIONS_OPEN_CLIENT_ROUTES is on).",
                "Admin key: from SESSIONS_ADMIN_API_KEY (every route, the session list included).",
            ],
        ),
        (
            {"ELIZA_SERVER_AUTH_TOKEN": "client-k3y"},
            [
                "Client key: from ELIZA_SERVER_AUTH_TOKEN (clients send it as X-API-KEY).",
                "Admin key: none; the session list takes a staff user.",
            ],
        ),
        (
            {},
            [
                "Client key: none; the client routes take the admin key or a staff user.",
                "Admin key: none; the session list takes a staff user.",
            ],
        ),
    ],
    ids=["open", "alias, no admin key", "nothing"],
)
def test_the_keys_a_server_takes_are_described(clean_env, capsys, variables, lines):
    for name, value in variables.items():
        clean_env.setenv(name, value)

    api_keys.main()

    assert capsys.readouterr().out.splitlines() == lines
