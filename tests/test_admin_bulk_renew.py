"""Renewing many sessions at once: ``services.session_renew_many`` and the admin's renew action."""

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import time_machine
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sessions_admin import policy, services
from sessions_admin.exceptions import SessionExpired, SessionNotFound, SessionRenewalFailed
from sessions_admin.models import Session
from tests.factories import SessionFactory, TimeoutConfigFactory
from tests.test_concurrency import run_concurrently

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
CHANGELIST = reverse("admin:sessions_admin_session_changelist")
MINUTE = timedelta(minutes=1)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def post_renew(client, sessions):
    data = {"action": "renew_selected", "_selected_action": [str(s.pk) for s in sessions]}
    return client.post(CHANGELIST, data, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@dataclass(frozen=True)
class State:
    """A session's stored timing fields and timeout, as minutes from ``NOW``."""

    name: str
    created: float
    expires: float
    last_activity: float | None = None  # defaults to ``created``
    renewals: int = 0
    timeout_minutes: int = 30
    auto_renew: bool = True
    max_duration_minutes: int = 720

    def create(self) -> Session:
        config = TimeoutConfigFactory(
            timeout_minutes=self.timeout_minutes,
            auto_renew=self.auto_renew,
            max_duration_minutes=self.max_duration_minutes,
            warning_threshold_minutes=1,
        )
        last_activity = self.created if self.last_activity is None else self.last_activity
        return SessionFactory(
            timeout_config=config,
            created_at=NOW + self.created * MINUTE,
            last_activity=NOW + last_activity * MINUTE,
            expires_at=NOW + self.expires * MINUTE,
            renewal_count=self.renewals,
        )


STATES = [
    State("near expiration", created=-28, expires=2),
    State("renewed before", created=-100, expires=20, last_activity=-10, renewals=7),
    State("no auto-renew", created=-50, expires=1, timeout_minutes=60, auto_renew=False,
          max_duration_minutes=180),
    State("reaches its cap", created=-700, expires=5),  # cap at NOW + 20 min
    State("at its cap", created=-710, expires=10),
    State("timeout equals the cap", created=-2, expires=3, timeout_minutes=5, max_duration_minutes=5),
    State("active later than now", created=-20, expires=10, last_activity=1 / 60),
    State("expires exactly now", created=-30, expires=0),
    State("expired", created=-31, expires=-1),
]


def expected_after_renewal(session: Session, *, now: datetime):
    """The single-session rule (SPEC §2, manual renew), from the policy functions alone."""
    before = (session.last_activity, session.expires_at, session.renewal_count)
    if policy.is_expired(session.expires_at, now=now):
        return before, SessionExpired
    new_expiry = policy.renewed_expiry(session.created_at, session.expires_at, session.timeout, now=now)
    if new_expiry is None:
        return before, SessionRenewalFailed
    return (max(now, session.last_activity), new_expiry, session.renewal_count + 1), None


def timing(session: Session) -> tuple:
    session.refresh_from_db()
    return session.last_activity, session.expires_at, session.renewal_count


# -- The service.


def test_each_session_is_renewed_as_its_own_renewal_would_renew_it(frozen):
    singles = [state.create() for state in STATES]
    together = [state.create() for state in STATES]
    expected = [expected_after_renewal(session, now=NOW) for session in together]

    renewed, refused, now = services.session_renew_many(session_ids=[s.pk for s in together])

    assert now == NOW
    for state, session, (fields, _) in zip(STATES, together, expected, strict=True):
        assert timing(session) == fields, state.name
    assert {s.pk for s in renewed} == {
        s.pk for s, (_, refusal) in zip(together, expected, strict=True) if refusal is None
    }
    assert refused == Counter(refusal for _, refusal in expected if refusal is not None)
    assert refused == Counter({SessionExpired: 2, SessionRenewalFailed: 2})
    # What is returned is what was stored.
    for session in renewed:
        assert (session.last_activity, session.expires_at, session.renewal_count) == timing(
            Session.objects.get(pk=session.pk)
        )
    # And the same as renewing each on its own through session_renew.
    for state, single, session in zip(STATES, singles, together, strict=True):
        try:
            services.session_renew(session_id=single.pk)
        except (SessionExpired, SessionRenewalFailed):
            pass
        assert timing(single) == timing(session), state.name


def test_ids_that_no_longer_exist_are_counted_as_not_found(frozen):
    kept = SessionFactory(now=NOW, near_expiration=True)
    gone = SessionFactory.create_batch(2, now=NOW, near_expiration=True)
    gone_ids = [s.pk for s in gone]
    Session.objects.filter(pk__in=gone_ids).delete()
    renewed, refused, _ = services.session_renew_many(session_ids=[kept.pk, *gone_ids])
    assert [s.pk for s in renewed] == [kept.pk]
    assert refused == Counter({SessionNotFound: 2})


def test_a_session_renewed_already_in_this_millisecond_is_touched_not_counted(frozen):
    """Its expiry cannot move (the renewal before it just moved it there), and the cap is far."""
    session = SessionFactory(now=NOW - 5 * MINUTE)
    services.session_renew(session_id=session.pk)  # at NOW
    renewed, refused, _ = services.session_renew_many(session_ids=[session.pk])
    assert (renewed, refused) == ([], Counter())
    session.refresh_from_db()
    assert (session.renewal_count, session.expires_at, session.last_activity) == (
        1, NOW + 30 * MINUTE, NOW
    )


def test_the_renewal_and_its_log_entries_commit_together(operator_client, frozen, monkeypatch):
    """A renewal whose log cannot be written is not applied: nothing changed unrecorded."""
    sessions = SessionFactory.create_batch(3, now=NOW - 5 * MINUTE)
    before = list(Session.objects.order_by("pk").values())

    def log_fails(*args, **kwargs):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr(LogEntry.objects, "log_actions", log_fails)
    response = post_renew(operator_client, sessions)
    assert response.status_code == 503
    assert list(Session.objects.order_by("pk").values()) == before


def test_nothing_to_renew_refuses_nothing(frozen):
    assert services.session_renew_many(session_ids=[]) == ([], Counter(), NOW)


def test_the_clock_is_read_once_whatever_the_number_of_sessions(frozen):
    sessions = SessionFactory.create_batch(50, now=NOW, near_expiration=True)
    with mock.patch.object(policy, "clock", return_value=NOW + MINUTE) as clock:
        renewed, _, now = services.session_renew_many(session_ids=[s.pk for s in sessions])
    assert clock.call_count == 1
    assert now == NOW + MINUTE
    assert {s.expires_at for s in renewed} == {NOW + 31 * MINUTE}


def varied_selection(count: int) -> list[Session]:
    """``count`` sessions with several timeouts, some renewable only up to their cap."""
    configs = [
        TimeoutConfigFactory(timeout_minutes=30),
        TimeoutConfigFactory(timeout_minutes=60, auto_renew=False, max_duration_minutes=180),
    ]
    return [
        SessionFactory(
            timeout_config=configs[index % 2],
            created_at=NOW - (index * 17 % 170) * MINUTE,
            expires_at=NOW + MINUTE,
        )
        for index in range(count)
    ]


def service_statements(count: int) -> list[str]:
    sessions = varied_selection(count)
    with CaptureQueriesContext(connection) as queries:
        renewed, refused, _ = services.session_renew_many(session_ids=[s.pk for s in sessions])
    assert (len(renewed), refused) == (count, Counter())
    assert len({s.expires_at for s in renewed}) > 2  # capped rows differ from the rest
    return [query["sql"] for query in queries]


def test_the_service_runs_as_many_queries_for_two_hundred_sessions_as_for_ten(frozen):
    few, many = service_statements(10), service_statements(200)
    assert len(many) == len(few)
    assert sum(sql.startswith("UPDATE") for sql in many) == 1
    assert sum("FOR UPDATE" in sql for sql in many) == (connection.vendor == "postgresql")


# -- The admin action.


def test_a_mixed_selection_reports_each_reason_and_logs_only_the_renewed(
    operator_client, operator, frozen, deleted_before_its_renewal
):
    renewable = SessionFactory.create_batch(3, now=NOW, near_expiration=True)
    expired = SessionFactory.create_batch(2, now=NOW, expired=True)
    capped = SessionFactory(now=NOW, timeout_config=TimeoutConfigFactory(max_duration_minutes=30))
    gone = SessionFactory.create_batch(2, now=NOW, near_expiration=True)
    deleted_before_its_renewal.update(s.pk for s in gone)
    with time_machine.travel(NOW + timedelta(seconds=5), tick=False):
        response = post_renew(operator_client, [*renewable, *expired, capped, *gone])
    assert messages_of(response) == [
        "Renewed 3 sessions.",
        "5 sessions could not be renewed "
        "(2 already expired, 1 at the maximum duration, 2 deleted meanwhile).",
    ]
    for session in renewable:
        assert timing(session) == (NOW + timedelta(seconds=5), NOW + timedelta(seconds=5, minutes=30), 1)
    for session in [*expired, capped]:
        before = (session.last_activity, session.expires_at, session.renewal_count)
        assert timing(session) == before
    entries = LogEntry.objects.filter(action_flag=CHANGE, user=operator)
    assert sorted(entries.values_list("object_id", flat=True)) == sorted(str(s.pk) for s in renewable)
    assert {(e.change_message, e.object_repr) for e in entries} == {
        ("Renewed from the admin.", str(s)) for s in renewable
    }


def test_a_selection_nothing_of_which_renews_says_why(operator_client, frozen):
    expired = SessionFactory(now=NOW, expired=True)
    response = post_renew(operator_client, [expired])
    assert messages_of(response) == ["1 session could not be renewed (1 already expired)."]
    assert not LogEntry.objects.exists()


def test_the_session_pages_renew_button_refuses_a_session_at_its_cap(operator_client, frozen):
    capped = SessionFactory(now=NOW, timeout_config=TimeoutConfigFactory(max_duration_minutes=30))
    url = reverse("admin:sessions_admin_session_renew", args=[capped.pk])
    response = operator_client.post(url, follow=True)
    assert messages_of(response) == ["1 session could not be renewed (1 at the maximum duration)."]
    assert timing(capped) == (NOW, NOW + 30 * MINUTE, 0)
    assert not LogEntry.objects.exists()


def action_statements(client, count: int) -> list[str]:
    sessions = varied_selection(count)
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            CHANGELIST, {"action": "renew_selected", "_selected_action": [str(s.pk) for s in sessions]}
        )
    assert response.status_code == 302
    assert Session.objects.filter(pk__in=[s.pk for s in sessions], renewal_count=1).count() == count
    assert LogEntry.objects.filter(object_id__in=[str(s.pk) for s in sessions]).count() == count
    return [query["sql"] for query in queries]


def test_the_action_runs_as_many_queries_for_two_hundred_sessions_as_for_ten(operator_client, frozen):
    # Django inserts the admin log's rows in batches sized to the backend's
    # parameter limit (about 140 rows a statement on SQLite): not counted here.
    def without_the_log(statements):
        return [sql for sql in statements if "django_admin_log" not in sql]

    few = without_the_log(action_statements(operator_client, 10))
    many = without_the_log(action_statements(operator_client, 200))
    assert len(many) == len(few)
    assert sum(sql.startswith('UPDATE "sessions_admin_session"') for sql in many) == 1


# -- Racing heartbeats (PostgreSQL: real row locks, threads with their own connections).

SESSIONS = 10
HEARTBEATS_EACH = 3
RENEWERS = 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_bulk_renewals_racing_heartbeats_each_count(settings, django_user_model):
    settings.SESSIONS_API_KEY = ""
    # Created a minute ago, so every heartbeat and every renewal extends expiresAt.
    config = TimeoutConfigFactory(timeout_minutes=30, max_duration_minutes=720)
    sessions = [
        SessionFactory(timeout_config=config, now=timezone.now() - MINUTE) for _ in range(SESSIONS)
    ]
    ids = sorted(str(s.pk) for s in sessions)
    operators = [
        django_user_model.objects.create_superuser(f"operator-{i}", f"op{i}@example.com", "x" * 12)
        for i in range(RENEWERS)
    ]
    jobs = [("renew", user, ids if i % 2 else ids[::-1]) for i, user in enumerate(operators)]
    jobs += [("heartbeat", None, session_id) for session_id in ids * HEARTBEATS_EACH]
    pending = iter(jobs)
    lock = threading.Lock()

    def send(client):
        with lock:
            kind, user, target = next(pending)
        if kind == "heartbeat":
            return kind, client.post(f"/api/messaging/sessions/{target}/heartbeat")
        client.force_login(user)
        data = {"action": "renew_selected", "_selected_action": target}
        return kind, client.post(CHANGELIST, data, follow=True)

    results = run_concurrently(len(jobs), send)
    assert [response.status_code for _, response in results] == [200] * len(jobs)
    for kind, response in results:
        if kind == "renew":
            assert messages_of(response) == [f"Renewed {SESSIONS} sessions."]
    counts = Counter(
        response.json()["sessionId"] for kind, response in results if kind == "heartbeat"
    )
    assert counts == Counter({session_id: HEARTBEATS_EACH for session_id in ids})
    for session in sessions:
        session.refresh_from_db()
        assert session.renewal_count == HEARTBEATS_EACH + RENEWERS
    assert LogEntry.objects.filter(action_flag=CHANGE).count() == SESSIONS * RENEWERS
