"""Where a request's time goes: create, get and heartbeat through the WSGI application, profiled.

    python bench/profile_requests.py                # 2,000 requests of each, PostgreSQL
    python bench/profile_requests.py --top 25

No server and no network between client and application: each request is an
environ handed to the application the server runs on its view threads (the
same call ``ThreadedWSGI`` makes), on a scratch PostgreSQL database. For each
operation it prints the wall time per request, then cProfile's own time
grouped by where the code lives (the database driver's wait included under
psycopg), then the functions with the most cumulative time.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-secret-key")

from bench.common import create_database, drop_database, machine_report, manage, table  # noqa: E402

DATABASE = "srv_bench_profile"
BASE = "/api/messaging/sessions"
ADMIN_KEY = "benchmark-admin-key-0123456789"

GROUPS = (
    ("psycopg (driver and database wait)", ("psycopg",)),
    ("Django ORM", ("/django/db",)),
    ("DRF", ("/rest_framework",)),
    ("Django request, middleware, urls", ("/django/",)),
    ("project (sessions_admin)", ("/sessions_admin",)),
    ("whitenoise", ("/whitenoise",)),
)


def environ(method: str, path: str, body: bytes = b"") -> dict:
    return {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "3000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1", "HTTP_X_API_KEY": ADMIN_KEY,
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    print(machine_report())
    url = create_database(DATABASE)
    try:
        manage("migrate", "--noinput", database_url=url)
        os.environ.update({
            "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "messaging_project.settings",
            "SESSIONS_ADMIN_API_KEY": ADMIN_KEY, "SESSIONS_THROTTLE_RATE": "off",
            "DATABASE_STATEMENT_TIMEOUT_MS": "10000",
        })
        from django.core.wsgi import get_wsgi_application

        from messaging_project.serving import _call_wsgi

        application = get_wsgi_application()

        def create():
            body = json.dumps({"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}).encode()
            status, _, chunks = _call_wsgi(application, environ("POST", BASE, body))
            assert status == 201, chunks
            return json.loads(b"".join(chunks))["sessionId"]

        ids = [create() for _ in range(200)]
        operations = {
            "create": create,
            "get": lambda n: _call_wsgi(application, environ("GET", f"{BASE}/{ids[n % 200]}")),
            "heartbeat": lambda n: _call_wsgi(
                application, environ("POST", f"{BASE}/{ids[n % 200]}/heartbeat")
            ),
        }
        rows = []
        for name, operation in operations.items():
            call = (lambda n, op=operation: op()) if name == "create" else operation
            for n in range(100):  # warm up
                call(n)
            started = time.perf_counter()
            for n in range(args.requests):
                call(n)
            plain = (time.perf_counter() - started) / args.requests * 1000
            profiler = cProfile.Profile()
            profiler.enable()
            for n in range(args.requests):
                call(n)
            profiler.disable()
            stats = pstats.Stats(profiler)
            total = sum(row[2] for row in stats.stats.values())
            grouped = defaultdict(float)
            for (filename, _, function), row in stats.stats.items():
                # Built-ins (the C parts of psycopg among them) have no file name.
                where = function if filename == "~" else filename
                group = next(
                    (label for label, parts in GROUPS if any(part in where for part in parts)),
                    "other (Python, json, uuid, ...)",
                )
                grouped[group] += row[2]
            shares = ", ".join(
                f"{label} {seconds / total:.0%}"
                for label, seconds in sorted(grouped.items(), key=lambda item: -item[1])
            )
            rows.append([name, f"{plain:.2f}", f"{1000 / plain:,.0f}", shares])
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.top)
            print(f"\n### {name}: top {args.top} by cumulative time\n")
            print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-4000:])
        print()
        print(table(["operation", "ms per request", "req/s on one thread", "own time by package"], rows))
    finally:
        drop_database(DATABASE)


if __name__ == "__main__":
    main()
