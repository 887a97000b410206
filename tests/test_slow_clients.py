"""Slow and stalled clients against the real server (SPEC §6 "Slow and stalled clients").

A request that stops arriving is answered 408 in the envelope once
``GUNICORN_READ_TIMEOUT`` has passed since its first byte (1 s here), whatever
part of it is missing; and while such requests are open, other clients are
served as usual: a connection that is still sending holds no worker.
"""

import contextlib
import json
import socket
import sqlite3
import time

import pytest

from tests import server

pytestmark = pytest.mark.server

BASE = "/api/messaging/sessions"
HEALTH = f"{BASE}/health"
READ_TIMEOUT = 1
# The server answers once its timer fires; a busy machine may add a little.
LATEST = READ_TIMEOUT + 2.5
BODY = json.dumps(
    {"agentId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a11", "userId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a12"}
).encode()


@pytest.fixture(scope="module")
def running():
    """One worker with one view thread: any request that held it would stop the others."""
    env = {
        "DATABASE_URL": server.scratch_sqlite(),
        "GUNICORN_READ_TIMEOUT": str(READ_TIMEOUT),
        "GUNICORN_THREADS": "1",
    }
    with server.GunicornServer(env=env, workers=1) as running:
        yield running


def stored_sessions(running) -> int:
    path = running.env["DATABASE_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT count(*) FROM sessions_admin_session").fetchone()[0]


def head(length: int | None = None) -> bytes:
    lines = [f"POST {BASE} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, dict, dict]:
    """Read until the server closes; return the status, the headers and the JSON body."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_request_timeout(status: int, headers: dict, answer: dict, elapsed: float) -> None:
    assert status == 408, answer
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert answer["success"] is False
    assert answer["error"]["code"] == "REQUEST_TIMEOUT"
    assert answer["error"]["message"] == "The request did not arrive whole within 1 s"
    assert READ_TIMEOUT - 0.1 <= elapsed < LATEST, f"answered after {elapsed:.2f} s"


def test_headers_that_never_finish_are_a_408_envelope(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head(len(BODY))[:30])  # half a request line and no more
        status, headers, answer = read_answer(sock)
        elapsed = time.monotonic() - started
    assert_request_timeout(status, headers, answer, elapsed)


def test_a_body_shorter_than_its_content_length_is_a_408_and_saves_nothing(running):
    before = stored_sessions(running)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        started = time.monotonic()
        # The whole JSON object, but 200 bytes were announced: the client is not done.
        sock.sendall(head(200) + BODY)
        status, headers, answer = read_answer(sock)
        elapsed = time.monotonic() - started
    assert_request_timeout(status, headers, answer, elapsed)
    assert stored_sessions(running) == before


def test_a_trickling_body_is_a_408_although_bytes_keep_coming(running):
    before = stored_sessions(running)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head(len(BODY)))
        # A byte every 0.1 s: the whole body would take several seconds.
        sock.settimeout(0.1)
        received = b""
        for byte in BODY:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server answered and closed
                break
            try:
                received = sock.recv(65536)
            except TimeoutError:
                continue
            break
        sock.settimeout(10)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        elapsed = time.monotonic() - started
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines)}
    assert_request_timeout(int(status_line.split()[1]), headers, json.loads(body), elapsed)
    assert stored_sessions(running) == before


def test_a_request_sent_in_pieces_within_the_timeout_is_served(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        request = head(len(BODY)) + BODY
        for piece in (request[:20], request[20:90], request[90:]):
            sock.sendall(piece)
            time.sleep(0.2)
        sock.shutdown(socket.SHUT_WR)
        status, _, answer = read_answer(sock)
    assert status == 201, answer


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET " + HEALTH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first[:100]
        started = time.monotonic()
        sock.sendall(b"GET " + HEALTH.encode() + b" HTTP/1.1\r\nHost: 127")
        status, headers, answer = read_answer(sock)
        elapsed = time.monotonic() - started
    assert_request_timeout(status, headers, answer, elapsed)


def test_stalled_connections_do_not_stop_other_clients():
    """Thirty stalled requests on one worker with one view thread; health still answers."""
    env = {
        "DATABASE_URL": server.scratch_sqlite(),
        "GUNICORN_READ_TIMEOUT": "30",  # they stay stalled for the whole test
        "GUNICORN_THREADS": "1",
    }
    with server.GunicornServer(env=env, workers=1) as running, contextlib.ExitStack() as stack:
        stalled = []
        for index in range(30):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", running.port)))
            request = head(200) + BODY
            # Ten without the end of their headers, ten with a short body, ten idle.
            if index % 3 == 0:
                sock.sendall(request[:40])
            elif index % 3 == 1:
                sock.sendall(request)
            stalled.append(sock)
        time.sleep(0.3)  # every one of them is open and read by now
        for _ in range(5):
            started = time.monotonic()
            status, _, answer = server.request("GET", running.url(HEALTH), timeout=5)
            assert status == 200, answer
            assert time.monotonic() - started < 2
        status, _, answer = server.request("POST", running.url(BASE), body=json.loads(BODY))
        assert status == 201, answer
