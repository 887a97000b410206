"""Benchmark the admin list endpoint over HTTP next to the raw SQL it runs (PostgreSQL).

    python bench/list.py                          # 10k, 100k and 1M sessions
    python bench/list.py --sizes 10000,100000     # chosen sizes
    python bench/list.py --smoke                  # 5,000 sessions, 10 requests: a quick check
    python bench/list.py --profile                # also cProfile one request of each scenario

For each size the sessions are seeded (``manage.py seed_sessions``, 20% expired)
into a scratch database, which is then vacuumed and analysed. gunicorn serves
the project on loopback; requests carry the admin key and are sent one at a
time. Three scenarios, 100 sessions a page, default ordering (``-lastActivity``):

- ``first page``: no cursor;
- ``page at 90%``: a cursor pointing 90% of the way through the active
  sessions (built with the selectors' own ``Cursor``, as a client following
  ``nextCursor`` would end up with);
- ``agentId filter``: the first page of one agent's sessions.

"raw SQL" is the same two statements the endpoint runs (the aggregate count
and the page query), captured from the selector with the same parameters and
executed with psycopg on one open connection, rows fetched. "floor" is those
statements behind a bare WSGI application (``bench/floor_app.py``) under the
same gunicorn settings, answering the same JSON: what any Python server of this
answer pays, so that "HTTP / floor" is the part of Django, DRF and the ORM.
HTTP, floor and SQL samples alternate, so all three see the same machine load.
Goals: HTTP ≤ 2× raw SQL; a deep page ≤ 1.2× the first page.
"""

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-secret-key")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    create_database,
    database_url,
    drop_database,
    machine_report,
    manage,
    summary_ms,
    table,
)
from bench.server import ADMIN_KEY, Client, Gunicorn  # noqa: E402

# This process builds cursors and captures SQL through Django, on PostgreSQL;
# each size's scratch database is selected by name before use.
os.environ["DATABASE_URL"] = database_url("postgres")

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
PAGE = 100
LIST_PATH = "/api/messaging/sessions"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def seed(size: int) -> tuple[str, str, float]:
    """Create, migrate, seed, vacuum and analyse a scratch database; return its name, URL and seed time."""
    name = f"sa_hard_bench_list_{size}"
    url = create_database(name)
    manage("migrate", "--noinput", database_url=url)
    started = time.perf_counter()
    manage("seed_sessions", "--count", str(size), database_url=url)
    seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return name, url, seconds


@contextlib.contextmanager
def on_database(database_name: str):
    """Point this process's Django connection at ``database_name`` for the block."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = database_name
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def in_process_client(database_name: str):
    """A Django test client carrying the admin key, on ``database_name``."""
    from django.test import Client as DjangoClient
    from django.test.utils import override_settings

    with (
        on_database(database_name),
        # No rate limit: a throttled request (429) would be timed as a fast one.
        override_settings(
            SESSIONS_ADMIN_API_KEY=ADMIN_KEY,
            ALLOWED_HOSTS=["testserver"],
            SESSIONS_THROTTLE_RATE=None,
        ),
    ):
        yield DjangoClient(HTTP_X_API_KEY=ADMIN_KEY)


def scenarios(database_name: str) -> list[dict]:
    """Build each scenario's query string and capture the SQL the selector runs for it."""
    import django

    django.setup()
    from django.test.utils import CaptureQueriesContext

    from sessions_admin import policy, selectors
    from sessions_admin.models import Session

    with on_database(database_name) as connection:
        now = policy.clock()
        ordering = selectors.Ordering(selectors.DEFAULT_ORDERING)
        active = Session.objects.active(now)
        depth = int(active.count() * 0.9)
        value, session_id = active.order_by(*ordering.order_by()).values_list(
            ordering.field, "session_id"
        )[depth]
        deep_cursor = selectors.Cursor(ordering.param, value, session_id)
        agent_id = active.order_by(*ordering.order_by()).values_list("agent_id", flat=True)[0]

        built = []
        for name, params, filters, cursor in (
            ("first page", {}, selectors.SessionFilters(), None),
            ("page at 90%", {"cursor": deep_cursor.encode()}, selectors.SessionFilters(), deep_cursor),
            (
                "agentId filter",
                {"agentId": str(agent_id)},
                selectors.SessionFilters(agent_id=agent_id),
                None,
            ),
        ):
            with CaptureQueriesContext(connection) as captured:
                page = selectors.session_list(
                    now=now, filters=filters, ordering=ordering, limit=PAGE, cursor=cursor
                )
            assert len(page.sessions) == PAGE, (name, len(page.sessions))
            built.append(
                {
                    "name": name,
                    "query": "?" + urlencode({"limit": PAGE, **params}),
                    "filters": filters,
                    "cursor": cursor,
                    "sql": [query["sql"] for query in captured.captured_queries],
                }
            )
    return built


def time_sql(conn: psycopg.Connection, statements: list[str]) -> float:
    started = time.perf_counter()
    for sql in statements:
        conn.execute(sql).fetchall()
    return time.perf_counter() - started


@contextlib.contextmanager
def floor_server(url: str, built: list[dict], workers: int, threads: int):
    """gunicorn serving ``bench/floor_app.py`` with each scenario's captured statements."""
    with tempfile.NamedTemporaryFile("w", prefix="sa_hard_bench_floor_", suffix=".json") as file:
        json.dump({scenario["query"].lstrip("?"): scenario["sql"] for scenario in built}, file)
        file.flush()
        with Gunicorn(
            database_url=url,
            workers=workers,
            threads=threads,
            app="bench.floor_app:asgi_application",
            env={"FLOOR_DATABASE_URL": url, "FLOOR_SCENARIOS": file.name},
        ) as server:
            yield server


def check_floor_answers_alike(client: Client, floor_client: Client, path: str) -> None:
    """The floor must answer what the endpoint answers: same fields, same page size, same store."""
    endpoint, floor = client.request("GET", path)[1], floor_client.request("GET", path)[1]
    assert endpoint.keys() == floor.keys(), (endpoint.keys(), floor.keys())
    assert [item.keys() for item in endpoint["sessions"]] == [item.keys() for item in floor["sessions"]]
    assert endpoint["stats"]["totalSessions"] == floor["stats"]["totalSessions"]


def time_http(client: Client, path: str) -> float:
    """Seconds from sending the request to the last byte of the answer (parsed afterwards)."""
    started = time.perf_counter()
    status, raw = client.request_raw("GET", path)
    elapsed = time.perf_counter() - started
    body = json.loads(raw)
    assert status == 200 and len(body["sessions"]) == PAGE, (status, raw[:300])
    return elapsed


def profile(database_name: str, scenario: dict, sort: str = "tottime") -> str:
    """cProfile the view for one request, in process: where does the time beyond SQL go?"""
    with in_process_client(database_name) as client:
        client.get(LIST_PATH + scenario["query"])  # warm up
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20):
            client.get(LIST_PATH + scenario["query"])
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(30)
    return out.getvalue()


def breakdown(database_name: str, scenario: dict, sql_p50_ms: float, repeat: int) -> list[list]:
    """Median time of each stage of one request, measured in this process, cumulatively.

    The last two rows are the fixed cost of a request, whatever the page holds:
    the same list with one session on the page, and an unknown route (404).
    """
    from sessions_admin import policy, selectors
    from sessions_admin.renderers import FastJSONRenderer
    from sessions_admin.serializers import session_info

    ordering = selectors.Ordering(selectors.DEFAULT_ORDERING)

    def page():
        return selectors.session_list(
            now=policy.clock(),
            filters=scenario["filters"],
            ordering=ordering,
            limit=PAGE,
            cursor=scenario["cursor"],
        )

    def dicts():
        now = policy.clock()
        return [session_info(session, now=now) for session in page().sessions]

    def rendered():
        return FastJSONRenderer().render({"sessions": dicts()})

    def median_ms(function, status: int = 200) -> float:
        response = function()
        assert getattr(response, "status_code", 200) == status, response
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
        return summary_ms(samples)["p50"]

    one_session = scenario["query"].replace(f"limit={PAGE}", "limit=1")
    with in_process_client(database_name) as client:
        stages = [
            ("raw SQL (psycopg, rows fetched)", sql_p50_ms),
            ("selector: the same SQL through Django, rows as tuples", median_ms(page)),
            (f"+ {PAGE} SessionInfo dicts (session_info)", median_ms(dicts)),
            ("+ JSON (the API's renderer)", median_ms(rendered)),
            (
                "whole request in process (Django test client)",
                median_ms(lambda: client.get(LIST_PATH + scenario["query"])),
            ),
            (
                "the same request for 1 session (limit=1)",
                median_ms(lambda: client.get(LIST_PATH + one_session)),
            ),
        ]
        # An unknown route answers 404, which Django logs as a warning each time.
        request_log = logging.getLogger("django.request")
        level = request_log.level
        request_log.setLevel(logging.ERROR)
        try:
            stages.append(
                (
                    "an unknown route (404): middleware only",
                    median_ms(lambda: client.get(LIST_PATH + "/no/such/route"), status=404),
                )
            )
        finally:
            request_log.setLevel(level)
    return [[stage, f"{ms:.1f}"] for stage, ms in stages]


def run_size(
    size: int, *, requests: int, workers: int, threads: int, want_profile: bool, keep: bool
) -> list[list]:
    name, url, seed_seconds = seed(size)
    print(f"\n## {size:,} sessions (seeded in {seed_seconds:.1f} s; load average {load_average()})")
    rows = []
    try:
        built = scenarios(name)
        with (
            Gunicorn(database_url=url, workers=workers, threads=threads) as server,
            floor_server(url, built, workers, threads) as floor,
            psycopg.connect(url) as conn,
        ):
            client, floor_client = Client(server.port), Client(floor.port)
            results = {}
            for scenario in built:
                path = LIST_PATH + scenario["query"]
                check_floor_answers_alike(client, floor_client, path)
                for _ in range(max(3, requests // 10)):  # warm-up: connections, caches, plans
                    time_http(client, path)
                    time_http(floor_client, path)
                    time_sql(conn, scenario["sql"])
                http_samples, floor_samples, sql_samples = [], [], []
                for _ in range(requests):
                    http_samples.append(time_http(client, path))
                    floor_samples.append(time_http(floor_client, path))
                    sql_samples.append(time_sql(conn, scenario["sql"]))
                results[scenario["name"]] = (
                    {**summary_ms(http_samples), "min": min(http_samples) * 1000},
                    {**summary_ms(sql_samples), "min": min(sql_samples) * 1000},
                    summary_ms(floor_samples),
                )
            first_http = results["first page"][0]["p50"]
            for scenario in built:
                http, sql, bare = results[scenario["name"]]
                rows.append(
                    [
                        f"{size:,}",
                        scenario["name"],
                        f"{http['p50']:.1f}",
                        f"{http['p95']:.1f}",
                        f"{http['min']:.1f}",
                        f"{sql['p50']:.1f}",
                        f"{sql['p95']:.1f}",
                        f"{sql['min']:.1f}",
                        f"{bare['p50']:.1f}",
                        f"{http['p50'] / sql['p50']:.2f}×",
                        f"{bare['p50'] / sql['p50']:.2f}×",
                        f"{http['p50'] / first_http:.2f}×",
                    ]
                )
        first = built[0]
        stages = breakdown(
            name, first, results["first page"][1]["p50"], repeat=max(20, requests // 2)
        )
        print(
            f"\nWhere the time of the first page goes (medians, ms; HTTP p50 was "
            f"{results['first page'][0]['p50']:.1f}):\n"
        )
        print(table(["stage", "ms"], stages))
        if want_profile:
            for scenario in built:
                print(f"\n### cProfile, {scenario['name']}, 20 requests in process\n")
                print(profile(name, scenario))
        print(f"(load average after: {load_average()})")
    finally:
        if not keep:
            drop_database(name)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="Comma-separated session counts (default 10000,100000,1000000).",
    )
    parser.add_argument("--requests", type=int, default=100, help="Timed requests per scenario.")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2).")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="View threads per worker (GUNICORN_THREADS; default 1: one request at a time each).",
    )
    parser.add_argument("--smoke", action="store_true", help="5,000 sessions, 10 requests.")
    parser.add_argument("--profile", action="store_true", help="cProfile each scenario in process.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch databases.")
    args = parser.parse_args(argv)
    try:
        sizes = [5_000] if args.smoke else [int(s.replace("_", "")) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated whole numbers, not {args.sizes!r}")
    if any(size < 1_000 for size in sizes):
        parser.error("each size must be at least 1000 (the deep page needs rows to page through)")
    requests = 10 if args.smoke else args.requests

    if args.workers < 1 or args.threads < 1 or requests < 1:
        parser.error("--workers, --threads and --requests must be at least 1")
    worker_kind = f"workers with {args.threads} view thread{'s' if args.threads > 1 else ''} each"
    print(machine_report())
    print(
        f"gunicorn: {args.workers} {worker_kind}; {requests} timed requests per scenario; "
        f"page size {PAGE}; load average before: {load_average()}"
    )
    started = time.perf_counter()
    rows = []
    for size in sizes:
        rows += run_size(
            size,
            requests=requests,
            workers=args.workers,
            threads=args.threads,
            want_profile=args.profile,
            keep=args.keep,
        )
    print()
    print(
        table(
            [
                "sessions",
                "scenario",
                "HTTP p50 ms",
                "HTTP p95 ms",
                "HTTP min ms",
                "SQL p50 ms",
                "SQL p95 ms",
                "SQL min ms",
                "floor p50 ms",
                "HTTP / SQL",
                "floor / SQL",
                "vs first page",
            ],
            rows,
        )
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average after: {load_average()}")


if __name__ == "__main__":
    main()
