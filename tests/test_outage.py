"""Database outage: the real server answers 503 quickly while PostgreSQL is unreachable
and recovers by itself when it is back.

The shared PostgreSQL server is never stopped: gunicorn reaches it through a
TCP proxy in this test, which can refuse connections (the database is down),
swallow them (the host does not answer) and resume forwarding.
"""

import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest

from tests import server

pytestmark = [pytest.mark.postgres, pytest.mark.server]

ADMIN_KEY = "outage-admin-key-0123456789"
BASE = "/api/messaging/sessions"
HEALTH = f"{BASE}/health"


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target_port``; ``down``, ``blackhole``, ``up``."""

    def __init__(self, target_port: int, port: int):
        self.target_port = target_port
        self.port = port
        self.mode = "up"
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.listener: socket.socket | None = None

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while self.listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            client.settimeout(None)
            with self.lock:
                if self.mode == "down":
                    client.close()
                    continue
                self.sockets.add(client)
                if self.mode == "blackhole":
                    continue  # accepted, never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self.lock:
                self.sockets.add(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        self._close(source)
        self._close(sink)

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def _drop_connections(self) -> None:
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            self._close(sock)

    def up(self) -> None:
        """Forward again (new connections only; dropped ones stay dropped)."""
        with self.lock:
            self.mode = "up"
        self._drop_connections()  # releases connections held by a blackhole
        if self.listener is None:
            self._listen()

    def down(self) -> None:
        """The database is down: refuse new connections, reset open ones."""
        with self.lock:
            self.mode = "down"
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
            except OSError:
                pass
            listener.close()
        self._drop_connections()

    def blackhole(self) -> None:
        """The database host does not answer: connections hang until the client gives up."""
        with self.lock:
            self.mode = "blackhole"
        if self.listener is None:
            self._listen()
        self._drop_connections()

    def close(self) -> None:
        self.down()


def timed(method: str, url: str, **kwargs) -> tuple[float, int, dict]:
    start = time.monotonic()
    status, _, body = server.request(method, url, timeout=15, **kwargs)
    return time.monotonic() - start, status, body


@pytest.fixture
def outage_setup():
    pg_server = server.postgres_server_url()
    scratch = server.ScratchPostgres(pg_server, "outage").create()
    target_port = urlsplit(pg_server).port or 5432
    proxy = TcpProxy(target_port, server.free_port())
    proxy.up()
    env = {
        "DATABASE_URL": server.with_port(scratch.url, proxy.port),
        "SESSIONS_ADMIN_API_KEY": ADMIN_KEY,
        # Every health probe asks the database: no healthy answer from before the
        # outage may be reused (1 s by default) once the proxy goes down.
        "SESSIONS_HEALTH_CACHE_MS": "0",
    }
    running = server.GunicornServer(env=env, workers=2, port=server.free_port()).start()
    try:
        yield running, proxy
    finally:
        running.stop()
        proxy.close()
        scratch.drop()


def assert_unhealthy_quickly(running, limit_seconds: float, probes: int = 4) -> None:
    for _ in range(probes):  # both workers, with and without a pooled connection
        elapsed, status, body = timed("GET", running.url(HEALTH))
        assert status == 503, body
        assert body["status"] == "unhealthy" and body["database"] == "unreachable"
        assert elapsed < limit_seconds, f"health took {elapsed:.2f} s"


def assert_every_route_is_503(
    running, session_id: str, limit_seconds: float, every: int = 1
) -> None:
    key = {"X-API-KEY": ADMIN_KEY}
    calls = [
        ("GET", BASE, None),
        ("POST", BASE, {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}),
        ("GET", f"{BASE}/{session_id}", None),
        ("POST", f"{BASE}/{session_id}/heartbeat", None),
        ("POST", f"{BASE}/{session_id}/renew", None),
        ("PATCH", f"{BASE}/{session_id}/timeout", {"timeoutMinutes": 60}),
        ("DELETE", f"{BASE}/{session_id}", None),
    ]
    for method, path, body in calls[::every]:
        elapsed, status, payload = timed(method, running.url(path), body=body, headers=key)
        assert status == 503, (method, path, status, payload)
        assert payload["success"] is False
        assert payload["error"]["code"] == "SERVICE_UNAVAILABLE", (method, path, payload)
        assert elapsed < limit_seconds, f"{method} {path} took {elapsed:.2f} s"


def assert_recovers(running, session_id: str, within_seconds: float = 10) -> None:
    deadline = time.monotonic() + within_seconds
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(server.request("GET", running.url(HEALTH), timeout=15)[0])
        if statuses[-2:] == [200, 200]:
            break
        time.sleep(0.2)
    assert statuses[-2:] == [200, 200], f"health never recovered: {statuses}"
    # Nothing along the way was an unhandled error (a 500 logs its traceback).
    log = running.output(tail=None)
    assert "Traceback" not in log and "Internal Server Error" not in log, log[-3000:]
    key = {"X-API-KEY": ADMIN_KEY}
    # Every worker's pooled connection died with the outage; none may still fail.
    for _ in range(6):
        status, _, body = server.request("GET", running.url(f"{BASE}/{session_id}"), headers=key)
        assert status == 200, body
    create_session(running)


def create_session(running) -> str:
    """Create a session over HTTP; return its id."""
    status, _, created = server.request(
        "POST",
        running.url(BASE),
        headers={"X-API-KEY": ADMIN_KEY},
        body={"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())},
    )
    assert status == 201, created
    return created["sessionId"]


def test_database_down_then_back(outage_setup):
    running, proxy = outage_setup
    session_id = create_session(running)
    for _ in range(4):  # every worker now holds a pooled connection (CONN_MAX_AGE)
        assert server.request("GET", running.url(HEALTH))[0] == 200

    proxy.down()
    assert_unhealthy_quickly(running, limit_seconds=2.0)
    assert_every_route_is_503(running, session_id, limit_seconds=2.0)

    proxy.up()
    assert_recovers(running, session_id)


def test_database_host_not_answering_then_back(outage_setup):
    running, proxy = outage_setup
    session_id = create_session(running)

    proxy.blackhole()
    # Health stops waiting at SESSIONS_HEALTH_TIMEOUT_MS (1.5 s by default).
    # Other routes wait for libpq's connect_timeout, whose floor is 2 s, and
    # answer at once after it. Every second route is enough here: the test
    # above covers all.
    assert_unhealthy_quickly(running, limit_seconds=2.0, probes=3)
    assert_every_route_is_503(running, session_id, limit_seconds=2.5, every=2)

    proxy.up()
    assert_recovers(running, session_id)


def test_a_statement_stuck_on_a_lock_is_cancelled_with_503():
    """A request never waits on the database for long: ``DATABASE_STATEMENT_TIMEOUT_MS``."""
    scratch = server.ScratchPostgres(server.postgres_server_url(), "stuck").create()
    env = {
        "DATABASE_URL": scratch.url,
        "SESSIONS_ADMIN_API_KEY": ADMIN_KEY,
        "DATABASE_STATEMENT_TIMEOUT_MS": "1000",
    }
    key = {"X-API-KEY": ADMIN_KEY}
    try:
        with server.GunicornServer(env=env, workers=2) as running:
            status, _, created = server.request(
                "POST",
                running.url(BASE),
                headers=key,
                body={"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())},
            )
            assert status == 201, created
            heartbeat = running.url(f"{BASE}/{created['sessionId']}/heartbeat")
            with psycopg.connect(scratch.url) as holder:  # one open transaction
                holder.execute(
                    "SELECT 1 FROM sessions_admin_session WHERE session_id = %s FOR UPDATE",
                    [created["sessionId"]],
                )
                elapsed, status, body = timed("POST", heartbeat, headers=key)
                assert status == 503, body
                assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
                assert 0.9 < elapsed < 3.0, f"heartbeat took {elapsed:.2f} s"
                # Reads do not wait for the lock.
                get = server.request(
                    "GET", running.url(f"{BASE}/{created['sessionId']}"), headers=key
                )
                assert get[0] == 200
                holder.rollback()
            status, _, body = server.request("POST", heartbeat, headers=key)
            assert status == 200, body
            assert body["renewalCount"] == 1  # the cancelled heartbeat left no trace
    finally:
        scratch.drop()
