"""The floor under the list endpoint: its SQL and its JSON, with no framework around them.

A bare WSGI application that ``bench/list.py`` serves with the project's own
gunicorn settings (``asgi_application``: on the view threads, as the project is). For each query string it was given, it runs the statements
the endpoint runs for that query (captured from the selector: the same text
the benchmark's raw SQL column times) on one psycopg connection per thread,
then builds the same answer as the endpoint with the same helpers
(``selectors.page_from``, ``serializers.session_list_info``), encoded with orjson.

What it costs beyond raw SQL is what HTTP, gunicorn, reading the rows and
writing the JSON cost any Python server of this answer; what the endpoint costs
beyond it is the part of Django, DRF and the ORM.

Environment: ``FLOOR_DATABASE_URL`` (the database) and ``FLOOR_SCENARIOS``
(a JSON file mapping each query string, without ``?``, to its statements:
the aggregate count first, then the page query).
"""

import json
import os
import threading

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")
django.setup()

import orjson  # noqa: E402
import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from messaging_project.serving import ThreadedWSGI, view_threads  # noqa: E402
from sessions_admin import policy, selectors  # noqa: E402
from sessions_admin.serializers import session_list_info  # noqa: E402

with open(os.environ["FLOOR_SCENARIOS"]) as scenarios_file:
    STATEMENTS: dict[str, list[str]] = json.load(scenarios_file)
ORDERING = selectors.Ordering(selectors.DEFAULT_ORDERING)

_local = threading.local()


def connection() -> psycopg.Connection:
    """This thread's connection, opened on first use (after gunicorn forks)."""
    conn = getattr(_local, "connection", None)
    if conn is None or conn.closed:
        conn = _local.connection = psycopg.connect(
            os.environ["FLOOR_DATABASE_URL"], autocommit=True
        )
    return conn


def answer(statements: list[str], limit: int) -> bytes:
    """Run the statements and build the endpoint's answer with the project's own helpers."""
    now = policy.clock()
    conn = connection()
    counts = conn.cursor(row_factory=dict_row).execute(statements[0]).fetchone()
    counts["expired"] = counts["total"] - counts["active"]
    values = conn.execute(statements[1]).fetchall()
    page = selectors.page_from(values, counts, ordering=ORDERING, limit=limit)
    return orjson.dumps(session_list_info(page, limit=limit, now=now))


def application(environ, start_response):
    query = environ.get("QUERY_STRING", "")
    statements = STATEMENTS.get(query)
    if statements is None:
        # Anything else (gunicorn's readiness probe, say) gets an empty 404.
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    limit = int(dict(pair.split("=", 1) for pair in query.split("&"))["limit"])
    body = answer(statements, limit)
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


asgi_application = ThreadedWSGI(application, threads=view_threads(), max_body_bytes=1024 * 1024)
