"""Concurrent writes on the embedded default database (SQLite), over real HTTP.

The PostgreSQL suite races writers from threads in process; an in-memory
SQLite test database cannot (a second connection finds the table locked
instead of waiting). Here gunicorn serves a file database in WAL mode, as
``make run`` does, with several workers and threads, and every heartbeat on
one session must count.
"""

import threading
import uuid

import pytest

from tests import server

pytestmark = pytest.mark.server

BASE = "/api/messaging/sessions"
CLIENTS = 8
HEARTBEATS_EACH = 6


def test_concurrent_heartbeats_on_one_session_each_count():
    url = server.scratch_sqlite()
    env = {"DATABASE_URL": url, "GUNICORN_THREADS": "4"}
    with server.GunicornServer(env=env, workers=2) as running:
        status, _, created = server.request(
            "POST", running.url(BASE), body={"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
        )
        assert status == 201, created
        heartbeat = running.url(f"{BASE}/{created['sessionId']}/heartbeat")
        barrier = threading.Barrier(CLIENTS)
        answers, errors = [], []

        def client():
            try:
                barrier.wait(timeout=30)
                for _ in range(HEARTBEATS_EACH):
                    answers.append(server.request("POST", heartbeat, timeout=30))
            except Exception as exc:  # reported below; a thread must not die silently
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        total = CLIENTS * HEARTBEATS_EACH
        assert [status for status, _, _ in answers] == [200] * total, answers[:3]
        # Each heartbeat came later than the one before it took the lock, so
        # each extended expiresAt: the counts are 1..total, none lost or repeated.
        assert sorted(body["renewalCount"] for _, _, body in answers) == list(range(1, total + 1))
        status, _, final = server.request("GET", running.url(f"{BASE}/{created['sessionId']}"))
        assert final["renewalCount"] == total
        assert final["lastActivity"] == max(body["lastActivity"] for _, _, body in answers)
        log = running.output(tail=None)
        assert "Traceback" not in log, log[-3000:]
