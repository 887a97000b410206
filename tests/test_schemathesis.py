"""Property-based fuzzing of every operation of the served OpenAPI schema (schemathesis).

The schema is loaded from ``/api/schema/`` and requests go through the WSGI
application in process. Each operation gets generated valid and invalid
inputs; every response must be a non-5xx with a documented status code,
content type and body. Operations on one session are tried twice per
example: with the generated id (mostly unknown: 404 paths) and with a session
that exists (200, 410, 422 paths).
"""

import uuid
import zlib
from datetime import timedelta

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from sessions_admin import policy, services
from tests.conftest import ADMIN_KEY, CLIENT_KEY

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(transactional_db, settings):
    # Production-like: committed transactions (no test transaction around the
    # requests), both keys configured, rate limiting off.
    settings.SESSIONS_ADMIN_API_KEY = ADMIN_KEY
    settings.SESSIONS_API_KEY = CLIENT_KEY
    settings.SESSIONS_OPEN_CLIENT_ROUTES = False
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


schema = schemathesis.pytest.from_fixture("api_schema")


def existing_session_id(variant: int) -> str:
    """A stored session: active (most variants), expired, or at its renewal cap."""
    now = policy.clock()
    if variant == 0:  # expired: 410 paths
        created = now - timedelta(hours=2)
        session = services.session_create(agent_id=uuid.uuid4(), user_id=uuid.uuid4(), now=created)
        session.expires_at = created + timedelta(minutes=30)
        session.save(update_fields=["expires_at"])
    elif variant == 1:  # at the max-duration cap: renew answers 422
        created = now - timedelta(minutes=700)
        session = services.session_create(
            agent_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            now=created,
            timeout=policy.Timeout(
                timeout_minutes=30,
                auto_renew=True,
                max_duration_minutes=720,
                warning_threshold_minutes=5,
            ),
        )
        session.expires_at = created + timedelta(minutes=720)
        session.save(update_fields=["expires_at"])
    else:
        session = services.session_create(agent_id=uuid.uuid4(), user_id=uuid.uuid4(), now=now)
    return str(session.session_id)


def fuzzing(*, max_examples: int):
    """Hypothesis settings for a bounded, repeatable run over every operation."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
        derandomize=True,
        database=None,
    )


@schema.parametrize()
@fuzzing(max_examples=30)
def test_every_operation_conforms_to_the_schema(case):
    headers = {"X-API-KEY": ADMIN_KEY}
    # Input the schema forbids must be refused. (Only here: on an existing
    # session, 404/410 rightly come before the body is looked at.)
    case.call_and_validate(headers=headers, checks=[*CHECKS, negative_data_rejection])
    if case.path_parameters and "sessionId" in case.path_parameters:
        generated = str(case.path_parameters["sessionId"])
        case.path_parameters["sessionId"] = existing_session_id(zlib.crc32(generated.encode()) % 4)
        case.call_and_validate(headers=headers, checks=CHECKS)


@schema.parametrize()
@fuzzing(max_examples=10)
def test_without_credentials_every_answer_is_documented(case):
    """No key at all: 401s (and health's 200) must be documented answers too."""
    response = case.call_and_validate(checks=CHECKS)
    if case.operation.path != "/api/messaging/sessions/health":
        assert response.status_code in {400, 401, 404, 405, 413, 415}, response.status_code
