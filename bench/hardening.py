"""What hostile or stuck requests cost the others: unknown-key floods and rows locked elsewhere.

    python bench/hardening.py            # 15 s flood, 5 heartbeats on a locked row
    python bench/hardening.py --smoke    # 2 s flood

gunicorn as ``make run`` starts it (the project's ``gunicorn.conf.py``, 5 sync
workers, its 2 s lock timeout) on a scratch PostgreSQL database:

- a 1 MB body of 107,000 unknown keys: the answer's size and time (best of 5);
- an ordinary read (``GET /sessions/{id}``) in a loop while such bodies arrive
  3 times a second, under any rate limit a deployment would set;
- 5 heartbeats at once on a session whose row another connection holds
  ``FOR UPDATE``, and a health check sent meanwhile: how long each waits.
"""

import argparse
import http.client
import json
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
    percentile,
    table,
)
from bench.server import ADMIN_KEY, Client, Gunicorn  # noqa: E402

DATABASE = "sa_hard_bench_hardening"
BASE = "/api/messaging/sessions"
WORKERS = 5
UNKNOWN_KEYS = json.dumps({f"{index:x}": 0 for index in range(107_000)}, separators=(",", ":"))


def post_raw(port: int, body: bytes) -> tuple[int, int, float]:
    """POST ``body`` to create a session; return the status, the answer's bytes and seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    try:
        connection.request(
            "POST",
            BASE,
            body=body,
            headers={"X-API-KEY": ADMIN_KEY, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    return response.status, len(answer), time.perf_counter() - started


def create_session(port: int) -> str:
    client = Client(port)
    status, created = client.request(
        "POST", BASE, {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
    )
    # Closed at once: a sync worker waits out an idle keep-alive connection, and
    # would not serve the requests measured next.
    client.close()
    assert status == 201, created
    return created["sessionId"]


def unknown_keys(port: int) -> list:
    runs = [post_raw(port, UNKNOWN_KEYS.encode()) for _ in range(5)]
    status, size, _ = runs[-1]
    best = min(seconds for _, _, seconds in runs)
    label = f"POST {len(UNKNOWN_KEYS):,} B of unknown keys"
    return [label, status, f"{size:,} B", f"{best * 1000:.0f}"]


def read_during_flood(port: int, seconds: float) -> list:
    session_path = f"{BASE}/{create_session(port)}"
    reader = Client(port)
    deadline = time.monotonic() + seconds
    senders = []

    def flood():
        while time.monotonic() < deadline:
            sender = threading.Thread(target=post_raw, args=(port, UNKNOWN_KEYS.encode()))
            sender.start()
            senders.append(sender)
            time.sleep(1 / 3)

    flooding = threading.Thread(target=flood)
    flooding.start()
    reads = []
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status, _ = reader.request_raw("GET", session_path)
        reads.append(time.perf_counter() - started)
        assert status == 200, status
        time.sleep(0.1)
    reader.close()
    flooding.join()
    for sender in senders:
        sender.join()
    return [
        f"GET during 3 such POSTs/s, {seconds:g} s",
        200,
        f"{len(reads)} reads",
        f"p50 {percentile(reads, 50) * 1000:.0f}, p90 {percentile(reads, 90) * 1000:.0f}, "
        f"max {max(reads) * 1000:.0f}",
    ]


def locked_row(port: int, url: str) -> list[list]:
    session_id = create_session(port)
    answers = []

    def heartbeat():
        client = Client(port)
        started = time.perf_counter()
        status, _ = client.request_raw("POST", f"{BASE}/{session_id}/heartbeat")
        answers.append((status, time.perf_counter() - started))
        client.close()

    with psycopg.connect(url) as holder:
        holder.execute(
            "SELECT 1 FROM sessions_admin_session WHERE session_id = %s FOR UPDATE", [session_id]
        )
        beats = [threading.Thread(target=heartbeat) for _ in range(5)]
        for beat in beats:
            beat.start()
        time.sleep(0.5)
        started = time.perf_counter()
        health_status, _ = Client(port, headers={}).request_raw("GET", f"{BASE}/health")
        health_seconds = time.perf_counter() - started
        for beat in beats:
            beat.join()
        holder.rollback()
    statuses = sorted({status for status, _ in answers})
    waits = sorted(seconds for _, seconds in answers)
    return [
        [
            "5 heartbeats on a row locked elsewhere",
            ", ".join(map(str, statuses)),
            "5 answers",
            f"min {waits[0] * 1000:.0f}, max {waits[-1] * 1000:.0f}",
        ],
        ["health sent 0.5 s after them", health_status, "1 answer", f"{health_seconds * 1000:.0f}"],
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of the flood.")
    parser.add_argument("--smoke", action="store_true", help="A 2 s flood.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds = 2.0
    if not 0 < args.seconds <= 300:
        parser.error("--seconds must be within (0, 300]")

    print(machine_report())
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    url = create_database(DATABASE)
    try:
        manage("migrate", "--noinput", database_url=url)
        with Gunicorn(database_url=url, workers=WORKERS) as server:
            print(f"gunicorn: {WORKERS} workers, lock timeout 2 s (gunicorn.conf.py)\n")
            rows = [
                unknown_keys(server.port),
                read_during_flood(server.port, args.seconds),
                *locked_row(server.port, url),
            ]
    finally:
        if not args.keep:
            drop_database(DATABASE)
    print(table(["request", "status", "answer", "ms"], rows))
    print(f"\nload average (1 min) at end: {os.getloadavg()[0]:.2f}")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
