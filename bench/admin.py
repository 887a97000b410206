"""Time the admin site's session pages at a million rows, with and without reusing the summary.

    python bench/admin.py                     # 1,000,000 sessions, 30 requests per page
    python bench/admin.py --seed 100000 --requests 50
    python bench/admin.py --smoke             # 2,000 sessions, 3 requests per page

The sessions are seeded (``manage.py seed_sessions``, 20% expired) into a
scratch PostgreSQL database, which is vacuumed and analysed. Two gunicorn
servers (the project's ``gunicorn.conf.py``, 2 workers each) serve it at
once: one with ``SESSIONS_ADMIN_SUMMARY_CACHE_SECONDS=0`` (every page counts
the whole table for its summary) and one with the default (the summary is
reused for 10 s). A staff user signs in through the admin's login form on each,
then fetches each page ``--requests`` times, one request at a time, alternating
between the two servers so both see the same machine load. Each answer is
checked (status 200, the summary and the expected rows present) before its
time counts; times run to the last byte of the HTML.

Then the list's actions, on the server that reuses the summary: "Renew
selected sessions" and "Expire selected sessions now" on ``--selected``
active sessions (1,000 by default, the most an action takes), each
``--action-runs`` times on a different selection, timed from the POST to the
last byte of the list page it redirects to, whose message is checked.
"""

import argparse
import http.cookiejar
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

import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    create_database,
    drop_database,
    machine_report,
    manage,
    summary_ms,
    table,
)
from bench.server import Gunicorn  # noqa: E402

DATABASE = "sa_hard_bench_admin"
WORKERS = 2
USERNAME = "bench-operator"
PASSWORD = "bench-operator-password-0123"
CHANGELIST = "/admin/sessions_admin/session/"
ROW = re.compile(rb'name="_selected_action" value="[0-9a-f-]{36}"')


class Browser:
    """A signed-in admin user: cookies kept between requests, as a browser keeps them."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[int, bytes]:
        with self.opener.open(self.base + path, timeout=60) as response:
            # A redirect (an out-of-range page, say) would time another page.
            assert response.url == self.base + path, f"{path} redirected to {response.url}"
            return response.status, response.read()

    def post(self, path: str, form: dict) -> tuple[int, bytes]:
        """POST a form (redirects followed, as a browser follows them)."""
        data = urllib.parse.urlencode(form, doseq=True).encode()
        with self.opener.open(self.base + path, data=data, timeout=300) as response:
            return response.status, response.read()

    def sign_in(self) -> None:
        status, page = self.get("/admin/login/")
        assert status == 200, status
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode(
            {"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"}
        ).encode()
        with self.opener.open(self.base + "/admin/login/", data=form, timeout=60) as response:
            assert response.url.endswith("/admin/"), f"sign-in failed: ended at {response.url}"


def pages(url: str) -> list[tuple[str, str, int]]:
    """The pages to time: (label, path, fewest rows the page must list)."""
    with psycopg.connect(url) as conn:
        session_id, agent_id = conn.execute(
            "SELECT session_id, agent_id FROM sessions_admin_session "
            "WHERE expires_at > now() ORDER BY last_activity DESC LIMIT 1"
        ).fetchone()
        (active,) = conn.execute(
            "SELECT count(*) FROM sessions_admin_session WHERE expires_at > now()"
        ).fetchone()
    # Half-way through the pages the list offers (it stops at 100 pages of 100).
    deep = max(2, min(100, active // 100) // 2)
    return [
        ("list, first page", CHANGELIST, 100),
        (f"status: active, page {deep}", f"{CHANGELIST}?status=active&p={deep}", 100),
        ("status: near expiration", f"{CHANGELIST}?status=near_expiration", 1),
        ("status: expired", f"{CHANGELIST}?status=expired", 100),
        ("auto-renew: no", f"{CHANGELIST}?auto_renew=no", 1),
        ("search: one agent", f"{CHANGELIST}?q={agent_id}", 1),
        ("session page", f"{CHANGELIST}{session_id}/change/", 0),
    ]


def active_selections(url: str, size: int, count: int) -> list[list[str]]:
    """``count`` disjoint selections of ``size`` active sessions that a renewal can extend."""
    with psycopg.connect(url) as conn:
        ids = [
            str(session_id)
            for (session_id,) in conn.execute(
                "SELECT s.session_id FROM sessions_admin_session s "
                "JOIN sessions_admin_timeoutconfig c ON c.id = s.timeout_config_id "
                "WHERE s.expires_at > now() + interval '1 minute' AND s.created_at "
                "+ make_interval(mins => c.max_duration_minutes - c.timeout_minutes - 10) > now() "
                "ORDER BY s.last_activity DESC LIMIT %s",
                (size * count,),
            )
        ]
    assert len(ids) == size * count, f"only {len(ids):,} active sessions for the actions"
    return [ids[i * size : (i + 1) * size] for i in range(count)]


def timed_action(browser: Browser, action: str, selected: list[str], message: bytes) -> float:
    """Run a list action on ``selected``; seconds from the POST to the page it leads to."""
    _, page = browser.get(CHANGELIST)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    form = {"csrfmiddlewaretoken": token, "action": action, "index": "0", "select_across": "0",
            "_selected_action": selected}
    started = time.perf_counter()
    status, body = browser.post(CHANGELIST, form)
    elapsed = time.perf_counter() - started
    shown = re.findall(rb'<li class="(?:success|warning|error|info)">([^<]*)', body)
    assert status == 200 and shown == [message], (action, status, shown)
    return elapsed


def timed_get(browser: Browser, path: str, fewest_rows: int) -> float:
    started = time.perf_counter()
    status, body = browser.get(path)
    elapsed = time.perf_counter() - started
    assert status == 200, (path, status)
    if fewest_rows:
        assert b'class="session-summary"' in body, path
        assert len(ROW.findall(body)) >= fewest_rows, path
    else:
        assert b"Timeout configuration" in body, path
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1_000_000, help="Sessions seeded first.")
    parser.add_argument("--requests", type=int, default=30, help="Timed requests per page and server.")
    parser.add_argument(
        "--selected", type=int, default=1_000, help="Sessions each action is run on (at most 1000)."
    )
    parser.add_argument("--action-runs", type=int, default=3, help="Timed runs of each action.")
    parser.add_argument(
        "--smoke", action="store_true", help="2,000 sessions, 3 requests per page, actions on 100."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seed, args.requests, args.selected, args.action_runs = 2_000, 3, 100, 2
    if args.seed < 1_000 or not 1 <= args.requests <= 1_000:
        parser.error("--seed must be at least 1000 and --requests within 1..1000")
    if not 1 <= args.selected <= 1_000 or not 1 <= args.action_runs <= 20:
        parser.error("--selected must be within 1..1000 and --action-runs within 1..20")
    if 2 * args.selected * args.action_runs > args.seed // 2:
        parser.error("--seed is too small for that many distinct selections (2 × runs × selected)")

    print(machine_report())
    started = time.perf_counter()
    url = create_database(DATABASE)
    try:
        manage("migrate", "--noinput", database_url=url)
        manage("seed_sessions", "--count", str(args.seed), database_url=url)
        manage(
            "createsuperuser", "--noinput", "--username", USERNAME, "--email", "ops@example.com",
            database_url=url, env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        )
        manage("collectstatic", "--noinput", database_url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        print(
            f"seeded {args.seed:,} sessions; two gunicorn servers, {WORKERS} workers each; "
            f"{args.requests} requests per page and server, alternating\n"
        )
        targets = pages(url)
        selections = active_selections(url, args.selected, 2 * args.action_runs)
        samples: dict[str, dict[str, list[float]]] = {label: {"0": [], "10": []} for label, *_ in targets}
        action_seconds: dict[str, list[float]] = {"renew": [], "expire": []}
        with (
            Gunicorn(database_url=url, workers=WORKERS,
                     env={"SESSIONS_ADMIN_SUMMARY_CACHE_SECONDS": "0"}) as counting,
            Gunicorn(database_url=url, workers=WORKERS,
                     env={"SESSIONS_ADMIN_SUMMARY_CACHE_SECONDS": "10"}) as reusing,
        ):
            browsers = {"0": Browser(counting.port), "10": Browser(reusing.port)}
            for browser in browsers.values():
                browser.sign_in()
            for label, path, fewest_rows in targets:
                for browser in browsers.values():  # warm-up, not timed
                    timed_get(browser, path, fewest_rows)
                for _ in range(args.requests):
                    for reuse, browser in browsers.items():
                        samples[label][reuse].append(timed_get(browser, path, fewest_rows))
            n = f"{args.selected:,} session{'s' if args.selected > 1 else ''}".encode()
            for run in range(args.action_runs):
                action_seconds["renew"].append(timed_action(
                    browsers["10"], "renew_selected", selections[2 * run],
                    b"Renewed " + n + b".",
                ))
                action_seconds["expire"].append(timed_action(
                    browsers["10"], "expire_selected", selections[2 * run + 1],
                    b"Expired " + n + b".",
                ))
    finally:
        if not args.keep:
            drop_database(DATABASE)

    rows = []
    for label, by_reuse in samples.items():
        counting, reusing = summary_ms(by_reuse["0"]), summary_ms(by_reuse["10"])
        rows.append([
            label,
            f"{counting['p50']:.1f}", f"{counting['p95']:.1f}",
            f"{reusing['p50']:.1f}", f"{reusing['p95']:.1f}",
            f"{reusing['p50'] / counting['p50']:.2f}×",
        ])
    print(table(
        ["page", "counting p50 ms", "counting p95 ms", "reusing p50 ms", "reusing p95 ms",
         "reusing / counting"],
        rows,
    ))
    print()
    print(table(
        ["action", "sessions selected", "runs", "seconds (each run)", "median s"],
        [
            [label, f"{args.selected:,}", str(args.action_runs),
             " · ".join(f"{s:.2f}" for s in action_seconds[key]),
             f"{sorted(action_seconds[key])[len(action_seconds[key]) // 2]:.2f}"]
            for label, key in (("renew selected", "renew"), ("expire selected now", "expire"))
        ],
    ))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
