"""Requests on every route of the project: an answer, never a server error."""

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from sessions_admin.models import Session
from tests.factories import SessionFactory
from tests.routes import route_templates, sample_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def sample_paths(django_user_model):
    """Every route, its parameters filled with ids of rows that exist."""
    ids = {
        "sessions_admin.session": SessionFactory().pk,
        "auth.user": django_user_model.objects.create_user("someone").pk,
        "auth.group": Group.objects.create(name="operators").pk,
    }
    values = {
        "app_label": "sessions_admin",
        "url": "no-such-page/",
        "content_type_id": str(ContentType.objects.get_for_model(Session).pk),
    }
    return [sample_path(template, ids=ids, values=values) for template in route_templates()]


def test_the_sweep_covers_the_api_the_schema_and_the_admin(sample_paths):
    for expected in ("/api/docs/", "/api/schema/", "/api/messaging/sessions/health", "/admin/"):
        assert expected in sample_paths
    assert len(sample_paths) > 30


@pytest.fixture(params=["anonymous", "superuser", "admin key"])
def caller(request, django_user_model, admin_key):
    client = Client(raise_request_exception=False)
    if request.param == "superuser":
        client.force_login(django_user_model.objects.create_superuser("root", password="x"))
    if request.param == "admin key":
        client.defaults["HTTP_X_API_KEY"] = admin_key
    return client


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD"])
def test_options_and_head_never_answer_a_server_error(caller, sample_paths, method):
    failures = []
    for path in sample_paths:
        response = caller.generic(method, path)
        if response.status_code >= 500:
            failures.append((path, response.status_code))
    assert failures == []


def test_options_on_the_docs_page_says_what_it_allows(api_client):
    response = api_client.options("/api/docs/")

    assert response.status_code == 200
    assert {"GET", "HEAD", "OPTIONS"} <= {m.strip() for m in response["Allow"].split(",")}
