"""Shared fixtures: API clients, keys, users, and backend detection."""

import os
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from rest_framework.test import APIClient

from sessions_admin import cache_guard, health
from sessions_admin.models import SessionCount

ADMIN_KEY = "test-admin-key-0123456789"
CLIENT_KEY = "test-client-key-0123456789"


def pytest_collection_modifyitems(config, items):
    on_postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def cache_in_service():
    """Each test starts with the cache in use, whatever failure an earlier test caused."""
    cache_guard.reset()
    yield
    cache_guard.reset()


@pytest.fixture(autouse=True)
def no_health_probe_in_flight():
    """Each test's health requests start their own probe, never one an earlier test left behind.

    A probe a test released may still be finishing when the next test begins (pytest-django runs
    the transactional tests last, so file order says nothing of what runs next); its answer or
    error belongs to that earlier test.
    """
    health._latest = None
    health._healthy = None
    yield
    health._latest = None
    health._healthy = None


_DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "live_server"}


@pytest.fixture(autouse=True)
def counts_start_empty(request):
    """Each test that uses the database starts with no session counts and no horizon.

    The counts table is left alone by ``flush`` (the triggers empty it with the
    sessions), and its horizon outlives a test that moved it. The tests' clocks
    jump between years; a service's clock never goes back by more than the
    horizon. Inside a test's transaction, this is rolled back with it.
    """
    uses_database = request.node.get_closest_marker("django_db") is not None or bool(
        _DATABASE_FIXTURES & set(request.fixturenames)
    )
    if uses_database:
        request.getfixturevalue("_django_db_helper")
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {SessionCount._meta.db_table}")
    yield


@pytest.fixture
def admin_key(settings):
    settings.SESSIONS_ADMIN_API_KEY = ADMIN_KEY
    return ADMIN_KEY


@pytest.fixture
def client_key(settings):
    """The client routes need ``CLIENT_KEY`` (the suite's settings open them otherwise)."""
    settings.SESSIONS_OPEN_CLIENT_ROUTES = False
    settings.SESSIONS_API_KEY = CLIENT_KEY
    return CLIENT_KEY


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def admin_api(api_client, admin_key):
    """An API client that sends the admin key."""
    api_client.credentials(HTTP_X_API_KEY=admin_key)
    return api_client


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True
    )


@pytest.fixture
def operator(django_user_model):
    """A staff user with the session permissions an operator has (not a superuser)."""
    user = django_user_model.objects.create_user(
        username="operator", password="operator-pass-123", is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="sessions_admin",
            codename__in=["view_session", "change_session", "delete_session"],
        )
    )
    return user


@pytest.fixture
def operator_client(client, operator):
    """The Django test client, signed in as ``operator``."""
    client.force_login(operator)
    return client


@pytest.fixture
def deleted_before_its_renewal(monkeypatch):
    """Make a renewal find the given session ids deleted, as if another operator was faster."""
    from sessions_admin import services
    from sessions_admin.models import Session

    doomed = set()
    renew_many = services.session_renew_many

    def delete_then_renew(*, session_ids):
        Session.objects.filter(pk__in=doomed).delete()
        return renew_many(session_ids=session_ids)

    monkeypatch.setattr(services, "session_renew_many", delete_then_renew)
    return doomed


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user(username="plain", password="plain-pass-123")


@pytest.fixture
def is_postgres(db):
    return connection.vendor == "postgresql"


class TtyStringIO(StringIO):
    """Captured output that says it is a terminal (commands show progress only there)."""

    def isatty(self):
        return True
