"""The Django admin for sessions: columns, summary, filters, search, actions, query counts."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
import time_machine
from django.contrib import admin
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sessions_admin import admin as sessions_admin_admin
from sessions_admin import policy
from sessions_admin.models import Session, SessionCount
from tests.factories import SessionFactory, TimeoutConfigFactory
from tests.locks import TableLock

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
CHANGELIST = reverse("admin:sessions_admin_session_changelist")



@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def change_url(session):
    return reverse("admin:sessions_admin_session_change", args=[session.pk])


def listed_ids(response) -> list[str]:
    """Session ids of the rows on a change list page, in order."""
    html = response.content.decode()
    return re.findall(r'<input type="checkbox" name="_selected_action" value="([0-9a-f-]{36})"', html)


def summary_counts(response) -> dict[str, int]:
    html = response.content.decode()
    return {key: int(value) for key, value in re.findall(r'data-count="(\w+)" data-value="(\d+)"', html)}


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def post_action(client, action, sessions, **extra):
    data = {"action": action, "_selected_action": [str(s.pk) for s in sessions], **extra}
    return client.post(CHANGELIST, data, follow=True)


@pytest.fixture
def mixed(frozen):
    """Three sessions in each state, at ``NOW``."""
    return {
        "active": SessionFactory(now=frozen),
        "near": SessionFactory(now=frozen, near_expiration=True),
        "expired": SessionFactory(now=frozen, expired=True),
    }


# -- The list: columns, badges, time remaining, summary.


def test_list_shows_every_column_with_distinct_status_badges(operator_client, frozen):
    config = TimeoutConfigFactory(auto_renew=False)
    session = SessionFactory(
        now=frozen,
        timeout_config=config,
        created_at=frozen - timedelta(minutes=20),
        last_activity=frozen - timedelta(minutes=1),
        expires_at=frozen + timedelta(minutes=4, seconds=12, milliseconds=900),
        renewal_count=3,
    )
    SessionFactory(now=frozen, expired=True)
    response = operator_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    for header in ("Session id", "Agent", "User", "Status", "Expires at", "Time remaining",
                   "Renewal count", "Last activity", "Auto-renew"):
        assert f">{header}</" in html, header
    row = re.search(rf'<tr>.*?value="{session.pk}".*?</tr>', html, re.S).group(0)
    assert f"agent: {session.agent_id}" in row and f"user: {session.user_id}" in row
    assert f'<span class="session-id" title="Session {session.pk}">{str(session.pk)[:8]}…</span>' in row
    assert f'href="{change_url(session)}"' in row
    assert '<span class="session-status session-status--near-expiration">near expiration</span>' in row
    assert "4 min 12 s" in row
    assert "2026-11-27 10:04:12" in row and "2026-11-27 09:59:00" in row
    assert '<td class="field-renewal_count">3</td>' in row
    assert 'alt="False"' in row  # auto-renew off
    assert '<span class="session-status session-status--expired">expired</span>' in html


def test_row_checkbox_is_the_markup_of_djangos_own_widget(frozen):
    session = SessionFactory(now=frozen)
    model_admin = admin.site.get_model_admin(Session)
    expected = admin.ModelAdmin.action_checkbox(model_admin, session)
    assert model_admin.action_checkbox(session) == expected


def test_active_badge_and_remaining_time_in_hours(operator_client, frozen):
    session = SessionFactory(now=frozen, expires_at=frozen + timedelta(hours=2, minutes=5))
    html = operator_client.get(CHANGELIST).content.decode()
    row = re.search(rf'<tr>.*?value="{session.pk}".*?</tr>', html, re.S).group(0)
    assert '<span class="session-status session-status--active">active</span>' in row
    assert "2 h 5 min" in row


def test_summary_counts_the_whole_store_and_draws_the_bar(operator_client, mixed):
    SessionFactory(now=NOW, expired=True)
    response = operator_client.get(CHANGELIST, {"status": "active"})
    assert summary_counts(response) == {"total": 4, "active": 2, "near_expiration": 1, "expired": 2}
    html = response.content.decode()
    assert 'class="session-summary__segment session-summary__segment--active" style="width: 25.00%"' in html
    assert 'session-summary__segment--near" style="width: 25.00%"' in html
    assert 'session-summary__segment--expired" style="width: 50.00%"' in html
    assert 'href="/admin/sessions_admin/session/?status=near_expiration"' in html


def test_empty_store_renders_an_empty_bar(operator_client, frozen):
    response = operator_client.get(CHANGELIST)
    assert summary_counts(response) == {"total": 0, "active": 0, "near_expiration": 0, "expired": 0}
    assert 'aria-label="No sessions"' in response.content.decode()


def test_one_clock_reading_per_page(operator_client, mixed):
    with mock.patch.object(policy, "clock", wraps=policy.clock) as clock:
        response = operator_client.get(CHANGELIST)
    assert response.status_code == 200
    assert len(listed_ids(response)) == 3
    assert clock.call_count == 1


def test_session_expiring_exactly_now_is_expired_everywhere(operator_client, frozen):
    boundary = SessionFactory(now=frozen, created_at=frozen - timedelta(minutes=30), expires_at=frozen)
    response = operator_client.get(CHANGELIST)
    assert summary_counts(response)["expired"] == 1
    assert "session-status--expired" in response.content.decode()
    assert listed_ids(operator_client.get(CHANGELIST, {"status": "expired"})) == [str(boundary.pk)]
    assert listed_ids(operator_client.get(CHANGELIST, {"status": "active"})) == []


@pytest.mark.parametrize("rows", [3, 40])
def test_change_list_query_count_is_constant(operator_client, frozen, rows, django_assert_num_queries):
    SessionFactory.create_batch(rows, now=frozen)
    SessionFactory.create_batch(rows, now=frozen, timeout_config=TimeoutConfigFactory(auto_renew=False))
    operator_client.get(CHANGELIST)  # warm the content-type and permission caches
    # session, user, permissions (user, group), the counts (summary and list), page rows
    with django_assert_num_queries(6):
        response = operator_client.get(CHANGELIST)
    assert len(listed_ids(response)) == 2 * rows
    with django_assert_num_queries(6):
        response = operator_client.get(CHANGELIST, {"auto_renew": "no"})
    assert len(listed_ids(response)) == rows
    # A creation-date range is counted from its rows, up to a limit: one more query.
    with django_assert_num_queries(7):
        response = operator_client.get(CHANGELIST, {"created_at__gte": "2026-11-27 00:00:00+00:00"})
    assert len(listed_ids(response)) == 2 * rows


def test_the_page_reads_its_counts_from_the_counts_table(operator_client, mixed):
    operator_client.get(CHANGELIST)
    with CaptureQueriesContext(connection) as queries:
        response = operator_client.get(CHANGELIST, {"status": "near_expiration"})
    assert response.context["cl"].paginator.count == 1
    statements = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert len(statements) == 1 and SessionCount._meta.db_table in statements[0]
    assert "LIMIT" not in statements[0].upper()
    # With a creation-date range the page counts its own rows, bounded.
    with CaptureQueriesContext(connection) as queries:
        operator_client.get(CHANGELIST, {"status": "near_expiration", "created_at__gte": "2026-11-27 00:00:00+00:00"})
    bounded = [q["sql"] for q in queries if SessionCount._meta.db_table not in q["sql"]
               and "COUNT(" in q["sql"].upper()]
    assert len(bounded) == 1
    assert f"LIMIT {sessions_admin_admin.LISTED_ROWS_LIMIT + 1}" in bounded[0]


def test_rows_are_ordered_by_last_activity_newest_first(operator_client, frozen):
    older = SessionFactory(now=frozen, created_at=frozen - timedelta(minutes=10))
    newer = SessionFactory(now=frozen, created_at=frozen - timedelta(minutes=1))
    assert listed_ids(operator_client.get(CHANGELIST)) == [str(newer.pk), str(older.pk)]


def test_a_creation_date_range_lists_newest_created_first_unless_sorted(operator_client, frozen):
    """Along the creation index: in the default order by activity, a range far back is slow."""
    older = SessionFactory(now=frozen, created_at=frozen - timedelta(minutes=10))
    newer = SessionFactory(now=frozen, created_at=frozen - timedelta(minutes=5))
    # The older session was the more recently active.
    Session.objects.filter(pk=older.pk).update(last_activity=frozen)
    since = {"created_at__gte": "2026-11-27 00:00:00+00:00"}
    response = operator_client.get(CHANGELIST, since)
    assert listed_ids(response) == [str(newer.pk), str(older.pk)]
    assert response.context["cl"].queryset.query.order_by == ("-created_at", "-pk")
    # No column is shown as sorted: the list has no creation column.
    assert response.context["cl"].get_ordering_field_columns() == {}
    # A column the operator sorts by still wins.
    sorted_by_activity = operator_client.get(CHANGELIST, {**since, "o": "-8"})
    assert listed_ids(sorted_by_activity) == [str(older.pk), str(newer.pk)]
    assert listed_ids(operator_client.get(CHANGELIST)) == [str(older.pk), str(newer.pk)]


def test_sorting_by_expiry_breaks_ties_by_id_in_the_same_direction(operator_client, frozen):
    sessions = SessionFactory.create_batch(3, now=frozen)  # same expires_at
    expected = sorted(str(s.pk) for s in sessions)
    response = operator_client.get(CHANGELIST, {"o": "5"})
    assert listed_ids(response) == expected
    assert response.context["cl"].queryset.query.order_by == ("expires_at", "pk")
    response = operator_client.get(CHANGELIST, {"o": "-5"})
    assert listed_ids(response) == expected[::-1]
    assert response.context["cl"].queryset.query.order_by == ("-expires_at", "-pk")


# -- The summary and the list's count: exact at each page's instant, from the counts.


def count_statements(client, params=None):
    """GET the list; return the response and the statements that read the counts table."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, params or {})
    assert response.status_code == 200
    return response, [q["sql"] for q in queries if SessionCount._meta.db_table in q["sql"]]


def test_each_page_counts_at_its_own_instant(operator_client, mixed):
    first, statements = count_statements(operator_client)
    assert len(statements) == 1
    assert summary_counts(first) == {"total": 3, "active": 2, "near_expiration": 1, "expired": 1}
    SessionFactory(now=NOW)  # created through the API, say, meanwhile
    with time_machine.travel(NOW + timedelta(minutes=3), tick=False):  # "near" is over
        later, statements = count_statements(operator_client, {"status": "expired"})
    assert len(statements) == 1
    assert summary_counts(later) == {"total": 4, "active": 2, "near_expiration": 0, "expired": 2}
    assert '<time datetime="2026-11-27T10:03:00+00:00">' in later.content.decode()
    assert later.context["cl"].paginator.count == len(listed_ids(later)) == 2


def test_an_operators_change_is_counted_on_the_page_after_it(operator_client, mixed):
    assert summary_counts(operator_client.get(CHANGELIST))["expired"] == 1
    with time_machine.travel(NOW + timedelta(seconds=1)):  # the clock runs from here
        response = post_action(operator_client, "expire_selected", [mixed["active"]])
        assert summary_counts(response)["expired"] == 2
        # The list of active sessions counts what it lists.
        response = operator_client.get(CHANGELIST, {"status": "active"})
        assert response.context["cl"].paginator.count == len(listed_ids(response)) == 1


def test_a_deletion_from_the_session_page_is_counted_on_the_next_page(operator_client, mixed):
    assert summary_counts(operator_client.get(CHANGELIST))["total"] == 3
    url = reverse("admin:sessions_admin_session_delete", args=[mixed["expired"].pk])
    response = operator_client.post(url, {"post": "yes"}, follow=True)
    assert summary_counts(response)["total"] == 2


# -- Filters.


@pytest.mark.parametrize(
    ("status", "expected"),
    [("active", {"active", "near"}), ("near_expiration", {"near"}), ("expired", {"expired"})],
)
def test_status_filter(operator_client, mixed, status, expected):
    response = operator_client.get(CHANGELIST, {"status": status})
    assert set(listed_ids(response)) == {str(mixed[name].pk) for name in expected}
    assert response.context["cl"].paginator.count == len(expected)


def test_expired_and_near_expiration_are_listed_along_the_expiry(operator_client, frozen):
    by_expiry = [
        SessionFactory(now=frozen, created_at=NOW - timedelta(minutes=40),
                       expires_at=NOW + timedelta(minutes=minutes))
        for minutes in (-3, -1, -2, 2, 1, 3)
    ]
    # In the default order the newest activity comes first: here, the reverse of creation.
    response = operator_client.get(CHANGELIST, {"status": "expired"})
    assert listed_ids(response) == [str(by_expiry[i].pk) for i in (1, 2, 0)]
    assert response.context["cl"].queryset.query.order_by == ("-expires_at", "-pk")
    response = operator_client.get(CHANGELIST, {"status": "near_expiration"})
    assert listed_ids(response) == [str(by_expiry[i].pk) for i in (4, 3, 5)]
    assert response.context["cl"].queryset.query.order_by == ("expires_at", "pk")
    # A column the operator sorts by still wins.
    response = operator_client.get(CHANGELIST, {"status": "expired", "o": "-5"})
    assert response.context["cl"].queryset.query.order_by == ("-expires_at", "-pk")
    response = operator_client.get(CHANGELIST, {"status": "near_expiration", "o": "-8"})
    assert response.context["cl"].queryset.query.order_by[0] == "-last_activity"


def test_auto_renew_filter(operator_client, frozen):
    renewing = SessionFactory(now=frozen)
    fixed = SessionFactory(now=frozen, timeout_config=TimeoutConfigFactory(auto_renew=False))
    assert listed_ids(operator_client.get(CHANGELIST, {"auto_renew": "yes"})) == [str(renewing.pk)]
    assert listed_ids(operator_client.get(CHANGELIST, {"auto_renew": "no"})) == [str(fixed.pk)]


def test_creation_date_filter(operator_client, frozen):
    today = SessionFactory(now=frozen)
    last_month = SessionFactory(
        now=frozen,
        created_at=frozen - timedelta(days=40),
        last_activity=frozen - timedelta(days=40),
        expires_at=frozen - timedelta(days=40) + timedelta(minutes=30),
    )
    response = operator_client.get(
        CHANGELIST, {"created_at__gte": "2026-11-27 00:00:00+00:00", "created_at__lt": "2026-11-28 00:00:00+00:00"}
    )
    assert listed_ids(response) == [str(today.pk)]
    assert "creation date" in response.content.decode()
    assert str(last_month.pk) in listed_ids(operator_client.get(CHANGELIST))


def test_every_creation_date_choice_of_the_filter_works(operator_client, frozen):
    SessionFactory(now=frozen)
    html = operator_client.get(CHANGELIST).content.decode()
    links = re.findall(r'href="(\?created_at__[^"]+)"', html)
    assert len(links) == 4  # today, past 7 days, this month, this year
    for link in links:
        response = operator_client.get(CHANGELIST + link.replace("&amp;", "&"))
        assert response.status_code == 200, link
        assert len(listed_ids(response)) == 1


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("created_at__gte", "abc"),
        ("created_at__lt", ""),
        # Parseable, but past the calendar's end in UTC: SQLite overflowed (a 500).
        ("created_at__gte", "9999-12-31 23:59:59-12:00"),
        ("created_at__lt", "0001-01-01 00:00:00+00:01"),
    ],
)
def test_a_creation_date_that_is_not_an_instant_is_refused_keeping_other_filters(
    operator_client, mixed, parameter, value
):
    response = operator_client.get(CHANGELIST, {"status": "expired", parameter: value})
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?status=expired"
    shown = operator_client.get(response["Location"])
    assert messages_of(shown) == [
        f"“{value}” is not a date and time; showing the list without that filter."
    ]
    assert listed_ids(shown) == [str(mixed["expired"].pk)]


@pytest.mark.parametrize(
    ("parameter", "value", "reason"),
    [("status", "bogus", "is not a status"), ("auto_renew", "maybe", "is not yes or no")],
)
def test_an_unknown_filter_value_is_refused_keeping_other_filters(
    operator_client, mixed, parameter, value, reason
):
    """Not all the sessions without a word, as if the filter had matched them all."""
    other = {"auto_renew": "yes"} if parameter == "status" else {"status": "expired"}
    response = operator_client.get(CHANGELIST, {**other, parameter: value})
    assert response.status_code == 302
    shown = operator_client.get(response["Location"])
    assert messages_of(shown) == [f"“{value}” {reason}; showing the list without that filter."]
    assert shown.context["cl"].params == other


def test_an_action_under_a_refused_creation_date_changes_nothing(operator_client, mixed):
    before = list(Session.objects.order_by("pk").values())
    response = operator_client.post(
        f"{CHANGELIST}?created_at__gte=9999-12-31+23:59:59-12:00",
        {"action": "expire_selected", "select_across": "1", "index": "0",
         "_selected_action": [str(mixed["active"].pk)]},
    )
    assert response.status_code == 302 and response["Location"] == CHANGELIST
    assert list(Session.objects.order_by("pk").values()) == before


def test_columns_without_an_index_cannot_be_sorted_through_the_url(operator_client, frozen):
    """``?o=`` names a column by position: renewal count (7) has no index, so it is ignored."""
    sessions = [
        SessionFactory(
            now=frozen,
            renewal_count=count,
            created_at=frozen - timedelta(hours=1),
            last_activity=frozen - timedelta(minutes=count),
        )
        for count in (3, 1, 2)
    ]
    by_activity = [str(s.pk) for s in sorted(sessions, key=lambda s: s.last_activity, reverse=True)]
    for order in ("7", "-7", "99", "x"):  # the default order: last activity, latest first
        assert listed_ids(operator_client.get(CHANGELIST, {"o": order})) == by_activity, order
    # An indexed column still sorts: expires at (5), earliest first, alone or after another.
    by_expiry = [str(s.pk) for s in sorted(sessions, key=lambda s: (s.expires_at, s.pk))]
    for order in ("5", "7.5"):
        assert listed_ids(operator_client.get(CHANGELIST, {"o": order})) == by_expiry, order


@pytest.mark.parametrize(
    "lookup",
    [
        {"metadata__regex": "("},
        {"agent_id__regex": "("},
        {"metadata__icontains": "\x00"},
        {"metadata__icontains": "x"},  # no index: a full scan on every page
        {"created_at__year": "99999"},
        {"renewal_count__range": "1"},
        {"timeout_config__auto_renew": "1"},
        {"status": "active", "expires_at__lt": "2000-01-01"},
    ],
)
def test_lookups_that_are_not_filters_of_the_list_are_refused(operator_client, mixed, lookup):
    response = operator_client.get(CHANGELIST, lookup)
    assert response.status_code == 302 and response["Location"] == CHANGELIST
    refused = next(name for name in lookup if name not in ("status",))
    shown = operator_client.get(response["Location"])
    assert messages_of(shown) == [
        f"“{refused}” is not one of this list's filters; showing all sessions."
    ]
    assert len(listed_ids(shown)) == 3


@pytest.mark.parametrize(
    ("changelist", "lookup", "noun"),
    [
        ("admin:auth_user_changelist", {"username__regex": "("}, "users"),
        ("admin:auth_user_changelist", {"id__range": "1"}, "users"),
        ("admin:auth_group_changelist", {"name__regex": "["}, "groups"),
    ],
)
def test_auth_admins_refuse_lookups_that_are_not_filters_too(admin_client, changelist, lookup, noun):
    url = reverse(changelist)
    response = admin_client.get(url, lookup)
    assert response.status_code == 302 and response["Location"] == url
    assert f"showing all {noun}" in messages_of(admin_client.get(url))[0]


def test_auth_user_admin_filters_still_work(admin_client, django_user_model):
    django_user_model.objects.create_user(username="someone", password="x" * 12)
    url = reverse("admin:auth_user_changelist")
    response = admin_client.get(url, {"is_staff__exact": "0", "is_superuser__exact": "0"})
    assert response.status_code == 200
    assert "someone" in response.content.decode()
    assert "admin" not in re.findall(r'class="field-username"><a [^>]*>([^<]+)<', response.content.decode())


def test_filters_combine(operator_client, frozen):
    fixed_config = TimeoutConfigFactory(auto_renew=False)
    wanted = SessionFactory(now=frozen, near_expiration=True, timeout_config=fixed_config)
    SessionFactory(now=frozen, near_expiration=True)
    SessionFactory(now=frozen, timeout_config=fixed_config)
    response = operator_client.get(CHANGELIST, {"status": "near_expiration", "auto_renew": "no"})
    assert listed_ids(response) == [str(wanted.pk)]


# -- Search.


@pytest.mark.parametrize("field", ["session_id", "agent_id", "user_id"])
def test_search_by_exact_id(operator_client, frozen, field):
    target = SessionFactory(now=frozen)
    SessionFactory.create_batch(2, now=frozen)
    response = operator_client.get(CHANGELIST, {"q": str(getattr(target, field)).upper()})
    assert listed_ids(response) == [str(target.pk)]
    assert "1 session found" in response.content.decode()


def test_search_by_user_lists_all_their_sessions(operator_client, frozen):
    user_id = uuid.uuid4()
    theirs = SessionFactory.create_batch(3, now=frozen, user_id=user_id)
    SessionFactory(now=frozen)
    response = operator_client.get(CHANGELIST, {"q": f"  {user_id}  "})
    assert set(listed_ids(response)) == {str(s.pk) for s in theirs}


def test_search_uses_equality_not_a_substring_scan(operator_client, frozen):
    target = SessionFactory(now=frozen)
    with CaptureQueriesContext(connection) as queries:
        operator_client.get(CHANGELIST, {"q": str(target.user_id)})
    page_query = [q["sql"] for q in queries if "renewal_count" in q["sql"]][-1]
    assert "LIKE" not in page_query.upper()
    assert '"user_id" =' in page_query


@pytest.mark.parametrize("term", ["alice", "1234", "' OR 1=1 --", "x" * 500])
def test_search_for_a_non_uuid_finds_nothing_and_says_why(operator_client, frozen, term):
    SessionFactory(now=frozen)
    response = operator_client.get(CHANGELIST, {"q": term})
    assert response.status_code == 200
    assert listed_ids(response) == []
    assert any("is not a session, agent or user id" in m for m in messages_of(response))


def test_a_search_django_cannot_take_finds_nothing(operator_client, frozen):
    session = SessionFactory(now=frozen)
    response = operator_client.get(CHANGELIST, {"q": f"\x00{session.pk}"})
    assert response.status_code == 200
    assert listed_ids(response) == []
    assert "Null characters are not allowed." in messages_of(response)


def test_the_list_does_not_load_metadata(operator_client, frozen):
    SessionFactory(now=frozen, metadata={"big": "x" * 5000})
    with CaptureQueriesContext(connection) as queries:
        operator_client.get(CHANGELIST)
    page = next(q["sql"] for q in queries if "ORDER BY" in q["sql"].upper())
    assert "metadata" not in page


def test_agent_and_user_cells_link_to_their_search(operator_client, frozen):
    session = SessionFactory(now=frozen)
    html = operator_client.get(CHANGELIST).content.decode()
    assert f'href="{CHANGELIST}?q={session.user_id}"' in html
    assert f'href="{CHANGELIST}?q={session.agent_id}"' in html
    assert f'>{str(session.user_id)[:8]}…</a>' in html


# -- Pagination at scale: bounded counts, bounded depth.


def test_large_results_are_counted_exactly_and_paged_up_to_a_limit(
    operator_client, frozen, monkeypatch
):
    monkeypatch.setattr(sessions_admin_admin, "LISTED_ROWS_LIMIT", 4)
    monkeypatch.setattr(sessions_admin_admin.SessionAdmin, "list_per_page", 2)
    SessionFactory.create_batch(7, now=frozen, timeout_config=TimeoutConfigFactory(auto_renew=False))
    response = operator_client.get(CHANGELIST, {"auto_renew": "no"})
    paginator = response.context["cl"].paginator
    assert paginator.count == 7 and paginator.count_is_exact
    assert paginator.num_pages == 2 and paginator.pages_are_capped
    html = response.content.decode()
    assert "7 sessions" in html
    assert "pages stop at 2" in html
    # A page past the end shows the last one, with the list's filters kept.
    beyond = operator_client.get(CHANGELIST, {"auto_renew": "no", "p": "3"})
    assert beyond.status_code == 200
    assert beyond.context["cl"].page_num == 2 and len(listed_ids(beyond)) == 2
    assert messages_of(beyond) == ["There is no page 3 of this list; showing page 2."]
    assert 'class="this-page">2<' in beyond.content.decode()
    before = operator_client.get(CHANGELIST, {"auto_renew": "no", "p": "-4"})
    assert before.status_code == 200 and before.context["cl"].page_num == 1


def test_a_creation_date_range_is_counted_up_to_a_limit(operator_client, frozen, monkeypatch):
    monkeypatch.setattr(sessions_admin_admin, "LISTED_ROWS_LIMIT", 4)
    monkeypatch.setattr(sessions_admin_admin.SessionAdmin, "list_per_page", 2)
    SessionFactory.create_batch(7, now=frozen)
    since = {"created_at__gte": "2026-11-27 00:00:00+00:00"}
    response = operator_client.get(CHANGELIST, since)
    paginator = response.context["cl"].paginator
    assert paginator.count == 5 and not paginator.count_is_exact
    assert paginator.num_pages == 2 and paginator.pages_are_capped
    html = response.content.decode()
    assert "more than 4 sessions" in html
    assert summary_counts(response)["total"] == 7
    # Exactly the limit is still an exact count.
    Session.objects.filter(pk__in=Session.objects.values("pk")[:3]).delete()
    at_limit = operator_client.get(CHANGELIST, since)
    assert at_limit.context["cl"].paginator.count_is_exact
    assert "4 sessions" in at_limit.content.decode()
    assert "more than 4" not in at_limit.content.decode()


def test_second_page(operator_client, frozen, monkeypatch):
    monkeypatch.setattr(sessions_admin_admin.SessionAdmin, "list_per_page", 2)
    sessions = [
        SessionFactory(now=frozen, created_at=frozen - timedelta(minutes=i)) for i in range(3)
    ]
    response = operator_client.get(CHANGELIST, {"p": "2"})
    assert listed_ids(response) == [str(sessions[2].pk)]
    assert "3 sessions" in response.content.decode()


# -- The session page.


def test_session_page_is_read_only_with_config_and_derived_fields(operator_client, frozen):
    config = TimeoutConfigFactory(timeout_minutes=60, auto_renew=False, max_duration_minutes=180,
                                  warning_threshold_minutes=10)
    session = SessionFactory(now=frozen, timeout_config=config, metadata={"channel": "web"},
                             created_at=frozen - timedelta(minutes=55),
                             expires_at=frozen + timedelta(minutes=5))
    response = operator_client.get(change_url(session))
    assert response.status_code == 200
    html = response.content.decode()
    assert "View session" in html
    assert 'name="_save"' not in html
    assert not re.search(r'<(input|textarea|select)[^>]+name="(agent_id|user_id|metadata|expires_at)"', html)
    for text in ("60 min", "180 min", "10 min", "near expiration", "5 min 0 s",
                 "2026-11-27 12:05:00", "&quot;channel&quot;: &quot;web&quot;",
                 "Timeout configuration", "Renew now", "Expire now"):
        assert text in html, text


def test_session_page_cannot_be_saved(operator_client, frozen):
    session = SessionFactory(now=frozen)
    response = operator_client.post(change_url(session), {"renewal_count": "99"})
    assert response.status_code == 403
    session.refresh_from_db()
    assert session.renewal_count == 0


def test_no_add_through_the_admin(operator_client, admin_client):
    url = reverse("admin:sessions_admin_session_add")
    assert operator_client.get(url).status_code == 403
    assert admin_client.get(url).status_code == 403
    assert f'href="{url}"' not in admin_client.get(CHANGELIST).content.decode()


def test_timeout_config_is_not_registered(admin_client):
    assert admin_client.get("/admin/sessions_admin/timeoutconfig/").status_code == 404


def test_session_page_renew_button(operator_client, operator, frozen):
    session = SessionFactory(now=frozen, near_expiration=True)
    with time_machine.travel(NOW + timedelta(seconds=1), tick=False):
        response = operator_client.post(
            reverse("admin:sessions_admin_session_renew", args=[session.pk]), follow=True
        )
    assert response.redirect_chain[-1][0] == change_url(session)
    assert messages_of(response) == ["Renewed 1 session."]
    session.refresh_from_db()
    assert session.renewal_count == 1
    assert session.expires_at == NOW + timedelta(seconds=1, minutes=30)
    entry = LogEntry.objects.get(object_id=str(session.pk))
    assert (entry.user_id, entry.action_flag, entry.change_message) == (
        operator.pk, CHANGE, "Renewed from the admin."
    )


def test_session_page_buttons_keep_the_lists_filters(operator_client, frozen):
    session = SessionFactory(now=frozen)
    filters = "_changelist_filters=status%3Dactive%26q%3D" + str(session.agent_id)
    page = operator_client.get(f"{change_url(session)}?{filters}").content.decode()
    renew = reverse("admin:sessions_admin_session_renew", args=[session.pk])
    assert f'action="{renew}?{filters}"' in page
    response = operator_client.post(f"{renew}?{filters}")
    assert response.status_code == 302
    assert response["Location"] == f"{change_url(session)}?{filters}"
    expire = reverse("admin:sessions_admin_session_expire", args=[session.pk])
    response = operator_client.post(f"{expire}?{filters}")
    assert response["Location"] == f"{change_url(session)}?{filters}"


def test_an_action_says_once_that_the_search_is_not_an_id(operator_client, frozen):
    session = SessionFactory(now=frozen)
    data = {"action": "expire_selected", "index": "0", "_selected_action": [str(session.pk)]}
    response = operator_client.post(f"{CHANGELIST}?q=nonsense", data, follow=True)
    warnings = [m for m in messages_of(response) if "is not a session, agent or user id" in m]
    assert len(warnings) == 1


def test_session_page_expire_button(operator_client, frozen):
    session = SessionFactory(now=frozen)
    response = operator_client.post(
        reverse("admin:sessions_admin_session_expire", args=[session.pk]), follow=True
    )
    assert messages_of(response) == ["Expired 1 session."]
    session.refresh_from_db()
    assert session.expires_at == NOW
    assert "session-status--expired" in response.content.decode()


def test_session_page_buttons_need_post_and_change_permission(client, django_user_model, frozen):
    session = SessionFactory(now=frozen)
    viewer = django_user_model.objects.create_user(username="viewer", password="x", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_session"))
    client.force_login(viewer)
    url = reverse("admin:sessions_admin_session_renew", args=[session.pk])
    assert client.post(url).status_code == 403
    page = client.get(change_url(session)).content.decode()
    assert "Renew now" not in page
    session.refresh_from_db()
    assert session.renewal_count == 0


def test_session_page_buttons_refuse_get(operator_client, frozen):
    session = SessionFactory(now=frozen)
    assert operator_client.get(reverse("admin:sessions_admin_session_expire", args=[session.pk])).status_code == 405


def test_who_may_view_and_delete_but_not_change_returns_to_the_list_after_a_delete(
    client, django_user_model, frozen
):
    user = django_user_model.objects.create_user(username="cleaner", password="x" * 12, is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_session", "delete_session"])
    )
    client.force_login(user)
    session = SessionFactory(now=frozen, expired=True)
    url = reverse("admin:sessions_admin_session_delete", args=[session.pk])
    response = client.post(f"{url}?_changelist_filters=status%3Dexpired", {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?status=expired"
    assert not Session.objects.filter(pk=session.pk).exists()


def test_session_page_delete_uses_the_service(operator_client, frozen):
    session = SessionFactory(now=frozen, expired=True)
    url = reverse("admin:sessions_admin_session_delete", args=[session.pk])
    response = operator_client.post(url, {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert not Session.objects.filter(pk=session.pk).exists()
    assert LogEntry.objects.filter(object_id=str(session.pk), action_flag=DELETION).count() == 1


# -- Actions: services, messages, admin log.


def test_actions_offered(operator_client, frozen):
    SessionFactory(now=frozen)
    html = operator_client.get(CHANGELIST).content.decode()
    for action in ("Renew selected sessions", "Expire selected sessions now", "Delete selected sessions"):
        assert action in html


def test_view_only_staff_get_no_actions(client, django_user_model, frozen):
    SessionFactory(now=frozen)
    viewer = django_user_model.objects.create_user(username="viewer", password="x", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_session"))
    client.force_login(viewer)
    html = client.get(CHANGELIST).content.decode()
    assert "Renew selected sessions" not in html and "Delete selected sessions" not in html


def test_renew_action(operator_client, operator, frozen):
    renewable = SessionFactory.create_batch(2, now=frozen, near_expiration=True)
    expired = SessionFactory(now=frozen, expired=True)
    capped_config = TimeoutConfigFactory(timeout_minutes=30, max_duration_minutes=30)
    capped = SessionFactory(now=frozen, timeout_config=capped_config)
    with time_machine.travel(NOW + timedelta(seconds=5), tick=False):
        response = post_action(operator_client, "renew_selected", [*renewable, expired, capped])
    assert messages_of(response) == [
        "Renewed 2 sessions.",
        "2 sessions could not be renewed (1 already expired, 1 at the maximum duration).",
    ]
    for session in renewable:
        session.refresh_from_db()
        assert session.renewal_count == 1
        assert session.expires_at == NOW + timedelta(seconds=5, minutes=30)
        assert session.last_activity == NOW + timedelta(seconds=5)
    expired.refresh_from_db()
    assert expired.renewal_count == 0
    entries = LogEntry.objects.filter(action_flag=CHANGE, user=operator)
    assert sorted(entries.values_list("object_id", flat=True)) == sorted(str(s.pk) for s in renewable)
    assert {e.change_message for e in entries} == {"Renewed from the admin."}


def test_expire_action(operator_client, operator, frozen):
    active = [SessionFactory(now=frozen), SessionFactory(now=frozen, near_expiration=True)]
    already = SessionFactory(now=frozen, expired=True)
    already_expiry = already.expires_at
    response = post_action(operator_client, "expire_selected", [*active, already])
    assert messages_of(response) == ["Expired 2 sessions. 1 session already expired."]
    for session in active:
        session.refresh_from_db()
        assert session.expires_at == NOW
    already.refresh_from_db()
    assert already.expires_at == already_expiry
    entries = LogEntry.objects.filter(action_flag=CHANGE, user=operator)
    assert sorted(entries.values_list("object_id", flat=True)) == sorted(str(s.pk) for s in active)
    assert summary_counts(response)["expired"] == 3


def test_expire_action_counts_a_session_deleted_meanwhile_apart(
    operator_client, operator, frozen, monkeypatch
):
    active, gone = SessionFactory.create_batch(2, now=frozen)
    already = SessionFactory(now=frozen, expired=True)
    expire_now = sessions_admin_admin.services.session_expire_now

    def delete_then_expire(*, session_ids):
        Session.objects.filter(pk=gone.pk).delete()  # another operator was faster
        return expire_now(session_ids=session_ids)

    monkeypatch.setattr(sessions_admin_admin.services, "session_expire_now", delete_then_expire)
    response = post_action(operator_client, "expire_selected", [active, gone, already])
    assert messages_of(response) == [
        "Expired 1 session. 1 session already expired. 1 session deleted meanwhile."
    ]
    entries = LogEntry.objects.filter(action_flag=CHANGE, user=operator)
    assert list(entries.values_list("object_id", flat=True)) == [str(active.pk)]


def test_expire_action_on_a_session_created_by_a_server_whose_clock_runs_ahead(
    operator_client, operator, frozen
):
    """Created 2 s after this server's now: it ends at its creation, not before it (a 500)."""
    ahead = SessionFactory(now=NOW + timedelta(seconds=2))
    response = post_action(operator_client, "expire_selected", [ahead])
    assert response.status_code == 200
    assert messages_of(response) == ["Expired 1 session."]
    ahead.refresh_from_db()
    assert ahead.expires_at == ahead.created_at == NOW + timedelta(seconds=2)


def test_expire_action_never_ends_a_session_before_it_began(operator_client, frozen):
    # The page's instant is read when the request starts; a session created (or
    # active) after that instant must not be given an expiry before it.
    newcomer = SessionFactory(now=NOW + timedelta(seconds=1))
    readings = iter([NOW])

    def clock():
        return next(readings, NOW + timedelta(seconds=2))

    data = {"action": "expire_selected", "select_across": "1", "index": "0",
            "_selected_action": [str(newcomer.pk)]}
    with mock.patch.object(policy, "clock", side_effect=clock):
        response = operator_client.post(CHANGELIST, data, follow=True)
    assert messages_of(response) == ["Expired 1 session."]
    newcomer.refresh_from_db()
    assert newcomer.expires_at == NOW + timedelta(seconds=2) >= newcomer.last_activity


@pytest.mark.django_db(transaction=True)
def test_an_action_on_a_locked_database_is_a_503(operator_client, frozen, caplog):
    # Another connection holds the session table: on SQLite its write transaction
    # makes the action's BEGIN IMMEDIATE fail at once; on PostgreSQL its table lock
    # makes the action's queries fail after lock_timeout.
    session = SessionFactory(now=frozen)
    lock = TableLock()
    lock.take()
    try:
        response = post_action(operator_client, "expire_selected", [session])
    finally:
        lock.release()
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert b"The database is busy or cannot be reached, so nothing was changed." in response.content
    logged = [r.getMessage() for r in caplog.records if r.name == "sessions_admin.middleware"]
    assert [message.splitlines()[0] for message in logged] == [
        f"Database unavailable: {lock.reason.rstrip('.')}"
    ]
    session.refresh_from_db()
    assert session.expires_at == NOW + timedelta(minutes=30)
    assert not LogEntry.objects.exists()


def test_expire_action_with_nothing_active_warns(operator_client, frozen):
    already = SessionFactory(now=frozen, expired=True)
    response = post_action(operator_client, "expire_selected", [already])
    assert messages_of(response) == ["Expired 0 sessions. 1 session already expired."]
    assert not LogEntry.objects.exists()


def test_delete_action_confirms_then_deletes_through_the_service(operator_client, operator, frozen):
    doomed = SessionFactory.create_batch(2, now=frozen)
    kept = SessionFactory(now=frozen)
    data = {"action": "delete_selected", "_selected_action": [str(s.pk) for s in doomed]}
    confirmation = operator_client.post(CHANGELIST, data)
    assert confirmation.status_code == 200
    assert "Are you sure" in confirmation.content.decode()
    assert Session.objects.count() == 3
    with mock.patch.object(
        sessions_admin_admin.services, "session_delete_many",
        wraps=sessions_admin_admin.services.session_delete_many,
    ) as service:
        response = operator_client.post(CHANGELIST, {**data, "post": "yes"}, follow=True)
    service.assert_called_once()
    assert messages_of(response) == ["Deleted 2 sessions."]
    assert list(Session.objects.values_list("pk", flat=True)) == [kept.pk]
    entries = LogEntry.objects.filter(action_flag=DELETION, user=operator)
    assert sorted(entries.values_list("object_id", flat=True)) == sorted(str(s.pk) for s in doomed)
    # The confirmation submitted again (a double click) deletes and logs nothing, and says so.
    again = operator_client.post(CHANGELIST, {**data, "post": "yes"}, follow=True)
    assert messages_of(again) == ["No session was deleted."]
    assert entries.count() == 2


def test_the_admin_offers_no_view_site_link(operator_client):
    """The service serves no site at /: the link would lead to a 404."""
    response = operator_client.get(CHANGELIST)
    assert response.status_code == 200
    assert "View site" not in response.content.decode()


def test_renewing_a_selection_that_matches_no_session_says_so(operator_client, mixed):
    gone = SimpleNamespace(pk=uuid.uuid4())
    response = post_action(operator_client, "renew_selected", [gone])
    assert messages_of(response) == ["No session was renewed."]
    # The list's filter applies to the selection too: no active session is expired.
    response = operator_client.post(
        f"{CHANGELIST}?status=expired",
        {"action": "renew_selected", "_selected_action": [str(mixed["active"].pk)]},
        follow=True,
    )
    assert messages_of(response) == ["No session was renewed."]
    assert Session.objects.get(pk=mixed["active"].pk).renewal_count == 0


def test_a_sign_in_whose_next_leaves_the_site_lands_on_the_admin_index(client, operator):
    response = client.post(
        "/admin/login/?next=//elsewhere.example/",
        {"username": "operator", "password": "operator-pass-123", "next": "//elsewhere.example/"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


def test_actions_through_select_across_respect_the_filter(operator_client, mixed):
    data = {"action": "expire_selected", "select_across": "1", "index": "0",
            "_selected_action": [str(mixed["active"].pk)]}
    response = operator_client.post(f"{CHANGELIST}?status=near_expiration", data, follow=True)
    assert messages_of(response) == ["Expired 1 session."]
    mixed["near"].refresh_from_db()
    mixed["active"].refresh_from_db()
    assert mixed["near"].expires_at == NOW
    assert mixed["active"].expires_at > NOW


def test_deleting_as_many_sessions_as_the_limit_allows_goes_through(operator_client, frozen):
    # The confirmation page posts back every selected id with its own fields:
    # Django's cap on the number of form fields must leave room for them.
    agent = uuid.uuid4()
    SessionFactory.create_batch(sessions_admin_admin.ACTION_LIMIT, now=frozen, agent_id=agent)
    selection = {"action": "delete_selected", "select_across": "1", "index": "0"}
    # As the browser posts it: the page's rows ticked, then "select all 1,000".
    page = listed_ids(operator_client.get(CHANGELIST, {"q": str(agent)}))
    confirm = operator_client.post(f"{CHANGELIST}?q={agent}", {**selection, "_selected_action": page})
    assert confirm.status_code == 200 and b"<title>Delete multiple objects" in confirm.content
    form = dict(re.findall(r'<input type="hidden" name="(action|post)" value="([^"]*)"', confirm.content.decode()))
    ids = re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', confirm.content.decode())
    assert len(ids) == sessions_admin_admin.ACTION_LIMIT
    response = operator_client.post(
        f"{CHANGELIST}?q={agent}", {**form, "_selected_action": ids}, follow=True
    )
    assert response.status_code == 200
    assert messages_of(response) == [f"Deleted {sessions_admin_admin.ACTION_LIMIT:,} sessions."]
    assert not Session.objects.filter(agent_id=agent).exists()


def test_select_all_is_offered_with_the_real_count_up_to_the_action_limit(
    operator_client, frozen, monkeypatch
):
    monkeypatch.setattr(sessions_admin_admin.SessionAdmin, "list_per_page", 2)
    SessionFactory.create_batch(3, now=frozen)
    html = operator_client.get(CHANGELIST).content.decode()
    assert ">Select all 3 sessions</a>" in html
    assert "All 3 selected" in html
    assert "session-action-limit" not in html


def test_select_all_is_not_offered_beyond_the_action_limit(operator_client, frozen, monkeypatch):
    # Beyond the limit an action would only be refused; above LISTED_ROWS_LIMIT
    # the count is not even exact ("Select all 10001 sessions").
    monkeypatch.setattr(sessions_admin_admin, "ACTION_LIMIT", 2)
    monkeypatch.setattr(sessions_admin_admin.SessionAdmin, "list_per_page", 2)
    SessionFactory.create_batch(3, now=frozen)
    html = operator_client.get(CHANGELIST).content.decode()
    assert ">Select all 3 sessions</a>" not in html and "All 3 selected" not in html
    assert "Actions take at most 2 sessions at a time: filter or search to select across pages." in html


@pytest.mark.parametrize("post", [{}, {"post": "yes"}], ids=["first-post", "confirmed"])
@pytest.mark.parametrize("action", ["renew_selected", "expire_selected", "delete_selected"])
def test_actions_refuse_more_than_the_limit(operator_client, frozen, monkeypatch, action, post):
    monkeypatch.setattr(sessions_admin_admin, "ACTION_LIMIT", 2)
    sessions = SessionFactory.create_batch(3, now=frozen, near_expiration=True)
    before = sorted(Session.objects.values_list("pk", "expires_at", "renewal_count"))
    with time_machine.travel(NOW + timedelta(seconds=5), tick=False):
        response = post_action(operator_client, action, sessions, **post)
    assert response.status_code == 200
    assert b"<title>Delete multiple objects" not in response.content
    assert messages_of(response) == [
        "More than 2 sessions are selected; nothing was changed. Narrow the list with filters "
        "or a search, or use the API or prune_sessions for bulk work."
    ]
    assert sorted(Session.objects.values_list("pk", "expires_at", "renewal_count")) == before
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("button", ["renew", "expire"])
@pytest.mark.parametrize("object_id", [str(uuid.UUID(int=7)), "not-a-uuid"])
def test_session_page_buttons_on_an_unknown_id_are_404(operator_client, frozen, button, object_id):
    session = SessionFactory(now=frozen)
    url = reverse(f"admin:sessions_admin_session_{button}", args=[object_id])
    assert operator_client.post(url).status_code == 404
    assert Session.objects.get(pk=session.pk).expires_at == session.expires_at
    assert not LogEntry.objects.exists()


def test_renew_action_reports_a_session_deleted_meanwhile(
    operator_client, operator, frozen, deleted_before_its_renewal
):
    kept, gone = SessionFactory.create_batch(2, now=frozen, near_expiration=True)
    deleted_before_its_renewal.add(gone.pk)
    with time_machine.travel(NOW + timedelta(seconds=5), tick=False):
        response = post_action(operator_client, "renew_selected", [kept, gone])
    assert response.status_code == 200
    assert messages_of(response) == [
        "Renewed 1 session.",
        "1 session could not be renewed (1 deleted meanwhile).",
    ]
    kept.refresh_from_db()
    assert (kept.renewal_count, kept.expires_at) == (1, NOW + timedelta(seconds=5, minutes=30))
    assert not Session.objects.filter(pk=gone.pk).exists()
    entries = LogEntry.objects.filter(action_flag=CHANGE, user=operator)
    assert list(entries.values_list("object_id", flat=True)) == [str(kept.pk)]


def test_renew_button_on_a_session_deleted_meanwhile(operator_client, frozen, deleted_before_its_renewal):
    session = SessionFactory(now=frozen, near_expiration=True)
    deleted_before_its_renewal.add(session.pk)
    response = operator_client.post(reverse("admin:sessions_admin_session_renew", args=[session.pk]))
    assert response.status_code == 302
    assert response["Location"] == change_url(session)
    assert messages_of(operator_client.get(CHANGELIST)) == [
        "1 session could not be renewed (1 deleted meanwhile)."
    ]
    assert not Session.objects.exists()
    assert not LogEntry.objects.exists()


def test_action_with_nothing_selected(operator_client, frozen):
    SessionFactory(now=frozen)
    response = operator_client.post(CHANGELIST, {"action": "renew_selected", "index": "0"}, follow=True)
    assert any("Items must be selected" in m for m in messages_of(response))


@pytest.mark.parametrize("action", ["renew_selected", "expire_selected", "delete_selected"])
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "\x00", "1" * 40])
def test_actions_refuse_selected_ids_that_are_not_uuids(operator_client, frozen, action, bad_id):
    # A tampered form: Django's own action handling would fail on it (500).
    session = SessionFactory(now=frozen)
    expiry = session.expires_at
    data = {"action": action, "_selected_action": [str(session.pk), bad_id], "post": "yes"}
    response = operator_client.post(f"{CHANGELIST}?status=active", data)
    assert response.status_code == 302 and response["Location"] == f"{CHANGELIST}?status=active"
    assert messages_of(operator_client.get(response["Location"])) == [
        f"“{bad_id}” is not the id of a session; nothing was changed."
    ]
    session.refresh_from_db()
    assert session.expires_at == expiry and session.renewal_count == 0
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize(
    ("changelist", "noun"),
    [("/admin/auth/user/", "user"), ("/admin/auth/group/", "group")],
)
def test_auth_admin_actions_refuse_malformed_ids_too(admin_client, changelist, noun):
    data = {"action": "delete_selected", "_selected_action": ["x"], "post": "yes"}
    response = admin_client.post(changelist, data)
    assert response.status_code == 302 and response["Location"] == changelist
    assert messages_of(admin_client.get(changelist)) == [
        f"“x” is not the id of a {noun}; nothing was changed."
    ]
    assert get_user_model().objects.count() == 1  # the signed-in admin


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_summary_marks_the_filtered_status(operator_client, mixed):
    html = operator_client.get(CHANGELIST, {"status": "expired"}).content.decode()
    assert re.search(r'session-summary__count--expired session-summary__count--current"', html)
    assert html.count("session-summary__count--current") == 1


def test_expired_session_page_offers_no_renew_or_expire(operator_client, frozen):
    session = SessionFactory(now=frozen, expired=True)
    html = operator_client.get(change_url(session)).content.decode()
    assert "session-status--expired" in html
    assert "Renew now" not in html and "Expire now" not in html
