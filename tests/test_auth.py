"""Client and admin API keys, staff users, and the warning when client routes are open."""

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.checks import run_checks

from sessions_admin import auth
from sessions_admin.checks import client_routes_open
from sessions_admin.models import Session
from tests.factories import SessionFactory

pytestmark = pytest.mark.django_db

BASE = "/api/messaging/sessions"
VALID = {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
ROOT = Path(__file__).resolve().parent.parent


def client_requests(session_id):
    """One request per client route (everything but the admin list and health)."""
    return [
        ("post", BASE, VALID),
        ("get", f"{BASE}/{session_id}", None),
        ("post", f"{BASE}/{session_id}/heartbeat", None),
        ("post", f"{BASE}/{session_id}/renew", None),
        ("patch", f"{BASE}/{session_id}/timeout", {"timeoutMinutes": 60}),
        ("delete", f"{BASE}/{session_id}", None),
    ]


def send(api_client, method, path, body, **headers):
    return getattr(api_client, method)(path, body, format="json", **headers)


def test_client_routes_need_the_key_when_it_is_set(api_client, client_key):
    session = SessionFactory()
    for method, path, body in client_requests(session.pk):
        response = send(api_client, method, path, body)
        assert response.status_code == 401, (method, path)
        error = response.json()["error"]
        assert error["code"] == "UNAUTHORIZED"
        assert response["WWW-Authenticate"] == 'ApiKey header="X-API-KEY"'
        response = send(api_client, method, path, body, HTTP_X_API_KEY="wrong-key")
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["message"] == "Invalid API key"
    assert Session.objects.get(pk=session.pk).renewal_count == 0
    assert Session.objects.count() == 1


def test_client_key_opens_every_client_route(api_client, client_key):
    session = SessionFactory()
    statuses = [
        send(api_client, method, path, body, HTTP_X_API_KEY=client_key).status_code
        for method, path, body in client_requests(session.pk)
    ]
    assert statuses == [201, 200, 200, 200, 200, 200]


def test_admin_key_opens_client_routes_too(api_client, client_key, admin_key):
    session = SessionFactory()
    statuses = [
        send(api_client, method, path, body, HTTP_X_API_KEY=admin_key).status_code
        for method, path, body in client_requests(session.pk)
    ]
    assert statuses == [201, 200, 200, 200, 200, 200]


def test_client_routes_are_open_only_when_a_setting_says_so(api_client, settings):
    settings.SESSIONS_OPEN_CLIENT_ROUTES = True
    settings.SESSIONS_API_KEY = ""
    session = SessionFactory()
    statuses = [
        send(api_client, method, path, body).status_code
        for method, path, body in client_requests(session.pk)
    ]
    assert statuses == [201, 200, 200, 200, 200, 200]


def test_health_never_needs_a_key(api_client, client_key, admin_key):
    assert api_client.get(f"{BASE}/health").status_code == 200
    assert api_client.get(f"{BASE}/health", HTTP_X_API_KEY="wrong").status_code == 200
    assert (
        api_client.get(f"{BASE}/health", HTTP_AUTHORIZATION="Basic !!!not-base64").status_code
        == 200
    )


def test_client_key_never_opens_the_admin_list(api_client, client_key, admin_key):
    response = api_client.get(BASE, HTTP_X_API_KEY=client_key)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


def test_admin_list_without_credentials_is_401(api_client, client_key, admin_key):
    response = api_client.get(BASE)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    response = api_client.get(BASE, HTTP_X_API_KEY="wrong")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid API key"


def test_a_wrong_key_is_named_even_for_a_signed_in_user(api_client, plain_user, admin_key):
    """A user who is no operator and sends a key that matches nothing hears about the key."""
    api_client.force_login(plain_user)
    response = api_client.get(BASE, HTTP_X_API_KEY="wrong")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid API key"


def test_admin_list_with_the_admin_key(api_client, admin_key):
    assert api_client.get(BASE, HTTP_X_API_KEY=admin_key).status_code == 200


def test_empty_keys_never_match(api_client, settings):
    settings.SESSIONS_ADMIN_API_KEY = ""
    settings.SESSIONS_API_KEY = ""
    response = api_client.get(BASE, HTTP_X_API_KEY="")
    # An empty key authenticates no one: the caller is anonymous, so 401 (SPEC §3).
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


def basic(username, password):
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def test_an_operator_opens_the_admin_list(api_client, operator):
    assert api_client.get(BASE, **basic("operator", "operator-pass-123")).status_code == 200
    api_client.force_login(operator)
    assert api_client.get(BASE).status_code == 200


def test_a_staff_user_without_permissions_cannot_list(api_client, staff_user):
    """Being staff is not enough: the list needs view_session, as the admin's list does."""
    response = api_client.get(BASE, **basic("operator", "operator-pass-123"))

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "FORBIDDEN"
    assert "'sessions_admin.view_session'" in error["message"]
    api_client.force_login(staff_user)
    assert api_client.get(BASE).status_code == 403


def staff_holding(django_user_model, *codenames, **flags):
    """User ``holder`` (staff unless ``is_staff=False``) holding just these session permissions."""
    user = django_user_model.objects.create_user(
        username="holder", password="holder-pass-123", **{"is_staff": True, **flags}
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="sessions_admin", codename__in=codenames)
    )
    return user


# Each route under /sessions, with the permission a staff user needs there.
ROUTE_PERMISSIONS = [
    ("get", "{base}", None, "view_session"),
    ("head", "{base}", None, "view_session"),
    ("get", "{base}/{id}", None, "view_session"),
    ("post", "{base}/{id}/heartbeat", None, "change_session"),
    ("post", "{base}/{id}/renew", None, "change_session"),
    ("patch", "{base}/{id}/timeout", {"timeoutMinutes": 60}, "change_session"),
    ("delete", "{base}/{id}", None, "delete_session"),
    ("post", "{base}", VALID, "add_session"),
]
SESSION_CODENAMES = ["view_session", "add_session", "change_session", "delete_session"]


@pytest.mark.parametrize("held", SESSION_CODENAMES)
@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTE_PERMISSIONS)
def test_staff_users_need_the_model_permission_of_the_operation(
    api_client, client_key, django_user_model, method, path, body, needed, held
):
    """As in the admin: view to read, change to renew or patch, delete to delete."""
    session = SessionFactory()
    before = Session.objects.get(pk=session.pk)
    staff_holding(django_user_model, held)
    url = path.format(base=BASE, id=session.pk)

    response = send(api_client, method, url, body, **basic("holder", "holder-pass-123"))

    if held == needed:
        assert response.status_code in (200, 201), response.content
        return
    assert response.status_code == 403
    if method != "head":
        error = response.json()["error"]
        assert error["code"] == "FORBIDDEN"
        assert f"'sessions_admin.{needed}'" in error["message"]
    after = Session.objects.filter(pk=session.pk).first()
    assert after is not None and after.expires_at == before.expires_at
    assert after.timeout_config_id == before.timeout_config_id
    assert Session.objects.count() == 1


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTE_PERMISSIONS)
def test_a_permission_held_through_a_group_counts(
    api_client, client_key, django_user_model, method, path, body, needed
):
    session = SessionFactory()
    group = Group.objects.create(name="operators")
    group.permissions.set(
        Permission.objects.filter(content_type__app_label="sessions_admin", codename=needed)
    )
    staff_holding(django_user_model).groups.add(group)

    response = send(
        api_client, method, path.format(base=BASE, id=session.pk), body,
        **basic("holder", "holder-pass-123"),
    )

    assert response.status_code in (200, 201), response.content


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTE_PERMISSIONS)
def test_superusers_hold_every_permission(
    api_client, client_key, django_user_model, method, path, body, needed
):
    session = SessionFactory()
    staff_holding(django_user_model, is_superuser=True)

    response = send(
        api_client, method, path.format(base=BASE, id=session.pk), body,
        **basic("holder", "holder-pass-123"),
    )

    assert response.status_code in (200, 201), response.content


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTE_PERMISSIONS)
def test_permissions_without_staff_status_open_nothing(
    api_client, client_key, django_user_model, method, path, body, needed
):
    session = SessionFactory()
    staff_holding(django_user_model, *SESSION_CODENAMES, is_staff=False)

    response = send(
        api_client, method, path.format(base=BASE, id=session.pk), body,
        **basic("holder", "holder-pass-123"),
    )

    assert response.status_code == 403


def test_non_staff_user_is_403_on_the_admin_list(api_client, plain_user):
    response = api_client.get(BASE, **basic("plain", "plain-pass-123"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


def test_wrong_password_is_401(api_client, staff_user):
    response = api_client.get(BASE, **basic("operator", "wrong"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


def test_staff_users_pass_client_routes_only_with_the_permission(
    api_client, client_key, staff_user, django_user_model
):
    response = api_client.post(BASE, VALID, format="json", **basic("operator", "operator-pass-123"))
    assert response.status_code == 403
    staff_holding(django_user_model, "add_session")
    response = api_client.post(BASE, VALID, format="json", **basic("holder", "holder-pass-123"))
    assert response.status_code == 201


def test_keys_are_compared_in_constant_time(api_client, client_key, admin_key, monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    api_client.get(f"{BASE}/{uuid.uuid4()}", HTTP_X_API_KEY=client_key)
    assert (client_key.encode(), admin_key.encode()) in calls
    assert (client_key.encode(), client_key.encode()) in calls


def test_without_any_key_the_client_routes_are_closed(api_client, settings):
    """Secure by default: no client key and no SESSIONS_OPEN_CLIENT_ROUTES is no way in."""
    settings.SESSIONS_OPEN_CLIENT_ROUTES = False
    settings.SESSIONS_API_KEY = ""
    session = SessionFactory()
    for method, path, body in client_requests(session.pk):
        response = send(api_client, method, path, body)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert Session.objects.get(pk=session.pk).renewal_count == 0
    assert Session.objects.count() == 1


def test_without_a_client_key_the_admin_key_still_opens_the_client_routes(
    api_client, settings, admin_key
):
    settings.SESSIONS_OPEN_CLIENT_ROUTES = False
    settings.SESSIONS_API_KEY = ""
    session = SessionFactory()
    statuses = [
        send(api_client, method, path, body, HTTP_X_API_KEY=admin_key).status_code
        for method, path, body in client_requests(session.pk)
    ]
    assert statuses == [201, 200, 200, 200, 200, 200]


def test_system_check_warns_when_client_routes_are_open(settings):
    settings.SESSIONS_OPEN_CLIENT_ROUTES = True
    settings.SESSIONS_API_KEY = ""
    warnings = client_routes_open(None)
    assert [w.id for w in warnings] == ["sessions_admin.W001"]
    assert "SESSIONS_OPEN_CLIENT_ROUTES" in warnings[0].msg
    assert "sessions_admin.W001" in [m.id for m in run_checks()]


@pytest.mark.parametrize("client_key_value", ["some-key", ""])
def test_no_warning_unless_the_client_routes_are_open(settings, client_key_value):
    settings.SESSIONS_OPEN_CLIENT_ROUTES = False
    settings.SESSIONS_API_KEY = client_key_value
    assert client_routes_open(None) == []
    assert "sessions_admin.W001" not in [m.id for m in run_checks()]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SESSIONS_API_KEY": "primary"}, "primary"),
        ({"ELIZA_SERVER_AUTH_TOKEN": "alias"}, "alias"),
        ({"SESSIONS_API_KEY": "same", "ELIZA_SERVER_AUTH_TOKEN": "same"}, "same"),
        ({}, ""),
    ],
)
def test_client_key_setting_and_its_alias(env, expected):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SESSIONS_API_KEY", "ELIZA_SERVER_AUTH_TOKEN", "DJANGO_SETTINGS_MODULE"}
    }
    # The suite's settings open the client routes, which a client key contradicts.
    clean["SESSIONS_OPEN_CLIENT_ROUTES"] = "false" if expected else "true"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; print(repr(settings.SESSIONS_API_KEY))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "messaging_project.settings_test"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(expected)


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["abcdefgh\x00ijklmnop", "ABCDEFGHIJKLMNOP", "abc/../defghijk"])
def test_a_session_cookie_django_never_issued_is_an_empty_session(client, staff_user, key):
    # A NUL reached PostgreSQL as a query parameter and became a 500.
    client.cookies["sessionid"] = key

    assert client.get("/api/messaging/sessions").status_code == 401
    assert client.get("/admin/").status_code == 302  # to the sign-in page


@pytest.mark.django_db
def test_issued_session_keys_still_sign_in(client, operator):
    client.force_login(operator)

    assert client.get("/api/messaging/sessions").status_code == 200
