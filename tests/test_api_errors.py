"""Validation that rejects (never clamps) and one error envelope for every error under /api/."""

import gzip
import json
import re
import uuid

import pytest
from django.db import DatabaseError, OperationalError, connections
from rest_framework.exceptions import Throttled

from sessions_admin.errors import api_exception_handler
from sessions_admin.models import Session
from tests.factories import SessionFactory

pytestmark = pytest.mark.django_db

BASE = "/api/messaging/sessions"
AGENT = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
USER = "0b6e7f49-5c55-4a4c-9d0e-2f7c1c3f9a11"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def assert_envelope(response, status: int, code: str) -> dict:
    """Assert the response is the JSON error envelope; return its ``error`` object."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False
    error = body["error"]
    assert set(error) == {"code", "message", "details", "timestamp"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert TIMESTAMP.fullmatch(error["timestamp"]), error["timestamp"]
    return error


def post_json(api_client, path, body, **extra):
    return api_client.generic(
        "POST",
        path,
        json.dumps(body) if not isinstance(body, bytes) else body,
        content_type=extra.pop("content_type", "application/json"),
        **extra,
    )


@pytest.fixture
def session(db):
    return SessionFactory()


# -- create validation --------------------------------------------------------

VALID = {"agentId": AGENT, "userId": USER}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"userId": USER}, "agentId", "Field 'agentId' is required"),
        ({"agentId": AGENT}, "userId", "Field 'userId' is required"),
        ({**VALID, "agentId": 123}, "agentId", "Field 'agentId' must be a string"),
        ({**VALID, "agentId": None}, "agentId", "Field 'agentId' must be a string"),
        ({**VALID, "agentId": [AGENT]}, "agentId", "Field 'agentId' must be a string"),
        ({**VALID, "agentId": "not-a-uuid"}, "agentId", "Invalid UUID format for field 'agentId'"),
        ({**VALID, "agentId": ""}, "agentId", "Invalid UUID format for field 'agentId'"),
        (
            {**VALID, "userId": AGENT.replace("-", "")},
            "userId",
            "Invalid UUID format for field 'userId'",
        ),
        ({**VALID, "userId": f" {USER}"}, "userId", "Invalid UUID format for field 'userId'"),
        ({**VALID, "userId": "{" + USER + "}"}, "userId", "Invalid UUID format for field 'userId'"),
        ({**VALID, "metadata": []}, "metadata", "Field 'metadata' must be a JSON object"),
        ({**VALID, "metadata": "x"}, "metadata", "Field 'metadata' must be a JSON object"),
        ({**VALID, "metadata": None}, "metadata", "Field 'metadata' must be a JSON object"),
        ({**VALID, "metadata": 5}, "metadata", "Field 'metadata' must be a JSON object"),
        ({**VALID, "metadata": {"k": "x" * 10_240}}, "metadata", "the limit is 10240 bytes"),
        ({**VALID, "metadata": {"k": "\x00"}}, "metadata", "NUL"),
        ({**VALID, "metadata": {"\x00": 1}}, "metadata", "NUL"),
        (
            {**VALID, "timeoutConfig": []},
            "timeoutConfig",
            "Field 'timeoutConfig' must be a JSON object",
        ),
        (
            {**VALID, "timeoutConfig": None},
            "timeoutConfig",
            "Field 'timeoutConfig' must be a JSON object",
        ),
        (
            {**VALID, "timeoutConfig": "30"},
            "timeoutConfig",
            "Field 'timeoutConfig' must be a JSON object",
        ),
        ({**VALID, "unexpected": 1}, "unexpected", "Unknown field 'unexpected'"),
        (
            {**VALID, "timeoutConfig": {"timeout": 30}},
            "timeoutConfig.timeout",
            "Unknown field 'timeoutConfig.timeout'",
        ),
    ],
)
def test_create_rejects_invalid_fields(api_client, body, field, message):
    error = assert_envelope(post_json(api_client, BASE, body), 400, "VALIDATION_ERROR")
    assert f"'{field}'" in error["message"], error
    assert message in error["message"], error
    assert field in error["details"]["fields"], error
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeoutMinutes", 60.5),
        ("timeoutMinutes", "60.5"),
        ("timeoutMinutes", "60.0"),
        ("timeoutMinutes", "1e2"),
        ("timeoutMinutes", " 60"),
        ("timeoutMinutes", ""),
        ("timeoutMinutes", "sixty"),
        ("timeoutMinutes", True),
        ("timeoutMinutes", None),
        ("timeoutMinutes", [60]),
        ("timeoutMinutes", {"value": 60}),
        ("timeoutMinutes", 4),
        ("timeoutMinutes", "4"),
        ("timeoutMinutes", 1441),
        ("timeoutMinutes", -30),
        ("timeoutMinutes", 0),
        ("timeoutMinutes", 10**30),
        ("timeoutMinutes", "9" * 5000),
        ("maxDurationMinutes", 20161),
        ("maxDurationMinutes", 29),  # below the default timeout of 30
        ("maxDurationMinutes", False),
        ("warningThresholdMinutes", 0),
        ("warningThresholdMinutes", 31),  # above the default timeout of 30
        ("warningThresholdMinutes", 2.5),
        ("warningThresholdMinutes", True),  # 1 would be in range: a boolean is still refused
        ("autoRenew", "true"),
        ("autoRenew", 1),
        ("autoRenew", 0),
        ("autoRenew", None),
        ("autoRenew", "yes"),
    ],
)
def test_create_rejects_bad_timeout_values_without_clamping(api_client, name, value):
    body = {**VALID, "timeoutConfig": {name: value}}
    error = assert_envelope(post_json(api_client, BASE, body), 400, "VALIDATION_ERROR")
    assert f"'timeoutConfig.{name}'" in error["message"], error
    assert f"timeoutConfig.{name}" in error["details"]["fields"]
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"timeoutMinutes": 60, "maxDurationMinutes": 59}, "maxDurationMinutes"),
        ({"timeoutMinutes": 10, "warningThresholdMinutes": 11}, "warningThresholdMinutes"),
        # The default maxDuration (720) is below this timeout: rejected, never raised silently.
        ({"timeoutMinutes": 1000}, "maxDurationMinutes"),
    ],
)
def test_create_rejects_inconsistent_timeout_config(api_client, config, field):
    body = {**VALID, "timeoutConfig": config}
    error = assert_envelope(post_json(api_client, BASE, body), 400, "VALIDATION_ERROR")
    assert error["message"].startswith(f"Invalid value for field 'timeoutConfig.{field}'"), error
    assert not Session.objects.exists()


def test_default_that_conflicts_is_explained(api_client):
    body = {**VALID, "timeoutConfig": {"timeoutMinutes": 1000}}
    error = assert_envelope(post_json(api_client, BASE, body), 400, "VALIDATION_ERROR")
    assert "not given, so the default 720 applies" in error["message"]


@pytest.mark.parametrize(
    ("value", "stored"), [(60, 60), ("60", 60), (60.0, 60), ("0060", 60), (1440, 1440), (5, 5)]
)
def test_create_accepts_whole_minutes_in_range(api_client, value, stored):
    body = {**VALID, "timeoutConfig": {"timeoutMinutes": value, "maxDurationMinutes": 1440}}
    response = post_json(api_client, BASE, body)
    assert response.status_code == 201, response.json()
    assert response.json()["timeoutConfig"]["timeoutMinutes"] == stored


def test_metadata_limit_counts_utf8_bytes_and_is_inclusive(api_client, settings):
    overhead = len(b'{"k":""}')
    exact = {"k": "x" * (settings.SESSIONS_METADATA_MAX_BYTES - overhead)}
    response = post_json(api_client, BASE, {**VALID, "metadata": exact})
    assert response.status_code == 201, response.json()
    one_byte_over = {"k": "x" * (settings.SESSIONS_METADATA_MAX_BYTES - overhead + 1)}
    over_by_one = post_json(api_client, BASE, {**VALID, "metadata": one_byte_over})
    assert_envelope(over_by_one, 400, "VALIDATION_ERROR")
    # "é" is two bytes in UTF-8: one character fewer than the limit still goes over.
    over = {"k": "é" * ((settings.SESSIONS_METADATA_MAX_BYTES - overhead) // 2 + 1)}
    error = assert_envelope(
        post_json(api_client, BASE, {**VALID, "metadata": over}), 400, "VALIDATION_ERROR"
    )
    assert "'metadata'" in error["message"]


def test_metadata_nested_too_deeply_is_rejected(api_client):
    deep = {}
    node = deep
    for _ in range(40):
        node["k"] = {}
        node = node["k"]
    error = assert_envelope(
        post_json(api_client, BASE, {**VALID, "metadata": deep}), 400, "VALIDATION_ERROR"
    )
    assert "nested" in error["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"agentId": "%s", "userId": "%s", "metadata": {"big": 1e999}}',
        b'{"agentId": "%s", "userId": "%s", "metadata": {"s": "\\ud800"}}',
        b'{"agentId": "%s", "userId": "%s", "metadata": {"s": "\\u0000"}}',
    ],
)
def test_metadata_values_no_database_can_store_are_rejected(api_client, raw):
    body = raw % (AGENT.encode(), USER.encode())
    error = assert_envelope(post_json(api_client, BASE, body), 400, "VALIDATION_ERROR")
    assert "'metadata'" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "raw", "field"),
    [
        ("POST", BASE, b'{"agentId": "%s", "userId": "%s", "\\ud800": 1}', "\\ud800"),
        (
            "POST",
            BASE,
            b'{"agentId": "%s", "userId": "%s", "timeoutConfig": {"\\udfff": 1}}',
            "timeoutConfig.\\udfff",
        ),
        ("PATCH", "timeout", b'{"\\ud800x": 60}', "\\ud800x"),
    ],
)
def test_an_unknown_key_that_is_a_lone_surrogate_is_quoted_escaped(api_client, method, path, raw, field):
    if path == "timeout":
        session = SessionFactory()
        path, body = f"{BASE}/{session.pk}/timeout", raw
    else:
        body = raw % (AGENT.encode(), USER.encode())
    response = api_client.generic(method, path, body, content_type="application/json")
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["message"] == f"Unknown field '{field}'"
    assert Session.objects.count() == (1 if method == "PATCH" else 0)


def test_metadata_numbers_count_as_written_out_in_full(api_client):
    """PostgreSQL's jsonb returns 1e308 as 309 digits: a 300-byte body must not become 12 KB."""
    metadata = {"n": [1e308] * 40}
    response = post_json(api_client, BASE, {**VALID, "metadata": metadata})
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    # {"n":[ + 40 numbers of 309 digits + 39 commas + ]}
    assert error["message"] == (
        "Field 'metadata' is 12407 bytes serialized; the limit is 10240 bytes"
    )
    assert not Session.objects.exists()


def test_metadata_with_exponents_within_the_limit_reads_back_within_it(api_client):
    metadata = {"big": [1e308] * 30, "tiny": -1.5e-300, "plain": [0.25, 1e-05, 12]}
    response = post_json(api_client, BASE, {**VALID, "metadata": metadata})
    assert response.status_code == 201, response.json()
    read = api_client.get(f"{BASE}/{response.json()['sessionId']}").json()["metadata"]
    # SQLite keeps the exponents; PostgreSQL writes every number out in full.
    assert len(json.dumps(read, separators=(",", ":"))) <= 10_240
    assert read["big"][0] == pytest.approx(1e308) and read["tiny"] == pytest.approx(-1.5e-300)


def test_metadata_text_that_merely_looks_like_an_escape_is_kept(api_client):
    metadata = {"s": "\\u0000 is how JSON writes NUL"}
    response = post_json(api_client, BASE, {**VALID, "metadata": metadata})
    assert response.status_code == 201, response.json()
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize("raw", [b"[]", b'"a string"', b"null", b"42", b"true", b"[{}]"])
def test_body_that_is_not_a_json_object_is_400(api_client, raw):
    error = assert_envelope(post_json(api_client, BASE, raw), 400, "VALIDATION_ERROR")
    assert error["message"] == "Request body must be a JSON object"


def test_every_problem_is_listed_in_details(api_client):
    body = {"agentId": "x", "metadata": [], "timeoutConfig": {"autoRenew": "no"}}
    error = assert_envelope(post_json(api_client, BASE, body), 400, "VALIDATION_ERROR")
    assert set(error["details"]["fields"]) == {
        "agentId",
        "userId",
        "metadata",
        "timeoutConfig.autoRenew",
    }
    assert error["message"] == "Invalid UUID format for field 'agentId'"


# -- patch validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timeoutMinutes": 60.5}, "timeoutMinutes"),
        ({"timeoutMinutes": "abc"}, "timeoutMinutes"),
        ({"timeoutMinutes": 2000}, "timeoutMinutes"),
        ({"autoRenew": "false"}, "autoRenew"),
        ({"maxDurationMinutes": True}, "maxDurationMinutes"),
        ({"timeoutMinutes": 60, "maxDurationMinutes": 30}, "maxDurationMinutes"),
        ({"timeoutMinutes": 10, "warningThresholdMinutes": 20}, "warningThresholdMinutes"),
        ({"timeoutMinutes": 60, "sessionId": "x"}, "sessionId"),
        ({"maxDurationMinutes": 20161}, "maxDurationMinutes"),
        ({"warningThresholdMinutes": 0}, "warningThresholdMinutes"),
        ({"warningThresholdMinutes": True}, "warningThresholdMinutes"),
        ({"timeoutMinutes": "4"}, "timeoutMinutes"),
        ({"timeoutMinutes": None}, "timeoutMinutes"),
    ],
)
def test_patch_rejects_invalid_fields(api_client, session, body, field):
    before = Session.objects.values().get(pk=session.pk)
    response = api_client.patch(f"{BASE}/{session.pk}/timeout", body, format="json")
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert f"'{field}'" in error["message"], error
    assert Session.objects.values().get(pk=session.pk) == before


@pytest.mark.parametrize("raw", [b"{}", b"[]", b"null", b'"x"'])
def test_patch_needs_a_json_object_with_a_field(api_client, session, raw):
    response = api_client.generic(
        "PATCH", f"{BASE}/{session.pk}/timeout", raw, content_type="application/json"
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")


# -- malformed requests -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"agentId": ',
        b"{'agentId': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"[" * 100_000,  # deeper than Python's recursion limit
        b'{"a":' * 50_000,
    ],
)
def test_malformed_json_is_400(api_client, raw):
    error = assert_envelope(post_json(api_client, BASE, raw), 400, "VALIDATION_ERROR")
    assert error["message"].startswith("Malformed request body")
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"agentId": "%s", "agentId": "%s", "userId": "%s"}' % (AGENT.encode(), AGENT.encode(), USER.encode()), "agentId"),
        (b'{"agentId": "%s", "userId": "%s", "metadata": {"plan": "a", "plan": "b"}}' % (AGENT.encode(), USER.encode()), "plan"),
    ],
)
def test_json_object_naming_a_key_twice_is_400(api_client, raw, key):
    # Which value was meant? Keeping the last one silently would lose the other.
    error = assert_envelope(post_json(api_client, BASE, raw), 400, "VALIDATION_ERROR")
    assert error["message"] == f"Malformed request body: JSON parse error - duplicate key '{key}'"
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
        "application/json; charset=zlib",
        "application/json; charset=utf-16",
        "application/json; charset=rot13",
    ],
)
def test_unsupported_media_types_are_415(api_client, content_type):
    body = json.dumps(VALID).encode()
    response = post_json(api_client, BASE, body, content_type=content_type)
    assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("charset", ["UTF-8", "utf8", "us-ascii", "ASCII"])
def test_json_with_a_utf8_or_ascii_charset_is_accepted(api_client, charset):
    body = json.dumps(VALID).encode()
    response = post_json(api_client, BASE, body, content_type=f"application/json; charset={charset}")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_body_is_415(api_client, coding):
    body = gzip.compress(json.dumps(VALID).encode()) if coding == "gzip" else json.dumps(VALID).encode()
    response = post_json(api_client, BASE, body, HTTP_CONTENT_ENCODING=coding)
    error = assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert error["message"] == f"Unsupported Content-Encoding '{coding}': send the body uncompressed"
    assert not Session.objects.exists()


def test_identity_content_encoding_is_plain(api_client):
    response = post_json(api_client, BASE, json.dumps(VALID).encode(), HTTP_CONTENT_ENCODING="identity")
    assert response.status_code == 201, response.json()


def test_json_labelled_ascii_must_be_ascii(api_client):
    body = json.dumps({**VALID, "metadata": {"name": "é"}}, ensure_ascii=False).encode()
    response = post_json(api_client, BASE, body, content_type="application/json; charset=us-ascii")
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["message"].startswith("Malformed request body: Request body is not valid ASCII")
    assert not Session.objects.exists()


def test_answers_json_whatever_accept_says(api_client, session):
    response = api_client.get(f"{BASE}/{session.pk}", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    response = api_client.get(f"{BASE}/{uuid.uuid4()}?format=xml", HTTP_ACCEPT="application/xml")
    assert_envelope(response, 404, "SESSION_NOT_FOUND")


@pytest.mark.parametrize(
    "path",
    [
        "/api/nope",
        "/api/",
        "/api/messaging",
        "/api/messaging/",
        f"{BASE}/",  # no trailing slashes, as in elizaOS
        f"{BASE}/health/",
        f"{BASE}/{uuid.uuid4()}/unknown",
        f"{BASE}/{uuid.uuid4()}/heartbeat/extra",
        "/api/schema/nope",
    ],
)
def test_unknown_routes_are_404_not_found(api_client, path):
    error = assert_envelope(api_client.get(path), 404, "NOT_FOUND")
    assert path in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", BASE),
        ("DELETE", BASE),
        ("PATCH", BASE),
        ("POST", f"{BASE}/health"),
        ("PUT", f"{BASE}/{uuid.uuid4()}"),
        ("POST", f"{BASE}/{uuid.uuid4()}"),
        ("GET", f"{BASE}/{uuid.uuid4()}/heartbeat"),
        ("GET", f"{BASE}/{uuid.uuid4()}/renew"),
        ("POST", f"{BASE}/{uuid.uuid4()}/timeout"),
        ("PUT", f"{BASE}/{uuid.uuid4()}/timeout"),
    ],
)
def test_wrong_methods_are_405(api_client, method, path):
    response = api_client.generic(method, path, b"{}", content_type="application/json")
    error = assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert method in error["message"]
    assert response.has_header("Allow")


def test_body_over_one_megabyte_is_413(api_client):
    padding = "x" * (1024 * 1024)
    response = post_json(api_client, BASE, {**VALID, "metadata": {"p": padding}})
    error = assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["maxBytes"] == 1024 * 1024
    assert not Session.objects.exists()


def test_body_of_exactly_one_megabyte_is_read(api_client):
    body = json.dumps(VALID).encode()
    body += b" " * (1024 * 1024 - len(body))
    response = post_json(api_client, BASE, body)
    assert response.status_code == 201


def test_413_applies_to_every_route_under_api(api_client, session):
    response = api_client.generic(
        "POST",
        f"{BASE}/{session.pk}/heartbeat",
        b"x" * (1024 * 1024 + 1),
        content_type="application/json",
    )
    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("length", "message"),
    [
        ("abc", "Content-Length header is not an integer"),
        ("-1", "Content-Length header is negative"),
    ],
)
def test_bad_content_length_is_400(api_client, length, message):
    response = api_client.generic(
        "POST", BASE, b"{}", content_type="application/json", CONTENT_LENGTH=length
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert response.json()["error"]["message"] == message
    assert not Session.objects.exists()


def test_chunked_body_without_content_length_is_read(rf):
    from sessions_admin.middleware import ApiErrorMiddleware

    raw = json.dumps(VALID).encode()
    request = rf.post(BASE, raw, content_type="application/json")
    del request.META["CONTENT_LENGTH"]
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.environ["wsgi.input"] = __import__("io").BytesIO(raw)
    seen = {}

    def view(req):
        seen["body"] = req.read()
        from django.http import HttpResponse

        return HttpResponse(status=204)

    response = ApiErrorMiddleware(view)(request)
    assert response.status_code == 204
    assert seen["body"] == raw
    assert request.META["CONTENT_LENGTH"] == str(len(raw))


def test_chunked_body_over_one_megabyte_is_413(rf):
    from sessions_admin.middleware import ApiErrorMiddleware

    request = rf.post(BASE, b"", content_type="application/json")
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.environ["wsgi.input"] = __import__("io").BytesIO(b"x" * (1024 * 1024 + 1))
    response = ApiErrorMiddleware(lambda req: pytest.fail("the view must not run"))(request)
    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_disallowed_host_is_an_envelope(api_client):
    response = api_client.get(f"{BASE}/health", HTTP_HOST="evil.example")
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_too_many_query_parameters_is_400_not_500(admin_api, settings, caplog):
    # Django refuses to parse more than DATA_UPLOAD_MAX_NUMBER_FIELDS; the list
    # reads its query string inside a DRF view, where that used to become a 500.
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    query = "&".join(f"p{i}=1" for i in range(11))
    error = assert_envelope(admin_api.get(f"{BASE}?{query}"), 400, "VALIDATION_ERROR")
    assert error["message"] == "Too many parameters: at most 10"
    assert any(r.name == "django.security.TooManyFieldsSent" for r in caplog.records)


# -- database unavailable -----------------------------------------------------


@pytest.fixture(
    params=[
        OperationalError("connection to server at 127.0.0.1, port 5432 failed"),
        DatabaseError("connection already closed"),  # a driver's plain DatabaseError
    ],
    ids=["operational", "plain"],
)
def database_down(monkeypatch, request):
    def unreachable(*args, **kwargs):
        raise request.param

    monkeypatch.setattr(connections["default"], "ensure_connection", unreachable)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", BASE, VALID),
        ("GET", f"{BASE}/{uuid.UUID(int=7)}", None),
        ("DELETE", f"{BASE}/{uuid.UUID(int=7)}", None),
        ("POST", f"{BASE}/{uuid.UUID(int=7)}/heartbeat", None),
        ("POST", f"{BASE}/{uuid.UUID(int=7)}/renew", None),
        ("PATCH", f"{BASE}/{uuid.UUID(int=7)}/timeout", {"timeoutMinutes": 60}),
        ("GET", BASE, None),
    ],
)
def test_database_unavailable_is_503(api_client, admin_key, database_down, method, path, body):
    response = api_client.generic(
        method,
        path,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        HTTP_X_API_KEY=admin_key,
    )
    assert_envelope(response, 503, "SERVICE_UNAVAILABLE")


def test_unexpected_errors_are_a_json_500_not_html(api_client, monkeypatch):
    from sessions_admin import selectors

    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "session_get", broken)
    api_client.raise_request_exception = False
    response = api_client.get(f"{BASE}/{uuid.uuid4()}")
    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "a bug" not in error["message"]  # internals stay in the log


@pytest.mark.parametrize(
    ("wait", "retry_after"), [(0.2, "1"), (1.0, "1"), (1.0005, "2"), (29.9999, "30")]
)
def test_retry_after_is_the_wait_rounded_up(wait, retry_after):
    response = api_exception_handler(Throttled(wait=wait), {})
    assert response.status_code == 429
    assert response["Retry-After"] == retry_after
    assert response.data["error"]["details"] == {"retryAfterSeconds": int(retry_after)}
