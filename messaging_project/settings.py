"""Settings for the sessions_admin service, read from the environment.

See README.md ("Configuration") for every variable. Invalid values stop
start-up with ``ImproperlyConfigured`` naming the variable.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from messaging_project.env import (
    admin_api_key,
    client_api_key,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_proxy_ssl_header,
    env_rate,
    env_redis_url,
    env_str,
    session_timeout_settings,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off "
            "(set DJANGO_DEBUG=true for a development key)."
        )
    SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"]
)
if not ALLOWED_HOSTS and not DEBUG:
    # Django would answer every request 400.
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS is empty: name the host names the server answers to "
        "(comma-separated), or unset it for localhost."
    )
for _host in ALLOWED_HOSTS:
    # A URL or a blank inside a name can never match a Host header.
    if "/" in _host or any(character.isspace() for character in _host):
        raise ImproperlyConfigured(
            f"DJANGO_ALLOWED_HOSTS: {_host[:100]!r} is not a host name; "
            "write sessions.example.com, not https://sessions.example.com/."
        )
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    _scheme, _, _origin_host = _origin.partition("://")
    if _scheme not in ("https", "http") or not _origin_host.strip("/"):
        raise ImproperlyConfigured(
            f"DJANGO_CSRF_TRUSTED_ORIGINS: {_origin[:100]!r} must be https:// or http:// "
            "followed by a host name."
        )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "sessions_admin",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside ApiErrorMiddleware, so that the answers it makes itself (413, a
    # bad Content-Length) carry X-Frame-Options too.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "sessions_admin.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "messaging_project.urls"
WSGI_APPLICATION = "messaging_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL, or an SQLite file in the project.
_default_sqlite = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
_database_url = env_str("DATABASE_URL") or _default_sqlite
try:
    _database = dj_database_url.parse(_database_url)
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(
        f"DATABASE_URL is not a valid database URL ({exc}). Use sqlite:///path/to/db.sqlite3 "
        "or postgres://user:password@host:5432/name."
    ) from None
# PostgreSQL settings, checked whatever the database so a bad value never waits
# for the day the URL changes.
_connect_timeout = env_int("DATABASE_CONNECT_TIMEOUT", 2, minimum=1, maximum=60)
_statement_timeout_ms = env_int("DATABASE_STATEMENT_TIMEOUT_MS", 0, minimum=0, maximum=86_400_000)
_lock_timeout_ms = env_int("DATABASE_LOCK_TIMEOUT_MS", 0, minimum=0, maximum=86_400_000)
_conn_max_age = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0, maximum=3600)
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # dj-database-url reads sqlite:// (no path) as an in-memory database: every
    # process would get its own, empty and gone at exit.
    if _database.get("NAME") in (None, "", ":memory:"):
        raise ImproperlyConfigured(
            f"DATABASE_URL={_database_url!r} names no SQLite file; use sqlite:///path/to/db.sqlite3 "
            "(an in-memory database would be empty in every process and lost at exit)."
        )
    _sqlite_directory = Path(_database["NAME"]).parent
    if not _sqlite_directory.is_dir():
        raise ImproperlyConfigured(
            f"DATABASE_URL={_database_url!r}: the directory {str(_sqlite_directory)!r} does not exist."
        )
    # WAL lets readers run beside the single writer; IMMEDIATE takes the write
    # lock at BEGIN so read-modify-write transactions cannot deadlock. SQLite
    # has no row locks: a writer waits for the whole database's write lock,
    # for the lock timeout when one is set (gunicorn sets 2 s), else 20 s.
    _database.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": _lock_timeout_ms / 1000 if _lock_timeout_ms else 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif _database["ENGINE"] == "django.db.backends.postgresql":
    if not _database.get("NAME"):
        raise ImproperlyConfigured(
            "DATABASE_URL must name the database: postgres://user:password@host:5432/name."
        )
    # A short connect timeout turns an unreachable database into a quick 503.
    _database.setdefault("OPTIONS", {}).setdefault("connect_timeout", _connect_timeout)
    # Keepalives and a TCP user timeout drop a connection whose peer vanished
    # (a network partition) instead of waiting minutes for the kernel to.
    _database["OPTIONS"].setdefault("keepalives_idle", 30)
    _database["OPTIONS"].setdefault("keepalives_interval", 5)
    _database["OPTIONS"].setdefault("keepalives_count", 3)
    _database["OPTIONS"].setdefault("tcp_user_timeout", 10_000)
    # A statement that runs longer (a runaway query) is cancelled, and one that
    # waits longer for a lock (a row another request holds) gives up; either
    # request answers 503. gunicorn.conf.py sets 10 s and 2 s for the web
    # server; management commands (seeding, pruning, migrations) default to none.
    _timeouts_ms = {"statement_timeout": _statement_timeout_ms, "lock_timeout": _lock_timeout_ms}
    _server_options = " ".join(f"-c {name}={ms}" for name, ms in _timeouts_ms.items() if ms)
    if _server_options:
        _database["OPTIONS"].setdefault("options", _server_options)
    _database["CONN_MAX_AGE"] = _conn_max_age
    _database["CONN_HEALTH_CHECKS"] = True
else:
    raise ImproperlyConfigured(
        "DATABASE_URL must point at SQLite (sqlite:///path) or PostgreSQL (postgres://...)."
    )
DATABASES = {"default": _database}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic writes and whitenoise serves from.
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Request bodies above 1 MB are refused with 413 (see sessions_admin.middleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
# Django refuses a query string or form with more fields than this (400). The
# admin's delete confirmation posts back every selected id (up to 1,000,
# sessions_admin.admin.ACTION_LIMIT) plus three fields of its own.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1_100
# Where a sign-in goes when its ``next`` is missing or points off the site.
LOGIN_REDIRECT_URL = "admin:index"

# Sessions service configuration.
# Client routes open to anyone (as elizaOS without ELIZA_SERVER_AUTH_TOKEN)
# only when this says so; otherwise they need a key (make run generates one).
SESSIONS_OPEN_CLIENT_ROUTES = env_bool("SESSIONS_OPEN_CLIENT_ROUTES", False)
_admin_key = admin_api_key()
SESSIONS_ADMIN_API_KEY = _admin_key.value
SESSIONS_API_KEY = client_api_key(
    admin_key=_admin_key, open_routes=SESSIONS_OPEN_CLIENT_ROUTES
).value
SESSIONS_TIMEOUTS = session_timeout_settings()
SESSIONS_METADATA_MAX_BYTES = 10 * 1024
# Health answers 503 once the database is this late (0: wait as long as the
# connection does). Kept under libpq's 2 s connect-timeout floor.
SESSIONS_HEALTH_TIMEOUT_MS = env_int("SESSIONS_HEALTH_TIMEOUT_MS", 1500, minimum=0, maximum=60_000)
# A healthy answer may be reused this long, per process (0: never, the default:
# each answer counts at its own instant; counting reads the counts table, not the rows).
SESSIONS_HEALTH_CACHE_MS = env_int("SESSIONS_HEALTH_CACHE_MS", 0, minimum=0, maximum=60_000)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sessions_admin.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "sessions_admin.throttling.ThrottledBasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["sessions_admin.auth.ClientAccess"],
    "DEFAULT_RENDERER_CLASSES": ["sessions_admin.renderers.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sessions_admin.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_CLASSES": ["sessions_admin.throttling.ClientRateThrottle"],
    # Proxies in front of gunicorn whose X-Forwarded-For may be trusted; 0 means
    # "use the socket address", so a client cannot dodge its limit by forging XFF.
    "NUM_PROXIES": env_int("SESSIONS_NUM_PROXIES", 0, minimum=0, maximum=10),
}

# Rate limit per client (429 RATE_LIMITED with Retry-After): "N/s|min|hour|day" or "off".
SESSIONS_THROTTLE_RATE = env_rate("SESSIONS_THROTTLE_RATE", "600/min")
# Failed HTTP Basic sign-ins per client address (each costs a password hash), or "off".
SESSIONS_AUTH_FAILURE_RATE = env_rate("SESSIONS_AUTH_FAILURE_RATE", "10/min")

# The cache holds the rate-limit counters: Redis when REDIS_URL is set, so
# every worker and host shares them; this process's memory otherwise.
REDIS_URL = env_redis_url("REDIS_URL")
_redis_timeout_ms = env_int("REDIS_TIMEOUT_MS", 500, minimum=10, maximum=60_000)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "sessions_admin") or "sessions_admin",
            # Short timeouts: a stalled Redis must not stall requests (the
            # throttle fails open when the cache is unreachable).
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": _redis_timeout_ms / 1000,
                "SOCKET_TIMEOUT": _redis_timeout_ms / 1000,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "sessions-admin",
        }
    }

# HTTPS hardening (README "Production"). Off by default so `make run` serves
# plain HTTP on localhost; DJANGO_HTTPS=true turns every switch on, and each
# can be set on its own.
_https = env_bool("DJANGO_HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", _https)
# Load balancers probe health over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^api/messaging/sessions/health$"]
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
SECURE_HSTS_SECONDS = env_int(
    "DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if _https else 0, minimum=0, maximum=63_072_000
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", _https)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", _https)
# The database session store, minus session keys Django never issues (see the module).
SESSION_ENGINE = "sessions_admin.session_store"
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", _https)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", _https)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

SPECTACULAR_SETTINGS = {
    "TITLE": "sessions_admin API",
    "DESCRIPTION": (
        "Persistent messaging sessions between users and AI agents, "
        "wire-compatible with the elizaOS Sessions API."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVERS": [{"url": "http://localhost:3000", "description": "Local development server"}],
    # Swagger UI from the drf-spectacular-sidecar package, so /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "client_errors_on_one_line": {"()": "sessions_admin.log_filters.ClientErrorsOnOneLine"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["client_errors_on_one_line"]},
    },
    "root": {
        "handlers": ["console"],
        "level": env_choice(
            "DJANGO_LOG_LEVEL", "WARNING", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
        ),
    },
}
