import pytest

from tests.factories import SessionFactory

pytestmark = pytest.mark.django_db


def test_list_requires_credentials(api_client):
    response = api_client.get("/api/messaging/sessions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


def test_list_with_admin_key(admin_api):
    SessionFactory.create_batch(3)
    SessionFactory(expired=True)
    response = admin_api.get("/api/messaging/sessions", {"limit": 2})
    body = response.json()
    assert response.status_code == 200, body
    assert body["total"] == 3
    assert body["stats"] == {"totalSessions": 4, "activeSessions": 3, "expiredSessions": 1}
    assert len(body["sessions"]) == 2 and body["nextCursor"]
    second = admin_api.get("/api/messaging/sessions", {"limit": 2, "cursor": body["nextCursor"]}).json()
    assert len(second["sessions"]) == 1 and second["nextCursor"] is None


def test_unknown_route_envelope(api_client):
    response = api_client.get("/api/messaging/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
