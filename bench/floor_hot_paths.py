"""The floor under create, get and heartbeat: their SQL and a JSON answer, no framework around them.

``bench/peer.py`` captures the statements each endpoint runs (their text and
parameters, and whether they ran in a transaction) and serves this application
with the project's own gunicorn settings, on the same view threads. For each
request it replays the operation's statements on one psycopg connection per
thread, in one transaction where the endpoint used one, with that request's
session id (new ids for a create) and its own ``now`` (times keep their offset
from the captured request's), then answers the row as JSON with orjson.

What it costs beyond raw SQL is what HTTP, gunicorn and the driver cost any
Python server of these answers; what the endpoint costs beyond it is Django,
DRF and the ORM.

Environment: ``FLOOR_DATABASE_URL`` and ``FLOOR_OPERATIONS`` (the JSON file
``bench/peer.py`` writes).
"""

import datetime
import json
import os
import re
import threading
import uuid

import orjson
import psycopg
from psycopg.types.json import Jsonb

from messaging_project.serving import ThreadedWSGI, view_threads

BASE = "/api/messaging/sessions"
_SESSION_PATH = re.compile(rf"^{BASE}/([0-9a-fA-F-]{{36}})(/heartbeat)?/?$")

with open(os.environ["FLOOR_OPERATIONS"]) as operations_file:
    OPERATIONS: dict[str, list[dict]] = json.load(operations_file)

_local = threading.local()


def connection() -> psycopg.Connection:
    """This thread's connection, opened on first use (after gunicorn forks)."""
    conn = getattr(_local, "connection", None)
    if conn is None or conn.closed:
        conn = _local.connection = psycopg.connect(
            os.environ["FLOOR_DATABASE_URL"], autocommit=True
        )
    return conn


def _parameter(encoded, ids: dict, now: datetime.datetime):
    if isinstance(encoded, dict):
        if "id" in encoded:
            return ids[encoded["id"]]
        if "offset_ms" in encoded:
            return now + datetime.timedelta(milliseconds=encoded["offset_ms"])
        if "jsonb" in encoded:
            return Jsonb(encoded["jsonb"])
    return encoded


def run(operation: str, ids: dict) -> dict | None:
    """Run the operation's statements; return the last row read or written, by column name."""
    now = datetime.datetime.now(datetime.UTC)
    conn = connection()
    row = None
    with conn.transaction() if OPERATIONS[operation][0]["atomic"] else _no_transaction():
        for statement in OPERATIONS[operation]:
            params = [_parameter(value, ids, now) for value in statement["params"]]
            cursor = conn.execute(statement["sql"], params)
            if cursor.description is not None:
                fetched = cursor.fetchone()
                if fetched is not None and statement["answer"]:
                    row = dict(zip((c.name for c in cursor.description), fetched, strict=True))
            elif statement["answer"]:
                row = {"session_id": ids["session"], "updated_at": now}
    return row


class _no_transaction:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _json(status: str, start_response, payload) -> list[bytes]:
    body = orjson.dumps(payload, option=orjson.OPT_NAIVE_UTC)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ["REQUEST_METHOD"]
    if method == "POST" and path.rstrip("/") == BASE:
        environ["wsgi.input"].read()
        ids = {"session": uuid.uuid4(), "agent": uuid.uuid4(), "user": uuid.uuid4()}
        return _json("201 Created", start_response, run("create", ids))
    match = _SESSION_PATH.match(path)
    if match is not None:
        ids = {"session": uuid.UUID(match[1])}
        operation = "heartbeat" if match[2] else "get"
        if (method, operation) in {("GET", "get"), ("POST", "heartbeat")}:
            row = run(operation, ids)
            if row is None:
                return _json("404 Not Found", start_response, {"success": False})
            return _json("200 OK", start_response, row)
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]


asgi_application = ThreadedWSGI(application, threads=view_threads(), max_body_bytes=1024 * 1024)
