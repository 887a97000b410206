"""Limits: request bodies over 1 MB (413) and per-client rate limits (429 with Retry-After)."""

import base64
import json
import logging
import socket
import threading
import uuid

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from messaging_project.env import env_rate, env_redis_url, parse_rate
from sessions_admin.throttling import ClientRateThrottle
from tests import server

HEALTH = "/api/messaging/sessions/health"  # never throttled: load balancers probe it
SESSIONS = "/api/messaging/sessions"
# A cheap throttled route: an unknown session answers 404 until the client is limited.
UNKNOWN = f"{SESSIONS}/{uuid.UUID(int=1)}"
ONE_MB = 1024 * 1024



@pytest.fixture
def throttled(settings, monkeypatch):
    """Rate limiting on at 3 requests a minute, local-memory cache, empty counters.

    The throttle's clock stands still 30 s into a minute, so no window ends mid-test.
    """
    settings.SESSIONS_THROTTLE_RATE = "3/min"
    monkeypatch.setattr(ClientRateThrottle, "timer", staticmethod(lambda: 1_800_000_030.0))
    cache.clear()
    yield settings


@pytest.fixture
def redis_cache(settings, throttled):
    if not server.redis_reachable():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
            # A prefix of its own: other runs on this Redis never share counters.
            "KEY_PREFIX": f"sa_hard_test_{uuid.uuid4().hex}",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    yield settings
    cache.delete_pattern("*")


# --- request size ---------------------------------------------------------------


@pytest.mark.django_db
def test_body_over_one_megabyte_is_refused_with_413_envelope(api_client):
    body = json.dumps({"agentId": str(uuid.uuid4()), "metadata": {"x": "a" * ONE_MB}})
    response = api_client.post(SESSIONS, body, content_type="application/json")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"]["maxBytes"] == ONE_MB


@pytest.mark.django_db
def test_body_of_exactly_one_megabyte_is_not_refused_for_its_size(api_client):
    body = b'"' + b"a" * (ONE_MB - 2) + b'"'
    assert len(body) == ONE_MB
    response = api_client.post(SESSIONS, body, content_type="application/json")
    # Read and parsed in full: refused for what it is (a string), not for its size.
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (
        "VALIDATION_ERROR", "Request body must be a JSON object"
    )


# --- rate limits (in process) ----------------------------------------------------


@pytest.mark.django_db
def test_requests_over_the_rate_get_429_with_retry_after(api_client, throttled):
    for _ in range(3):
        assert api_client.get(UNKNOWN).status_code == 404
    response = api_client.get(UNKNOWN)
    assert response.status_code == 429
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "RATE_LIMITED"
    retry_after = int(response["Retry-After"])
    assert retry_after == 30  # the rest of the current minute
    assert body["error"]["details"]["retryAfterSeconds"] == retry_after


@pytest.mark.django_db
def test_the_schema_keeps_retry_after_and_www_authenticate_in_its_envelope(
    api_client, throttled, operator
):
    """The schema answers YAML, so its errors are put in the envelope around the view."""
    refused = api_client.get("/api/schema/", HTTP_AUTHORIZATION=basic("operator", "wrong"))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert refused["WWW-Authenticate"] == 'ApiKey header="X-API-KEY"'
    for _ in range(2):  # the refusal counted as the first of 3
        assert api_client.get("/api/schema/").status_code == 200
    response = api_client.get("/api/schema/")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert response["Retry-After"] == "30"
    assert error["details"] == {"retryAfterSeconds": 30}
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_X_API_KEY": "a-wrong-key"},
        {"HTTP_AUTHORIZATION": "Basic !!!not-base64"},
        {"HTTP_AUTHORIZATION": "Basic Zm9v"},  # "foo": no colon
    ],
    ids=["no key", "wrong key", "malformed Basic", "Basic without a password"],
)
def test_callers_refused_for_their_credentials_are_limited_too(
    api_client, throttled, admin_key, headers
):
    """Else keys could be tried, and refusals served, without limit."""
    statuses = [api_client.get(SESSIONS, **headers).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # The same budget as every request of this address.
    assert api_client.get(UNKNOWN).status_code == 429


@pytest.mark.django_db
def test_the_schema_in_a_format_it_cannot_give_is_a_406_envelope(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 406
    assert response.json()["error"]["code"] == "NOT_ACCEPTABLE"


@pytest.mark.django_db
def test_each_client_address_has_its_own_budget(api_client, throttled):
    for _ in range(3):
        api_client.get(UNKNOWN, REMOTE_ADDR="10.0.0.1")
    assert api_client.get(UNKNOWN, REMOTE_ADDR="10.0.0.1").status_code == 429
    assert api_client.get(UNKNOWN, REMOTE_ADDR="10.0.0.2").status_code == 404


@pytest.mark.django_db
def test_forged_forwarded_for_does_not_reset_the_budget(api_client, throttled):
    for n in range(3):
        api_client.get(UNKNOWN, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert api_client.get(UNKNOWN, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    api_client, throttled, monkeypatch
):
    from rest_framework.settings import api_settings

    monkeypatch.setattr(api_settings, "NUM_PROXIES", 1, raising=False)
    for _ in range(3):
        api_client.get(UNKNOWN, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert api_client.get(UNKNOWN, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429
    assert api_client.get(UNKNOWN, HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 404


@pytest.mark.django_db
def test_signed_in_users_are_limited_per_user_not_per_address(api_client, throttled, operator):
    api_client.force_login(operator)
    for n in range(3):
        assert api_client.get(SESSIONS, REMOTE_ADDR=f"10.1.0.{n}").status_code == 200
    response = api_client.get(SESSIONS, REMOTE_ADDR="10.1.0.9")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"


@pytest.mark.django_db
def test_rate_limiting_off_lets_every_request_through(api_client, settings):
    settings.SESSIONS_THROTTLE_RATE = None
    cache.clear()
    assert {api_client.get(UNKNOWN).status_code for _ in range(30)} == {404}


def redis_cache_at(port: int, timeout_seconds: float) -> dict:
    """``CACHES`` for a Redis at ``port`` on this machine, with short socket timeouts."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": timeout_seconds, "SOCKET_TIMEOUT": timeout_seconds,
            },
        }
    }


@pytest.fixture
def unreachable_cache(settings):
    """The default cache on a Redis address that refuses connections at once.

    The port is bound but never listened on, so nothing can take it meanwhile.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        settings.CACHES = redis_cache_at(taken.getsockname()[1], 0.5)
        yield settings


@pytest.mark.django_db
def test_unreachable_cache_fails_open_and_says_so(api_client, throttled, unreachable_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="sessions_admin.throttling"):
        statuses = [api_client.get(UNKNOWN).status_code for _ in range(5)]
    assert statuses == [404] * 5
    assert "cache unavailable" in caplog.text
    # One failed attempt, then the cache is left alone for a while.
    assert caplog.text.count("cache unavailable") == 1


@pytest.mark.django_db
def test_sign_in_limit_fails_open_when_the_cache_is_unreachable(
    api_client, client, throttled, unreachable_cache, operator, caplog
):
    # With a cache, the fourth wrong password would be refused with 429 unchecked.
    throttled.SESSIONS_AUTH_FAILURE_RATE = "3/min"
    throttled.SESSIONS_THROTTLE_RATE = None
    wrong = basic("operator", "wrong-password")
    with caplog.at_level(logging.WARNING, logger="sessions_admin.throttling"):
        statuses = [api_client.get(SESSIONS, HTTP_AUTHORIZATION=wrong).status_code for _ in range(5)]
        refused = admin_sign_in(client, "wrong-password")
        right = basic("operator", "operator-pass-123")
        assert api_client.get(SESSIONS, HTTP_AUTHORIZATION=right).status_code == 200
        signed_in = admin_sign_in(client, "operator-pass-123")
    assert statuses == [401] * 5
    assert refused.status_code == 200
    assert b"Please enter the correct username and password" in refused.content
    assert (signed_in.status_code, signed_in["Location"]) == (302, "/admin/")
    # The first use of the cache fails and says so; the cache is then left alone.
    warnings = [
        record.getMessage() for record in caplog.records if record.name == "sessions_admin.throttling"
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Could not check failed sign-ins: cache unavailable, not used for 5 s: ")


@pytest.mark.django_db
def test_redis_counts_the_limit(api_client, redis_cache):
    for _ in range(3):
        assert api_client.get(UNKNOWN).status_code == 404
    response = api_client.get(UNKNOWN)
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def counted_password_checks(monkeypatch):
    """Count the password checks Django's model backend performs."""
    from django.contrib.auth.backends import ModelBackend

    calls = []
    original = ModelBackend.authenticate

    def counting(self, request, username=None, password=None, **kwargs):
        calls.append(username)
        return original(self, request, username=username, password=password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", counting)
    return calls


@pytest.mark.django_db
def test_failed_basic_sign_ins_are_limited_per_address_before_hashing(
    api_client, throttled, operator, counted_password_checks
):
    throttled.SESSIONS_AUTH_FAILURE_RATE = "3/min"
    wrong = basic("operator", "wrong-password")
    for _ in range(3):
        response = api_client.get(SESSIONS, HTTP_AUTHORIZATION=wrong)
        assert response.status_code == 401
    assert len(counted_password_checks) == 3
    blocked = api_client.get(SESSIONS, HTTP_AUTHORIZATION=wrong)
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "RATE_LIMITED"
    assert int(blocked["Retry-After"]) == 30
    # Blocked means no more hashing from this address, even with the right password.
    right = basic("operator", "operator-pass-123")
    assert api_client.get(SESSIONS, HTTP_AUTHORIZATION=right).status_code == 429
    assert len(counted_password_checks) == 3
    # Another address is not affected.
    assert (
        api_client.get(SESSIONS, HTTP_AUTHORIZATION=right, REMOTE_ADDR="10.9.9.9").status_code
        == 200
    )


@pytest.mark.django_db
def test_successful_basic_sign_ins_are_not_counted_as_failures(api_client, throttled, operator):
    throttled.SESSIONS_AUTH_FAILURE_RATE = "2/min"
    throttled.SESSIONS_THROTTLE_RATE = None
    right = basic("operator", "operator-pass-123")
    assert {api_client.get(SESSIONS, HTTP_AUTHORIZATION=right).status_code for _ in range(4)} == {
        200
    }


@pytest.mark.django_db
def test_sign_in_failure_limit_off_switch(api_client, throttled, operator):
    throttled.SESSIONS_AUTH_FAILURE_RATE = None
    throttled.SESSIONS_THROTTLE_RATE = None  # which counts every refusal too
    wrong = basic("operator", "wrong-password")
    assert {api_client.get(SESSIONS, HTTP_AUTHORIZATION=wrong).status_code for _ in range(4)} == {
        401
    }


@pytest.mark.django_db
@pytest.mark.parametrize("username", ["oper\x00ator", "\x00", "operator\x00"])
def test_basic_credentials_with_nul_are_refused_not_a_server_error(
    api_client, throttled, operator, username
):
    # PostgreSQL cannot hold NUL in text: looking such a user up used to be a 500.
    throttled.SESSIONS_AUTH_FAILURE_RATE = "2/min"
    for expected in (401, 401, 429):  # and it counts as a failed sign-in
        response = api_client.get(SESSIONS, HTTP_AUTHORIZATION=basic(username, "operator-pass-123"))
        assert response.status_code == expected, response.content


ADMIN_LOGIN = "/admin/login/"


def admin_sign_in(client, password: str, **extra):
    return client.post(
        ADMIN_LOGIN, {"username": "operator", "password": password, "next": "/admin/"}, **extra
    )


@pytest.mark.django_db
def test_failed_admin_sign_ins_are_limited_per_address_before_hashing(
    client, throttled, operator, counted_password_checks
):
    throttled.SESSIONS_AUTH_FAILURE_RATE = "3/min"
    for _ in range(3):
        response = admin_sign_in(client, "wrong-password")
        assert response.status_code == 200
        assert b"Please enter the correct username and password" in response.content
    assert len(counted_password_checks) == 3

    blocked = admin_sign_in(client, "operator-pass-123")

    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) == 30
    assert b"Too many failed sign-ins" in blocked.content
    assert len(counted_password_checks) == 3  # the right password was not even checked
    assert "_auth_user_id" not in client.session
    # The page itself still loads, and another address signs in.
    assert client.get(ADMIN_LOGIN).status_code == 200
    elsewhere = admin_sign_in(client, "operator-pass-123", REMOTE_ADDR="10.9.9.9")
    assert elsewhere.status_code == 302 and elsewhere["Location"] == "/admin/"


@pytest.mark.django_db
def test_admin_and_basic_sign_ins_share_one_failure_budget(
    client, api_client, throttled, operator
):
    throttled.SESSIONS_AUTH_FAILURE_RATE = "2/min"
    assert admin_sign_in(client, "wrong-password").status_code == 200
    wrong = basic("operator", "wrong-password")
    assert api_client.get(SESSIONS, HTTP_AUTHORIZATION=wrong).status_code == 401

    assert admin_sign_in(client, "operator-pass-123").status_code == 429
    right = basic("operator", "operator-pass-123")
    assert api_client.get(SESSIONS, HTTP_AUTHORIZATION=right).status_code == 429


@pytest.mark.django_db
def test_successful_admin_sign_ins_are_not_counted(client, throttled, operator):
    throttled.SESSIONS_AUTH_FAILURE_RATE = "1/min"
    for _ in range(3):
        assert admin_sign_in(client, "operator-pass-123").status_code == 302
        client.logout()


@pytest.mark.django_db
def test_admin_sign_in_limit_off_switch(client, throttled, operator):
    throttled.SESSIONS_AUTH_FAILURE_RATE = None
    assert {admin_sign_in(client, "wrong-password").status_code for _ in range(4)} == {200}


# --- configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("600/min", (600, 60)),
        ("10/s", (10, 1)),
        ("5/hour", (5, 3600)),
        ("1/day", (1, 86400)),
        ("7/m", (7, 60)),
        (" 20 / second ", (20, 1)),
    ],
)
def test_parse_rate_accepts_drf_periods(rate, expected):
    assert parse_rate(rate) == expected


@pytest.mark.parametrize(
    "rate", ["600", "600/fortnight", "-1/min", "0/min", "x/min", "1.5/min", "/min"]
)
def test_malformed_rates_stop_start_up(monkeypatch, rate):
    monkeypatch.setenv("SESSIONS_THROTTLE_RATE", rate)
    with pytest.raises(ImproperlyConfigured, match="SESSIONS_THROTTLE_RATE"):
        env_rate("SESSIONS_THROTTLE_RATE", "600/min")


@pytest.mark.parametrize("value", ["off", "OFF", "none", "0", "false"])
def test_rate_off_switch(monkeypatch, value):
    monkeypatch.setenv("SESSIONS_THROTTLE_RATE", value)
    assert env_rate("SESSIONS_THROTTLE_RATE", "600/min") is None


def test_rate_default_when_unset(monkeypatch):
    monkeypatch.delenv("SESSIONS_THROTTLE_RATE", raising=False)
    assert env_rate("SESSIONS_THROTTLE_RATE", "600/min") == "600/min"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://:secret@cache.internal:6380",
        "rediss://cache/1",
        "unix:///run/redis.sock",
    ],
)
def test_valid_redis_urls(monkeypatch, url):
    monkeypatch.setenv("REDIS_URL", url)
    assert env_redis_url("REDIS_URL") == url


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:6379",
        "http://cache:6379",
        "redis://",
        "redis://cache:port/0",
        "redis://cache:6379/zero",
        "unix://",
    ],
)
def test_invalid_redis_urls_stop_start_up(monkeypatch, url):
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        env_redis_url("REDIS_URL")


def test_settings_refuse_a_bad_rate_at_start_up():
    result = server.manage("check", env={"SESSIONS_THROTTLE_RATE": "lots"})
    assert result.returncode != 0
    assert "SESSIONS_THROTTLE_RATE" in result.stderr


def test_settings_use_redis_when_redis_url_is_set():
    script = (
        "from django.conf import settings; "
        "print(settings.CACHES['default']['BACKEND'], settings.SESSIONS_THROTTLE_RATE)"
    )
    with_redis = server.manage(
        "shell",
        "-c",
        script,
        env={"REDIS_URL": "redis://127.0.0.1:6379/0", "SESSIONS_THROTTLE_RATE": "50/s"},
    )
    assert with_redis.stdout.split()[-2:] == ["django_redis.cache.RedisCache", "50/s"], (
        with_redis.stderr
    )
    without = server.manage("shell", "-c", script, env={})
    assert without.stdout.split()[-2:] == ["django.core.cache.backends.locmem.LocMemCache", "None"]


# --- over real HTTP (gunicorn) ------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_server():
    with server.GunicornServer(env={"DATABASE_URL": server.scratch_sqlite()}, workers=2) as running:
        yield running


@pytest.mark.server
def test_http_body_over_one_megabyte_gets_413(sqlite_server):
    status, headers, body = server.request(
        "POST", sqlite_server.url(SESSIONS), body=b"{" + b" " * (2 * ONE_MB) + b"}"
    )
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.server
def test_http_chunked_body_over_one_megabyte_gets_413(sqlite_server):
    chunks = (b" " * 65536 for _ in range(40))  # 2.5 MB, no Content-Length
    status, _, body = server.request("POST", sqlite_server.url(SESSIONS), body=chunks)
    assert status == 413
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.server
def test_http_small_chunked_body_is_read(sqlite_server):
    payload = json.dumps({"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}).encode()
    status, _, body = server.request(
        "POST", sqlite_server.url(SESSIONS), body=iter([payload[:10], payload[10:]])
    )
    assert status == 201, body
    assert body["sessionId"]


# Half an hour into an hour of the epoch: the rate limiter's clock in the server below.
THROTTLE_NOW = 1_800_001_800.0


def app_with_a_still_throttle_clock():
    """Return the project's application with the rate limiter's clock standing at ``THROTTLE_NOW``.

    gunicorn calls this factory: the windows are aligned to the epoch, so with
    the wall clock a run near the top of the hour could see a window end.
    """
    from messaging_project.asgi import application

    ClientRateThrottle.timer = staticmethod(lambda: THROTTLE_NOW)
    return application


@pytest.mark.server
def test_http_rate_limit_is_shared_by_workers_through_redis():
    if not server.redis_reachable():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    env = {
        "DJANGO_SETTINGS_MODULE": "messaging_project.settings",
        "DATABASE_URL": server.scratch_sqlite(),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "CACHE_KEY_PREFIX": f"sa_hard_test_{uuid.uuid4().hex}",
        "SESSIONS_THROTTLE_RATE": "8/hour",
        "REDIS_TIMEOUT_MS": "5000",  # a busy machine must not trip the fail-open path
    }
    app = f"{__name__}:app_with_a_still_throttle_clock()"
    with server.GunicornServer(env=env, workers=3, app=app) as running:
        # New connection per request: the requests spread over the workers.
        statuses = [server.request("GET", running.url(UNKNOWN))[0] for _ in range(12)]
        status, headers, body = server.request("GET", running.url(UNKNOWN))
        health = server.request("GET", running.url(HEALTH))[0]
    assert statuses == [404] * 8 + [429] * 4
    assert health == 200
    assert status == 429
    assert body["error"]["code"] == "RATE_LIMITED"
    assert int(headers["retry-after"]) == 1800  # the rest of the frozen hour
    assert body["error"]["details"]["retryAfterSeconds"] == 1800


@pytest.fixture
def silent_cache(settings):
    """The default cache on a Redis address that accepts connections and never answers.

    Unlike a refused connection, each use costs the whole socket timeout.
    Returns the list of connections accepted so far.
    """
    accepted = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def accept_and_ignore():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept_and_ignore, daemon=True).start()
    settings.CACHES = redis_cache_at(listener.getsockname()[1], 0.3)
    yield accepted
    listener.close()
    for connection in accepted:
        connection.close()


@pytest.mark.django_db
def test_a_cache_that_never_answers_is_waited_for_once_by_every_user_of_it(
    api_client, client, throttled, silent_cache, operator, caplog
):
    """Rate limit and sign-in limit share one pause: one timeout, not one each."""
    throttled.SESSIONS_AUTH_FAILURE_RATE = "3/min"
    operator.is_superuser = True
    operator.save()
    statuses = [api_client.get(UNKNOWN).status_code for _ in range(3)]
    statuses += [
        api_client.get(SESSIONS, HTTP_AUTHORIZATION=basic("operator", "wrong")).status_code
        for _ in range(3)
    ]
    statuses.append(admin_sign_in(client, "operator-pass-123").status_code)
    statuses += [client.get("/admin/sessions_admin/session/").status_code for _ in range(3)]

    assert statuses == [404] * 3 + [401] * 3 + [302] + [200] * 3
    assert len(silent_cache) == 1, "the cache was tried again during its pause"
    assert [r.getMessage().split(":")[0] for r in caplog.records if "cache unavailable" in r.getMessage()] == [
        "Rate limiting suspended"
    ]
