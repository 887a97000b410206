"""The JSON renderer: orjson's speed, DRF's output."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.renderers import JSONRenderer

from sessions_admin.renderers import FastJSONRenderer

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


def both(data, accepted_media_type=None):
    return (
        FastJSONRenderer().render(data, accepted_media_type),
        JSONRenderer().render(data, accepted_media_type),
    )


@given(json_values)
def test_parses_to_what_drf_renders(data):
    fast, drf = both(data)

    if data is None:  # no body at all, as DRF
        assert fast == drf == b""
    else:
        assert json.loads(fast) == json.loads(drf)


@pytest.mark.parametrize(
    "data",
    [
        {"sessionId": str(uuid.uuid4()), "metadata": {"name": "café ☕", "n": [1, 2.5, None]}},
        {"line": "a\u2028b\u2029c"},
        {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        {"at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)},
        {"amount": Decimal("1.50")},
        {"message": gettext_lazy("This field is required.")},
    ],
    ids=["plain", "line-separators", "uuid", "datetime", "decimal", "lazy-text"],
)
def test_same_bytes_as_drf(data):
    fast, drf = both(data)

    assert fast == drf


@pytest.mark.parametrize(
    "data",
    [
        {"big": 123456789012345678901234567890},
        {"deep": json.loads("[" * 300 + "]" * 300)},
    ],
    ids=["integer-beyond-64-bits", "nesting-beyond-254"],
)
def test_what_orjson_refuses_is_rendered_by_drf(data):
    fast, drf = both(data)

    assert fast == drf
    assert json.loads(fast) == data


def test_indent_and_empty_bodies_as_drf():
    fast, drf = both({"a": [1, 2]}, "application/json; indent=2")

    assert fast == drf and b"\n" in fast
    assert FastJSONRenderer().render(None) == b""


@pytest.mark.django_db
def test_api_answers_large_integers_in_metadata(client):
    body = {
        "agentId": str(uuid.uuid4()),
        "userId": str(uuid.uuid4()),
        "metadata": {"big": 2**80, "line": "x\u2028y"},
    }
    created = client.post("/api/messaging/sessions", body, content_type="application/json")

    assert created.status_code == 201
    assert created.json()["metadata"] == body["metadata"]
    assert b"\\u2028" in created.content
