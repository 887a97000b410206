"""Concurrent writes from real threads, each with its own database connection (PostgreSQL)."""

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from sessions_admin import policy, pruning, services
from sessions_admin.models import Session, TimeoutConfig
from tests.factories import SessionFactory, TimeoutConfigFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BASE = "/api/messaging/sessions"
THREADS = 50


def run_concurrently(count: int, request) -> list:
    """Call ``request(client)`` from ``count`` threads released together; return the responses."""
    barrier = threading.Barrier(count)
    responses = [None] * count
    errors = []

    def worker(index):
        try:
            client = Client()
            barrier.wait(timeout=30)
            responses[index] = request(client)
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads)
    return responses


def test_fifty_concurrent_heartbeats_each_count(settings):
    settings.SESSIONS_API_KEY = ""
    # Created a minute ago, so every heartbeat now extends expiresAt.
    session = SessionFactory(
        timeout_config=TimeoutConfigFactory(timeout_minutes=30, max_duration_minutes=720),
        now=timezone.now() - timedelta(minutes=1),
    )
    url = f"{BASE}/{session.pk}/heartbeat"
    responses = run_concurrently(THREADS, lambda client: client.post(url))
    assert [r.status_code for r in responses] == [200] * THREADS
    session.refresh_from_db()
    assert session.renewal_count == THREADS
    counts = sorted(r.json()["renewalCount"] for r in responses)
    assert counts == list(range(1, THREADS + 1))  # each saw its own renewal, in lock order
    last = max(responses, key=lambda r: r.json()["renewalCount"]).json()
    assert last["expiresAt"] == policy.format_datetime(session.expires_at)
    assert last["lastActivity"] == policy.format_datetime(session.last_activity)


def test_fifty_concurrent_creates_never_collide(settings):
    settings.SESSIONS_API_KEY = ""
    agent = str(uuid.uuid4())
    # A configuration no row has yet: every create races to insert the same TimeoutConfig.
    body = {
        "agentId": agent,
        "userId": str(uuid.uuid4()),
        "timeoutConfig": {"timeoutMinutes": 77, "maxDurationMinutes": 777},
    }
    responses = run_concurrently(
        THREADS, lambda client: client.post(BASE, body, content_type="application/json")
    )
    assert [r.status_code for r in responses] == [201] * THREADS
    ids = {r.json()["sessionId"] for r in responses}
    assert len(ids) == THREADS
    assert Session.objects.filter(agent_id=agent).count() == THREADS
    assert TimeoutConfig.objects.filter(timeout_minutes=77, max_duration_minutes=777).count() == 1


def test_timeout_patches_racing_heartbeats_and_each_other_all_succeed(settings):
    """Half the threads PATCH the timeout (a new configuration row each), half heartbeat.

    A request waiting for the row lock must still find its session after a PATCH
    moved the session to another configuration row.
    """
    settings.SESSIONS_API_KEY = ""
    session = SessionFactory(
        timeout_config=TimeoutConfigFactory(timeout_minutes=30, max_duration_minutes=720),
        now=timezone.now() - timedelta(minutes=1),
    )
    base = f"{BASE}/{session.pk}"
    jobs = iter(enumerate(["heartbeat", "patch"] * (THREADS // 2)))
    lock = threading.Lock()

    def send(client):
        with lock:
            index, kind = next(jobs)
        if kind == "heartbeat":
            return kind, client.post(f"{base}/heartbeat")
        body = {"timeoutMinutes": 10 + index}
        return kind, client.patch(f"{base}/timeout", body, content_type="application/json")

    results = run_concurrently(THREADS, send)
    assert [response.status_code for _, response in results] == [200] * THREADS
    # Each heartbeat extends expiresAt (now + the timeout then in force), so each counts.
    counts = sorted(response.json()["renewalCount"] for kind, response in results if kind == "heartbeat")
    assert counts == list(range(1, THREADS // 2 + 1))
    session.refresh_from_db()
    assert session.renewal_count == THREADS // 2


def test_create_survives_repeated_pruning_of_its_new_configuration(settings, monkeypatch):
    """A prune of unused configurations lands between get_or_create and the insert, three times.

    Each time the new configuration row is deleted before the session that
    would reference it commits; the create tries again and answers 201.
    """
    settings.SESSIONS_API_KEY = ""
    get_or_create = TimeoutConfig.for_timeout.__func__
    sabotaged = []

    def prune_right_after(cls, timeout):
        config = get_or_create(cls, timeout)
        if len(sabotaged) < 3:
            pruner = threading.Thread(
                target=lambda: (sabotaged.append(pruning.timeout_config_prune_unused()), connection.close())
            )
            pruner.start()
            pruner.join(timeout=30)
        return config

    monkeypatch.setattr(TimeoutConfig, "for_timeout", classmethod(prune_right_after))
    body = {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4()),
            "timeoutConfig": {"timeoutMinutes": 77, "maxDurationMinutes": 777}}
    response = Client().post(BASE, body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert sabotaged == [1, 1, 1]  # each attempt's configuration was pruned once
    session = Session.objects.get(pk=response.json()["sessionId"])
    assert session.timeout_config.timeout_minutes == 77


def test_expire_now_waits_for_a_heartbeat_in_progress_and_ends_after_it():
    """An operator's "expire now" never sets an expiry before the last activity it waited for."""
    session = SessionFactory(now=policy.clock())
    locked, go, errors, results = threading.Event(), threading.Event(), [], []

    def in_thread(work):
        def run():
            try:
                work()
            except Exception as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def heartbeat_holding_the_row():
        with transaction.atomic():
            list(Session.objects.select_for_update().filter(pk=session.pk).values_list("pk"))
            locked.set()
            go.wait(timeout=30)
            services.session_heartbeat(session_id=session.pk)

    heartbeat = in_thread(heartbeat_holding_the_row)
    assert locked.wait(timeout=30)
    expire = in_thread(
        lambda: results.append(services.session_expire_now(session_ids=[session.pk]))
    )
    with connection.cursor() as cursor:  # until the expiry waits on the heartbeat's row lock
        for _ in range(300):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the expiry never waited for the row")
    go.set()
    heartbeat.join(timeout=30)
    expire.join(timeout=30)

    assert not errors, errors
    assert len(results) == 1
    ended, _, _ = results[0]
    stored = Session.objects.get(pk=session.pk)
    assert [s.pk for s in ended] == [session.pk]
    assert stored.expires_at >= stored.last_activity >= session.last_activity
