"""Durability: every session the server acknowledged (201) survives ``kill -9``.

The real server (gunicorn, two workers) runs on a scratch PostgreSQL
database. Several threads create sessions over HTTP while the master and
every worker are killed with SIGKILL mid-stream; after a restart each
acknowledged session is found, over HTTP and in the table.
"""

import http.client
import threading
import time
import uuid

import pytest

from tests import server

pytestmark = [pytest.mark.postgres, pytest.mark.server]

ADMIN_KEY = "durability-admin-key-0123456789"
BASE = "/api/messaging/sessions"
WRITERS = 6
RUN_SECONDS = 2.0


@pytest.fixture
def scratch_db():
    scratch = server.ScratchPostgres(server.postgres_server_url(), "durability").create()
    yield scratch
    scratch.drop()


def writer(running, acknowledged: list, failures: list, stop: threading.Event) -> None:
    while not stop.is_set():
        body = {
            "agentId": str(uuid.uuid4()),
            "userId": str(uuid.uuid4()),
            "metadata": {"writer": threading.current_thread().name},
        }
        try:
            status, _, payload = server.request(
                "POST", running.url(BASE), body=body, headers={"X-API-KEY": ADMIN_KEY}, timeout=5
            )
        except (OSError, http.client.HTTPException):  # cut off by the kill: never acknowledged
            failures.append("connection")
            time.sleep(0.01)
            continue
        if status == 201:
            acknowledged.append((payload["sessionId"], body["agentId"]))
        else:
            failures.append(status)


def test_acknowledged_sessions_survive_kill_9(scratch_db):
    env = {"DATABASE_URL": scratch_db.url, "SESSIONS_ADMIN_API_KEY": ADMIN_KEY}
    running = server.GunicornServer(env=env, workers=2).start()
    acknowledged: list[tuple[str, str]] = []
    failures: list = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(running, acknowledged, failures, stop), name=f"w{n}")
        for n in range(WRITERS)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(RUN_SECONDS)
        pids = running.pids()
        assert len(pids) == 3, pids  # master + two workers
        running.kill_hard()  # writers are mid-request
        assert running.pids() == []
        acknowledged_at_kill = len(acknowledged)
        time.sleep(0.3)  # writers now hit a dead port
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        running.stop()

    assert acknowledged_at_kill >= 50, f"too few writes to mean anything: {acknowledged_at_kill}"
    assert len(acknowledged) == acknowledged_at_kill  # nothing answered after the kill
    assert "connection" in failures  # the kill really interrupted the writers

    restarted = server.GunicornServer(env=env, workers=2, port=running.port).start()
    try:
        missing = []
        for session_id, agent_id in acknowledged:
            status, _, payload = server.request(
                "GET", restarted.url(f"{BASE}/{session_id}"), headers={"X-API-KEY": ADMIN_KEY}
            )
            if status != 200 or payload["agentId"] != agent_id:
                missing.append((session_id, status))
    finally:
        restarted.stop()
    assert missing == []

    stored = {
        str(row[0]) for row in scratch_db.query("SELECT session_id FROM sessions_admin_session")
    }
    assert {session_id for session_id, _ in acknowledged} <= stored
    # A request in flight at the kill may have committed without being acknowledged.
    assert len(stored) - len(acknowledged) <= WRITERS
