"""The session counts under concurrent writers, each on its own connection (PostgreSQL).

API heartbeats, creates and deletes, two pruners and the admin's "expire now"
run together from threads; afterwards ``session_counts --check`` finds no
counter that differs from the rows. A repair made while writers run corrects
an injected difference and keeps their changes.
"""

import random
import threading
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from sessions_admin import counts, policy, pruning
from sessions_admin.models import Session, SessionCount
from tests.conftest import ADMIN_KEY
from tests.factories import SessionFactory, TimeoutConfigFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BASE = "/api/messaging/sessions"
CHANGELIST = "/admin/sessions_admin/session/"
AGENTS = [uuid.uuid4() for _ in range(3)]
ROUNDS = 40


def run_together(workers: list) -> None:
    """Run each ``worker()`` on its own thread, released together; re-raise what they raised."""
    barrier = threading.Barrier(len(workers))
    errors = []

    def run(worker):
        try:
            barrier.wait(timeout=30)
            worker()
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads)


def assert_no_drift() -> None:
    out = StringIO()
    call_command("session_counts", "--check", stdout=out)  # raises CommandError on drift
    assert out.getvalue() == "The session counts match the sessions.\n"
    now = policy.clock()
    tally = counts.session_tally(now=now, near_expiration=True)
    truth = Session.objects.stats(now, near_expiration=True)
    assert (tally.total, tally.active, tally.near_expiration) == (
        truth["total"], truth["active"], truth["near_expiration"]
    )


@pytest.fixture
def population(settings):
    settings.SESSIONS_ADMIN_API_KEY = ADMIN_KEY
    now = timezone.now()
    configs = [TimeoutConfigFactory(auto_renew=True), TimeoutConfigFactory(auto_renew=False)]
    sessions = []
    for index in range(240):
        config = configs[index % 2]
        if index % 3 == 0:  # expired: for the pruners
            created = now - timedelta(minutes=40 + index % 90)
            sessions.append(SessionFactory(
                agent_id=AGENTS[index % 3], timeout_config=config, now=now, created_at=created,
                expires_at=created + timedelta(minutes=30),
            ))
        else:
            sessions.append(SessionFactory(
                agent_id=AGENTS[index % 3], timeout_config=config,
                now=now - timedelta(minutes=index % 29),
            ))
    get_user_model().objects.create_superuser("counts-admin", password="x")
    return [session.pk for session in sessions]


def test_concurrent_writers_leave_no_drift(population):
    rng = random.Random(7)
    ids = list(population)
    picks = [rng.sample(ids, ROUNDS) for _ in range(6)]

    def api():
        client = Client(HTTP_X_API_KEY=ADMIN_KEY)
        return client

    def heartbeats(chosen):
        def work():
            client = api()
            for session_id in chosen:
                status = client.post(f"{BASE}/{session_id}/heartbeat").status_code
                assert status in (200, 404, 410), status
        return work

    def creates():
        client = api()
        for index in range(ROUNDS):
            body = {"agentId": str(AGENTS[index % 3]), "userId": str(uuid.uuid4()),
                    "timeoutConfig": {"timeoutMinutes": 5 + index % 3, "autoRenew": index % 2 == 0}}
            assert client.post(BASE, body, content_type="application/json").status_code == 201

    def deletes():
        client = api()
        for session_id in picks[2]:
            assert client.delete(f"{BASE}/{session_id}").status_code in (200, 404)

    def pruner():
        for _ in range(5):
            pruning.session_prune_expired(batch_size=7)

    def admin_expire():
        client = Client()
        client.force_login(get_user_model().objects.get(username="counts-admin"))
        for start in range(0, ROUNDS, 4):
            selected = [str(pk) for pk in picks[3][start:start + 4]]
            response = client.post(
                CHANGELIST, {"action": "expire_selected", "_selected_action": selected}
            )
            assert response.status_code == 302

    run_together([
        heartbeats(picks[0]), heartbeats(picks[1]), heartbeats(picks[4]), creates, deletes,
        pruner, pruner, admin_expire,
    ])
    assert_no_drift()
    # The counters were spread over stripes by the writers' connections.
    assert SessionCount.objects.filter(kind=SessionCount.KIND_TOTAL).values("stripe").distinct().count() > 1


def test_rebuild_corrects_injected_drift_while_writers_run(population):
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SessionCount._meta.db_table} SET n = n + 1000 WHERE kind = 0 AND agent_id = %s",
            [AGENTS[0]],
        )
        cursor.execute(
            f"DELETE FROM {SessionCount._meta.db_table} WHERE kind = 2 AND level = 1 AND agent_id = %s",
            [counts.EVERY_AGENT],
        )
    ids = list(population)
    found = []

    def writer(chosen):
        def work():
            client = Client(HTTP_X_API_KEY=ADMIN_KEY)
            for session_id in chosen:
                client.post(f"{BASE}/{session_id}/heartbeat")
                client.post(BASE, {"agentId": str(AGENTS[0]), "userId": str(uuid.uuid4())},
                            content_type="application/json")
        return work

    def repair():
        found.append(counts.session_counts_rebuild())

    rng = random.Random(3)
    run_together([writer(rng.sample(ids, ROUNDS)), writer(rng.sample(ids, ROUNDS)), repair, repair])
    # Two repairs at once: the lock made the second find nothing left to correct.
    assert sorted(len(result.drifts) > 0 for result in found) == [False, True]
    assert_no_drift()
