"""The session lifecycle over HTTP: health, create, read, heartbeat, renew, patch, delete."""

from datetime import timedelta

import pytest
from django.db import OperationalError, connections

from sessions_admin import policy
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
