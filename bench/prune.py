"""Benchmark ``manage.py prune_sessions`` against a raw DELETE and Django's naive delete (PostgreSQL).

    python bench/prune.py                     # 1,000,000 sessions, half expired
    python bench/prune.py --smoke             # 20,000 sessions, one round: a quick check
    python bench/prune.py --sessions 200000 --rounds 1

The sessions are seeded once (``manage.py seed_sessions``) into a template
database; every contender then runs on its own copy (``CREATE DATABASE ...
TEMPLATE``), so all start from identical tables. Each contender runs in its
own process, which reports the time of the deletion itself (Django already set
up and connected) and its peak resident memory (``ru_maxrss``) next to the
same figure taken just before the deletion. Contenders:

- ``raw DELETE``: ``DELETE FROM session WHERE expires_at <= now()``, one statement;
- ``prune_sessions``: the management command, default options;
- ``prune_sessions x2``: two commands started together on the same copy; their
  reported counts must add up to the rows removed;
- ``naive delete``: ``Session.objects.filter(expires_at__lte=now).delete()``;
- ``naive, collected``: the same with a ``pre_delete`` receiver connected, which
  makes Django load every row (what the naive delete turns into as soon as
  anything listens for deletes or references a session). ``--no-collected`` skips it.

Each round runs every contender once, in turn (``naive, collected`` only in
the first); the table shows medians over the rounds. After each run the remaining rows are counted: the removed rows
must equal the reported count, and no row that had expired when the
contender started may remain.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    create_database,
    drop_database,
    machine_report,
    manage,
    table,
)

TEMPLATE = "sa_bench_prune_template"
# Time allowed for a contender process to start Django before the common start.
STARTUP_SECONDS = 4
CONTENDERS = ("raw DELETE", "prune_sessions", "prune_sessions x2", "naive delete", "naive, collected")


# --- inside a contender process -----------------------------------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_contender(name: str, start_at: float) -> dict:
    """Set Django up, wait for ``start_at`` (epoch seconds), run one deletion, return its figures."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")
    django.setup()
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection
    from django.db.models.signals import pre_delete
    from django.utils import timezone

    from sessions_admin.management.commands.prune_sessions import Command  # noqa: F401 (imported before timing)
    from sessions_admin.models import Session

    connection.ensure_connection()
    baseline = _rss_mib()
    # Contenders that run together (x2) start together, whatever their start-up took.
    time.sleep(max(0.0, start_at - time.time()))
    started_at = time.time()
    started = time.perf_counter()
    output = ""
    if name == "raw DELETE":
        table_name = connection.ops.quote_name(Session._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table_name} WHERE expires_at <= now()")
            deleted = cursor.rowcount
    elif name == "prune_sessions":
        out = StringIO()
        call_command("prune_sessions", stdout=out)
        output = out.getvalue().strip().splitlines()[-1]
        deleted = int(output.split()[1].replace(",", ""))
    else:
        if name == "naive, collected":
            pre_delete.connect(lambda sender, **kwargs: None, sender=Session, weak=False)
        deleted = Session.objects.filter(expires_at__lte=timezone.now()).delete()[0]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "started_at": started_at,
        "finished_at": time.time(),
        "deleted": deleted,
        "baseline_mib": baseline,
        "peak_mib": _rss_mib(),
        "output": output,
    }


# --- the driver ---------------------------------------------------------------------------


def _psql(url: str, sql: str):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchone() if cursor.description else None


def _spawn(name: str, url: str, start_at: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "benchmark-secret-key"),
    }
    return subprocess.Popen(
        [sys.executable, __file__, "--contender", name, "--start-at", str(start_at)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"contender failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def seed_template(sessions: int) -> dict:
    url = create_database(TEMPLATE)
    manage("migrate", "--noinput", database_url=url)
    started = time.perf_counter()
    manage("seed_sessions", "--count", str(sessions), "--expired-fraction", "0.5", database_url=url)
    seeded = time.perf_counter() - started
    # A table in steady state: hint bits set, visibility map and statistics current.
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) sessions_admin_session")
        pages, size = conn.execute(
            "SELECT relpages, pg_size_pretty(pg_total_relation_size('sessions_admin_session')) "
            "FROM pg_class WHERE relname = 'sessions_admin_session'"
        ).fetchone()
    return {"seconds": seeded, "pages": pages, "size": size}


def run_round(name: str, copy: str) -> dict:
    """Run contender ``name`` on a fresh copy of the template; check its counts."""
    url = create_database(copy, template=TEMPLATE)
    try:
        _psql(url, "CHECKPOINT")
        (before,) = _psql(url, "SELECT count(*) FROM sessions_admin_session")
        (started_at,) = _psql(url, "SELECT extract(epoch FROM now())")
        start_at = time.time() + STARTUP_SECONDS
        processes = [_spawn("prune_sessions" if name == "prune_sessions x2" else name, url, start_at)]
        if name == "prune_sessions x2":
            processes.append(_spawn("prune_sessions", url, start_at))
        results = [_result(process) for process in processes]
        (after,) = _psql(url, "SELECT count(*) FROM sessions_admin_session")
        (left,) = _psql(
            url, f"SELECT count(*) FROM sessions_admin_session WHERE expires_at <= to_timestamp({started_at})"
        )
    finally:
        drop_database(copy)
    reported = sum(r["deleted"] for r in results)
    removed = before - after
    if reported != removed or left:
        raise SystemExit(f"{name}: reported {reported:,}, removed {removed:,}, {left:,} expired rows left")
    return {
        "deleted": reported,
        "seconds": max(r["finished_at"] for r in results) - min(r["started_at"] for r in results)
        if len(results) > 1 else results[0]["seconds"],
        "peak_mib": max(r["peak_mib"] for r in results),
        "growth_mib": max(r["peak_mib"] - r["baseline_mib"] for r in results),
        "split": [r["deleted"] for r in results],
        "outputs": [r["output"] for r in results],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000, help="Sessions to seed (half expired).")
    parser.add_argument("--smoke", action="store_true", help="20,000 sessions, one round.")
    parser.add_argument("--rounds", type=int, help="Rounds of every contender (default 3; 1 with --smoke).")
    parser.add_argument("--no-collected", action="store_true", help="Skip the 'naive, collected' contender.")
    parser.add_argument(
        "--only", action="append", choices=CONTENDERS, help="Run only this contender (repeatable; "
        "raw DELETE and prune_sessions always run, as the ratios need them)."
    )
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:
        print(json.dumps(run_contender(args.contender, args.start_at)))
        return
    sessions = 20_000 if args.smoke else args.sessions
    rounds = args.rounds or (1 if args.smoke else 3)
    contenders = [c for c in CONTENDERS if not (args.no_collected and c == "naive, collected")]
    if args.only:
        contenders = [c for c in contenders if c in {*args.only, "raw DELETE", "prune_sessions"}]

    print(machine_report())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    seeded = seed_template(sessions)
    print(
        f"seeded {sessions:,} sessions (half expired) in {seeded['seconds']:.1f} s: "
        f"{seeded['pages']:,} heap pages, {seeded['size']} with indexes"
    )
    runs = {name: [] for name in contenders}
    try:
        for number in range(1, rounds + 1):
            for name in contenders:
                if name == "naive, collected" and number > 1:
                    continue  # tens of times slower: one sample says enough
                run = run_round(name, f"sa_bench_prune_{number}")
                runs[name].append(run)
                split = f" split {' + '.join(f'{n:,}' for n in run['split'])}" if len(run["split"]) > 1 else ""
                print(
                    f"round {number}: {name:<18} {run['deleted']:>9,} rows in {run['seconds']:7.3f} s, "
                    f"peak {run['peak_mib']:.0f} MiB (+{run['growth_mib']:.1f}){split}",
                    flush=True,
                )
    finally:
        drop_database(TEMPLATE)

    median = {name: statistics.median(r["seconds"] for r in runs[name]) for name in contenders}
    raw, prune = median["raw DELETE"], median["prune_sessions"]
    rows = []
    for name in contenders:
        samples = [r["seconds"] for r in runs[name]]
        rows.append([
            name,
            f"{statistics.median(r['deleted'] for r in runs[name]):,.0f}",
            f"{median[name]:.3f}" + (f" ({min(samples):.3f}–{max(samples):.3f})" if len(samples) > 1 else ""),
            f"{median[name] / raw:.2f}×",
            f"{median[name] / prune:.2f}×",
            f"{max(r['peak_mib'] for r in runs[name]):.0f}",
            f"+{max(r['growth_mib'] for r in runs[name]):.1f}",
        ])
    print()
    print(f"{sessions:,} sessions, half expired; median of {rounds} round(s) (min–max)")
    print(table(
        ["contender", "rows deleted", "seconds", "vs raw DELETE", "vs prune_sessions",
         "peak RSS MiB", "RSS growth MiB"],
        rows,
    ))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
