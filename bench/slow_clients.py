"""Slow, idle and waiting clients against the server: does everyone else still get served?

    python bench/slow_clients.py                          # the served model, 200 of each
    python bench/slow_clients.py --models asgi-threads,uvicorn,django-asgi,gthread,sync
    python bench/slow_clients.py --smoke                  # 20 clients, few samples

For each serving model (``bench/serving_models.py``), on a scratch PostgreSQL
database, three phases in turn:

1. **idle**: health and ``GET /sessions/{id}`` are timed, one request at a time
   on a new connection each (``--samples`` of each, alternating, a pair every
   ``--pace`` seconds: 40 pairs take 10 s, longer than the server's read timeout);
2. **slow**: ``--clients`` connections attack meanwhile, a third each of:
   connected and silent; sending their request line and headers a byte every
   ``--interval`` seconds; sending whole headers with ``Content-Length: 200`` and
   then the body a byte at a time. Each one reconnects as soon as the server
   closes it (the answers it got are counted, 408 among them). Health and get
   are timed again;
3. **waiting**: ``--clients`` requests to ``GET /bench/wait?seconds=60`` are
   held open (the stand-in for replies and long polls that wait for an agent:
   a PostgreSQL ``LISTEN`` per process), health and get are timed again; then
   one ``NOTIFY`` wakes them and the time until each answered is measured;
4. **stalls**: alone, one request of each kind stops sending (headers that
   never end, a body short of its ``Content-Length``, a body sent a byte a
   second): what the server answers, and when (``--stall-wait``, 35 s, at most).

A request that gets no answer within ``--timeout`` seconds counts as that
long and as a failure. The ratios are each phase's p50 over the idle p50: the
goal is at most 2.
"""

import argparse
import asyncio
import http.client
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.common import create_database, drop_database, machine_report, manage, percentile, table  # noqa: E402
from bench.server import ADMIN_KEY, Client  # noqa: E402
from bench.serving_models import MODELS, known, load_average, start_model  # noqa: E402

DATABASE = "srv_bench_slow"
BASE = "/api/messaging/sessions"
HEALTH = f"{BASE}/health"
PORTS = iter(range(3350, 3400))


def timed_request(port: int, path: str, timeout: float) -> tuple[float, bool]:
    """One GET on a new connection; return (seconds, answered with 200)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"X-API-KEY": ADMIN_KEY})
        response = connection.getresponse()
        response.read()
        ok = response.status == 200
    except (OSError, http.client.HTTPException):
        ok = False
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    return (elapsed if ok else max(elapsed, timeout)), ok


def sample(port: int, session_id: str, args) -> dict:
    """Time health and get alternately, a pair every ``--pace`` seconds.

    Stops after ``--samples`` of each or ``--budget`` seconds.
    """
    health, get, failures = [], [], 0
    deadline = time.monotonic() + args.budget
    for _ in range(args.samples):
        if time.monotonic() > deadline:
            break
        started = time.monotonic()
        for path, into in ((HEALTH, health), (f"{BASE}/{session_id}", get)):
            seconds, ok = timed_request(port, path, args.timeout)
            into.append(seconds)
            failures += not ok
        time.sleep(max(0.0, args.pace - (time.monotonic() - started)))
    return {"health": health, "get": get, "failures": failures}


class Crowd:
    """Many connections driven from one event loop on a thread of their own."""

    def __init__(self, port: int):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stopping = False
        self.tasks: list = []
        self.answers: dict[str, int] = {}
        self.connects = 0

    def run(self, coroutine) -> None:
        self.tasks.append(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        time.sleep(0.2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _count(self, received: bytes) -> None:
        status = received.split(b" ", 2)[1].decode() if received.startswith(b"HTTP/") else "closed"
        self.answers[status] = self.answers.get(status, 0) + 1

    async def slow(self, kind: str, interval: float) -> None:
        """Connect and send slowly (or not at all) until stopped; reconnect whenever closed."""
        body = b'{"agentId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a11", "userId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a12"}'
        head = (
            f"POST {BASE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-API-KEY: {ADMIN_KEY}\r\nContent-Length: 200\r\n\r\n"
        ).encode()
        while not self.stopping:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.connects += 1
            if kind == "body":
                writer.write(head)
            trickle = {"idle": b"", "headers": head, "body": body + b" " * 200}[kind]
            received = b""
            try:
                position = 0
                while not self.stopping:
                    if trickle and position < len(trickle):
                        writer.write(trickle[position : position + 1])
                        position += 1
                    try:
                        chunk = await asyncio.wait_for(reader.read(65536), interval)
                    except TimeoutError:
                        continue
                    received += chunk
                    if not chunk:
                        break
            except OSError:
                pass
            finally:
                writer.close()
            self._count(received)

    async def wait(self, results: list) -> None:
        """One request that waits on the server; record when its answer arrived."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(
                b"GET /bench/wait?seconds=60 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            received = await reader.read()
            results.append((time.monotonic(), received))
            writer.close()
        except OSError:
            results.append((time.monotonic(), b""))


STALLS = {
    "headers never end": lambda head, body: head[:40],
    "body short of its length": lambda head, body: head + body,
    "body a byte a second": None,
}


async def stalled_request(port: int, kind: str, give_up: float) -> str:
    """Send one request that stalls; return what the server answered and when."""
    body = b'{"agentId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a11"}'
    head = (
        f"POST {BASE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-API-KEY: {ADMIN_KEY}\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    make = STALLS[kind]
    writer.write(make(head, body) if make else head)
    received = b""
    try:
        position = 0
        while time.monotonic() - started < give_up:
            if make is None:
                writer.write(body[position % len(body) : position % len(body) + 1])
                position += 1
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                continue
            received += chunk
            if not chunk:
                break
    except OSError:
        pass
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    if received.startswith(b"HTTP/"):
        return f"{received.split(b' ', 2)[1].decode()} after {elapsed:.1f} s"
    if elapsed < give_up:
        return f"closed after {elapsed:.1f} s"
    return f"nothing in {give_up:.0f} s"


async def stalls(port: int, give_up: float) -> str:
    answers = await asyncio.gather(*(stalled_request(port, kind, give_up) for kind in STALLS))
    return "; ".join(f"{kind}: {answer}" for kind, answer in zip(STALLS, answers, strict=True))


def summarize(phase: dict) -> dict:
    return {
        name: statistics.median(phase[name]) * 1000 if phase[name] else float("nan")
        for name in ("health", "get")
    }


def run_model(name: str, args, database_url: str, session_ids: dict) -> list:
    with start_model(name, database_url=database_url, port=next(PORTS)) as server:
        status, body = Client(server.port).request(
            "POST", BASE, {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
        )
        assert status == 201, body
        session_id = body["sessionId"]
        for _ in range(5):  # warm every worker's connection a little
            timed_request(server.port, f"{BASE}/{session_id}", args.timeout)

        idle = sample(server.port, session_id, args)

        crowd = Crowd(server.port)
        for index in range(args.clients):
            crowd.run(crowd.slow(("idle", "headers", "body")[index % 3], args.interval))
        time.sleep(1.0)
        slow = sample(server.port, session_id, args)
        connects = crowd.connects
        crowd.stop()
        slow_answers = dict(crowd.answers)

        crowd = Crowd(server.port)
        waits: list = []
        for _ in range(args.clients):
            crowd.run(crowd.wait(waits))
        time.sleep(1.0)
        waiting = sample(server.port, session_id, args)
        woken_at = time.monotonic()
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("NOTIFY bench_wait")
        deadline = time.monotonic() + 30
        while len(waits) < args.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        crowd.stop()
        woken = [at - woken_at for at, received in waits if b'"woken": true' in received]
        # Last, alone: what one stalled request of each kind gets (it may hold a worker).
        stalled = asyncio.run(stalls(server.port, args.stall_wait))

    idle_p50, slow_p50, waiting_p50 = summarize(idle), summarize(slow), summarize(waiting)
    wake = (
        f"{len(woken)}/{args.clients}, p50 {percentile(woken, 50) * 1000:.0f} ms, "
        f"max {max(woken) * 1000:.0f} ms"
        if woken else f"0/{args.clients}"
    )
    return [
        name,
        f"{idle_p50['health']:.1f} / {idle_p50['get']:.1f}",
        f"{slow_p50['health']:.1f} / {slow_p50['get']:.1f}",
        f"{slow_p50['health'] / idle_p50['health']:.2f}× / {slow_p50['get'] / idle_p50['get']:.2f}×",
        f"{slow['failures']}",
        ", ".join(f"{k}: {v}" for k, v in sorted(slow_answers.items())) + f" ({connects} connects)",
        f"{waiting_p50['health']:.1f} / {waiting_p50['get']:.1f}",
        f"{waiting_p50['health'] / idle_p50['health']:.2f}× / {waiting_p50['get'] / idle_p50['get']:.2f}×",
        f"{waiting['failures']}",
        wake,
        stalled,
        load_average(),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="asgi-threads", help="comma-separated, see serving_models.py")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a slow client's bytes")
    parser.add_argument("--samples", type=int, default=40, help="health and get requests per phase")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a timed request may take")
    parser.add_argument("--pace", type=float, default=0.25, help="seconds between timed pairs")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds a phase's sampling may take")
    parser.add_argument("--stall-wait", type=float, default=35.0,
                        help="seconds to wait for the answer to one stalled request")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.samples, args.budget, args.stall_wait = 20, 5, 10.0, 8.0
    models = [name for name in args.models.split(",") if name]
    unknown = {name for name in models if not known(name)}
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")

    print(machine_report())
    print(f"load average before: {load_average()}")
    url = create_database(DATABASE)
    rows = []
    try:
        manage("migrate", "--noinput", database_url=url)
        for round_number in range(1, args.rounds + 1):
            for name in models:
                row = run_model(name, args, url, {})
                print(f"  round {round_number}: {' | '.join(row)}", flush=True)
                rows.append(row)
    finally:
        drop_database(DATABASE)
    print()
    print(table(
        [
            "model", "idle p50 ms (health / get)", f"{args.clients} slow: p50 ms", "slow ÷ idle",
            "failures", "what the slow clients got", f"{args.clients} waiting: p50 ms",
            "waiting ÷ idle", "failures", "woken by one NOTIFY", "one stalled request gets",
            "load average",
        ],
        rows,
    ))


if __name__ == "__main__":
    main()
