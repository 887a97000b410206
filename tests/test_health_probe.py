"""The health probe's deadline (SESSIONS_HEALTH_TIMEOUT_MS) and reuse (SESSIONS_HEALTH_CACHE_MS), in process.

The real-server outage tests (tests/test_outage.py) check the same bound
against an unreachable PostgreSQL.
"""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from rest_framework.test import APIClient

from sessions_admin import health, policy, selectors
from tests.factories import SessionFactory

HEALTH = "/api/messaging/sessions/health"
T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_a_late_database_answers_503_at_the_deadline(api_client, settings, monkeypatch):
    settings.SESSIONS_HEALTH_TIMEOUT_MS = 200
    release = threading.Event()

    def stuck_stats(*, now):
        release.wait(10)
        raise AssertionError("the request should not have waited for this")

    monkeypatch.setattr(selectors, "session_stats", stuck_stats)
    started = time.monotonic()
    try:
        response = api_client.get(HEALTH)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    health._latest.finished.wait(5)  # the probe left behind ends once released

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unhealthy" and body["database"] == "unreachable"
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert 0.2 <= elapsed < 1.0, f"answered after {elapsed:.3f} s"


@pytest.mark.django_db(transaction=True)
def test_the_probe_thread_reads_the_database_on_its_own_connection(api_client, settings):
    settings.SESSIONS_HEALTH_TIMEOUT_MS = 5000
    now = policy.clock()
    SessionFactory.create_batch(2, now=now)
    SessionFactory(now=now, near_expiration=True)
    SessionFactory(now=now, expired=True)

    response = api_client.get(HEALTH)

    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "healthy" and body["database"] == "ok"
    assert body["activeSessions"] == 3
    assert body["expiringSoon"] == 1
    # The probe thread ends once it has answered (it may need a moment to exit).
    for thread in threading.enumerate():
        if thread.name == "sessions-health-probe":
            thread.join(2)
    assert not [t for t in threading.enumerate() if t.name == "sessions-health-probe"]


@pytest.mark.django_db
def test_requests_during_a_slow_probe_wait_for_it_instead_of_starting_more(
    api_client, settings, monkeypatch
):
    settings.SESSIONS_HEALTH_TIMEOUT_MS = 300
    release = threading.Event()
    calls = []

    def slow_stats(*, now):
        calls.append(now)
        release.wait(10)
        return {"total": 1, "active": 1, "expired": 0, "near_expiration": 0}

    monkeypatch.setattr(selectors, "session_stats", slow_stats)
    statuses = []

    def check():  # one client per thread, as separate load balancers would be
        statuses.append(APIClient().get(HEALTH).status_code)

    try:
        flood = [threading.Thread(target=check) for _ in range(8)]
        for thread in flood:
            thread.start()
        for thread in flood:
            thread.join(5)
        probes = [t for t in threading.enumerate() if t.name == "sessions-health-probe"]

        assert statuses == [503] * 8
        assert len(calls) == 1 and len(probes) == 1
    finally:
        release.set()
    probes[0].join(5)

    # Once that probe has answered, the next request starts a fresh one.
    response = api_client.get(HEALTH)

    assert response.status_code == 200 and response.json()["activeSessions"] == 1
    assert len(calls) == 2


class _ExitSignallingLock:
    """``health._lock`` that counts how many requests have taken their probe."""

    def __init__(self, lock):
        self.lock = lock
        self.exits = 0
        self.changed = threading.Condition()

    def __enter__(self):
        return self.lock.__enter__()

    def __exit__(self, *exc_info):
        self.lock.__exit__(*exc_info)
        with self.changed:
            self.exits += 1
            self.changed.notify_all()

    def wait_for(self, exits):
        with self.changed:
            assert self.changed.wait_for(lambda: self.exits >= exits, timeout=5)


@pytest.mark.django_db
def test_a_request_that_joins_a_probe_answers_with_the_probe_s_instant(settings, monkeypatch):
    """The counts are those of the instant the probe started: so is every answer's timestamp."""
    settings.SESSIONS_HEALTH_TIMEOUT_MS = 5000
    release = threading.Event()

    def slow_stats(*, now):
        release.wait(5)
        return {"total": 1, "active": 1, "expired": 0, "near_expiration": 0}

    monkeypatch.setattr(selectors, "session_stats", slow_stats)
    lock = _ExitSignallingLock(health._lock)
    monkeypatch.setattr(health, "_lock", lock)
    answers = []

    def check():
        answers.append(APIClient().get(HEALTH).json())

    with time_machine.travel(T0, tick=False) as traveller:
        first = threading.Thread(target=check)
        first.start()
        lock.wait_for(1)  # the first request started the probe
        traveller.shift(timedelta(milliseconds=700))
        second = threading.Thread(target=check)
        second.start()
        lock.wait_for(2)  # the second joined it
        release.set()
        first.join(5)
        second.join(5)

    assert [answer["timestamp"] for answer in answers] == ["2026-11-27T10:00:00.000Z"] * 2
    assert [answer["activeSessions"] for answer in answers] == [1, 1]


@pytest.fixture
def reuse_for_a_second(settings):
    settings.SESSIONS_HEALTH_CACHE_MS = 1000
    health._healthy = None
    yield
    health._healthy = None


@pytest.mark.django_db
def test_a_healthy_answer_is_reused_briefly(api_client, reuse_for_a_second, monkeypatch):
    calls = []

    def counted_stats(*, now):
        calls.append(now)
        return {"total": len(calls), "active": len(calls), "expired": 0, "near_expiration": 0}

    monkeypatch.setattr(selectors, "session_stats", counted_stats)
    clock = [1000.0]
    monkeypatch.setattr(health, "_monotonic", lambda: clock[0])
    answers = [api_client.get(HEALTH).json()["activeSessions"] for _ in range(20)]
    clock[0] += 0.99
    answers.append(api_client.get(HEALTH).json()["activeSessions"])

    assert answers == [1] * 21 and len(calls) == 1  # a flood costs one count

    clock[0] += 0.02

    assert api_client.get(HEALTH).json()["activeSessions"] == 2


@pytest.mark.django_db
def test_a_reused_answer_keeps_the_timestamp_of_its_counts(api_client, reuse_for_a_second, monkeypatch):
    """The counts of a reused answer are those of an earlier instant: the timestamp says which."""
    monkeypatch.setattr(
        selectors,
        "session_stats",
        lambda *, now: {"total": 0, "active": 0, "expired": 0, "near_expiration": 0},
    )
    seconds = [1000.0]
    monkeypatch.setattr(health, "_monotonic", lambda: seconds[0])
    with time_machine.travel(T0, tick=False) as traveller:
        first = api_client.get(HEALTH).json()
        traveller.shift(timedelta(milliseconds=500))
        seconds[0] += 0.5
        reused = api_client.get(HEALTH).json()
        traveller.shift(timedelta(milliseconds=600))  # past the second: counted again
        seconds[0] += 0.6
        fresh = api_client.get(HEALTH).json()
    assert first["timestamp"] == reused["timestamp"] == "2026-11-27T10:00:00.000Z"
    assert fresh["timestamp"] == "2026-11-27T10:00:01.100Z"


@pytest.mark.django_db
def test_failures_are_never_reused(api_client, reuse_for_a_second, monkeypatch):
    from django.db import OperationalError

    outcomes = [OperationalError("down"), {"total": 0, "active": 0, "expired": 0, "near_expiration": 0}]

    def flaky_stats(*, now):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(selectors, "session_stats", flaky_stats)

    assert api_client.get(HEALTH).status_code == 503
    assert api_client.get(HEALTH).status_code == 200  # the next request looks again
