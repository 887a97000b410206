"""Latency of the list, the admin list and health against the number of sessions (PostgreSQL).

    python bench/list.py                                   # 10k, 1M and 10M sessions
    python bench/list.py --sizes 10000,1000000 --baseline /path/to/old/checkout
    python bench/list.py --smoke                           # 5,000 sessions, 10 requests

For each size, each code (this checkout, and with ``--baseline`` an older
checkout of the project) migrates and seeds its own scratch database
(``manage.py seed_sessions``, 20% expired; the seeding is timed), which is then
vacuumed and analysed, and gunicorn serves it on loopback (2 workers, with each
checkout's own worker class).
Requests are sent one at a time, alternating between the codes, so both see the
same machine load. Scenarios (list: admin key, 100 sessions a page unless said):

- list: ``first page``; ``page at 90%`` (a cursor 90% of the way through the
  active sessions); ``agentId`` (one agent's first page); ``status=active``;
  ``limit=1``;
- admin change list (a signed-in superuser): ``admin: default``,
  ``admin: status expired``, ``admin: search agent``;
- ``health``.

Every answer counts at its own instant: the older code's summary and health
reuse are turned off (``SESSIONS_ADMIN_SUMMARY_CACHE_SECONDS=0``,
``SESSIONS_HEALTH_CACHE_MS=0``), as this code's are by default. Health's
deadline is raised to 10 s for both, so a slow count is timed rather than
answered 503. Goal: for every scenario, p50 at the largest size at most 1.5 ×
p50 at the smallest. ``--plot`` draws p50 against size (PNG, matplotlib).
"""

import argparse
import http.cookiejar
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-secret-key")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")

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

DEFAULT_SIZES = (10_000, 1_000_000, 10_000_000)
PAGE = 100
LIST = "/api/messaging/sessions"
CHANGELIST = "/admin/sessions_admin/session/"
USERNAME, PASSWORD = "bench-operator", "bench-operator-password-0123"
PREFIX = os.environ.get("BENCH_DB_PREFIX", "sa_bench_list")
SAME_FOR_BOTH = {
    "SESSIONS_ADMIN_SUMMARY_CACHE_SECONDS": "0",
    "SESSIONS_HEALTH_CACHE_MS": "0",
    "SESSIONS_HEALTH_TIMEOUT_MS": "10000",
    "SESSIONS_THROTTLE_RATE": "off",
}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Browser:
    """A signed-in admin user: cookies kept between requests, as a browser keeps them."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, bytes]:
        with self.opener.open(self.base + path, timeout=600) as response:
            return response.status, response.read()

    def sign_in(self) -> None:
        _, page = self.get("/admin/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode(
            {"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": token,
             "next": "/admin/"}
        ).encode()
        with self.opener.open(self.base + "/admin/login/", data=form, timeout=60) as response:
            assert response.url.endswith("/admin/"), f"sign-in failed: ended at {response.url}"


def application_of(root: Path) -> str:
    """The application a checkout serves: ASGI since the serving model changed, WSGI before."""
    if (root / "messaging_project" / "asgi.py").exists():
        return "messaging_project.asgi:application"
    return "messaging_project.wsgi:application"


def prepare(code: str, root: Path, size: int) -> tuple[str, str, float]:
    """Create, migrate and seed a scratch database with ``root``'s code; return name, URL, seed s."""
    name = f"{PREFIX}_{code}_{size}"
    url = create_database(name)
    manage("migrate", "--noinput", database_url=url, root=root)
    started = time.perf_counter()
    manage("seed_sessions", "--count", str(size), database_url=url, root=root)
    seconds = time.perf_counter() - started
    manage("createsuperuser", "--noinput", "--username", USERNAME, "--email", "ops@example.com",
           database_url=url, root=root, env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    manage("collectstatic", "--noinput", database_url=url, root=root)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return name, url, seconds


def scenarios(url: str) -> list[tuple[str, str, str]]:
    """``(name, kind, path)`` of each scenario, with an agent and a deep cursor of this database."""
    import django

    django.setup()
    from sessions_admin import policy, selectors

    now = policy.clock()
    with psycopg.connect(url) as conn:
        active = conn.execute(
            "SELECT count(*) FROM sessions_admin_session WHERE expires_at > %s", [now]
        ).fetchone()[0]
        value, session_id = conn.execute(
            "SELECT last_activity, session_id FROM sessions_admin_session WHERE expires_at > %s "
            "ORDER BY last_activity DESC, session_id DESC OFFSET %s LIMIT 1",
            [now, int(active * 0.9)],
        ).fetchone()
        agent = conn.execute(
            "SELECT agent_id FROM sessions_admin_session WHERE expires_at > %s "
            "ORDER BY last_activity DESC LIMIT 1",
            [now],
        ).fetchone()[0]
    cursor = selectors.Cursor(selectors.DEFAULT_ORDERING, value, session_id).encode()
    page = {"limit": PAGE}
    return [
        ("first page", "list", f"{LIST}?{urllib.parse.urlencode(page)}"),
        ("page at 90%", "list", f"{LIST}?{urllib.parse.urlencode({**page, 'cursor': cursor})}"),
        ("agentId", "list", f"{LIST}?{urllib.parse.urlencode({**page, 'agentId': agent})}"),
        ("status=active", "list", f"{LIST}?{urllib.parse.urlencode({**page, 'status': 'active'})}"),
        ("limit=1", "list", f"{LIST}?limit=1"),
        ("admin: default", "admin", CHANGELIST),
        ("admin: status expired", "admin", f"{CHANGELIST}?status=expired"),
        ("admin: search agent", "admin", f"{CHANGELIST}?q={agent}"),
        ("health", "health", f"{LIST}/health"),
    ]


def timed(contender, kind: str, path: str) -> float:
    started = time.perf_counter()
    if kind == "admin":
        status, body = contender["browser"].get(path)
        ok = status == 200 and b"session-summary" in body
    else:
        status, body = contender["client"].request_raw("GET", path)
        ok = status == 200 and (kind != "list" or len(json.loads(body)["sessions"]) >= 1)
    elapsed = time.perf_counter() - started
    assert ok, (path, status, body[:300])
    return elapsed


def run_size(size: int, codes: dict, *, requests: int, slow_requests: int, keep: bool) -> list[dict]:
    """Measure every scenario of every code at ``size``; return one result per (code, scenario)."""
    contenders, names = {}, []
    try:
        for code, root in codes.items():
            name, url, seed_seconds = prepare(code, root, size)
            names.append(name)
            contenders[code] = {"url": url, "root": root, "seed": seed_seconds,
                                "scenarios": scenarios(url)}
            print(f"  {code}: seeded {size:,} sessions in {seed_seconds:.1f} s "
                  f"(load average {load_average()})", flush=True)
        servers = {}
        try:
            for code, c in contenders.items():  # one after the other: each takes a free port
                servers[code] = Gunicorn(
                    database_url=c["url"], workers=2, root=c["root"], env=SAME_FOR_BOTH,
                    app=application_of(c["root"]),
                ).__enter__()
            for code, server in servers.items():
                contenders[code]["client"] = Client(server.port)
                contenders[code]["browser"] = Browser(server.port)
                contenders[code]["browser"].sign_in()
            results = []
            first = next(iter(contenders.values()))
            for index, (scenario, kind, _) in enumerate(first["scenarios"]):
                samples = {code: [] for code in contenders}
                for c in contenders.values():
                    timed(c, kind, c["scenarios"][index][2])  # warm up: connections, caches, plans
                for round_ in range(requests):
                    for code, c in contenders.items():
                        if code == "new" or round_ < slow_requests:
                            samples[code].append(timed(c, kind, c["scenarios"][index][2]))
                for code in contenders:
                    results.append({"size": size, "code": code, "scenario": scenario,
                                    "seed": contenders[code]["seed"], "n": len(samples[code]),
                                    **summary_ms(samples[code])})
                print(f"    {scenario}: " + ", ".join(
                    f"{r['code']} p50 {r['p50']:.1f} ms" for r in results[-len(contenders):]
                ), flush=True)
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)
    finally:
        if not keep:
            for name in names:
                drop_database(name)
    return results


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario_names = list(dict.fromkeys(r["scenario"] for r in results))
    columns = 3
    rows = -(-len(scenario_names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
    for axis, scenario in zip(axes.flat, scenario_names, strict=False):
        for code, style in (("old", "o--"), ("new", "o-")):
            points = sorted((r["size"], r["p50"]) for r in results
                            if r["scenario"] == scenario and r["code"] == code)
            if points:
                axis.plot(*zip(*points, strict=True), style, label=f"{code} code")
        axis.set_title(scenario, fontsize=10)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("sessions stored")
        axis.set_ylabel("p50 ms")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(scenario_names):]:
        axis.set_visible(False)
    figure.suptitle("Median latency against table size (bench/list.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nplot: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                        help="Comma-separated session counts (default 10000,1000000,10000000).")
    parser.add_argument("--requests", type=int, default=60, help="Timed requests per scenario.")
    parser.add_argument("--slow-requests", type=int, default=15,
                        help="Timed requests of the older code from 1,000,000 sessions on.")
    parser.add_argument("--baseline", type=Path, help="An older checkout to measure beside this one.")
    parser.add_argument("--plot", type=Path, help="Write a PNG of p50 against size here.")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--smoke", action="store_true", help="5,000 sessions, 10 requests.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch databases.")
    args = parser.parse_args(argv)
    try:
        sizes = [5_000] if args.smoke else [int(s.replace("_", "")) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated whole numbers, not {args.sizes!r}")
    if any(size < 1_000 for size in sizes):
        parser.error("each size must be at least 1000 (the deep page needs rows to page through)")
    requests = 10 if args.smoke else args.requests
    codes = {"new": ROOT}
    if args.baseline is not None:
        codes = {"old": args.baseline.resolve(), "new": ROOT}
    print(machine_report())
    print(f"gunicorn: 2 workers per code; {requests} timed requests per scenario "
          f"(the older code: {args.slow_requests} from 1,000,000 sessions on); "
          f"load average before: {load_average()}")
    started = time.perf_counter()
    results = []
    for size in sizes:
        print(f"\n## {size:,} sessions", flush=True)
        slow = requests if size < 1_000_000 else min(requests, args.slow_requests)
        results += run_size(size, codes, requests=requests, slow_requests=slow, keep=args.keep)
    smallest, largest = min(sizes), max(sizes)
    rows = []
    for r in results:
        base = next(x for x in results if x["code"] == r["code"] and x["scenario"] == r["scenario"]
                    and x["size"] == smallest)
        rows.append([f"{r['size']:,}", r["code"], r["scenario"], f"{r['n']}", f"{r['p50']:.1f}",
                     f"{r['p95']:.1f}", f"{r['p50'] / base['p50']:.2f}×"])
    print()
    print(table(["sessions", "code", "scenario", "requests", "p50 ms", "p95 ms",
                 f"p50 / p50 at {smallest:,}"], rows))
    print("\nseeding: " + "; ".join(
        f"{r['code']} {r['size']:,} in {r['seed']:.1f} s"
        for r in results if r["scenario"] == "first page"
    ))
    if len(sizes) > 1:
        worst = max((r for r in results if r["code"] == "new" and r["size"] == largest),
                    key=lambda r: r["p50"] / next(x["p50"] for x in results if x["code"] == "new"
                                                   and x["scenario"] == r["scenario"]
                                                   and x["size"] == smallest))
        ratio = worst["p50"] / next(x["p50"] for x in results if x["code"] == "new"
                                    and x["scenario"] == worst["scenario"] and x["size"] == smallest)
        print(f"goal (new code, p50 at {largest:,} <= 1.5 x p50 at {smallest:,}): worst "
              f"{worst['scenario']} {ratio:.2f}x: {'met' if ratio <= 1.5 else 'MISSED'}")
    if args.plot:
        plot(results, args.plot)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average after: {load_average()}")


if __name__ == "__main__":
    main()
