"""GET /api/messaging/sessions: the seed's shape, filters, orderings, paging, auth, bad input."""

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import time_machine
from django.core import signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_admin import policy, selectors
from sessions_admin.models import Session
from tests.factories import SessionFactory, TimeoutConfigFactory

pytestmark = pytest.mark.django_db

URL = "/api/messaging/sessions"
NOW = datetime(2026, 11, 27, 10, 0, 0, 250_000, tzinfo=UTC)
MS = timedelta(milliseconds=1)
DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AGENT = uuid.UUID("3c90c3cc-0d44-4b50-8888-8dd25736052a")
USER = uuid.UUID("0b6e7f49-5c55-4a4c-9d0e-2f7c1c3f9a11")

SESSION_INFO_KEYS = {
    "sessionId",
    "agentId",
    "userId",
    "createdAt",
    "lastActivity",
    "metadata",
    "expiresAt",
    "timeoutConfig",
    "renewalCount",
    "timeRemaining",
    "isNearExpiration",
}
TIMEOUT_CONFIG_KEYS = {
    "timeoutMinutes",
    "autoRenew",
    "maxDurationMinutes",
    "warningThresholdMinutes",
}

# The seed's schema (list-sessions.openapi.md), closed over its keys and made strict.
SEED_SCHEMA = {
    "type": "object",
    "required": ["sessions", "total", "stats", "limit", "nextCursor"],
    "additionalProperties": False,
    "properties": {
        "sessions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": sorted(SESSION_INFO_KEYS),
                "additionalProperties": False,
                "properties": {
                    "sessionId": {"type": "string"},
                    "agentId": {"type": "string", "pattern": f"^{UUID_TEXT.pattern}$"},
                    "userId": {"type": "string", "pattern": f"^{UUID_TEXT.pattern}$"},
                    "createdAt": {"type": "string", "pattern": f"^{DATETIME.pattern}$"},
                    "lastActivity": {"type": "string", "pattern": f"^{DATETIME.pattern}$"},
                    "metadata": {"type": "object"},
                    "expiresAt": {"type": "string", "pattern": f"^{DATETIME.pattern}$"},
                    "timeoutConfig": {
                        "type": "object",
                        "required": sorted(TIMEOUT_CONFIG_KEYS),
                        "additionalProperties": False,
                        "properties": {
                            "timeoutMinutes": {"type": "integer"},
                            "autoRenew": {"type": "boolean"},
                            "maxDurationMinutes": {"type": "integer"},
                            "warningThresholdMinutes": {"type": "integer"},
                        },
                    },
                    "renewalCount": {"type": "integer", "minimum": 0},
                    "timeRemaining": {"type": "integer", "minimum": 0},
                    "isNearExpiration": {"type": "boolean"},
                },
            },
        },
        "total": {"type": "integer", "minimum": 0},
        "stats": {
            "type": "object",
            "required": ["totalSessions", "activeSessions", "expiredSessions"],
            "additionalProperties": False,
            "properties": {
                "totalSessions": {"type": "integer", "minimum": 0},
                "activeSessions": {"type": "integer", "minimum": 0},
                "expiredSessions": {"type": "integer", "minimum": 0},
            },
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
        "nextCursor": {"type": ["string", "null"]},
    },
}


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def make(
    *,
    created=-60,
    last=None,
    expires=30,
    timeout=30,
    auto_renew=True,
    max_duration=720,
    warning=5,
    agent=None,
    user=None,
    **fields,
) -> Session:
    """A session with times given as minutes (or timedeltas) relative to ``NOW``."""

    def at(offset):
        return NOW + (offset if isinstance(offset, timedelta) else timedelta(minutes=offset))

    created_at = at(created)
    return SessionFactory(
        created_at=created_at,
        last_activity=at(last) if last is not None else created_at,
        expires_at=at(expires),
        timeout_config=TimeoutConfigFactory(
            timeout_minutes=timeout,
            auto_renew=auto_renew,
            max_duration_minutes=max_duration,
            warning_threshold_minutes=warning,
        ),
        agent_id=agent or uuid.uuid4(),
        user_id=user or uuid.uuid4(),
        **fields,
    )


def get(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()


def ids(body) -> list[str]:
    return [item["sessionId"] for item in body["sessions"]]


def all_pages(client, **params) -> tuple[list[str], int]:
    """Follow ``nextCursor`` to the end; return the ids in order and the number of pages."""
    seen, pages, cursor = [], 0, None
    while True:
        body = get(client, **params, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += ids(body)
        cursor = body["nextCursor"]
        if cursor is None:
            return seen, pages
        assert pages < 1000, "paging does not end"


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"success", "error"}
    assert body["success"] is False
    error = body["error"]
    assert set(error) == {"code", "message", "details", "timestamp"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert DATETIME.fullmatch(error["timestamp"])
    return error


# -- shape ----------------------------------------------------------------------------


def test_response_has_the_seed_shape(admin_api, frozen):
    session = make(
        created=-90,
        last=-10,
        expires=20,
        metadata={"channel": "web", "nested": {"a": [1, 2]}},
        renewal_count=3,
        agent=AGENT,
        user=USER,
    )

    response = admin_api.get(URL)
    body = response.json()

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    jsonschema.validate(body, SEED_SCHEMA)
    assert body == {
        "sessions": [
            {
                "sessionId": str(session.session_id),
                "agentId": str(AGENT),
                "userId": str(USER),
                "createdAt": "2026-11-27T08:30:00.250Z",
                "lastActivity": "2026-11-27T09:50:00.250Z",
                "metadata": {"channel": "web", "nested": {"a": [1, 2]}},
                "expiresAt": "2026-11-27T10:20:00.250Z",
                "timeoutConfig": {
                    "timeoutMinutes": 30,
                    "autoRenew": True,
                    "maxDurationMinutes": 720,
                    "warningThresholdMinutes": 5,
                },
                "renewalCount": 3,
                "timeRemaining": 20 * 60_000,
                "isNearExpiration": False,
            }
        ],
        "total": 1,
        "stats": {"totalSessions": 1, "activeSessions": 1, "expiredSessions": 0},
        "limit": 100,
        "nextCursor": None,
    }


def test_empty_store(admin_api, frozen):
    body = get(admin_api)

    jsonschema.validate(body, SEED_SCHEMA)
    assert body == {
        "sessions": [],
        "total": 0,
        "stats": {"totalSessions": 0, "activeSessions": 0, "expiredSessions": 0},
        "limit": 100,
        "nextCursor": None,
    }


def test_every_item_matches_the_schema_with_a_mixed_store(admin_api, frozen):
    make(expires=-1)
    make(expires=2, auto_renew=False)
    make(expires=0)
    make(expires=600, timeout=1440, max_duration=20160, warning=60, metadata={"k": "v"})

    body = get(admin_api, status="all")

    jsonschema.validate(body, SEED_SCHEMA)
    for item in body["sessions"]:
        assert set(item) == SESSION_INFO_KEYS
        assert set(item["timeoutConfig"]) == TIMEOUT_CONFIG_KEYS
        for key in ("createdAt", "lastActivity", "expiresAt"):
            assert DATETIME.fullmatch(item[key])
        assert isinstance(item["timeRemaining"], int) and not isinstance(
            item["timeRemaining"], bool
        )


def test_each_item_is_what_get_answers_for_that_session(admin_api, frozen):
    # The list builds items from value rows, GET from a model instance: same dict.
    make(expires=2, auto_renew=False, metadata={"k": ["v", 1]})
    make(expires=600, timeout=1440, max_duration=20160, warning=60, renewal_count=7)

    for item in get(admin_api)["sessions"]:
        assert admin_api.get(f"{URL}/{item['sessionId']}").json() == item


def test_datetimes_are_utc_with_milliseconds_truncated(admin_api, frozen):
    make(
        created=timedelta(minutes=-5, microseconds=-999),
        last=timedelta(minutes=-1, microseconds=-1),
        expires=timedelta(minutes=25, microseconds=999),
    )

    (item,) = get(admin_api)["sessions"]

    # NOW is 10:00:00.250000; -999 us gives .249001, shown as .249 (truncated).
    assert item["createdAt"] == "2026-11-27T09:55:00.249Z"
    assert item["lastActivity"] == "2026-11-27T09:59:00.249Z"
    assert item["expiresAt"] == "2026-11-27T10:25:00.250Z"
    assert item["timeRemaining"] == 25 * 60_000


def test_time_remaining_is_computed_from_one_clock_reading(admin_api, monkeypatch):
    """Each clock reading advances time; every derived field must use the first one."""
    offsets = [timedelta(minutes=n) for n in (1, 2, 3, 4, 29)]
    sessions = [make(expires=offset) for offset in offsets]
    readings = []

    def ticking_clock():
        readings.append(NOW + len(readings) * timedelta(minutes=10))
        return readings[-1]

    monkeypatch.setattr(policy, "clock", ticking_clock)

    body = get(admin_api, ordering="expiresAt", limit=2)
    rest = get(admin_api, ordering="expiresAt", limit=10, cursor=body["nextCursor"])

    assert len(readings) == 2  # one per request
    assert [item["timeRemaining"] for item in body["sessions"]] == [60_000, 120_000]
    assert [item["isNearExpiration"] for item in body["sessions"]] == [True, True]
    assert body["stats"] == {"totalSessions": 5, "activeSessions": 5, "expiredSessions": 0}
    # The second request's single reading is NOW + 10 min: three left, two expired.
    assert rest["stats"] == {"totalSessions": 5, "activeSessions": 1, "expiredSessions": 4}
    assert ids(rest) == [str(sessions[-1].session_id)]
    assert rest["sessions"][0]["timeRemaining"] == 19 * 60_000


@pytest.mark.parametrize(
    ("remaining", "time_remaining", "near"),
    [
        (timedelta(minutes=30), 1_800_000, False),
        (timedelta(minutes=5) + MS, 300_001, False),
        (timedelta(minutes=5), 300_000, True),
        (timedelta(minutes=5) - MS, 299_999, True),
        (MS, 1, True),
        (timedelta(microseconds=1500), 1, True),
    ],
)
def test_time_remaining_and_near_expiration(admin_api, frozen, remaining, time_remaining, near):
    make(expires=remaining, warning=5)

    (item,) = get(admin_api)["sessions"]

    assert item["timeRemaining"] == time_remaining
    assert item["isNearExpiration"] is near


def test_a_session_expiring_exactly_now_is_expired(admin_api, frozen):
    at_now = make(expires=timedelta(0))
    one_ms_left = make(expires=MS)

    active = get(admin_api)
    expired = get(admin_api, status="expired")
    everything = get(admin_api, status="all", ordering="expiresAt")

    assert ids(active) == [str(one_ms_left.session_id)]
    assert ids(expired) == [str(at_now.session_id)]
    assert active["stats"] == {"totalSessions": 2, "activeSessions": 1, "expiredSessions": 1}
    first, second = everything["sessions"]
    assert (first["sessionId"], first["timeRemaining"], first["isNearExpiration"]) == (
        str(at_now.session_id),
        0,
        False,
    )
    assert (second["timeRemaining"], second["isNearExpiration"]) == (1, True)
    assert ids(get(admin_api, nearExpiration="true", status="all")) == [str(one_ms_left.session_id)]


def test_near_expiration_filter_agrees_with_the_field_below_a_millisecond(admin_api, frozen):
    """The filter and ``isNearExpiration`` use the same whole-millisecond rule."""
    make(expires=timedelta(microseconds=500))  # active, but 0 whole ms left
    make(expires=timedelta(minutes=5, microseconds=500))  # 300000 whole ms: near
    make(expires=timedelta(minutes=5, microseconds=1000))  # 300001 ms: not near

    for near in ("true", "false"):
        body = get(admin_api, nearExpiration=near, status="all")
        assert body["sessions"], near
        for item in body["sessions"]:
            assert item["isNearExpiration"] is (near == "true"), item
    assert get(admin_api, nearExpiration="true")["total"] == 1


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 11, 27, 10, 0, 0, 250_000, tzinfo=UTC),
        datetime(2026, 11, 27, 10, 0, 59, 999_000, tzinfo=UTC),  # counted from a whole second
        datetime(2026, 12, 31, 23, 30, 0, 0, tzinfo=UTC),  # thresholds that run into the next year
    ],
)
def test_near_expiration_counts_agree_with_the_rule_at_each_threshold_edge(
    admin_api, api_client, now
):
    """The filter, ``total`` and health's ``expiringSoon`` count what ``isNearExpiration`` says."""
    sessions = []
    for threshold in (1, 5, 60):
        config = TimeoutConfigFactory(timeout_minutes=120, warning_threshold_minutes=threshold)
        for past_threshold in (-MS, timedelta(0), timedelta(microseconds=500), MS):
            sessions.append(
                SessionFactory(
                    created_at=now - timedelta(minutes=1),
                    last_activity=now - timedelta(minutes=1),
                    expires_at=now + timedelta(minutes=threshold) + past_threshold,
                    timeout_config=config,
                )
            )
    expected = sorted(
        str(session.session_id)
        for session in sessions
        if policy.is_near_expiration(
            session.expires_at, session.timeout_config.warning_threshold_minutes, now=now
        )
    )

    with time_machine.travel(now, tick=False):
        near = get(admin_api, nearExpiration="true", limit=100)
        health = api_client.get(f"{URL}/health").json()

    assert len(expected) == 9  # three a threshold: 1 ms before it, at it, 0.5 ms past it
    assert sorted(ids(near)) == expected
    assert near["total"] == 9
    assert health["expiringSoon"] == 9


# -- stats and total ------------------------------------------------------------------------


def test_stats_describe_the_whole_store_and_total_the_filtered_list(admin_api, frozen):
    make(expires=10, agent=AGENT)
    make(expires=20, agent=AGENT)
    make(expires=-5, agent=AGENT)
    make(expires=3)
    make(expires=-60)
    make(expires=-1)

    whole = {"totalSessions": 6, "activeSessions": 3, "expiredSessions": 3}
    for params, total in [
        ({}, 3),
        ({"agentId": str(AGENT)}, 2),
        ({"agentId": str(AGENT), "status": "expired"}, 1),
        ({"status": "expired"}, 3),
        ({"status": "all"}, 6),
        ({"nearExpiration": "true"}, 1),
        ({"agentId": str(uuid.uuid4())}, 0),
    ]:
        body = get(admin_api, **params, limit=1)
        assert body["stats"] == whole, params
        assert body["total"] == total, params
        stats = body["stats"]
        assert stats["totalSessions"] == stats["activeSessions"] + stats["expiredSessions"]


def test_total_counts_every_page(admin_api, frozen):
    for minute in range(7):
        make(expires=minute + 1)

    body = get(admin_api, limit=3)

    assert body["total"] == 7 and len(body["sessions"]) == 3 and body["limit"] == 3


# -- filters ------------------------------------------------------------------------------


@pytest.fixture
def varied(frozen):
    """Sessions covering every filter: agents, users, statuses, near expiration, auto-renew."""
    other_agent, other_user = uuid.uuid4(), uuid.uuid4()
    rows = [
        make(agent=AGENT, user=USER, expires=20),
        make(agent=AGENT, user=other_user, expires=2),
        make(agent=AGENT, user=USER, expires=-3),
        make(agent=other_agent, user=USER, expires=4, auto_renew=False),
        make(agent=other_agent, user=other_user, expires=600, auto_renew=False),
        make(agent=other_agent, user=USER, expires=0, auto_renew=False),
        make(agent=AGENT, user=USER, expires=9, warning=10),
        make(agent=other_agent, user=other_user, expires=11, warning=10, auto_renew=False),
    ]
    return rows


def expected(rows, *, agent=None, user=None, status="active", near=None, auto_renew=None):
    result = []
    for s in rows:
        expired = policy.is_expired(s.expires_at, now=NOW)
        is_near = policy.is_near_expiration(
            s.expires_at, s.timeout_config.warning_threshold_minutes, now=NOW
        )
        if agent is not None and s.agent_id != agent:
            continue
        if user is not None and s.user_id != user:
            continue
        if status == "active" and expired or status == "expired" and not expired:
            continue
        if near is not None and is_near != near:
            continue
        if auto_renew is not None and s.timeout_config.auto_renew != auto_renew:
            continue
        result.append(str(s.session_id))
    return sorted(result)


@pytest.mark.parametrize("status", ["active", "expired", "all", None])
@pytest.mark.parametrize("near", [None, True, False])
@pytest.mark.parametrize("auto_renew", [None, True, False])
def test_filters_combine(admin_api, varied, status, near, auto_renew):
    params = {}
    if status is not None:
        params["status"] = status
    if near is not None:
        params["nearExpiration"] = str(near).lower()
    if auto_renew is not None:
        params["autoRenew"] = str(auto_renew).lower()

    body = get(admin_api, **params)

    want = expected(varied, status=status or "active", near=near, auto_renew=auto_renew)
    assert sorted(ids(body)) == want
    assert body["total"] == len(want)
    for item in body["sessions"]:
        if near is not None:
            assert item["isNearExpiration"] is near
        if auto_renew is not None:
            assert item["timeoutConfig"]["autoRenew"] is auto_renew


@pytest.mark.parametrize("status", ["active", "expired", "all"])
def test_agent_and_user_filters(admin_api, varied, status):
    by_agent = get(admin_api, agentId=str(AGENT), status=status)
    by_user = get(admin_api, userId=str(USER), status=status)
    by_both = get(admin_api, agentId=str(AGENT), userId=str(USER), status=status)

    assert sorted(ids(by_agent)) == expected(varied, agent=AGENT, status=status)
    assert sorted(ids(by_user)) == expected(varied, user=USER, status=status)
    assert sorted(ids(by_both)) == expected(varied, agent=AGENT, user=USER, status=status)
    assert all(item["agentId"] == str(AGENT) for item in by_agent["sessions"])
    assert all(item["userId"] == str(USER) for item in by_user["sessions"])
    assert expected(varied, agent=AGENT, user=USER, status=status)


def test_uuid_filters_are_case_insensitive(admin_api, varied):
    upper = get(admin_api, agentId=str(AGENT).upper())

    assert sorted(ids(upper)) == expected(varied, agent=AGENT)


def test_default_status_is_active(admin_api, varied):
    assert ids(get(admin_api)) == ids(get(admin_api, status="active"))
    assert sorted(ids(get(admin_api))) == expected(varied)


# -- ordering -----------------------------------------------------------------------------

ORDERINGS = ["createdAt", "-createdAt", "lastActivity", "-lastActivity", "expiresAt", "-expiresAt"]


@pytest.fixture
def ties(frozen):
    """Sessions whose timestamps repeat, so ties must be broken by session id."""
    rows = []
    for index in range(12):
        rows.append(
            make(
                created=-100 + (index % 3) * 10,
                last=-50 + (index % 4) * 10,
                expires=[-30, 0, 5, 40][index % 4] if index % 5 else 40,
            )
        )
    return rows


def expected_order(rows, ordering, *, status="all"):
    field = selectors.ORDERING_FIELDS[ordering.lstrip("-")]
    kept = [s for s in rows if status == "all" or not policy.is_expired(s.expires_at, now=NOW)]
    kept.sort(key=lambda s: (getattr(s, field), s.session_id), reverse=ordering.startswith("-"))
    return [str(s.session_id) for s in kept]


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_every_ordering_breaks_ties_by_session_id(admin_api, ties, ordering):
    body = get(admin_api, ordering=ordering, status="all")

    assert ids(body) == expected_order(ties, ordering)


def test_default_ordering_is_most_recent_activity_first(admin_api, ties):
    assert ids(get(admin_api, status="all")) == expected_order(ties, "-lastActivity")


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("limit", [1, 2, 5, 11, 12, 13])
def test_following_every_page_reaches_every_row_once(admin_api, ties, ordering, limit):
    seen, pages = all_pages(admin_api, ordering=ordering, status="all", limit=limit)

    assert seen == expected_order(ties, ordering)
    assert pages == max(1, -(-len(ties) // limit))


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_paging_active_sessions_only(admin_api, ties, ordering):
    seen, _ = all_pages(admin_api, ordering=ordering, limit=2)

    assert seen == expected_order(ties, ordering, status="active")


def test_last_page_has_no_cursor_even_when_full(admin_api, frozen):
    for minute in range(4):
        make(expires=minute + 1)

    first = get(admin_api, limit=2)
    second = get(admin_api, limit=2, cursor=first["nextCursor"])

    assert len(second["sessions"]) == 2 and second["nextCursor"] is None
    assert get(admin_api, limit=4)["nextCursor"] is None
    assert get(admin_api, limit=3)["nextCursor"] is not None


def test_cursor_survives_deletion_of_the_row_it_points_at(admin_api, ties):
    first = get(admin_api, ordering="createdAt", status="all", limit=5)
    Session.objects.filter(session_id=first["sessions"][-1]["sessionId"]).delete()

    rest, _ = all_pages(admin_api, ordering="createdAt", status="all", limit=5)
    after = get(
        admin_api, ordering="createdAt", status="all", limit=100, cursor=first["nextCursor"]
    )

    assert ids(after) == expected_order(ties, "createdAt")[5:]
    assert rest == ids(first)[:4] + ids(after)


def test_the_same_cursor_works_with_other_filters(admin_api, varied):
    first = get(admin_api, ordering="expiresAt", status="all", limit=3)
    filtered = get(
        admin_api, ordering="expiresAt", status="all", cursor=first["nextCursor"], autoRenew="true"
    )

    full = expected_order(varied, "expiresAt")[3:]
    assert ids(filtered) == [
        sid for sid in full if Session.objects.get(pk=sid).timeout_config.auto_renew
    ]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_paging_property(admin_api, frozen, data):
    """Any data, filter, ordering and page size: the pages concatenate to the full list."""
    Session.objects.all().delete()
    minutes = st.sampled_from([-120, -30, -1, 0, 1, 4, 5, 30])
    rows = []
    for _ in range(data.draw(st.integers(0, 14), label="rows")):
        created = data.draw(st.sampled_from([-200, -150, -120]))
        rows.append(
            make(
                created=created,
                last=data.draw(st.sampled_from([created, -100, -10])),
                expires=data.draw(minutes),
                auto_renew=data.draw(st.booleans()),
                agent=data.draw(st.sampled_from([AGENT, uuid.UUID(int=7)])),
            )
        )
    ordering = data.draw(st.sampled_from(ORDERINGS), label="ordering")
    status = data.draw(st.sampled_from(["active", "expired", "all"]), label="status")
    near = data.draw(st.sampled_from([None, True, False]), label="near")
    limit = data.draw(st.integers(1, 6), label="limit")
    params = {"ordering": ordering, "status": status, "limit": limit}
    if near is not None:
        params["nearExpiration"] = str(near).lower()

    seen, _ = all_pages(admin_api, **params)

    field = selectors.ORDERING_FIELDS[ordering.lstrip("-")]
    wanted = set(expected(rows, status=status, near=near))
    order = sorted(
        (s for s in rows if str(s.session_id) in wanted),
        key=lambda s: (getattr(s, field), s.session_id),
        reverse=ordering.startswith("-"),
    )
    assert seen == [str(s.session_id) for s in order]
    assert len(set(seen)) == len(seen)
    assert get(admin_api, **params)["total"] == len(order)


# -- query count ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 40])
def test_a_page_costs_two_queries_whatever_its_size(
    admin_api, frozen, django_assert_num_queries, limit
):
    for index in range(40):
        make(expires=index - 5, auto_renew=bool(index % 2), agent=AGENT if index % 4 < 2 else None)

    with django_assert_num_queries(2):
        first = get(admin_api, limit=limit, status="all")
    assert len(first["sessions"]) == limit
    filtered = {"status": "all", "nearExpiration": "false", "autoRenew": "true", "agentId": str(AGENT)}
    with django_assert_num_queries(2):
        page = get(admin_api, limit=limit, **filtered)
    # AGENT's sessions that renew automatically are those with index % 4 == 1,
    # ten of them; the one expiring in 4 minutes (index 9) is near expiration.
    assert page["total"] == 9 and len(page["sessions"]) == min(limit, 9)
    if page["nextCursor"]:
        with django_assert_num_queries(2):
            second = get(admin_api, limit=limit, cursor=page["nextCursor"], **filtered)
        assert len(second["sessions"]) == min(limit, 9 - limit)


def test_a_deep_page_seeks_by_key_and_never_skips_rows(admin_api, frozen):
    """Paging cost must not grow with depth: the cursor is a keyset predicate, not an OFFSET."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for index in range(6):
        make(expires=index + 1)
    first = get(admin_api, limit=2)
    with CaptureQueriesContext(connection) as captured:
        second = get(admin_api, limit=2, cursor=first["nextCursor"])
    assert len(second["sessions"]) == 2
    page_sql = captured.captured_queries[-1]["sql"].upper()
    assert "OFFSET" not in page_sql
    assert re.search(r'"LAST_ACTIVITY" <= ', page_sql), page_sql  # where the index scan starts
    assert re.search(r"LIMIT 3\b", page_sql), page_sql  # the page and one more: no count of skipped rows


def test_listing_changes_nothing(admin_api, frozen):
    for index in range(5):
        make(expires=index - 2)
    before = list(Session.objects.order_by("pk").values())
    body = get(admin_api, status="all", limit=2)
    get(admin_api, status="all", cursor=body["nextCursor"])
    assert list(Session.objects.order_by("pk").values()) == before


def test_staff_session_costs_the_same_page_queries(
    api_client, operator, frozen, django_assert_num_queries
):
    """With a Django session, only the session, user and permission lookups are added.

    The permissions are two queries: the user's own and its groups'.
    """
    api_client.force_login(operator)
    for index in range(5):
        make(expires=index + 1)
    with django_assert_num_queries(6):
        small = get(api_client, limit=1)
    with django_assert_num_queries(6):
        large = get(api_client, limit=1000)
    assert len(small["sessions"]) == 1 and len(large["sessions"]) == 5


# -- auth -------------------------------------------------------------------------------------


def basic(username, password):
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def test_anonymous_is_401(api_client, admin_key):
    response = api_client.get(URL)

    error = assert_envelope(response, 401, "UNAUTHORIZED")
    assert "credentials" in error["message"].lower()
    assert response.has_header("WWW-Authenticate")


def test_wrong_api_key_is_401(api_client, admin_key):
    response = api_client.get(URL, HTTP_X_API_KEY="not-the-key")

    assert_envelope(response, 401, "UNAUTHORIZED")


def test_empty_api_key_is_401_even_when_no_admin_key_is_set(api_client, settings):
    settings.SESSIONS_ADMIN_API_KEY = ""

    assert_envelope(api_client.get(URL, HTTP_X_API_KEY=""), 401, "UNAUTHORIZED")


def test_client_key_is_403(api_client, admin_key, client_key):
    response = api_client.get(URL, HTTP_X_API_KEY=client_key)

    assert_envelope(response, 403, "FORBIDDEN")


def test_head_needs_the_admin_too(api_client, admin_key, client_key):
    # HEAD runs the list (its Content-Length tells how many sessions matched).
    assert api_client.head(URL).status_code == 401
    assert api_client.head(URL, HTTP_X_API_KEY=client_key).status_code == 403
    assert api_client.head(URL, HTTP_X_API_KEY=admin_key).status_code == 200


def test_head_is_401_when_client_routes_are_open(api_client, admin_key):
    assert api_client.head(URL).status_code == 401


def test_admin_key_is_200(api_client, admin_key, frozen):
    make(expires=5)

    response = api_client.get(URL, HTTP_X_API_KEY=admin_key)

    assert response.status_code == 200 and response.json()["total"] == 1


def test_admin_key_works_when_client_key_is_also_set(api_client, admin_key, client_key):
    assert api_client.get(URL, HTTP_X_API_KEY=admin_key).status_code == 200


def test_non_staff_session_is_403(api_client, plain_user):
    api_client.force_login(plain_user)

    assert_envelope(api_client.get(URL), 403, "FORBIDDEN")


def test_non_staff_basic_is_403(api_client, plain_user):
    assert_envelope(api_client.get(URL, **basic("plain", "plain-pass-123")), 403, "FORBIDDEN")


def test_staff_session_is_200(api_client, operator):
    api_client.force_login(operator)

    assert api_client.get(URL).status_code == 200


def test_staff_basic_is_200(api_client, operator):
    assert api_client.get(URL, **basic("operator", "operator-pass-123")).status_code == 200


def test_staff_without_view_session_is_403(api_client, staff_user):
    assert_envelope(
        api_client.get(URL, **basic("operator", "operator-pass-123")), 403, "FORBIDDEN"
    )


def test_staff_basic_with_a_wrong_password_is_401(api_client, staff_user):
    assert_envelope(api_client.get(URL, **basic("operator", "wrong")), 401, "UNAUTHORIZED")


def test_inactive_staff_is_refused(api_client, staff_user):
    staff_user.is_active = False
    staff_user.save()

    assert_envelope(
        api_client.get(URL, **basic("operator", "operator-pass-123")), 401, "UNAUTHORIZED"
    )


def test_superuser_is_200(api_client, django_user_model):
    django_user_model.objects.create_superuser("root", password="root-pass-123")

    assert api_client.get(URL, **basic("root", "root-pass-123")).status_code == 200


def test_wrong_key_with_a_staff_session_is_still_admin(api_client, operator, admin_key):
    """An operator's login is enough; a stray key does not downgrade it."""
    api_client.force_login(operator)

    assert api_client.get(URL, HTTP_X_API_KEY="stray").status_code == 200


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": "10.0"}, "limit"),
        ({"limit": "1e2"}, "limit"),
        ({"limit": "+5"}, "limit"),
        ({"limit": " 5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "99999999999999999999999"}, "limit"),
        ({"agentId": "not-a-uuid"}, "agentId"),
        ({"agentId": "3c90c3cc-0d44-4b50-8888-8dd25736052"}, "agentId"),
        ({"agentId": ""}, "agentId"),
        ({"userId": "123"}, "userId"),
        ({"userId": "3c90c3cc-0d44-4b50-8888-8dd25736052a-00"}, "userId"),
        # Forms Python's UUID parser takes but create refuses.
        ({"agentId": "3c90c3cc0d444b5088888dd25736052a"}, "agentId"),
        ({"agentId": "urn:uuid:3c90c3cc-0d44-4b50-8888-8dd25736052a"}, "agentId"),
        ({"userId": "{3c90c3cc-0d44-4b50-8888-8dd25736052a}"}, "userId"),
        ({"status": "pending"}, "status"),
        ({"status": "ACTIVE"}, "status"),
        ({"status": ""}, "status"),
        ({"ordering": "name"}, "ordering"),
        ({"ordering": "--createdAt"}, "ordering"),
        ({"ordering": "created_at"}, "ordering"),
        ({"ordering": "+createdAt"}, "ordering"),
        ({"nearExpiration": "yes"}, "nearExpiration"),
        ({"nearExpiration": "1"}, "nearExpiration"),
        ({"nearExpiration": "True"}, "nearExpiration"),
        ({"autoRenew": "maybe"}, "autoRenew"),
        ({"autoRenew": ""}, "autoRenew"),
        ({"page": "2"}, "page"),
        ({"offset": "10"}, "offset"),
        ({"format": "json"}, "format"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "x" * 3000}, "cursor"),
        ({"cursor": "é" * 10}, "cursor"),
    ],
)
def test_bad_parameters_are_400(admin_api, params, field):
    response = admin_api.get(URL, params)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in error["message"], error
    named = set(error["details"].get("fields", {})) | {error["details"].get("field")}
    assert field in named, error


def test_a_parameter_without_a_name_is_named_as_such(admin_api):
    error = assert_envelope(admin_api.get(f"{URL}?=x"), 400, "VALIDATION_ERROR")
    assert error["message"] == "Unknown query parameter ''"


def test_every_bad_parameter_is_reported(admin_api):
    response = admin_api.get(URL, {"limit": "0", "status": "x", "ordering": "y", "foo": "1"})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(error["details"]["fields"]) == {"limit", "status", "ordering", "foo"}


@pytest.fixture
def cursor(admin_api, frozen):
    for minute in range(3):
        make(expires=minute + 1)
    return get(admin_api, limit=1)["nextCursor"]


def test_tampered_cursor_is_400(admin_api, cursor):
    payload, signature = cursor.rsplit(":", 1)
    forged = signing.dumps(["-lastActivity", NOW.isoformat(), str(uuid.uuid4())], salt="other")

    for token in (
        payload + ":" + signature[::-1],
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + ":" + signature,
        cursor[:-2],
        cursor + "x",
        forged,
    ):
        error = assert_envelope(admin_api.get(URL, {"cursor": token}), 400, "VALIDATION_ERROR")
        assert error["details"]["field"] == "cursor"
        assert error["details"]["fields"] == {"cursor": [error["message"]]}


def test_cursor_from_another_ordering_is_400(admin_api, cursor):
    for ordering in ORDERINGS:
        if ordering == "-lastActivity":
            continue
        error = assert_envelope(
            admin_api.get(URL, {"cursor": cursor, "ordering": ordering}), 400, "VALIDATION_ERROR"
        )
        assert "ordering" in error["message"]
    assert admin_api.get(URL, {"cursor": cursor, "ordering": "-lastActivity"}).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        "just a string",
        {"a": 1, "b": 2, "c": 3},
        [1, 2, 3],
        ["-lastActivity", "not a date", str(uuid.uuid4())],
        ["-lastActivity", "2026-11-27T10:00:00", str(uuid.uuid4())],  # naive
        ["-lastActivity", NOW.isoformat(), "not a uuid"],
        ["-lastActivity", NOW.isoformat(), 12],
        ["-lastActivity", NOW.isoformat()],
        [None, None, None],
        [],
    ],
)
def test_signed_but_malformed_cursor_is_400(admin_api, payload):
    token = signing.dumps(payload, salt="sessions_admin.list-cursor")

    assert_envelope(admin_api.get(URL, {"cursor": token}), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_are_405_with_the_envelope(admin_api, method):
    response = getattr(admin_api, method)(URL, {}, format="json")

    error = assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert method.upper() in error["message"]
    assert "GET" in response["Allow"]


def test_bad_input_is_checked_after_auth(api_client, admin_key):
    assert_envelope(api_client.get(URL, {"limit": "0"}), 401, "UNAUTHORIZED")


def test_limit_bounds_are_inclusive(admin_api, frozen):
    make(expires=5)

    assert get(admin_api, limit=1)["limit"] == 1
    assert get(admin_api, limit=1000)["limit"] == 1000
    assert get(admin_api, limit="0100")["limit"] == 100


def test_responses_are_not_cached_html(admin_api, frozen):
    response = admin_api.get(URL, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert json.loads(response.content)["sessions"] == []


def test_repeated_parameters_are_400(admin_api):
    response = admin_api.get(URL + "?limit=1&limit=2&status=all")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(error["details"]["fields"]) == {"limit"}


@pytest.mark.postgres
@pytest.mark.parametrize("ordering", ["-lastActivity", "createdAt", "expiresAt"])
def test_postgres_reads_a_deep_page_from_its_keyset_index(admin_api, frozen, ordering):
    """The cursor page's plan starts in the ordering's index and sorts nothing."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    config = TimeoutConfigFactory()
    Session.objects.bulk_create(
        Session(
            agent_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            timeout_config=config,
            created_at=NOW - timedelta(minutes=60) + index * MS,
            last_activity=NOW - timedelta(minutes=30) + index * MS,
            expires_at=NOW + timedelta(minutes=1) + index * MS,
        )
        for index in range(5000)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Session._meta.db_table}")
    first = get(admin_api, limit=100, ordering=ordering)
    with CaptureQueriesContext(connection) as captured:
        get(admin_api, limit=100, ordering=ordering, cursor=first["nextCursor"])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + captured.captured_queries[-1]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    index = {
        "-lastActivity": "session_activity_keyset",
        "createdAt": "session_created_keyset",
        "expiresAt": "session_expires_keyset",
    }[ordering]
    assert re.search(rf"Index Scan (Backward )?using {index}", plan), plan
    assert "Sort" not in plan, plan
