"""A database that exists but is not migrated: 503 on every route, and health says why.

Against the real server on a real empty database, SQLite and PostgreSQL; then
the database is migrated under the running server, which answers at once.
"""

import re
import shutil
import uuid
from pathlib import Path

import pytest
import requests

from tests import server

pytestmark = pytest.mark.server

ADMIN_KEY = "not-migrated-admin-key-0123456789"
BASE = "/api/messaging/sessions"
KEY = {"X-API-KEY": ADMIN_KEY}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request):
    """The ``DATABASE_URL`` of a database that exists and holds no table."""
    if request.param == "sqlite":
        url = server.scratch_sqlite(migrate=False)
        yield url
        shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)
        return
    server_url = server.postgres_server_url()
    if server_url is None:
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://...")
    scratch = server.ScratchPostgres(server_url, "empty").create(migrate=False)
    yield scratch.url
    scratch.drop()


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    """The admin's collected static files: without them its pages are 500s in production mode."""
    root = tmp_path_factory.mktemp("static")
    result = server.manage(
        "collectstatic", "--noinput", env={"DJANGO_STATIC_ROOT": str(root)}, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def running(empty_database, static_root):
    env = {
        "DATABASE_URL": empty_database,
        "SESSIONS_ADMIN_API_KEY": ADMIN_KEY,
        "DJANGO_STATIC_ROOT": str(static_root),
    }
    with server.GunicornServer(env=env, workers=2) as running:
        running.database_url = empty_database
        yield running


def api_requests(session_id):
    body = {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
    return [
        ("GET", BASE, None),
        ("POST", BASE, body),
        ("GET", f"{BASE}/{session_id}", None),
        ("POST", f"{BASE}/{session_id}/heartbeat", None),
        ("POST", f"{BASE}/{session_id}/renew", None),
        ("PATCH", f"{BASE}/{session_id}/timeout", {"timeoutMinutes": 60}),
        ("DELETE", f"{BASE}/{session_id}", None),
    ]


def test_every_route_answers_503_until_the_database_is_migrated(running):
    status, _, body = server.request("GET", running.url(f"{BASE}/health"))
    assert status == 503, body
    assert body["status"] == "unhealthy" and body["database"] == "not migrated"
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "migrate" in body["error"]["message"]

    session_id = str(uuid.uuid4())
    for method, path, payload in api_requests(session_id):
        status, _, body = server.request(method, running.url(path), body=payload, headers=KEY)
        assert status == 503, (method, path, body)
        assert body["error"]["code"] == "SERVICE_UNAVAILABLE", (method, path, body)
        assert "not migrated" in body["error"]["message"], (method, path, body)

    # The admin: a sign-in, and a page behind a session cookie, both read the database.
    browser = requests.Session()
    login = browser.get(running.url("/admin/login/"), timeout=10)
    assert login.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
    response = browser.post(
        running.url("/admin/login/"),
        data={"username": "root", "password": "x" * 12, "csrfmiddlewaretoken": token},
        headers={"Referer": running.url("/admin/login/")},
        timeout=10,
    )
    assert response.status_code == 503 and "not migrated" in response.text
    browser.cookies.set("sessionid", "a" * 32)
    response = browser.get(running.url("/admin/sessions_admin/session/"), timeout=10)
    assert response.status_code == 503 and "not migrated" in response.text

    result = server.manage("migrate", "--noinput", env={"DATABASE_URL": running.database_url})
    assert result.returncode == 0, result.stderr

    status, _, body = server.request("GET", running.url(f"{BASE}/health"))
    assert status == 200 and body["database"] == "ok", body
    status, _, body = server.request("POST", running.url(BASE), body=api_requests("x")[1][2])
    assert status == 201, body
