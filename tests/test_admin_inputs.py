"""NUL in any admin input, on every admin route: an answer, never a server error.

PostgreSQL refuses NUL in text (psycopg raises ``DataError``), so a NUL that
reaches a query as a text value is a 500 there, and only there: the sweep
runs on both databases.
"""

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from sessions_admin.models import Session
from tests.factories import SessionFactory
from tests.routes import route_templates, sample_path

pytestmark = pytest.mark.django_db

NUL = "\x00"

# What each kind of admin page reads from its query string.
LIST_PARAMETERS = {
    "q": "x",
    "o": "1",
    "p": "1",
    "e": "1",
    "all": "",
    "_to_field": "id",
    "_popup": "1",
    "_changelist_filters": "q=x",
}
FILTER_PARAMETERS = {
    "/admin/sessions_admin/session/": {
        "status": "active",
        "auto_renew": "yes",
        "created_at__gte": "2026-01-01",
        "created_at__lt": "2027-01-01",
    },
    "/admin/auth/user/": {
        "is_staff__exact": "1",
        "is_superuser__exact": "1",
        "is_active__exact": "1",
        "groups__id__exact": "1",
    },
    "/admin/auth/group/": {},
}
PAGE_PARAMETERS = {
    "_changelist_filters": "q=x",
    "_to_field": "id",
    "_popup": "1",
    "p": "1",
    "next": "/admin/",
}
# The autocomplete of each relation whose admin has a search.
AUTOCOMPLETES = [
    {"app_label": "auth", "model_name": "user", "field_name": "groups", "term": "op", "page": "1"},
    {
        "app_label": "admin",
        "model_name": "logentry",
        "field_name": "user",
        "term": "ro",
        "page": "1",
    },
]


def session_permissions(*codenames):
    return Permission.objects.filter(
        content_type__app_label="sessions_admin", codename__in=codenames
    )


def variants(parameters: dict[str, str]):
    """``parameters`` with NUL as each value in turn, alone and after the valid value."""
    for name, value in parameters.items():
        for bad in (NUL, f"{value}{NUL}", f"{NUL}{value}"):
            yield {**parameters, name: bad}


@pytest.fixture
def rows(django_user_model):
    """A row of each registered model, and the superuser who drives the admin."""
    root = django_user_model.objects.create_superuser("root", password="root-pass-123")
    group = Group.objects.create(name="operators")
    group.permissions.set(session_permissions("view_session"))
    root.groups.add(group)
    return {
        "root": root,
        "ids": {
            "sessions_admin.session": SessionFactory().pk,
            "auth.user": root.pk,
            "auth.group": group.pk,
        },
    }


@pytest.fixture
def root_client(rows):
    client = Client(raise_request_exception=False)
    client.force_login(rows["root"])
    return client


def admin_paths(rows, values=None) -> list[str]:
    values = {
        "app_label": "sessions_admin",
        "url": "no-such-page/",
        "content_type_id": str(ContentType.objects.get_for_model(Session).pk),
        **(values or {}),
    }
    return [
        sample_path(template, ids=rows["ids"], values=values)
        for template in route_templates()
        if template.startswith("/admin/")
    ]


def assert_no_server_error(responses, client=None):
    failures = [
        (label, response.status_code)
        for label, response in responses
        if response.status_code >= 500
    ]
    assert failures == []
    if client is not None:  # and the sweep ran signed in throughout
        assert client.get("/admin/").status_code == 200


def test_nul_in_each_path_parameter(root_client, rows):
    """Object ids, content type ids, app labels and unknown pages holding NUL."""
    responses = []
    for bad in (NUL, f"1{NUL}", f"{rows['ids']['sessions_admin.session']}{NUL}"):
        paths = admin_paths(
            {**rows, "ids": dict.fromkeys(rows["ids"], bad)},
            {"app_label": bad, "url": bad, "content_type_id": bad},
        )
        for path in paths:
            responses.append((f"GET {path!r}", root_client.get(path)))
            if path != "/admin/logout/":
                responses.append((f"POST {path!r}", root_client.post(path, {"post": "yes"})))
    # The "view on site" shortcut with every model's content type: ids it cannot hold.
    for content_type in ContentType.objects.all():
        for bad in (NUL, "not-an-id"):
            path = f"/admin/r/{content_type.pk}/{bad}/"
            responses.append((f"GET {path!r}", root_client.get(path)))
    assert_no_server_error(responses, root_client)


def test_nul_in_each_query_parameter_of_every_page(root_client, rows):
    responses = []
    for path in admin_paths(rows):
        parameters = {**PAGE_PARAMETERS, **LIST_PARAMETERS, **FILTER_PARAMETERS.get(path, {})}
        for query in variants(parameters):
            responses.append((f"GET {path} {query}", root_client.get(path, query)))
    assert_no_server_error(responses, root_client)


@pytest.mark.parametrize("autocomplete", AUTOCOMPLETES, ids=lambda a: a["model_name"])
def test_nul_in_each_autocomplete_parameter(root_client, autocomplete):
    assert root_client.get("/admin/autocomplete/", autocomplete).status_code == 200
    responses = [
        (f"GET autocomplete {query}", root_client.get("/admin/autocomplete/", query))
        for query in variants(autocomplete)
    ]
    assert_no_server_error(responses, root_client)


def test_nul_in_each_field_of_every_form(root_client, rows):
    """Sign-in, password changes, the user and group forms, deletions, the session buttons."""
    user, group = rows["ids"]["auth.user"], rows["ids"]["auth.group"]
    session = rows["ids"]["sessions_admin.session"]
    permission = str(session_permissions("view_session").get().pk)
    user_form = {
        "username": "root",
        "first_name": "R",
        "last_name": "T",
        "email": "r@example.com",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "groups": str(group),
        "user_permissions": permission,
        "last_login_0": "2026-01-01",
        "last_login_1": "10:00:00",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "10:00:00",
    }
    forms = {
        f"/admin/auth/user/{user}/change/": user_form,
        "/admin/auth/user/add/": {
            "username": "new",
            "password1": "a-long-pass-123",
            "password2": "a-long-pass-123",
            "usable_password": "true",
        },
        f"/admin/auth/user/{user}/password/": {
            "password1": "a-long-pass-123",
            "password2": "a-long-pass-123",
            "usable_password": "true",
        },
        f"/admin/auth/group/{group}/change/": {"name": "operators", "permissions": permission},
        "/admin/auth/group/add/": {"name": "new", "permissions": permission},
        "/admin/password_change/": {
            "old_password": "root-pass-123",
            "new_password1": "a-long-pass-123",
            "new_password2": "a-long-pass-123",
        },
        f"/admin/auth/group/{group}/delete/": {"post": "yes"},
        f"/admin/sessions_admin/session/{session}/delete/": {"post": "yes"},
        f"/admin/sessions_admin/session/{session}/renew/": {"_changelist_filters": "q=x"},
        f"/admin/sessions_admin/session/{session}/expire/": {"_changelist_filters": "q=x"},
    }
    responses = []
    for path, form in forms.items():
        for data in variants(form):
            responses.append((f"POST {path} {data}", root_client.post(path, data)))
    assert_no_server_error(responses, root_client)


def test_nul_in_each_sign_in_field():
    client = Client(raise_request_exception=False)
    form = {"username": "root", "password": "root-pass-123", "next": "/admin/"}
    responses = [
        (f"POST login {data}", client.post("/admin/login/", data)) for data in variants(form)
    ]
    responses += [
        (f"GET login {query}", client.get("/admin/login/", query))
        for query in variants({"next": "/admin/"})
    ]
    assert_no_server_error(responses)


@pytest.mark.parametrize(
    ("changelist", "actions"),
    [
        (
            "/admin/sessions_admin/session/",
            ["renew_selected", "expire_selected", "delete_selected"],
        ),
        ("/admin/auth/user/", ["delete_selected"]),
        ("/admin/auth/group/", ["delete_selected"]),
    ],
)
def test_nul_in_each_action_field(root_client, rows, changelist, actions):
    model = {
        "/admin/sessions_admin/session/": "sessions_admin.session",
        "/admin/auth/user/": "auth.user",
        "/admin/auth/group/": "auth.group",
    }[changelist]
    responses = []
    for action in actions:
        form = {
            "action": action,
            "_selected_action": str(rows["ids"][model]),
            "index": "0",
            "select_across": "0",
            "q": "x",
        }
        for data in variants(form):
            responses.append((f"POST {changelist} {data}", root_client.post(changelist, data)))
    assert_no_server_error(responses, root_client)
