"""Errors quote a little of what they refuse: every error answer stays a few KB, whatever came."""

import json

import pytest

from sessions_admin.errors import error_body
from tests.factories import SessionFactory

pytestmark = pytest.mark.django_db

BASE = "/api/messaging/sessions"
VALID = {
    "agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
    "userId": "0b6e7f49-5c55-4a4c-9d0e-2f7c1c3f9a11",
}
# "A few KB": what any error answer may weigh.
ERROR_MAX_BYTES = 4096
LONG = 4000  # about what fits in a request line (gunicorn refuses more than 4,094 bytes)


def small_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert len(response.content) <= ERROR_MAX_BYTES, len(response.content)
    return json.loads(response.content)["error"]


def post_raw(api_client, path, raw: bytes, method="POST", **extra):
    return api_client.generic(method, path, raw, content_type="application/json", **extra)


@pytest.fixture
def session_id(db):
    return SessionFactory().pk


def test_a_megabyte_of_unknown_keys_names_five_and_counts_the_rest(api_client):
    body = {**VALID, **{f"{index:x}": 0 for index in range(107_000)}}
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) < 1024 * 1024

    error = small_error(post_raw(api_client, BASE, raw), 400)

    assert error["message"] == "Unknown field '0'"
    assert error["details"]["fields"] == {
        "0": ["Unknown field '0'"],
        "1": ["Unknown field '1'"],
        "2": ["Unknown field '2'"],
        "3": ["Unknown field '3'"],
        "4": ["Unknown field '4'"],
        "body": ["106,995 more unknown fields"],
    }


@pytest.mark.parametrize(
    "character", ["x", "é", "😀", "\\udfff"], ids=["ascii", "latin", "emoji", "surrogate"]
)
@pytest.mark.parametrize("where", ["create", "create.timeoutConfig", "patch"])
def test_a_huge_unknown_key_is_cut_short(api_client, session_id, where, character):
    # JSON text: the surrogate is sent as its escape, which only JSON can carry.
    member = '"' + character * (200_000 if len(character) == 1 else 100_000) + '": 1'
    known = json.dumps(VALID)[1:-1]
    if where == "create":
        response = post_raw(api_client, BASE, f"{{{known}, {member}}}".encode())
    elif where == "create.timeoutConfig":
        raw = f'{{{known}, "timeoutConfig": {{{member}}}}}'.encode()
        response = post_raw(api_client, BASE, raw)
    else:
        raw = f"{{{member}}}".encode()
        response = post_raw(api_client, f"{BASE}/{session_id}/timeout", raw, method="PATCH")

    error = small_error(response, 400)

    (name,) = error["details"]["fields"]
    assert name.endswith("…") and len(name) < 100, name
    assert error["message"].startswith("Unknown field '") and error["message"].endswith("…'")


def test_unknown_keys_of_a_nested_object_are_counted_where_they_are(api_client):
    config = {f"k{index}": 1 for index in range(50)}
    response = post_raw(api_client, BASE, json.dumps({**VALID, "timeoutConfig": config}).encode())

    error = small_error(response, 400)

    fields = error["details"]["fields"]
    assert fields["timeoutConfig"] == ["45 more unknown fields"]
    assert fields["timeoutConfig.k0"] == ["Unknown field 'timeoutConfig.k0'"]
    assert len(fields) == 6


@pytest.mark.parametrize(
    "query",
    [
        "&".join(f"p{index}=" for index in range(1000)),  # many unknown names
        "q" * LONG + "=1",  # a long unknown name
        "status=" + "s" * LONG,  # a value echoed by the choice's message
        "ordering=" + "o" * LONG,
        "autoRenew=" + "a" * LONG,
        "cursor=" + "c" * LONG,
        "limit=" + "9" * LONG,
        "agentId=" + "g" * LONG,
        "status=a&status=" + "b" * LONG,
    ],
    ids=[
        "many",
        "long name",
        "status",
        "ordering",
        "boolean",
        "cursor",
        "limit",
        "uuid",
        "repeated",
    ],
)
def test_query_parameter_errors_stay_small(admin_api, query):
    error = small_error(admin_api.get(f"{BASE}?{query}"), 400)

    assert error["code"] == "VALIDATION_ERROR"


def test_many_unknown_query_parameters_name_five_and_count_the_rest(admin_api):
    error = small_error(admin_api.get(f"{BASE}?" + "&".join(f"p{i}=" for i in range(1000))), 400)

    assert list(error["details"]["fields"]) == ["p0", "p1", "p2", "p3", "p4", "query"]
    assert error["details"]["fields"]["query"] == ["995 more unknown query parameters"]


@pytest.mark.parametrize(
    "path",
    [f"{BASE}/{'z' * LONG}", f"{BASE}/{'z' * LONG}/heartbeat", f"/api/{'r' * LONG}"],
    ids=["session id", "session id, heartbeat", "unknown route"],
)
def test_path_errors_stay_small(api_client, path):
    method = "post" if path.endswith("heartbeat") else "get"

    error = small_error(getattr(api_client, method)(path), 404)

    assert error["code"] in ("SESSION_NOT_FOUND", "NOT_FOUND")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content_type": "application/json; charset=" + "c" * 8000}, 415),
        ({"content_type": "text/" + "p" * 8000}, 415),
        ({"content_type": "application/json", "HTTP_CONTENT_ENCODING": "g" * 8000}, 415),
        ({"content_type": "application/json", "CONTENT_LENGTH": "1" * 8000}, 400),
    ],
    ids=["charset", "media type", "content coding", "content length"],
)
def test_header_errors_stay_small(api_client, headers, status):
    response = api_client.generic("POST", BASE, json.dumps(VALID), **headers)

    small_error(response, status)


def test_a_long_unknown_method_stays_small(api_client):
    small_error(api_client.generic("X" * LONG, BASE), 405)


def test_any_envelope_is_cut_to_size():
    """The last guard: whatever an error was given, its envelope quotes a little of each part."""
    body = error_body(
        "VALIDATION_ERROR",
        "m" * 100_000,
        {"fields": {f"{'k' * 10_000}{index}": ["v" * 10_000] * 100 for index in range(1000)}},
    )

    assert len(json.dumps(body, ensure_ascii=False).encode()) <= 6 * 1024
    assert body["error"]["message"].endswith("…")
