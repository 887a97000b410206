"""Throughput, latency and memory of the API under concurrent load (gunicorn on loopback, PostgreSQL).

    python bench/load.py                      # 8 clients, 10 s per operation
    python bench/load.py --clients 16 --seconds 20 --workers 3
    python bench/load.py --smoke              # 2 clients, 1 s per operation
    python bench/load.py --baseline ../old    # an older checkout and this one, alternately

A scratch database is seeded with ``--seed`` sessions (``manage.py
seed_sessions``) so the list has a realistic table behind it. gunicorn runs
with the project's ``gunicorn.conf.py`` (its ASGI worker and view threads;
``--workers`` or its default of one per core). For each operation in turn, ``--clients`` threads
send requests back to back for ``--seconds`` (or until ``--max-requests``),
each on its own connection:

- ``create``: ``POST /sessions``;
- ``get``: ``GET /sessions/{id}`` of a session created in the first phase;
- ``heartbeat``: ``POST /sessions/{id}/heartbeat`` on those sessions;
- ``list``: ``GET /sessions?limit=100`` with the admin key (counts + one page);
- ``mixed``: 10% create, 40% get, 40% heartbeat, 10% list.

Memory is the resident set (RSS) of the master and workers summed, and their
proportional set size (PSS, shared pages split between processes), sampled
every 0.2 s; the table shows the peak of each phase. The load generator runs
on the same machine, so it competes with the server for the CPU: the figures
are a floor, not the server's ceiling.
"""

import argparse
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-secret-key")

from bench.common import (  # noqa: E402
    create_database,
    drop_database,
    machine_report,
    manage,
    percentile,
    table,
)
from bench.server import Client, Gunicorn  # noqa: E402
from messaging_project.serving import default_workers, view_threads  # noqa: E402

DATABASE = os.environ.get("BENCH_DB_PREFIX", "sa_bench") + "_load"
BASE = "/api/messaging/sessions"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Phase:
    """Run one operation from many threads; collect latencies, errors and memory peaks."""

    def __init__(self, name, server, operation, *, clients, seconds, max_requests):
        self.name = name
        self.server = server
        self.operation = operation
        self.clients = clients
        self.seconds = seconds
        self.max_requests = max_requests
        self.latencies: list[float] = []
        self.errors: dict = {}
        self.lock = threading.Lock()
        self.issued = 0
        self.rss_peak = self.pss_peak = 0.0

    def _take_ticket(self) -> bool:
        with self.lock:
            if self.issued >= self.max_requests:
                return False
            self.issued += 1
            return True

    def _client(self, deadline: float) -> None:
        client = Client(self.server.port)
        rng = random.Random()
        latencies = []
        while time.monotonic() < deadline and self._take_ticket():
            started = time.perf_counter()
            try:
                status, expected = self.operation(client, rng)
            except OSError as exc:
                status, expected = type(exc).__name__, None
            latencies.append(time.perf_counter() - started)
            if status != expected:
                with self.lock:
                    self.errors[status] = self.errors.get(status, 0) + 1
        client.close()
        with self.lock:
            self.latencies += latencies

    def _sample_memory(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            self.rss_peak = max(self.rss_peak, self.server.rss_mib())
            self.pss_peak = max(self.pss_peak, self.server.pss_mib())

    def run(self) -> list:
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample_memory, args=(stop,), daemon=True)
        sampler.start()
        started = time.perf_counter()
        deadline = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self._client, args=(deadline,)) for _ in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
        done = len(self.latencies)
        errors = sum(self.errors.values())
        return [
            self.name,
            f"{done:,}",
            f"{errors}" + (f" {self.errors}" if errors else ""),
            f"{done / elapsed:,.0f}",
            f"{percentile(self.latencies, 50) * 1000:.1f}",
            f"{percentile(self.latencies, 95) * 1000:.1f}",
            f"{percentile(self.latencies, 99) * 1000:.1f}",
            f"{max(self.latencies, default=0) * 1000:.0f}",
            f"{self.rss_peak:.0f}",
            f"{self.pss_peak:.0f}",
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", type=int, default=8, help="Concurrent client threads (default 8)."
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Seconds per operation (default 10)."
    )
    parser.add_argument("--max-requests", type=int, default=50_000, help="Cap per operation.")
    parser.add_argument(
        "--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's)."
    )
    parser.add_argument(
        "--seed", type=int, default=100_000, help="Sessions seeded first (default 100,000)."
    )
    parser.add_argument(
        "--smoke", action="store_true", help="2 clients, 1 s per operation, 2,000 seeded."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    parser.add_argument(
        "--only", help="Comma-separated operations to run (default: all of them, in order)."
    )
    parser.add_argument(
        "--side-by-side", action="store_true",
        help="With --baseline: load both codes at the same time instead of one after the other.",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="With --baseline: old-new pairs to run (default 2)."
    )
    parser.add_argument(
        "--baseline", type=Path,
        help="An older checkout: run it and this one alternately (old, new, old, new), "
        "each on its own scratch database, and compare their throughput.",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.seconds, args.seed = 2, 1.0, 2_000
    workers = args.workers or default_workers()

    print(machine_report())
    print(f"load average before: {load_average()}")
    started = time.perf_counter()
    if args.baseline is None:
        measure(ROOT, DATABASE, args, workers)
    elif args.side_by_side:
        side_by_side({"old": args.baseline.resolve(), "new": ROOT}, args, workers)
    else:
        runs = []
        for run, code in enumerate(("old", "new") * args.rounds):
            root = args.baseline.resolve() if code == "old" else ROOT
            print(f"\n## {code} code, run {run // 2 + 1} ({root})")
            runs.append((code, measure(root, f"{DATABASE}_{code}", args, workers)))
        operations = [row[0] for row in runs[0][1]]
        rows = []
        for index, operation in enumerate(operations):
            rates = [float(result[index][3].replace(",", "")) for _, result in runs]
            old, new = sum(rates[0::2]), sum(rates[1::2])
            rows.append([operation, *(f"{rate:,.0f}" for rate in rates), f"{new / old:.2f}×"])
        headers = [f"{code} ({run // 2 + 1})" for run, (code, _) in enumerate(runs)]
        print("\nThroughput, req/s, in the order run:\n")
        print(table(["operation", *headers, "new / old"], rows))
    print(f"total {time.perf_counter() - started:.0f} s; load average after: {load_average()}")


def operations_against() -> dict:
    """The operations, by name, each sending one request; ``get`` and ``heartbeat`` use the
    sessions ``create`` made."""
    created: list[str] = []
    created_lock = threading.Lock()

    def create(client, rng):
        status, body = client.request(
            "POST", BASE, {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
        )
        if status == 201:
            with created_lock:
                created.append(body["sessionId"])
        return status, 201

    def get(client, rng):
        return client.request("GET", f"{BASE}/{rng.choice(created)}")[0], 200

    def heartbeat(client, rng):
        return client.request("POST", f"{BASE}/{rng.choice(created)}/heartbeat")[0], 200

    def list_page(client, rng):
        return client.request("GET", f"{BASE}?limit=100")[0], 200

    def mixed(client, rng):
        roll = rng.random()
        operation = (
            create
            if roll < 0.1
            else get
            if roll < 0.5
            else heartbeat
            if roll < 0.9
            else list_page
        )
        return operation(client, rng)

    return {
        "create": create,
        "get": get,
        "heartbeat": heartbeat,
        "list (100/page)": list_page,
        "mixed": mixed,
    }


def side_by_side(codes: dict, args, workers: int) -> None:
    """Serve each code from its own database at the same time, and load both at once.

    On a machine shared with other work one run after the other measures the
    other work as much as the code: here both servers see the same machine at
    the same moment, and each gets ``--clients`` client threads of its own.
    The client threads of both share this one Python process: when it is what
    limits the rate, both codes come out alike whatever they cost (compare the
    sum with one code's rate alone before trusting a ratio).
    """
    urls = {}
    for code, root in codes.items():
        urls[code] = create_database(f"{DATABASE}_{code}")
        manage("migrate", "--noinput", database_url=urls[code], root=root)
        manage("seed_sessions", "--count", str(args.seed), database_url=urls[code], root=root)
    print(
        f"seeded {args.seed:,} sessions per code; gunicorn: {workers} sync workers per code; "
        f"{args.clients} client threads per code, {args.seconds:g} s per operation, both at once"
    )
    servers = {}
    try:
        for code, root in codes.items():
            servers[code] = Gunicorn(database_url=urls[code], workers=workers, root=root).__enter__()
        operations = {code: operations_against() for code in codes}
        only = set(args.only.split(",")) if args.only else None
        rows = []
        for name in operations["new"]:
            if only is not None and name.split()[0] not in only:
                continue
            phases = {
                code: Phase(name, servers[code], operations[code][name], clients=args.clients,
                            seconds=args.seconds, max_requests=args.max_requests)
                for code in codes
            }
            results = {}

            def run(code, phases=phases, results=results):
                results[code] = phases[code].run()

            threads = [threading.Thread(target=run, args=(code,)) for code in codes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            old, new = results["old"], results["new"]
            rate = {code: float(result[3].replace(",", "")) for code, result in results.items()}
            rows.append([name, old[2], new[2], old[3], new[3], f"{rate['new'] / rate['old']:.2f}×",
                         old[4], new[4]])
            print(f"  {name}: done (load average {load_average()})", flush=True)
        print()
        print(table(["operation", "errors old", "errors new", "old req/s", "new req/s",
                     "new / old", "old p50 ms", "new p50 ms"], rows))
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
        if not args.keep:
            for code in codes:
                drop_database(f"{DATABASE}_{code}")


def measure(root: Path, database: str, args, workers: int) -> list:
    """Seed ``database`` with ``root``'s code, run every phase against it; return the table rows."""
    url = create_database(database)
    try:
        manage("migrate", "--noinput", database_url=url, root=root)
        manage("seed_sessions", "--count", str(args.seed), database_url=url, root=root)
        print(
            f"seeded {args.seed:,} sessions; gunicorn: {workers} workers, {view_threads()} view threads each; "
            f"{args.clients} client threads, {args.seconds:g} s per operation"
        )
        operations = operations_against()
        rows = []
        with Gunicorn(database_url=url, workers=workers, root=root) as server:
            idle_rss, idle_pss = server.rss_mib(), server.pss_mib()
            only = set(args.only.split(",")) if args.only else None
            for name, operation in operations.items():
                if only is not None and name.split()[0] not in only:
                    continue
                phase = Phase(
                    name,
                    server,
                    operation,
                    clients=args.clients,
                    seconds=args.seconds,
                    max_requests=args.max_requests,
                )
                rows.append(phase.run())
                print(f"  {name}: done (load average {load_average()})", flush=True)
            after_rss, after_pss = server.rss_mib(), server.pss_mib()
        print()
        print(
            table(
                [
                    "operation",
                    "requests",
                    "errors",
                    "req/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "peak RSS MiB",
                    "peak PSS MiB",
                ],
                rows,
            )
        )
        print(
            f"\nserver memory ({workers + 1} processes): idle RSS {idle_rss:.0f} MiB / PSS "
            f"{idle_pss:.0f} MiB; after the run RSS {after_rss:.0f} MiB / PSS {after_pss:.0f} MiB"
        )
    finally:
        if not args.keep:
            drop_database(database)
    return rows


if __name__ == "__main__":
    main()
