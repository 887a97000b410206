"""``manage.py seed_sessions``: exact counts, realistic and valid rows, options, output."""

import itertools
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection

from sessions_admin import policy, seeding
from sessions_admin.models import Session, TimeoutConfig
from tests.conftest import TtyStringIO

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 14, 15, 9, 26, 535_897, tzinfo=UTC)
SUMMARY = re.compile(
    r"^Seeded (?P<count>[\d,]+) sessions \((?P<expired>[\d,]+) expired\) in \d+\.\d s\.\n$"
)


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)
    return NOW


def seed(*args, stdout=None):
    out = stdout if stdout is not None else StringIO()
    call_command("seed_sessions", *args, stdout=out)
    return out.getvalue()


def assert_follows_timing_rules(session: Session, *, now: datetime) -> None:
    """Assert the row could have been produced by the service's own rules."""
    timeout = session.timeout
    created, last, expires = session.created_at, session.last_activity, session.expires_at
    fresh_expiry = policy.expiry_for(created, timeout, now=created)
    assert created <= last < expires <= policy.cap_for(created, timeout), session
    assert last <= now and created <= now, session
    assert expires >= fresh_expiry, session
    if timeout.auto_renew:
        assert expires == policy.expiry_for(created, timeout, now=last), session
    else:
        assert expires <= policy.expiry_for(created, timeout, now=last), session
    if session.renewal_count == 0:
        assert expires == fresh_expiry, session
    else:
        assert expires > fresh_expiry, session


def test_creates_exact_count_with_default_mix(frozen):
    output = seed("--count", "1000")

    assert SUMMARY.match(output), output
    assert output.startswith("Seeded 1,000 sessions (200 expired) in ")
    assert Session.objects.count() == 1000
    assert Session.objects.expired(frozen).count() == 200
    assert Session.objects.active(frozen).count() == 800
    near = Session.objects.near_expiration(frozen).count()
    assert 0 < near < 800
    assert Session.objects.values("agent_id").distinct().count() == seeding.default_agents(1000)
    assert Session.objects.values("user_id").distinct().count() == seeding.default_users(1000)


def test_every_row_follows_the_timing_rules(frozen):
    seed("--count", "1500", "--expired-fraction", "0.3", "--batch-size", "400")

    sessions = list(Session.objects.select_related("timeout_config"))
    assert len(sessions) == 1500
    for session in sessions:
        assert_follows_timing_rules(session, now=frozen)
    # One boundary rule: the expired rows are exactly those with expires_at <= now.
    assert sum(policy.is_expired(s.expires_at, now=frozen) for s in sessions) == 450


def test_mix_is_realistic(frozen):
    seed("--count", "2000")

    sessions = list(Session.objects.select_related("timeout_config"))
    statuses = {
        policy.status_of(s.expires_at, s.timeout_config.warning_threshold_minutes, now=frozen)
        for s in sessions
    }
    assert statuses == {policy.STATUS_ACTIVE, policy.STATUS_NEAR_EXPIRATION, policy.STATUS_EXPIRED}
    assert {s.timeout_config.auto_renew for s in sessions} == {True, False}
    assert len({s.timeout_config_id for s in sessions}) >= 5
    assert any(s.renewal_count == 0 for s in sessions)
    assert any(s.renewal_count > 0 for s in sessions)
    assert any(s.metadata for s in sessions) and any(not s.metadata for s in sessions)
    for session in sessions:
        assert isinstance(session.metadata, dict)
        assert len(json.dumps(session.metadata).encode()) < 1024
    # Expired sessions ended within the last week, not at one instant.
    expired_at = [s.expires_at for s in sessions if s.expires_at <= frozen]
    assert min(expired_at) >= frozen - timedelta(days=7)
    assert len(set(expired_at)) > len(expired_at) // 2


def test_timeout_configs_are_valid_and_shared(frozen):
    seed("--count", "300")
    seed("--count", "300")

    assert Session.objects.count() == 600
    configs = list(TimeoutConfig.objects.all())
    assert len(configs) == len(seeding.seed_timeouts())
    for config in configs:
        assert policy.timeout_violations(config.as_timeout()) == []


def test_configs_outside_the_current_limits_are_skipped(frozen, settings):
    settings.SESSIONS_TIMEOUTS = {
        **settings.SESSIONS_TIMEOUTS,
        "MIN_TIMEOUT_MINUTES": 30,
        "MAX_TIMEOUT_MINUTES": 60,
    }

    seed("--count", "200")

    timeouts = set(TimeoutConfig.objects.values_list("timeout_minutes", flat=True))
    assert timeouts and timeouts <= {30, 45, 60}
    for config in TimeoutConfig.objects.all():
        assert policy.timeout_violations(config.as_timeout()) == []


@pytest.mark.parametrize(
    ("count", "fraction", "expired"),
    [
        (10, "0", 0),
        (10, "1", 10),
        (7, "0.5", 4),
        (3, "0.2", 1),
        (1, "0.2", 0),
        (1000, "0.123", 123),
    ],
)
def test_expired_fraction_is_exact(frozen, count, fraction, expired):
    output = seed("--count", str(count), "--expired-fraction", fraction)

    assert Session.objects.count() == count
    assert Session.objects.expired(frozen).count() == expired
    assert f"({expired:,} expired)" in output


def test_agents_and_users_are_all_used(frozen):
    seed("--count", "250", "--agents", "7", "--users", "250")

    assert Session.objects.values("agent_id").distinct().count() == 7
    assert Session.objects.values("user_id").distinct().count() == 250


def test_small_count_defaults(frozen):
    seed("--count", "3")

    assert Session.objects.count() == 3
    assert Session.objects.values("agent_id").distinct().count() == 3
    assert Session.objects.values("user_id").distinct().count() == 1


def test_progress_bar_on_a_terminal(frozen):
    out = TtyStringIO()
    seed("--count", "100", "--batch-size", "30", stdout=out)

    progress, summary = out.getvalue().split("\n", 1)
    frames = re.findall(r"\r\[([#-]{30})\] +(\d+)% ([\d,]+)/100", progress)
    assert [(percent, done) for _, percent, done in frames] == [
        ("30", "30"),
        ("60", "60"),
        ("90", "90"),
        ("100", "100"),
    ]
    assert frames[-1][0] == "#" * 30
    assert SUMMARY.match(summary) and summary.startswith("Seeded 100 sessions (20 expired)")


def test_no_progress_bar_when_not_a_terminal(frozen):
    output = seed("--count", "100", "--batch-size", "10")

    assert "\r" not in output and "%" not in output
    assert SUMMARY.match(output)


def test_verbosity_zero_prints_nothing(frozen):
    out, err = TtyStringIO(), TtyStringIO()
    call_command("seed_sessions", "--count", "50", verbosity=0, stdout=out, stderr=err)

    assert out.getvalue() == "" and err.getvalue() == ""
    assert Session.objects.count() == 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count must be between 1 and 10,000,000, not 0."),
        (["--count", "-5"], "--count must be between 1 and 10,000,000, not -5."),
        (["--count", "10000001"], "--count must be between 1 and 10,000,000, not 10000001."),
        (
            ["--count", "99999999999999999999", "--users", "99999999999999999999"],
            "--count must be between 1 and 10,000,000, not 99999999999999999999.",
        ),
        (
            ["--count", "10", "--expired-fraction", "-0.1"],
            "--expired-fraction must be between 0 and 1, not -0.1.",
        ),
        (
            ["--count", "10", "--expired-fraction", "1.5"],
            "--expired-fraction must be between 0 and 1, not 1.5.",
        ),
        (
            ["--count", "10", "--expired-fraction", "nan"],
            "--expired-fraction must be between 0 and 1, not nan.",
        ),
        (
            ["--count", "10", "--expired-fraction", "abc"],
            "argument --expired-fraction: must be a number between 0 and 1, not 'abc'.",
        ),
        (
            ["--count", "10", "--expired-fraction", ""],
            "argument --expired-fraction: must be a number between 0 and 1, not ''.",
        ),
        (["--count", "10", "--agents", "0"], "--agents must be at least 1, not 0."),
        (["--count", "10", "--users", "-1"], "--users must be at least 1, not -1."),
        (["--count", "10", "--agents", "11"], "--agents (11) cannot exceed --count (10)"),
        (["--count", "10", "--users", "20"], "--users (20) cannot exceed --count (10)"),
        (
            ["--count", "10", "--batch-size", "0"],
            "--batch-size must be between 1 and 100,000, not 0.",
        ),
        (
            ["--count", "10", "--batch-size", "100001"],
            "--batch-size must be between 1 and 100,000, not 100001.",
        ),
        (["--count", "ten"], "invalid int value: 'ten'"),
        ([], "the following arguments are required: --count"),
    ],
)
def test_bad_options_are_refused(args, message):
    with pytest.raises(CommandError) as excinfo:
        seed(*args)

    assert message in str(excinfo.value)
    assert Session.objects.count() == 0


def test_service_rejects_bad_values():
    with pytest.raises(ValueError):
        seeding.session_seed(count=0, now=NOW)
    with pytest.raises(ValueError):
        seeding.session_seed(count=5, now=NOW, expired_fraction=2)
    with pytest.raises(ValueError):
        seeding.session_seed(count=5, now=NOW, batch_size=0)
    with pytest.raises(ValueError):
        seeding.session_seed(count=seeding.MAX_COUNT + 1, now=NOW)
    with pytest.raises(ValueError):
        seeding.session_seed(count=5, now=NOW, users=6)
    with pytest.raises(ValueError):
        seeding.session_seed(count=5, now=NOW, batch_size=seeding.MAX_BATCH_SIZE + 1)
    assert Session.objects.count() == 0


def test_ids_are_distinct_uuid4_and_cost_no_memory():
    tracemalloc.start()
    try:
        ids = seeding.DerivedIds(seeding.MAX_COUNT, random.Random(7))
        sample = [ids[i] for i in range(20_000)] + [ids[-i] for i in range(1, 20_001)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # The sample itself is about 4 MB; ten million stored ids would be about 1 GB.
    assert peak < 8_000_000
    assert len(ids) == seeding.MAX_COUNT
    assert len(set(sample)) == len(sample) == 40_000
    for hex_id in sample[:100] + sample[-100:]:
        parsed = uuid.UUID(hex_id)
        assert parsed.hex == hex_id
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
    # Keyed by the generator: another run gets other ids, the same seed the same ones.
    assert seeding.DerivedIds(5, random.Random(7))[:] == ids[:5]
    assert set(seeding.DerivedIds(5, random.Random(8))).isdisjoint(ids[:5])
    with pytest.raises(IndexError):
        ids[seeding.MAX_COUNT]


def _fail_after_first_batch(monkeypatch, message):
    batches = seeding._batches

    def failing(rows, size):
        yield from itertools.islice(batches(rows, size), 1)
        raise OperationalError(message)

    monkeypatch.setattr(seeding, "_batches", failing)


def test_database_error_is_one_line_and_keeps_nothing(frozen, monkeypatch):
    _fail_after_first_batch(monkeypatch, "disk I/O error\nCONTEXT: the rest")
    out = TtyStringIO()

    with pytest.raises(CommandError) as excinfo:
        seed("--count", "100", "--batch-size", "30", stdout=out)

    assert str(excinfo.value) == "Seeding failed: disk I/O error. No session was kept."
    # The progress line drawn before the error is ended, so the error starts a line.
    assert re.fullmatch(r"\r\[[#-]{30}\] +30% 30/100\n", out.getvalue()), out.getvalue()
    assert Session.objects.count() == 0
    assert TimeoutConfig.objects.count() == 0


@pytest.mark.postgres
def test_error_in_the_final_analyze_keeps_nothing(frozen):
    def analyze_fails(execute, sql, params, many, context):
        if sql.startswith("ANALYZE"):
            raise OperationalError("canceling statement due to statement timeout")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(analyze_fails):
        with pytest.raises(CommandError) as excinfo:
            seed("--count", "50")

    assert str(excinfo.value) == (
        "Seeding failed: canceling statement due to statement timeout. No session was kept."
    )
    assert Session.objects.count() == 0


def _manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": "seed-tests-secret-key",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "seed_sessions", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unreachable_database_is_one_line():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        done = _manage("--count", "10", database_url=f"postgres://postgres@127.0.0.1:{port}/x")

    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        'CommandError: Seeding failed: connection failed: connection to server at "127.0.0.1"'
    ), line
    assert line.endswith("Connection refused. No session was kept."), line


def test_ctrl_c_is_one_line_and_keeps_nothing(tmp_path):
    database = tmp_path / "db.sqlite3"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SECRET_KEY": "seed-tests-secret-key",
    }
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True
    )
    assert migrated.returncode == 0, migrated.stderr
    process = subprocess.Popen(
        [sys.executable, "manage.py", "seed_sessions", "--count", "5000000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Interrupt once rows are being written (SQLite's write-ahead log grows).
        wal = tmp_path / "db.sqlite3-wal"
        deadline = time.monotonic() + 60
        while not (wal.exists() and wal.stat().st_size > 1_000_000):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, out, err) == (130, "", "CommandError: Interrupted. No session was kept.\n")
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT count(*) FROM sessions_admin_session").fetchone() == (0,)


@pytest.mark.parametrize("raw", ["abc", ""])
def test_unparsable_fraction_is_a_usage_error_on_the_command_line(tmp_path, raw):
    done = _manage(
        "--count", "10", "--expired-fraction", raw, database_url=f"sqlite:///{tmp_path}/db.sqlite3"
    )

    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "manage.py seed_sessions: error: argument --expired-fraction: "
        f"must be a number between 0 and 1, not {raw!r}."
    )


def _plain_indexes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname",
            [Session._meta.db_table],
        )
        return cursor.fetchall()


@pytest.mark.postgres
def test_large_load_rebuilds_indexes_identically(frozen, monkeypatch):
    before = _plain_indexes()
    monkeypatch.setattr(seeding, "INDEX_REBUILD_MIN_ROWS", 10)

    seed("--count", "500", "--batch-size", "100")

    assert _plain_indexes() == before
    assert len(before) >= 7
    # The planner statistics count the new rows.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [Session._meta.db_table]
        )
        assert cursor.fetchone()[0] == 500
    assert Session.objects.count() == 500
    assert Session.objects.expired(frozen).count() == 100
    for session in Session.objects.select_related("timeout_config"):
        assert_follows_timing_rules(session, now=frozen)
