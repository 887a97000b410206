"""A flood of health checks against a large table, with and without reusing healthy answers.

    python bench/health.py                    # 1,000,000 sessions, 6 flooding clients, 10 s
    python bench/health.py --seed 100000 --clients 12 --seconds 20
    python bench/health.py --smoke            # 5,000 sessions, 2 clients, 1 s

``/sessions/health`` needs no credentials and is never rate limited (load
balancers probe it), and its counts read the whole table. This runs gunicorn
(the project's ``gunicorn.conf.py``, its workers) twice on one seeded
PostgreSQL database: with ``SESSIONS_HEALTH_CACHE_MS=0`` (every check counts
the table) and with the default (a healthy answer is reused for 1 s per
process). Each time, ``--clients`` threads send health checks back to back for
``--seconds`` while one more client reads a session (``GET /sessions/{id}``)
in a loop: the table shows how many health checks were answered and what the
flood did to that ordinary request.
"""

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-secret-key")

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    create_database,
    drop_database,
    machine_report,
    manage,
    summary_ms,
    table,
)
from bench.server import Client, Gunicorn  # noqa: E402

DATABASE = "sa_hard_bench_health"
BASE = "/api/messaging/sessions"
WORKERS = 5


def flood(url: str, *, reuse_ms: str, clients: int, seconds: float) -> list:
    with Gunicorn(
        database_url=url, workers=WORKERS, env={"SESSIONS_HEALTH_CACHE_MS": reuse_ms}
    ) as server:
        reader = Client(server.port)
        status, created = reader.request(
            "POST", BASE, {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
        )
        assert status == 201, created
        session_path = f"{BASE}/{created['sessionId']}"
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def check_health():
            client = Client(server.port, headers={})
            while time.monotonic() < deadline:
                status, _ = client.request_raw("GET", f"{BASE}/health")
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1

        threads = [threading.Thread(target=check_health) for _ in range(clients)]
        for thread in threads:
            thread.start()
        reads = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status, _ = reader.request_raw("GET", session_path)
            reads.append(time.perf_counter() - started)
            assert status == 200, status
        for thread in threads:
            thread.join()
    latency = summary_ms(reads)
    answered = sum(statuses.values())
    return [
        "off (0)" if reuse_ms == "0" else f"{int(reuse_ms):,} ms",
        f"{answered:,}",
        f"{answered / seconds:,.0f}",
        ", ".join(f"{code}: {count:,}" for code, count in sorted(statuses.items())),
        f"{len(reads):,}",
        f"{latency['p50']:.1f}",
        f"{latency['p95']:.1f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1_000_000, help="Sessions seeded first.")
    parser.add_argument("--clients", type=int, default=6, help="Threads sending health checks.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each flood.")
    parser.add_argument("--smoke", action="store_true", help="5,000 sessions, 2 clients, 1 s.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seed, args.clients, args.seconds = 5_000, 2, 1.0
    if args.seed < 1 or args.clients < 1 or not 0 < args.seconds <= 300:
        parser.error("--seed and --clients must be at least 1, --seconds within (0, 300]")

    print(machine_report())
    started = time.perf_counter()
    url = create_database(DATABASE)
    try:
        manage("migrate", "--noinput", database_url=url)
        manage("seed_sessions", "--count", str(args.seed), database_url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(
            f"seeded {args.seed:,} sessions; gunicorn: {WORKERS} workers; "
            f"{args.clients} health clients and 1 reader, {args.seconds:g} s per run\n"
        )
        rows = [
            flood(url, reuse_ms=reuse, clients=args.clients, seconds=args.seconds)
            for reuse in ("0", "1000")
        ]
    finally:
        if not args.keep:
            drop_database(DATABASE)
    print(
        table(
            [
                "healthy answer reused",
                "health checks",
                "per s",
                "statuses",
                "session reads",
                "read p50 ms",
                "read p95 ms",
            ],
            rows,
        )
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
