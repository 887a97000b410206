"""Read and validate configuration from the environment.

Every reader raises ``ImproperlyConfigured`` with the variable's name and the
offending value, so a bad deployment stops at start-up with a clear message
instead of misbehaving later.
"""

import ipaddress
import os
import re
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# ASCII digits only: int() would also accept "1_000" or digits of other scripts.
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Longer integers are far outside any range a setting accepts.
_INTEGER_DIGITS = 18


@contextmanager
def stop_on_bad_configuration(*, exit_status: int = 1) -> Iterator[None]:
    """End the process with the configuration error's one-line message, not a traceback.

    The message names the variable and its value; a traceback around it would
    only bury it.
    """
    try:
        yield
    except ImproperlyConfigured as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        raise SystemExit(exit_status) from None


def env_str(name: str, default: str = "") -> str:
    """Return the variable's value stripped of surrounding blanks, or ``default``."""
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    """Return a boolean from ``true/false``, ``1/0``, ``yes/no`` or ``on/off``; empty is the default."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use true/false, 1/0, yes/no or on/off."
    )


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    minimum_from: str = "",
    maximum_from: str = "",
) -> int:
    """Return an integer within ``[minimum, maximum]``; anything else is a configuration error.

    ``minimum_from`` and ``maximum_from`` name the variables a bound comes
    from, so that a message points at what the operator actually set.
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        value, shown = default, f"{name}={default} (its default)"
    else:
        text = raw.strip()
        if not _INTEGER.fullmatch(text):
            raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.")
        if len(text.lstrip("+-")) > _INTEGER_DIGITS:
            raise ImproperlyConfigured(f"{name}={raw!r} is out of range{_range(minimum, maximum)}.")
        value = int(text)
        shown = f"{name}={value}"
    if minimum is not None and value < minimum:
        bound = f"{minimum_from}={minimum}" if minimum_from else f"the minimum of {minimum}"
        raise ImproperlyConfigured(f"{shown} is below {bound}.")
    if maximum is not None and value > maximum:
        bound = f"{maximum_from}={maximum}" if maximum_from else f"the maximum of {maximum}"
        raise ImproperlyConfigured(f"{shown} is above {bound}.")
    return value


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" ({minimum} to {maximum})"
    if maximum is not None:
        return f" (at most {maximum})"
    if minimum is not None:
        return f" (at least {minimum})"
    return ""


def env_host(name: str, default: str) -> str:
    """Return an address to listen on (``127.0.0.1``, ``0.0.0.0``, ``::1``, a host name)."""
    value = env_str(name) or default
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    hint = "an address such as 127.0.0.1, 0.0.0.0 or ::1"
    if ":" in value or "/" in value:
        raise ImproperlyConfigured(f"{name}={value!r} must be {hint} (the port goes in PORT).")
    try:
        socket.getaddrinfo(value, None)
    except (OSError, UnicodeError):
        raise ImproperlyConfigured(f"{name}={value!r} does not resolve; use {hint}.") from None
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated list, blanks dropped; ``default`` when unset or empty."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def _printable_key(name: str, value: str) -> str:
    # A header's bytes reach the application decoded as Latin-1, so a key with
    # other characters could never match what a client sends.
    if not all(" " <= character < "\x7f" for character in value):
        raise ImproperlyConfigured(
            f"{name} must be printable ASCII (letters, digits, punctuation, spaces): "
            "a request header cannot carry the key as it is."
        )
    return value


def env_key(name: str) -> str:
    """Return an API key: printable ASCII, what an ``X-API-KEY`` header carries as sent."""
    return _printable_key(name, env_str(name))


class ApiKey(NamedTuple):
    """An API key and the variable it came from (``SESSIONS_API_KEY``, ``..._FILE``), or none."""

    value: str = ""
    source: str = ""


def env_key_file(name: str) -> ApiKey:
    """Return the key in the file the variable names (blanks around it dropped), if it names one.

    ``make run`` names the keys it generated for the checkout; a deployment
    may name a mounted secret.
    """
    path = env_str(name)
    if not path:
        return ApiKey()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}={path!r} cannot be read: {exc.strerror}.") from None
    except UnicodeDecodeError:
        text = "\ufffd"  # refused as not printable below
    value = _printable_key(f"The key in {name}={path!r}", text.strip())
    if not value:
        raise ImproperlyConfigured(f"{name}={path!r} is empty: it must hold the key.")
    return ApiKey(value, name)


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    """Return one of ``choices`` (matched case-insensitively), or ``default`` when unset."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    for choice in choices:
        if raw.strip().lower() == choice.lower():
            return choice
    raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}.")


def session_timeout_settings() -> dict[str, int]:
    """Return the validated ``SESSION_*`` timeout defaults and limits.

    The absolute ceiling for a session's lifetime is 20160 minutes (14 days).
    """
    min_timeout = env_int("SESSION_MIN_TIMEOUT_MINUTES", 5, minimum=1, maximum=20160)
    max_timeout = env_int("SESSION_MAX_TIMEOUT_MINUTES", 1440, minimum=1, maximum=20160)
    if max_timeout < min_timeout:
        raise ImproperlyConfigured(
            f"SESSION_MAX_TIMEOUT_MINUTES={max_timeout} is below "
            f"SESSION_MIN_TIMEOUT_MINUTES={min_timeout}."
        )
    default_timeout = env_int(
        "SESSION_DEFAULT_TIMEOUT_MINUTES",
        30,
        minimum=min_timeout,
        maximum=max_timeout,
        minimum_from="SESSION_MIN_TIMEOUT_MINUTES",
        maximum_from="SESSION_MAX_TIMEOUT_MINUTES",
    )
    max_duration = env_int(
        "SESSION_MAX_DURATION_MINUTES",
        720,
        minimum=default_timeout,
        maximum=20160,
        minimum_from="SESSION_DEFAULT_TIMEOUT_MINUTES",
    )
    warning = env_int(
        "SESSION_WARNING_THRESHOLD_MINUTES",
        5,
        minimum=1,
        maximum=default_timeout,
        maximum_from="SESSION_DEFAULT_TIMEOUT_MINUTES",
    )
    return {
        "MIN_TIMEOUT_MINUTES": min_timeout,
        "MAX_TIMEOUT_MINUTES": max_timeout,
        "DEFAULT_TIMEOUT_MINUTES": default_timeout,
        "MAX_DURATION_MINUTES": max_duration,
        "MAX_DURATION_CEILING_MINUTES": 20160,
        "WARNING_THRESHOLD_MINUTES": warning,
    }


# DRF's rate periods: ``N/s``, ``N/min``, ``N/hour``, ``N/day`` and their spellings.
RATE_PERIOD_SECONDS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}
_RATE_OFF = {"off", "none", "false", "0"}


def parse_rate(rate: str) -> tuple[int, int]:
    """Parse a rate such as ``600/min`` into ``(requests, period_seconds)``; raise ``ValueError``."""
    count, _, period = rate.strip().partition("/")
    period = period.strip().lower()
    count = count.strip()
    if not (count.isascii() and count.isdigit()) or period not in RATE_PERIOD_SECONDS:
        raise ValueError(f"{rate!r} is not a rate like 600/min (periods: s, min, hour, day)")
    requests = int(count)
    if requests < 1:
        raise ValueError(f"{rate!r} allows no request; use 'off' to disable rate limiting")
    return requests, RATE_PERIOD_SECONDS[period]


def env_rate(name: str, default: str | None) -> str | None:
    """Return a validated request rate (``600/min``), or ``None`` when set to ``off``."""
    raw = os.environ.get(name)
    value = default if raw is None or raw.strip() == "" else raw.strip()
    if value is None or value.lower() in _RATE_OFF:
        return None
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}.") from None
    return value


def _without_credentials(url: str) -> str:
    """``url`` as a message may quote it (messages go to logs): user info and passwords masked.

    Everything before the last ``@`` of the address is user info, whatever it
    holds (a ``/`` or ``#`` in a password included); a ``password=`` query
    parameter is masked too.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "***"
    address, at, after = rest.rpartition("@")
    if at:
        rest = "***@" + after
    rest = re.sub(r"(?i)(password=)[^&]*", r"\1***", rest)
    return f"{scheme}://{rest}"


def env_redis_url(name: str) -> str:
    """Return a ``redis://``, ``rediss://`` or ``unix://`` URL, or ``""`` when unset."""
    from urllib.parse import urlsplit

    value = env_str(name)
    if not value:
        return ""
    shown = _without_credentials(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        # The parser's own message may quote part of the password.
        raise ImproperlyConfigured(
            f"{name}={shown!r} is not a valid URL: it needs a host, and a port from 0 to 65535 "
            "if it names one."
        ) from None
    if parts.scheme in {"redis", "rediss"}:
        database = parts.path.lstrip("/")
        if not parts.hostname or (database and not database.isdigit()):
            raise ImproperlyConfigured(
                f"{name}={shown!r} must look like redis://host:6379/0 (a host and a numeric database)."
            )
    elif parts.scheme == "unix":
        if not parts.path:
            raise ImproperlyConfigured(
                f"{name}={shown!r} must name a socket: unix:///path/redis.sock."
            )
    else:
        raise ImproperlyConfigured(
            f"{name}={shown!r} must start with redis://, rediss:// or unix://."
        )
    return value


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """Return Django's ``SECURE_PROXY_SSL_HEADER`` from a header name such as ``X-Forwarded-Proto``."""
    value = env_str(name)
    if not value or value.lower() in _FALSE:
        return None
    if value.lower() in _TRUE or not value.replace("-", "").isalnum():
        raise ImproperlyConfigured(
            f"{name}={value!r} must be the name of the header your proxy sets, e.g. X-Forwarded-Proto."
        )
    return "HTTP_" + value.upper().replace("-", "_"), "https"


def admin_api_key() -> ApiKey:
    """Return ``SESSIONS_ADMIN_API_KEY``, else the key in ``SESSIONS_ADMIN_API_KEY_FILE``."""
    key = env_key("SESSIONS_ADMIN_API_KEY")
    if key:
        return ApiKey(key, "SESSIONS_ADMIN_API_KEY")
    return env_key_file("SESSIONS_ADMIN_API_KEY_FILE")


def client_api_key(*, admin_key: ApiKey, open_routes: bool) -> ApiKey:
    """Return the client key: ``SESSIONS_API_KEY`` or its alias ``ELIZA_SERVER_AUTH_TOKEN``.

    Else, unless the client routes are open (``SESSIONS_OPEN_CLIENT_ROUTES``),
    the key in ``SESSIONS_API_KEY_FILE``. Two different values would leave one
    silently unused, a key given with open routes would be required and not,
    and a client key equal to the admin key would let every client list every
    session: each is refused.
    """
    key, alias = env_key("SESSIONS_API_KEY"), env_key("ELIZA_SERVER_AUTH_TOKEN")
    if key and alias and key != alias:
        raise ImproperlyConfigured(
            "SESSIONS_API_KEY and ELIZA_SERVER_AUTH_TOKEN are both set, to different keys; "
            "set one of them."
        )
    if key:
        client = ApiKey(key, "SESSIONS_API_KEY")
    elif alias:
        client = ApiKey(alias, "ELIZA_SERVER_AUTH_TOKEN")
    elif not open_routes:
        client = env_key_file("SESSIONS_API_KEY_FILE")
    else:
        client = ApiKey()
    if open_routes and client.value:
        raise ImproperlyConfigured(
            f"{client.source} is set and SESSIONS_OPEN_CLIENT_ROUTES is on: the client routes "
            "cannot both need the key and be open; set one of them."
        )
    if client.value and client.value == admin_key.value:
        raise ImproperlyConfigured(
            f"{client.source} equals {admin_key.source}: every client could list every "
            "session; give the admin a key of its own."
        )
    return client
