"""The OpenAPI 3 schema (drf-spectacular) and the interactive docs."""

import re
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from sessions_admin.errors import CODE_FOR_STATUS

pytestmark = pytest.mark.django_db

SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "list-sessions.openapi.md"
LIST_PATH = "/api/messaging/sessions"

# The seed's SessionInfo and list response (seeds/list-sessions.openapi.md), field by field.
SEED_SESSION_INFO = {
    "sessionId": {"type": "string"},
    "agentId": {"type": "string", "format": "uuid"},
    "userId": {"type": "string", "format": "uuid"},
    "createdAt": {"type": "string", "format": "date-time"},
    "lastActivity": {"type": "string", "format": "date-time"},
    "metadata": {"type": "object"},
    "expiresAt": {"type": "string", "format": "date-time"},
    "timeoutConfig": {"type": "object"},
    "renewalCount": {"type": "integer"},
    "timeRemaining": {"type": "integer"},
    "isNearExpiration": {"type": "boolean"},
}
SEED_TIMEOUT_CONFIG = {
    "timeoutMinutes": {"type": "integer"},
    "autoRenew": {"type": "boolean"},
    "maxDurationMinutes": {"type": "integer"},
    "warningThresholdMinutes": {"type": "integer"},
}
SEED_STATS = {
    "totalSessions": {"type": "integer"},
    "activeSessions": {"type": "integer"},
    "expiredSessions": {"type": "integer"},
}

OPERATIONS = {
    ("get", "/api/messaging/sessions"): "listSessions",
    ("post", "/api/messaging/sessions"): "createSession",
    ("get", "/api/messaging/sessions/health"): "checkSessionsHealth",
    ("get", "/api/messaging/sessions/{sessionId}"): "getSession",
    ("delete", "/api/messaging/sessions/{sessionId}"): "deleteSession",
    ("post", "/api/messaging/sessions/{sessionId}/heartbeat"): "sendSessionHeartbeat",
    ("post", "/api/messaging/sessions/{sessionId}/renew"): "renewSession",
    ("patch", "/api/messaging/sessions/{sessionId}/timeout"): "updateSessionTimeout",
}


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        out = StringIO()
        call_command("spectacular", "--format", "openapi-json", stdout=out)
    import json

    return json.loads(out.getvalue())


def resolve(schema, node):
    """Follow ``$ref`` and single-item ``allOf`` wrappers to the schema they name."""
    while True:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            node = schema["components"]["schemas"][name]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


def shape(schema, node) -> dict:
    """``{property: {type, format}}`` of an object schema."""
    node = resolve(schema, node)
    return {
        name: {k: v for k, v in resolve(schema, prop).items() if k in ("type", "format")}
        for name, prop in node["properties"].items()
    }


def test_seed_transcription_matches_the_seed_file():
    if not SEED.exists():
        pytest.skip(f"{SEED} is not beside the repository")
    text = SEED.read_text()
    document = yaml.safe_load(re.search(r"````yaml[^\n]*\n(.*?)````", text, re.S).group(1))
    info = document["components"]["schemas"]["SessionInfo"]["properties"]
    strip = lambda props: {  # noqa: E731
        name: {k: v for k, v in prop.items() if k in ("type", "format")}
        for name, prop in props.items()
    }
    assert strip(info) == SEED_SESSION_INFO
    assert strip(info["timeoutConfig"]["properties"]) == SEED_TIMEOUT_CONFIG
    listing = document["paths"]["response"]["200"]["application/json"]["schemaArray"][0]
    assert set(listing["properties"]) == {"sessions", "total", "stats"}
    assert strip(listing["properties"]["stats"]["allOf"][0]["properties"]) == SEED_STATS


def test_list_operation_matches_the_seed_field_for_field(schema):
    response = schema["paths"][LIST_PATH]["get"]["responses"]["200"]
    listing = response["content"]["application/json"]["schema"]
    top = shape(schema, listing)
    assert top == {
        "sessions": {"type": "array"},
        "total": {"type": "integer"},
        "stats": {"type": "object"},
        "limit": {"type": "integer"},
        "nextCursor": {"type": "string"},
    }
    resolved = resolve(schema, listing)
    assert resolved["properties"]["nextCursor"]["nullable"] is True
    item = resolved["properties"]["sessions"]["items"]
    assert resolve(schema, item)["type"] == "object"
    assert item == {"$ref": "#/components/schemas/SessionInfo"}  # the seed's component name
    assert shape(schema, item) == SEED_SESSION_INFO
    timeout_config = resolve(schema, item)["properties"]["timeoutConfig"]
    assert shape(schema, timeout_config) == SEED_TIMEOUT_CONFIG
    assert shape(schema, resolved["properties"]["stats"]) == SEED_STATS
    assert set(resolve(schema, item)["required"]) == set(SEED_SESSION_INFO)


def test_every_operation_is_documented_with_an_operation_id(schema):
    found = {
        (method, path): operation["operationId"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    assert found == OPERATIONS


def test_errors_are_documented_with_the_envelope(schema):
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    expected = {
        "listSessions": {"400", "401", "403", "429", "503"},
        "createSession": {"400", "401", "403", "413", "415", "429", "501", "503"},
        "getSession": {"401", "403", "404", "410", "429", "503"},
        "deleteSession": {"401", "403", "404", "429", "503"},
        "sendSessionHeartbeat": {"401", "403", "404", "410", "413", "429", "503"},
        "renewSession": {"401", "403", "404", "410", "413", "422", "429", "503"},
        "updateSessionTimeout": {
            "400",
            "401",
            "403",
            "404",
            "410",
            "413",
            "415",
            "422",
            "429",
            "501",
            "503",
        },
    }
    for item in schema["paths"].values():
        for operation in item.values():
            errors = {
                status: response
                for status, response in operation["responses"].items()
                if int(status) >= 400
            }
            if operation["operationId"] == "checkSessionsHealth":
                assert set(errors) == {"503"}
                continue
            assert set(errors) == expected[operation["operationId"]], operation["operationId"]
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == envelope
                assert response["description"].split(":")[0].isupper()
    error = schema["components"]["schemas"]["Error"]["properties"]
    codes = resolve(schema, error["code"])["enum"]
    assert {
        "VALIDATION_ERROR",
        "SESSION_NOT_FOUND",
        "SESSION_EXPIRED",
        "PAYLOAD_TOO_LARGE",
        "SESSION_RENEWAL_FAILED",
        "RATE_LIMITED",
        "SERVICE_UNAVAILABLE",
    } <= set(codes)
    # Every code the service can answer with, the server's own refusals included.
    assert set(CODE_FOR_STATUS.values()) | {"SESSION_NOT_FOUND"} == set(codes)


def test_create_and_patch_bodies_are_documented(schema):
    create = schema["paths"][LIST_PATH]["post"]["requestBody"]["content"]["application/json"]
    body = resolve(schema, create["schema"])
    assert set(body["properties"]) == {"agentId", "userId", "metadata", "timeoutConfig"}
    assert set(body["required"]) == {"agentId", "userId"}
    assert body["properties"]["agentId"]["format"] == "uuid"
    timeout = resolve(schema, body["properties"]["timeoutConfig"])
    assert timeout["properties"]["timeoutMinutes"]["minimum"] == 5
    assert timeout["properties"]["timeoutMinutes"]["maximum"] == 1440
    patch = schema["paths"]["/api/messaging/sessions/{sessionId}/timeout"]["patch"]
    patch_body = resolve(schema, patch["requestBody"]["content"]["application/json"]["schema"])
    assert set(patch_body["properties"]) == set(SEED_TIMEOUT_CONFIG)


def test_path_and_security_are_documented(schema):
    get = schema["paths"]["/api/messaging/sessions/{sessionId}"]["get"]
    [parameter] = get["parameters"]
    assert parameter["name"] == "sessionId" and parameter["in"] == "path"
    assert parameter["schema"] == {"type": "string", "format": "uuid"}
    assert {"ApiKeyAuth": []} in get["security"]
    api_key = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert api_key["in"] == "header" and api_key["name"] == "X-API-KEY"
    assert "security" not in schema["paths"]["/api/messaging/sessions/health"]["get"]


def test_list_parameters_are_documented(schema):
    parameters = {p["name"]: p for p in schema["paths"][LIST_PATH]["get"]["parameters"]}
    assert set(parameters) == {
        "limit",
        "cursor",
        "agentId",
        "userId",
        "status",
        "nearExpiration",
        "autoRenew",
        "ordering",
    }
    assert parameters["limit"]["schema"]["maximum"] == 1000
    assert parameters["status"]["schema"]["enum"] == ["active", "expired", "all"]
    # A cursor the schema allows must fit gunicorn's 4,094-byte request line:
    # 512 characters that need no percent-encoding.
    assert parameters["cursor"]["schema"]["maxLength"] == 512
    assert parameters["cursor"]["schema"]["pattern"] == "^[A-Za-z0-9_:-]+$"


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=StringIO()
    )
    assert yaml.safe_load(target.read_text())["openapi"].startswith("3.")


def test_schema_is_served(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["paths"][LIST_PATH]["get"]["operationId"] == "listSessions"
    response = api_client.get("/api/schema/")
    assert response.status_code == 200
    assert yaml.safe_load(response.content)["info"]["title"] == "sessions_admin API"


def test_docs_page_is_served_from_local_static_files(api_client):
    response = api_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
    assert "/api/schema/" in page


@pytest.mark.parametrize(
    "version",
    ["\x01", "\x00", "\x7f", "\u2028", "\r\nX-Injected: 1", "2.0", "v" * 2000],
    ids=["SOH", "NUL", "DEL", "LINE SEPARATOR", "CRLF", "another", "long"],
)
def test_a_version_parameter_is_ignored_and_never_reaches_a_header(api_client, version):
    # It went into Content-Disposition: a control character there was a 500.
    response = api_client.get("/api/schema/", {"version": version})

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'inline; filename="sessions_admin API.yaml"'
    assert yaml.safe_load(response.content)["info"]["version"] == "1.0.0"
