"""A write that finds its row locked elsewhere waits at most the lock timeout, then answers 503.

Against the real server. PostgreSQL: a row held ``FOR UPDATE`` by another
connection; the statement timeout is set far above the lock timeout, and the
row is released only after the answers came, so an answer proves the lock
timeout ended the wait. SQLite has no row locks: there the writer waits for
the whole database's write lock, held by another connection's ``BEGIN
IMMEDIATE``. Health and reads never wait on either.
"""

import contextlib
import sqlite3
import uuid

import psycopg
import pytest

from tests import server

pytestmark = pytest.mark.server

ADMIN_KEY = "lock-waits-admin-key-0123456789"
BASE = "/api/messaging/sessions"
KEY = {"X-API-KEY": ADMIN_KEY}
# Short, so that the test is quick; the statement timeout is kept far above it.
LOCK_TIMEOUT = {"DATABASE_LOCK_TIMEOUT_MS": "500", "DATABASE_STATEMENT_TIMEOUT_MS": "120000"}


def writes(session_id):
    return [
        ("POST", f"{BASE}/{session_id}/heartbeat", None),
        ("POST", f"{BASE}/{session_id}/renew", None),
        ("PATCH", f"{BASE}/{session_id}/timeout", {"timeoutMinutes": 60}),
        ("DELETE", f"{BASE}/{session_id}", None),
    ]


def create_session(running) -> str:
    body = {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
    status, _, created = server.request("POST", running.url(BASE), headers=KEY, body=body)
    assert status == 201, created
    return created["sessionId"]


def assert_writes_give_up_and_reads_do_not_wait(running, session_id):
    for method, path, body in writes(session_id):
        status, headers, answer = server.request(
            method, running.url(path), headers=KEY, body=body, timeout=60
        )
        assert status == 503, (method, path, answer)
        assert answer["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert headers["retry-after"] == "2"
    status, _, health = server.request("GET", running.url(f"{BASE}/health"), timeout=60)
    assert status == 200 and health["database"] == "ok", health
    status, _, read = server.request("GET", running.url(f"{BASE}/{session_id}"), headers=KEY)
    assert status == 200 and read["renewalCount"] == 0, read


def assert_writes_succeed_once_released(running, session_id):
    status, _, answer = server.request(
        "POST", running.url(f"{BASE}/{session_id}/heartbeat"), headers=KEY
    )
    assert status == 200, answer
    assert answer["renewalCount"] == 1  # the refused writes left no trace
    assert "Traceback" not in running.output(tail=None)


@pytest.mark.postgres
def test_a_write_on_a_row_locked_elsewhere_gives_up_after_the_lock_timeout():
    scratch = server.ScratchPostgres(server.postgres_server_url(), "locked").create()
    env = {"DATABASE_URL": scratch.url, "SESSIONS_ADMIN_API_KEY": ADMIN_KEY, **LOCK_TIMEOUT}
    try:
        with server.GunicornServer(env=env, workers=2) as running:
            session_id = create_session(running)
            with psycopg.connect(scratch.url) as holder:  # one open transaction
                holder.execute(
                    "SELECT 1 FROM sessions_admin_session WHERE session_id = %s FOR UPDATE",
                    [session_id],
                )
                assert_writes_give_up_and_reads_do_not_wait(running, session_id)
                holder.rollback()
            assert_writes_succeed_once_released(running, session_id)
    finally:
        scratch.drop()


def test_a_write_while_sqlite_is_locked_elsewhere_gives_up_after_the_lock_timeout():
    url = server.scratch_sqlite()
    env = {"DATABASE_URL": url, "SESSIONS_ADMIN_API_KEY": ADMIN_KEY, **LOCK_TIMEOUT}
    with server.GunicornServer(env=env, workers=2) as running:
        session_id = create_session(running)
        path = url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")  # the database's one write lock
            assert_writes_give_up_and_reads_do_not_wait(running, session_id)
            holder.execute("ROLLBACK")
        assert_writes_succeed_once_released(running, session_id)
