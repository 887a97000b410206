"""The session lifecycle over HTTP: health, create, read, heartbeat, renew, patch, delete."""

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.db import OperationalError, connections

from sessions_admin import policy, pruning
from sessions_admin.models import Session, TimeoutConfig
from sessions_admin.pruning import CONFIG_PRUNED_ATTEMPTS
from tests.factories import SessionFactory, TimeoutConfigFactory

pytestmark = pytest.mark.django_db

BASE = "/api/messaging/sessions"


@pytest.fixture
def database_down(monkeypatch):
    """Make every query fail as it does when the database server is unreachable."""

    def unreachable(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed")

    monkeypatch.setattr(connections["default"], "ensure_connection", unreachable)


# -- health -------------------------------------------------------------------


def test_health_counts_active_and_expiring_soon(api_client):
    now = policy.clock()
    SessionFactory.create_batch(2, now=now)
    SessionFactory(now=now, near_expiration=True)
    SessionFactory(now=now, expired=True)
    response = api_client.get(f"{BASE}/health")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "healthy"
    assert body["database"] == "ok"
    assert body["activeSessions"] == 3
    assert body["expiringSoon"] == 1
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 24
    assert "success" not in body  # clients unwrap {success, data}; health is a bare object


def test_health_needs_no_key_even_when_keys_are_set(api_client, client_key, admin_key):
    assert api_client.get(f"{BASE}/health").status_code == 200
    api_client.credentials(HTTP_X_API_KEY="wrong")
    assert api_client.get(f"{BASE}/health").status_code == 200


def test_health_uses_one_query(api_client, django_assert_num_queries):
    SessionFactory()
    with django_assert_num_queries(1):
        assert api_client.get(f"{BASE}/health").status_code == 200


def test_health_reports_unreachable_database(api_client, database_down):
    response = api_client.get(f"{BASE}/health")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unhealthy"
    assert body["database"] == "unreachable"
    assert body["timestamp"].endswith("Z")
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"


# -- helpers ------------------------------------------------------------------

T0 = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
# The service reads the clock at whole milliseconds: what it stores is what it shows.
T0_READ = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
USER = "0b6e7f49-5c55-4a4c-9d0e-2f7c1c3f9a11"


def iso(value: datetime) -> str:
    return policy.format_datetime(value)


@pytest.fixture
def clock():
    """Freeze the clock at ``T0``; ``clock.shift(minutes=...)`` moves it."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def create(api_client, **body):
    body = {"agentId": AGENT, "userId": USER, **body}
    response = api_client.post(BASE, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def session_url(session_id, action: str = "") -> str:
    return f"{BASE}/{session_id}" + (f"/{action}" if action else "")


# -- create -------------------------------------------------------------------


def test_create_returns_full_session_info(api_client, clock):
    response = api_client.post(BASE, {"agentId": AGENT, "userId": USER}, format="json")
    body = response.json()
    assert response.status_code == 201, body
    assert response["Location"] == session_url(body["sessionId"])
    assert body == {
        "sessionId": body["sessionId"],
        "agentId": AGENT,
        "userId": USER,
        "createdAt": iso(T0),
        "lastActivity": iso(T0),
        "metadata": {},
        "expiresAt": iso(T0 + timedelta(minutes=30)),
        "timeoutConfig": {
            "timeoutMinutes": 30,
            "autoRenew": True,
            "maxDurationMinutes": 720,
            "warningThresholdMinutes": 5,
        },
        "renewalCount": 0,
        "timeRemaining": 30 * 60_000,
        "isNearExpiration": False,
    }
    assert uuid.UUID(body["sessionId"]).version == 4
    stored = Session.objects.get(pk=body["sessionId"])
    assert stored.expires_at == T0_READ + timedelta(minutes=30)
    assert stored.created_at == stored.last_activity == T0_READ


def test_the_last_millisecond_of_a_session_is_shown_as_one(api_client, clock):
    """Instants are stored as read, at whole milliseconds: active means timeRemaining ≥ 1."""
    created = create(api_client, timeoutConfig={"timeoutMinutes": 5})
    # 0.4 ms before the end (T0 is 0.456 ms past T0_READ).
    clock.shift(timedelta(minutes=5) - timedelta(microseconds=456 + 400))
    body = api_client.get(session_url(created["sessionId"])).json()
    assert body["expiresAt"] == created["expiresAt"] == iso(T0_READ + timedelta(minutes=5))
    assert (body["timeRemaining"], body["isNearExpiration"]) == (1, True)
    clock.shift(timedelta(microseconds=400))  # exactly at the end
    response = api_client.get(session_url(created["sessionId"]))
    assert response.status_code == 410
    assert response.json()["error"]["details"]["expiresAt"] == created["expiresAt"]


def test_create_with_metadata_and_timeout_config(api_client, clock):
    body = create(
        api_client,
        metadata={"platform": "web", "nested": {"tags": ["a", "é"]}, "n": 1.5},
        timeoutConfig={
            "timeoutMinutes": "60",  # numeric strings are accepted
            "autoRenew": False,
            "maxDurationMinutes": 60,
            "warningThresholdMinutes": 10,
        },
    )
    assert body["metadata"] == {"platform": "web", "nested": {"tags": ["a", "é"]}, "n": 1.5}
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 60,
        "autoRenew": False,
        "maxDurationMinutes": 60,
        "warningThresholdMinutes": 10,
    }
    # min(now + timeout, createdAt + maxDuration): both 60 minutes here.
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=60))


def test_create_partial_timeout_config_takes_defaults_for_the_rest(api_client, clock):
    body = create(api_client, timeoutConfig={"timeoutMinutes": 45})
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 45,
        "autoRenew": True,
        "maxDurationMinutes": 720,
        "warningThresholdMinutes": 5,
    }
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=45))


def test_creates_share_one_timeout_config_row(api_client, clock):
    create(api_client)
    create(api_client)
    create(api_client, timeoutConfig={"timeoutMinutes": 45})
    assert Session.objects.count() == 3
    assert TimeoutConfig.objects.count() == 2


# -- get ----------------------------------------------------------------------


def test_get_derives_fields_from_one_now_without_side_effects(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=26, milliseconds=1))
    before = Session.objects.values().get(pk=created["sessionId"])
    response = api_client.get(session_url(created["sessionId"]))
    body = response.json()
    assert response.status_code == 200, body
    remaining = 4 * 60_000 - 1
    assert body["timeRemaining"] == remaining
    assert body["isNearExpiration"] is True
    assert body["lastActivity"] == iso(T0)
    assert body["renewalCount"] == 0
    assert Session.objects.values().get(pk=created["sessionId"]) == before


def test_near_expiration_boundary_is_inclusive(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=25))  # exactly the 5-minute warning threshold left
    body = api_client.get(session_url(created["sessionId"])).json()
    assert body["timeRemaining"] == 5 * 60_000
    assert body["isNearExpiration"] is True
    clock.shift(timedelta(milliseconds=-1))
    body = api_client.get(session_url(created["sessionId"])).json()
    assert body["timeRemaining"] == 5 * 60_000 + 1
    assert body["isNearExpiration"] is False


def test_get_unknown_session_is_404(api_client):
    missing = uuid.uuid4()
    response = api_client.get(session_url(missing))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "SESSION_NOT_FOUND"
    assert error["details"]["sessionId"] == str(missing)


@pytest.mark.parametrize(
    "raw", ["not-a-uuid", "123", "3c90c3cc0d444b5088888dd25736052a", "%00", "%E2%98%83", "x" * 500]
)
def test_path_ids_that_are_not_uuids_are_session_not_found(api_client, raw):
    for method, action in [("get", ""), ("delete", ""), ("post", "heartbeat"), ("post", "renew")]:
        response = getattr(api_client, method)(session_url(raw, action))
        assert response.status_code == 404, (method, action, response.content)
        assert response.json()["error"]["code"] == "SESSION_NOT_FOUND"
    response = api_client.patch(session_url(raw, "timeout"), {"autoRenew": False}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SESSION_NOT_FOUND"


def test_uppercase_uuid_finds_the_session(api_client, clock):
    created = create(api_client)
    response = api_client.get(session_url(created["sessionId"].upper()))
    assert response.status_code == 200
    assert response.json()["sessionId"] == created["sessionId"]


def test_get_expired_session_is_410_every_time(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=30))  # expiresAt == now: expired (the one boundary rule)
    for _ in range(2):
        response = api_client.get(session_url(created["sessionId"]))
        assert response.status_code == 410
        error = response.json()["error"]
        assert error["code"] == "SESSION_EXPIRED"
        assert error["details"]["expiresAt"] == created["expiresAt"]
    assert Session.objects.filter(pk=created["sessionId"]).exists()


def test_get_one_millisecond_before_expiry_is_still_active(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=30, milliseconds=-1))
    body = api_client.get(session_url(created["sessionId"])).json()
    assert body["timeRemaining"] == 1


# -- heartbeat ----------------------------------------------------------------


def test_heartbeat_renews_when_it_extends(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=10))
    response = api_client.post(session_url(created["sessionId"], "heartbeat"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["lastActivity"] == iso(T0 + timedelta(minutes=10))
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=40))
    assert body["renewalCount"] == 1
    assert body["timeRemaining"] == 30 * 60_000
    assert body["createdAt"] == iso(T0)


def test_heartbeat_at_the_same_instant_does_not_count(api_client, clock):
    created = create(api_client)
    body = api_client.post(session_url(created["sessionId"], "heartbeat")).json()
    assert body["renewalCount"] == 0
    assert body["expiresAt"] == created["expiresAt"]


def test_heartbeat_without_auto_renew_only_records_activity(api_client, clock):
    created = create(api_client, timeoutConfig={"autoRenew": False})
    clock.shift(timedelta(minutes=10))
    body = api_client.post(session_url(created["sessionId"], "heartbeat")).json()
    assert body["lastActivity"] == iso(T0 + timedelta(minutes=10))
    assert body["expiresAt"] == created["expiresAt"]
    assert body["renewalCount"] == 0


def test_heartbeat_stops_at_the_max_duration_cap(api_client, clock):
    created = create(api_client, timeoutConfig={"timeoutMinutes": 30, "maxDurationMinutes": 45})
    url = session_url(created["sessionId"], "heartbeat")
    clock.shift(timedelta(minutes=20))
    body = api_client.post(url).json()
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=45))  # the cap, not now + 30
    assert body["renewalCount"] == 1
    clock.shift(timedelta(minutes=10))
    body = api_client.post(url).json()
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=45))
    assert body["renewalCount"] == 1  # could not extend: not a renewal
    assert body["lastActivity"] == iso(T0 + timedelta(minutes=30))


def test_heartbeat_on_expired_session_is_410_and_changes_nothing(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=31))
    response = api_client.post(session_url(created["sessionId"], "heartbeat"))
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "SESSION_EXPIRED"
    stored = Session.objects.get(pk=created["sessionId"])
    assert stored.last_activity == T0_READ and stored.renewal_count == 0


def test_heartbeat_unknown_session_is_404(api_client):
    response = api_client.post(session_url(uuid.uuid4(), "heartbeat"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SESSION_NOT_FOUND"


def test_heartbeat_ignores_its_body(api_client, clock):
    created = create(api_client)
    response = api_client.post(
        session_url(created["sessionId"], "heartbeat"), "not json", content_type="text/plain"
    )
    assert response.status_code == 200


# -- renew --------------------------------------------------------------------


def test_renew_extends_even_without_auto_renew(api_client, clock):
    created = create(api_client, timeoutConfig={"autoRenew": False})
    clock.shift(timedelta(minutes=5))
    response = api_client.post(session_url(created["sessionId"], "renew"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=35))
    assert body["lastActivity"] == iso(T0 + timedelta(minutes=5))
    assert body["renewalCount"] == 1
    assert body["timeoutConfig"]["autoRenew"] is False


def test_a_second_renewal_in_the_same_millisecond_is_not_refused(api_client, clock):
    """It cannot extend the expiry (the first just did), but the cap is far: 200, unchanged."""
    created = create(api_client)
    clock.shift(timedelta(minutes=1))
    first = api_client.post(session_url(created["sessionId"], "renew")).json()
    second = api_client.post(session_url(created["sessionId"], "renew"))
    assert second.status_code == 200, second.json()
    assert second.json() == first
    assert (first["renewalCount"], first["expiresAt"]) == (1, iso(T0_READ + timedelta(minutes=31)))
    assert Session.objects.get(pk=created["sessionId"]).renewal_count == 1


def test_renew_at_the_cap_is_422(api_client, clock):
    created = create(api_client, timeoutConfig={"timeoutMinutes": 30, "maxDurationMinutes": 30})
    clock.shift(timedelta(minutes=5))
    response = api_client.post(session_url(created["sessionId"], "renew"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "SESSION_RENEWAL_FAILED"
    assert error["details"]["sessionId"] == created["sessionId"]
    stored = Session.objects.get(pk=created["sessionId"])
    assert stored.renewal_count == 0 and stored.last_activity == T0_READ


def test_renew_expired_is_410_and_unknown_is_404(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(hours=1))
    assert api_client.post(session_url(created["sessionId"], "renew")).status_code == 410
    assert api_client.post(session_url(uuid.uuid4(), "renew")).status_code == 404


# -- patch timeout ------------------------------------------------------------


def test_patch_keeps_the_fields_it_is_not_given(api_client, clock):
    created = create(
        api_client,
        timeoutConfig={
            "timeoutMinutes": 20,
            "autoRenew": False,
            "maxDurationMinutes": 600,
            "warningThresholdMinutes": 7,
        },
    )
    clock.shift(timedelta(minutes=1))
    api_client.post(session_url(created["sessionId"], "renew"))
    clock.shift(timedelta(minutes=4))
    response = api_client.patch(
        session_url(created["sessionId"], "timeout"), {"timeoutMinutes": 90}, format="json"
    )
    body = response.json()
    assert response.status_code == 200, body
    assert body["timeoutConfig"] == {
        "timeoutMinutes": 90,
        "autoRenew": False,
        "maxDurationMinutes": 600,
        "warningThresholdMinutes": 7,
    }
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=5 + 90))
    assert body["renewalCount"] == 1  # unchanged by the patch
    assert body["lastActivity"] == iso(T0 + timedelta(minutes=1))  # unchanged by the patch


def test_patch_expiry_is_capped_by_the_new_max_duration(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=10))
    body = api_client.patch(
        session_url(created["sessionId"], "timeout"),
        {"timeoutMinutes": 60, "maxDurationMinutes": 60},
        format="json",
    ).json()
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=60))


def test_patch_can_shorten_the_expiry(api_client, clock):
    created = create(api_client, timeoutConfig={"timeoutMinutes": 120})
    clock.shift(timedelta(minutes=1))
    body = api_client.patch(
        session_url(created["sessionId"], "timeout"), {"timeoutMinutes": 10}, format="json"
    ).json()
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=11))


def test_patch_whose_new_cap_is_past_is_422(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=20))
    response = api_client.patch(
        session_url(created["sessionId"], "timeout"),
        {"timeoutMinutes": 5, "maxDurationMinutes": 10, "warningThresholdMinutes": 1},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "SESSION_RENEWAL_FAILED"
    assert Session.objects.get(pk=created["sessionId"]).timeout_config.timeout_minutes == 30


@pytest.mark.parametrize(("max_minutes", "status"), [(20, 422), (21, 200)])
def test_patch_whose_new_cap_is_exactly_now_is_422(api_client, clock, max_minutes, status):
    created = create(api_client)
    clock.shift(timedelta(minutes=20))
    response = api_client.patch(
        session_url(created["sessionId"], "timeout"),
        {"timeoutMinutes": 5, "maxDurationMinutes": max_minutes, "warningThresholdMinutes": 1},
        format="json",
    )
    assert response.status_code == status, response.json()
    if status == 200:  # min(now + 5 min, createdAt + 21 min)
        assert response.json()["expiresAt"] == iso(T0 + timedelta(minutes=21))


def test_patch_inconsistent_with_the_current_config_is_400(api_client, clock):
    created = create(api_client)  # timeout 30
    response = api_client.patch(
        session_url(created["sessionId"], "timeout"),
        {"warningThresholdMinutes": 31},
        format="json",
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "warningThresholdMinutes" in error["message"]
    assert error["details"]["field"] == "warningThresholdMinutes"
    assert error["details"]["fields"] == {"warningThresholdMinutes": [error["message"]]}


def test_patch_expired_is_410_and_unknown_is_404(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(hours=1))
    url = session_url(created["sessionId"], "timeout")
    assert api_client.patch(url, {"timeoutMinutes": 60}, format="json").status_code == 410
    url = session_url(uuid.uuid4(), "timeout")
    assert api_client.patch(url, {"timeoutMinutes": 60}, format="json").status_code == 404


# -- the boundary and the clock ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("get", "", None),
        ("post", "heartbeat", None),
        ("post", "renew", None),
        ("patch", "timeout", {"timeoutMinutes": 60}),
    ],
)
def test_a_session_expiring_exactly_now_is_410_and_unchanged(api_client, clock, method, action, body):
    created = create(api_client)
    before = Session.objects.values().get()
    clock.shift(timedelta(minutes=30))  # now == expiresAt: expired (SPEC: expires_at <= now)
    response = getattr(api_client, method)(session_url(created["sessionId"], action), body, format="json")
    assert response.status_code == 410, response.json()
    assert response.json()["error"]["details"]["expiresAt"] == created["expiresAt"]
    assert Session.objects.values().get() == before


@pytest.fixture
def clock_readings(monkeypatch):
    """A clock that moves one minute on every reading; the list of its readings."""
    readings = []

    def ticking_clock():
        readings.append(T0 + len(readings) * timedelta(minutes=1))
        return readings[-1]

    monkeypatch.setattr(policy, "clock", ticking_clock)
    return readings


def test_create_reads_the_clock_once(api_client, clock_readings):
    body = create(api_client)
    assert len(clock_readings) == 1
    assert body["createdAt"] == body["lastActivity"] == iso(T0)
    assert body["expiresAt"] == iso(T0 + timedelta(minutes=30))
    assert body["timeRemaining"] == 30 * 60_000


@pytest.mark.parametrize(
    ("method", "action", "body", "last_activity", "expires_in"),
    [
        ("get", "", None, "created", timedelta(minutes=30)),
        ("post", "heartbeat", None, "now", timedelta(minutes=30)),
        ("post", "renew", None, "now", timedelta(minutes=30)),
        ("patch", "timeout", {"timeoutMinutes": 45}, "created", timedelta(minutes=45)),
    ],
)
def test_each_request_reads_the_clock_once(
    api_client, clock_readings, method, action, body, last_activity, expires_in
):
    """Every field of the answer derives from one reading.

    Create reads T0, the request T0 + 1 min; a second reading (T0 + 2 min)
    would show in ``timeRemaining`` or in the stored instants.
    """
    created = create(api_client)
    response = getattr(api_client, method)(session_url(created["sessionId"], action), body, format="json")
    info = response.json()
    assert response.status_code == 200, info
    assert clock_readings == [T0, T0 + timedelta(minutes=1)]
    now = clock_readings[1]
    expected_expiry = T0 + expires_in if action == "" else now + expires_in
    assert info["expiresAt"] == iso(expected_expiry)
    assert info["timeRemaining"] == (expected_expiry - now) // timedelta(milliseconds=1)
    assert info["lastActivity"] == iso(T0 if last_activity == "created" else now)
    assert Session.objects.get(pk=created["sessionId"]).expires_at == expected_expiry


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "{expired}", None, 410),
        ("post", "{expired}/heartbeat", None, 410),
        ("post", "{capped}/renew", None, 422),
        ("patch", "{live}/timeout", {"warningThresholdMinutes": 100}, 400),
        ("get", "00000000-0000-4000-8000-000000000000", None, 404),
        ("get", "not-a-uuid", None, 404),
        ("get", "?limit=0", None, 400),
        ("post", "", {"agentId": "nope", "userId": USER}, 400),
    ],
    ids=["get expired", "heartbeat expired", "renew at the cap", "patch breaking a rule",
         "get unknown", "get a malformed id", "list with a bad limit", "create with a bad id"],
)
def test_an_error_reads_the_clock_once(admin_api, clock_readings, method, path, body, status):
    """The envelope's timestamp is the instant the request decided by, not a second reading."""
    sessions = {
        "expired": SessionFactory(now=T0, expired=True),
        "capped": SessionFactory(
            now=T0, timeout_config=TimeoutConfigFactory(timeout_minutes=30, max_duration_minutes=30)
        ),
        "live": SessionFactory(now=T0),
    }
    clock_readings.clear()
    url = BASE + ("" if not path or path.startswith("?") else "/") + path.format(
        **{name: session.pk for name, session in sessions.items()}
    )
    response = getattr(admin_api, method)(url, body, format="json")
    assert response.status_code == status, response.json()
    assert clock_readings == [T0]
    assert response.json()["error"]["timestamp"] == iso(T0)


def test_health_reads_the_clock_once(api_client, clock_readings):
    SessionFactory(now=T0, near_expiration=True)  # two minutes left at T0
    clock_readings.clear()
    body = api_client.get(f"{BASE}/health").json()
    assert clock_readings == [T0]
    assert body["timestamp"] == iso(T0)
    assert (body["activeSessions"], body["expiringSoon"]) == (1, 1)


# -- delete -------------------------------------------------------------------


def test_delete_then_get_is_404(api_client, clock):
    created = create(api_client)
    response = api_client.delete(session_url(created["sessionId"]))
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": f"Session {created['sessionId']} deleted successfully",
        "data": {"sessionId": created["sessionId"]},
    }
    assert not Session.objects.exists()
    assert api_client.get(session_url(created["sessionId"])).status_code == 404
    second = api_client.delete(session_url(created["sessionId"]))
    assert second.status_code == 404
    assert second.json()["error"]["code"] == "SESSION_NOT_FOUND"


def test_delete_works_on_expired_sessions(api_client, clock):
    created = create(api_client)
    clock.shift(timedelta(days=1))
    assert api_client.delete(session_url(created["sessionId"])).status_code == 200
    assert not Session.objects.exists()


def test_full_life_over_http(api_client, admin_key, clock):
    created = create(api_client)
    clock.shift(timedelta(minutes=10))
    api_client.post(session_url(created["sessionId"], "heartbeat"))
    clock.shift(timedelta(minutes=10))
    api_client.post(session_url(created["sessionId"], "renew"))
    listed = api_client.get(BASE, HTTP_X_API_KEY=admin_key).json()
    assert [s["sessionId"] for s in listed["sessions"]] == [created["sessionId"]]
    assert listed["sessions"][0]["renewalCount"] == 2
    assert listed["sessions"][0] == api_client.get(session_url(created["sessionId"])).json()
    assert api_client.delete(session_url(created["sessionId"])).status_code == 200
    assert api_client.get(BASE, HTTP_X_API_KEY=admin_key).json()["total"] == 0


# -- a prune racing a write ---------------------------------------------------


@pytest.fixture
def pruned_after_get_or_create(monkeypatch):
    """Prune unused configurations right after each ``get_or_create``, ``.times`` times at most.

    This is the window a concurrent ``prune_sessions`` can hit: the new row is
    not referenced yet, so the prune deletes it and the session's foreign key
    fails when it commits.
    """
    get_or_create = TimeoutConfig.for_timeout.__func__
    sabotage = SimpleNamespace(times=0, pruned=[])

    def for_timeout(model, timeout):
        config = get_or_create(model, timeout)
        if len(sabotage.pruned) < sabotage.times:
            sabotage.pruned.append(pruning.timeout_config_prune_unused())
        return config

    monkeypatch.setattr(TimeoutConfig, "for_timeout", classmethod(for_timeout))
    return sabotage


NEW_TIMEOUT = {"timeoutMinutes": 77, "maxDurationMinutes": 777}


@pytest.mark.django_db(transaction=True)
def test_create_retries_while_a_prune_removes_its_configuration(api_client, pruned_after_get_or_create):
    pruned_after_get_or_create.times = CONFIG_PRUNED_ATTEMPTS - 1
    body = create(api_client, timeoutConfig=NEW_TIMEOUT)
    assert pruned_after_get_or_create.pruned == [1] * (CONFIG_PRUNED_ATTEMPTS - 1)
    assert body["timeoutConfig"]["timeoutMinutes"] == 77
    assert Session.objects.get().timeout_config.max_duration_minutes == 777


@pytest.mark.django_db(transaction=True)
def test_create_that_loses_every_race_is_503_and_saves_nothing(api_client, pruned_after_get_or_create):
    pruned_after_get_or_create.times = CONFIG_PRUNED_ATTEMPTS
    response = api_client.post(
        BASE, {"agentId": AGENT, "userId": USER, "timeoutConfig": NEW_TIMEOUT}, format="json"
    )
    body = response.json()
    assert response.status_code == 503, body
    assert body["success"] is False
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "try again" in body["error"]["message"]
    assert body["error"]["details"] == {"attempts": CONFIG_PRUNED_ATTEMPTS}
    assert pruned_after_get_or_create.pruned == [1] * CONFIG_PRUNED_ATTEMPTS
    assert not Session.objects.exists()
    assert not TimeoutConfig.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_patch_that_loses_every_race_is_503_and_changes_nothing(api_client, pruned_after_get_or_create):
    created = create(api_client)
    before = Session.objects.values().get()
    pruned_after_get_or_create.times = CONFIG_PRUNED_ATTEMPTS
    response = api_client.patch(session_url(created["sessionId"], "timeout"), NEW_TIMEOUT, format="json")
    assert response.status_code == 503, response.json()
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert Session.objects.values().get() == before
    # The next attempt, with no prune in the way, goes through.
    pruned_after_get_or_create.times = 0
    response = api_client.patch(session_url(created["sessionId"], "timeout"), NEW_TIMEOUT, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["timeoutConfig"]["timeoutMinutes"] == 77

