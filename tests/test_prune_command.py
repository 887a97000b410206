"""``manage.py prune_sessions`` and ``session_prune_expired`` (SPEC §5).

Output lines, options, the expiry boundary, flat behaviour (no row loaded),
unused timeout configurations, loop mode stopped by a signal in a real
process and, on PostgreSQL, concurrent pruners and concurrent renewals.
"""

import itertools
import os
import pty
import random
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models.signals import pre_delete

from sessions_admin import policy, pruning, services
from sessions_admin.exceptions import SessionExpired, SessionNotFound
from sessions_admin.models import Session, TimeoutConfig
from tests.conftest import TtyStringIO
from tests.factories import TimeoutConfigFactory
from tests.locks import TableLock, postgres_url_of_test_database

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
SUMMARY = re.compile(
    r"^Pruned (?P<count>[\d,]+) expired sessions? in \d+\.\d s \((?P<batches>[\d,]+) batch(es)?\)\.$"
)

db = pytest.mark.django_db
postgres = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)
    return NOW


@pytest.fixture
def fixed_timer(monkeypatch):
    """Make the next pass last exactly 0.8 s and its batches 0 s; call the fixture to re-arm."""

    def arm():
        readings = itertools.chain([0.0], itertools.repeat(0.8))
        monkeypatch.setattr(pruning, "time", SimpleNamespace(monotonic=lambda: next(readings)))

    arm()
    return arm


def add_sessions(count: int, *, expires_at: datetime, config: TimeoutConfig | None = None) -> list:
    """Insert ``count`` sessions expiring at ``expires_at`` in one statement; return their ids."""
    config = config or TimeoutConfigFactory()
    created = expires_at - timedelta(minutes=config.timeout_minutes)
    rows = [
        Session(
            agent_id=uuid.uuid4(), user_id=uuid.uuid4(), created_at=created, last_activity=created,
            expires_at=expires_at, timeout_config=config,
        )
        for _ in range(count)
    ]
    Session.objects.bulk_create(rows, batch_size=2000)
    return [row.pk for row in rows]


def prune(*args: str, stdout=None) -> list[str]:
    out = stdout if stdout is not None else StringIO()
    call_command("prune_sessions", *args, stdout=out)
    return out.getvalue().splitlines()


def remaining(ids) -> set:
    return set(Session.objects.filter(pk__in=list(ids)).values_list("pk", flat=True))


# --- output lines -------------------------------------------------------------------------


@db
def test_summary_line_is_exact_and_counts_batches(frozen, fixed_timer):
    add_sessions(12_345, expires_at=NOW - timedelta(hours=1))
    active = add_sessions(10, expires_at=NOW + timedelta(minutes=5))
    assert prune() == ["Pruned 12,345 expired sessions in 0.8 s (3 batches)."]
    assert Session.objects.count() == 10 and remaining(active) == set(active)


@db
@pytest.mark.parametrize(
    ("expired", "batch_size", "line"),
    [
        (1, 5000, "Pruned 1 expired session in 0.8 s (1 batch)."),
        (0, 5000, "Pruned 0 expired sessions in 0.8 s (0 batches)."),
        (6, 2, "Pruned 6 expired sessions in 0.8 s (3 batches)."),
        (7, 2, "Pruned 7 expired sessions in 0.8 s (4 batches)."),
        (5, 5, "Pruned 5 expired sessions in 0.8 s (1 batch)."),
    ],
)
def test_singular_plural_and_batch_counting(frozen, fixed_timer, expired, batch_size, line):
    add_sessions(expired, expires_at=NOW - timedelta(minutes=1))
    add_sessions(2, expires_at=NOW + timedelta(minutes=1))
    assert prune("--batch-size", str(batch_size)) == [line]
    assert Session.objects.count() == 2


@db
def test_real_timer_reports_seconds_with_one_decimal(frozen):
    add_sessions(3, expires_at=NOW - timedelta(minutes=1))
    (line,) = prune()
    match = SUMMARY.match(line)
    assert match and match["count"] == "3" and match["batches"] == "1", line


@db
def test_dry_run_counts_and_deletes_nothing(frozen):
    add_sessions(3, expires_at=NOW - timedelta(minutes=1))
    add_sessions(1, expires_at=NOW)
    add_sessions(2, expires_at=NOW + ONE_MS)
    assert prune("--dry-run") == ["Would prune 4 expired sessions."]
    assert Session.objects.count() == 6
    assert prune("--dry-run", "--max-rows", "1") == ["Would prune 1 expired session."]
    assert prune("--dry-run", "--grace-minutes", "1") == ["Would prune 3 expired sessions."]
    assert prune("--dry-run", "--verbosity", "0") == []
    assert Session.objects.count() == 6


# --- which rows go ------------------------------------------------------------------------


@db
def test_boundary_row_expiring_exactly_now_is_pruned_one_ms_later_survives(frozen, fixed_timer):
    at_now = add_sessions(1, expires_at=NOW)
    just_before = add_sessions(1, expires_at=NOW - ONE_MS)
    just_after = add_sessions(1, expires_at=NOW + ONE_MS)
    assert prune() == ["Pruned 2 expired sessions in 0.8 s (1 batch)."]
    assert remaining(at_now + just_before + just_after) == set(just_after)


@db
def test_grace_minutes_keeps_recently_expired_sessions(frozen, fixed_timer):
    old = add_sessions(2, expires_at=NOW - timedelta(minutes=10))
    at_grace_boundary = add_sessions(1, expires_at=NOW - timedelta(minutes=5))
    recent = add_sessions(3, expires_at=NOW - timedelta(minutes=5) + ONE_MS)
    assert prune("--grace-minutes", "5") == ["Pruned 3 expired sessions in 0.8 s (1 batch)."]
    assert remaining(old + at_grace_boundary + recent) == set(recent)
    fixed_timer()
    assert prune() == ["Pruned 3 expired sessions in 0.8 s (1 batch)."]


@db
def test_max_rows_caps_the_pass_and_its_batches(frozen, fixed_timer):
    ids = add_sessions(10, expires_at=NOW - timedelta(minutes=1))
    assert prune("--max-rows", "4", "--batch-size", "3") == [
        "Pruned 4 expired sessions in 0.8 s (2 batches)."
    ]
    assert len(remaining(ids)) == 6
    fixed_timer()
    assert prune("--max-rows", "100") == ["Pruned 6 expired sessions in 0.8 s (1 batch)."]
    assert remaining(ids) == set()


@db
def test_each_batch_takes_a_fresh_clock_reading(frozen):
    first = add_sessions(2, expires_at=NOW - timedelta(minutes=1))
    later = add_sessions(2, expires_at=NOW + timedelta(seconds=30))
    readings = []

    def clock():
        # The clock moves on a minute once the first rows are gone.
        readings.append(NOW if Session.objects.count() == 4 else NOW + timedelta(minutes=1))
        return readings[-1]

    cutoffs = []
    result = services.session_prune_expired(
        batch_size=2, clock=clock, on_batch=lambda b: cutoffs.append(b.cutoff)
    )
    assert (result.deleted, result.batches) == (4, 2)
    assert cutoffs == [NOW, NOW + timedelta(minutes=1)]
    assert remaining(first + later) == set()


# --- verbosity and the terminal -----------------------------------------------------------


@db
def test_verbosity_0_prints_nothing_and_still_prunes(frozen):
    ids = add_sessions(3, expires_at=NOW - timedelta(minutes=1))
    assert prune("--verbosity", "0") == []
    assert remaining(ids) == set()


def test_verbosity_0_from_manage_py_prints_nothing_even_with_check_warnings():
    # Without a client key the system checks warn (sessions_admin.W001) on every command
    # that runs them; a prune from cron must stay silent all the same.
    env = {
        k: v for k, v in _scratch_sqlite_env().items()
        if k not in ("SESSIONS_API_KEY", "ELIZA_SERVER_AUTH_TOKEN")
    }
    assert "sessions_admin.W001" in _manage(env, "check").stderr
    done = _manage(env, "prune_sessions", "--verbosity", "0")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # Exactly the 20 expired sessions went; the 20 active ones stay.
    assert _scratch_session_count(env) == 20


@db
def test_verbosity_2_adds_a_line_per_batch_and_unused_configs(frozen, fixed_timer):
    add_sessions(5, expires_at=NOW - timedelta(minutes=1))
    TimeoutConfigFactory(timeout_minutes=45)  # referenced by no session
    assert prune("--verbosity", "2", "--batch-size", "2") == [
        "Batch 1: deleted 2 sessions expired at or before 2026-11-27T10:00:00.000Z in 0.00 s.",
        "Batch 2: deleted 2 sessions expired at or before 2026-11-27T10:00:00.000Z in 0.00 s.",
        "Batch 3: deleted 1 session expired at or before 2026-11-27T10:00:00.000Z in 0.00 s.",
        "Deleted 2 unused timeout configurations.",
        "Pruned 5 expired sessions in 0.8 s (3 batches).",
    ]


@db
def test_verbosity_2_names_no_configurations_when_none_was_unused(frozen, fixed_timer):
    add_sessions(2, expires_at=NOW + timedelta(minutes=10))  # active: their configuration is used
    assert prune("--verbosity", "2") == ["Pruned 0 expired sessions in 0.8 s (0 batches)."]


@db
def test_progress_bar_on_a_terminal_then_the_summary(frozen, fixed_timer):
    add_sessions(4, expires_at=NOW - timedelta(minutes=1))
    out = TtyStringIO()
    call_command("prune_sessions", "--batch-size", "2", stdout=out)
    text = out.getvalue()
    assert "\r[------------------------------]   0% 0/4" in text
    assert "\r[###############---------------]  50% 2/4" in text
    assert "\r[##############################] 100% 4/4\n" in text
    summary = "Pruned 4 expired sessions in 0.8 s (2 batches)."
    assert text.endswith(summary + "\n") or text.endswith(summary + "\x1b[0m\n")


PROGRESS = re.compile(r"\r\[[#-]{30}\] +(?P<percent>\d+)% (?P<done>[\d,]+)/(?P<expected>[\d,]+)")


@db
def test_progress_bar_never_shows_more_done_than_expected(fixed_timer, monkeypatch):
    add_sessions(4, expires_at=NOW - timedelta(minutes=1))
    add_sessions(2, expires_at=NOW + timedelta(seconds=30))
    readings = []

    def clock():
        # The bar counts at NOW; by the first batch a minute has passed and 2 more expired.
        readings.append(NOW if not readings else NOW + timedelta(minutes=1))
        return readings[-1]

    monkeypatch.setattr(policy, "clock", clock)
    out = TtyStringIO()
    call_command("prune_sessions", "--batch-size", "2", stdout=out)
    draws = [(int(m["percent"]), m["done"], m["expected"]) for m in PROGRESS.finditer(out.getvalue())]
    assert draws == [(0, "0", "4"), (50, "2", "4"), (100, "4", "4"), (100, "6", "6")]
    assert "\nPruned 6 expired sessions in 0.8 s (3 batches)." in out.getvalue()
    assert Session.objects.count() == 0


@db
def test_no_progress_bar_when_not_a_terminal(frozen, fixed_timer):
    add_sessions(4, expires_at=NOW - timedelta(minutes=1))
    out = StringIO()
    call_command("prune_sessions", "--batch-size", "2", stdout=out)
    assert out.getvalue() == "Pruned 4 expired sessions in 0.8 s (2 batches).\n"


# --- options ------------------------------------------------------------------------------


@db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be between 1 and 1,000,000, not 0."),
        (["--batch-size", "-5"], "--batch-size must be between 1 and 1,000,000, not -5."),
        (["--batch-size", "1000001"], "--batch-size must be between 1 and 1,000,000, not 1000001."),
        (["--grace-minutes", "-1"], "--grace-minutes must be between 0 and 5,256,000, not -1."),
        (["--max-rows", "0"], "--max-rows must be at least 1, not 0."),
        (["--max-rows", "-3"], "--max-rows must be at least 1, not -3."),
        (["--loop", "0"], "--loop must be between 1 and 604,800 seconds, not 0."),
        (["--loop", "-2"], "--loop must be between 1 and 604,800 seconds, not -2."),
        (["--loop", "0.99"], "--loop must be between 1 and 604,800 seconds, not 0.99."),
        (["--loop", "1e-9"], "--loop must be between 1 and 604,800 seconds, not 1e-09."),
        (["--loop", "604800.5"], "--loop must be between 1 and 604,800 seconds, not 604800.5."),
        (["--loop", "1e10"], "--loop must be between 1 and 604,800 seconds, not 1e+10."),
        (["--loop", "nan"], "--loop must be between 1 and 604,800 seconds, not nan."),
        (["--loop", "inf"], "--loop must be between 1 and 604,800 seconds, not inf."),
        (["--dry-run", "--loop", "5"], "--dry-run cannot be combined with --loop."),
        (["--batch-size", "many"], "Error: argument --batch-size: invalid int value: 'many'"),
        (["--grace-minutes", "1.5"], "Error: argument --grace-minutes: invalid int value: '1.5'"),
    ],
)
def test_bad_options_are_command_errors(args, message):
    add_sessions(1, expires_at=policy.clock() - timedelta(minutes=1))
    with pytest.raises(CommandError) as raised:
        prune(*args)
    assert str(raised.value) == message
    assert Session.objects.count() == 1


@db
def test_service_rejects_bad_arguments():
    for kwargs in ({"batch_size": 0}, {"max_rows": 0}, {"grace_minutes": -1}):
        with pytest.raises(ValueError):
            services.session_prune_expired(**kwargs)


# --- no rows in Python, nothing left behind -----------------------------------------------


@db
def test_never_loads_a_session_even_with_a_delete_receiver(frozen, fixed_timer, monkeypatch):
    add_sessions(7, expires_at=NOW - timedelta(minutes=1))

    def loaded(*args, **kwargs):
        raise AssertionError("a session row was loaded into Python")

    monkeypatch.setattr(Session, "from_db", classmethod(loaded))
    # A receiver makes QuerySet.delete() collect rows in Python; pruning must not care.
    received = []
    receiver = lambda sender, **kwargs: received.append(kwargs["instance"])  # noqa: E731
    pre_delete.connect(receiver, sender=Session, weak=False)
    try:
        assert prune("--batch-size", "3") == ["Pruned 7 expired sessions in 0.8 s (3 batches)."]
    finally:
        pre_delete.disconnect(receiver, sender=Session)
    assert received == [] and Session.objects.count() == 0


@db
def test_unused_timeout_configs_go_with_their_last_session(frozen):
    in_use = TimeoutConfigFactory(timeout_minutes=30)
    only_expired = TimeoutConfigFactory(timeout_minutes=60, max_duration_minutes=720)
    never_used = TimeoutConfigFactory(timeout_minutes=90, max_duration_minutes=720)
    active = add_sessions(1, expires_at=NOW + timedelta(minutes=1), config=in_use)
    add_sessions(1, expires_at=NOW - timedelta(minutes=1), config=in_use)
    add_sessions(2, expires_at=NOW - timedelta(minutes=1), config=only_expired)
    result = services.session_prune_expired()
    assert (result.deleted, result.configs_deleted) == (3, 2)
    assert list(TimeoutConfig.objects.values_list("pk", flat=True)) == [in_use.pk]
    assert remaining(active) == set(active)
    assert never_used.pk not in set(TimeoutConfig.objects.values_list("pk", flat=True))


@db
def test_configs_kept_when_asked_or_when_stopped(frozen):
    TimeoutConfigFactory(timeout_minutes=45)
    add_sessions(4, expires_at=NOW - timedelta(minutes=1))
    result = services.session_prune_expired(prune_configs=False, batch_size=2)
    assert (result.deleted, result.configs_deleted, result.stopped) == (4, 0, False)
    assert TimeoutConfig.objects.count() == 2
    add_sessions(4, expires_at=NOW - timedelta(minutes=1))
    batches = []
    result = services.session_prune_expired(
        batch_size=2, on_batch=batches.append, should_stop=lambda: bool(batches)
    )
    assert (result.deleted, result.batches, result.stopped, result.configs_deleted) == (2, 1, True, 0)
    # The unused 45-minute configuration is still there: a stopped pass skips the cleanup.
    assert Session.objects.count() == 2 and TimeoutConfig.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_create_retries_when_its_config_is_pruned_underneath(monkeypatch):
    real_for_timeout = TimeoutConfig.for_timeout.__func__
    calls = []

    def for_timeout_then_pruned(cls, timeout):
        config = real_for_timeout(cls, timeout)
        calls.append(config.pk)
        if len(calls) == 1:
            # What a concurrent prune does between get_or_create and the insert.
            assert pruning.timeout_config_prune_unused() == 1
        return config

    monkeypatch.setattr(TimeoutConfig, "for_timeout", classmethod(for_timeout_then_pruned))
    session = services.session_create(agent_id=uuid.uuid4(), user_id=uuid.uuid4(), now=policy.clock())
    assert len(calls) == 2 and calls[0] != calls[1]
    assert Session.objects.get().timeout_config_id == session.timeout_config_id == calls[1]


# --- stopping -----------------------------------------------------------------------------


@db
def test_signal_during_a_run_stops_after_the_current_batch(frozen, fixed_timer, monkeypatch):
    add_sessions(6, expires_at=NOW - timedelta(minutes=1))
    previous = signal.getsignal(signal.SIGTERM)

    def clock_then_sigterm():
        if Session.objects.count() < 6:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives as the second batch starts
        return NOW

    monkeypatch.setattr(policy, "clock", clock_then_sigterm)
    lines = prune("--batch-size", "2")
    assert lines[0] == "Stopped by SIGTERM." and len(lines) == 2
    match = SUMMARY.match(lines[1])
    pruned = int(match["count"])
    assert pruned in (2, 4) and Session.objects.count() == 6 - pruned
    assert signal.getsignal(signal.SIGTERM) == previous


# Each pass starts by closing connections the way requests do, which on PostgreSQL
# would end a test transaction and its rows: run outside one.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seconds", ["1", "604800"])
def test_loop_accepts_its_bounds(frozen, fixed_timer, monkeypatch, seconds):
    add_sessions(2, expires_at=NOW - timedelta(minutes=1))

    def clock_then_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the first batch
        return NOW

    monkeypatch.setattr(policy, "clock", clock_then_sigterm)
    # The signal came during the pass, so the wait for the next one returns at once.
    assert prune("--loop", seconds) == [
        "Pruned 2 expired sessions in 0.8 s (1 batch).",
        "Stopped by SIGTERM after 1 pass.",
        "Pruned 2 expired sessions in 0.8 s (1 batch).",
    ]
    assert Session.objects.count() == 0


def _manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    """Run ``manage.py`` with ``args`` in ``env`` and return what it printed."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )


def _scratch_sqlite_env() -> dict:
    directory = tempfile.mkdtemp(prefix="sa_prune_")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        "DATABASE_URL": f"sqlite:///{directory}/db.sqlite3",
        "DJANGO_SECRET_KEY": "prune-tests-secret-key",
        "PYTHONUNBUFFERED": "1",
    }
    for args in (["migrate", "--noinput"], ["seed_sessions", "--count", "40", "--expired-fraction", "0.5"]):
        done = _manage(env, *args)
        assert done.returncode == 0, done.stderr
    # A seeded active session may have milliseconds left, and expire before
    # this runs. The 20 seeded active are the 20 latest to expire: moved a day
    # on, none expires before the pruner runs, which then finds exactly 20.
    with closing(sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"))) as scratch:
        with scratch:
            scratch.execute(
                "UPDATE sessions_admin_session SET expires_at = strftime('%Y-%m-%d %H:%M:%f', expires_at, '+1 day') "
                "WHERE session_id IN (SELECT session_id FROM sessions_admin_session "
                "ORDER BY expires_at DESC LIMIT 20)"
            )
        expired = scratch.execute(
            "SELECT count(*) FROM sessions_admin_session "
            "WHERE expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now')"
        ).fetchone()[0]
    assert expired == 20
    return env


def _scratch_session_count(env: dict) -> int:
    with closing(sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"))) as scratch:
        return scratch.execute("SELECT count(*) FROM sessions_admin_session").fetchone()[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_loop_stops_cleanly_on_a_signal_during_its_sleep(signum):
    env = _scratch_sqlite_env()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "prune_sessions", "--loop", "60"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = process.stdout.readline().rstrip("\n")
        assert SUMMARY.match(first) and first.startswith("Pruned 20 expired sessions"), first
        signalled = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert time.monotonic() - signalled < 10, "the sleep was not interrupted"
    assert process.returncode == 0, err
    name = signal.Signals(signum).name
    lines = out.splitlines()
    assert lines[0] == f"Stopped by {name} after 1 pass."
    assert SUMMARY.match(lines[1]) and lines[1].startswith("Pruned 20 expired sessions"), lines
    assert len(lines) == 2


# --- database errors ----------------------------------------------------------------------

BUSY_TIMEOUT_SECONDS = 2
# manage.py with SQLite's busy timeout (20 s in the settings) cut short, so that a
# batch waiting for another writer's lock gives up within the test.
MANAGE_WITH_SHORT_BUSY_TIMEOUT = (
    "import os\n"
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'messaging_project.settings')\n"
    "from django.conf import settings\n"
    f"settings.DATABASES['default']['OPTIONS']['timeout'] = {BUSY_TIMEOUT_SECONDS}\n"
    "import manage\n"
    "manage.main()\n"
)


def _start_prune(
    env: dict, *args: str, short_busy_timeout: bool = False, stdout=subprocess.PIPE
) -> subprocess.Popen:
    program = ["-c", MANAGE_WITH_SHORT_BUSY_TIMEOUT] if short_busy_timeout else ["manage.py"]
    return subprocess.Popen(
        [sys.executable, *program, "prune_sessions", *args],
        cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
    )


def _read_terminal(fd: int, *, until: str | None = None, timeout: float = 20) -> str:
    """Read a pseudo-terminal until ``until`` has appeared, or else until its last writer is gone."""
    text, deadline = "", time.monotonic() + timeout
    while until is None or until not in text:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"waited for {until!r}: {text!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # Linux: EIO once no process holds the terminal open
            chunk = b""
        if not chunk:
            assert until is None, f"the terminal closed before {until!r}: {text!r}"
            break
        text += chunk.decode()
    return text


def _hold_sqlite_write_lock(env: dict) -> sqlite3.Connection:
    """Take the scratch database's write lock, as another writer's long transaction does."""
    writer = sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    return writer


def _loop_behind_a_held_lock() -> tuple[dict, sqlite3.Connection, subprocess.Popen]:
    """A scratch store whose write lock another connection holds, and a ``--loop 1`` pruner on it."""
    env = _scratch_sqlite_env()
    writer = _hold_sqlite_write_lock(env)
    return env, writer, _start_prune(env, "--loop", "1", short_busy_timeout=True)


def test_loop_reports_a_locked_database_in_one_line_and_goes_on():
    env, writer, process = _loop_behind_a_held_lock()
    try:
        failed = process.stderr.readline()
        assert failed == "Prune pass failed: database is locked. Next pass in 1 s.\n"
        writer.execute("COMMIT")
        pruned = process.stdout.readline().rstrip("\n")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
        writer.close()
    assert process.returncode == 0, err
    assert err == "", "one line per failed pass, nothing more"
    match = SUMMARY.match(pruned)
    assert match and match["count"] == "20" and match["batches"] == "1", pruned
    assert out.splitlines() == ["Stopped by SIGTERM after 2 passes (1 failed).", pruned]
    assert _scratch_session_count(env) == 20


def test_loop_stopped_while_waiting_for_a_lock_stops_when_the_wait_ends():
    env = _scratch_sqlite_env()
    writer = _hold_sqlite_write_lock(env)
    # On a terminal a pass draws its progress bar just before its first batch,
    # which then waits up to BUSY_TIMEOUT_SECONDS for the lock: the second bar
    # says the second pass is in that wait.
    terminal, tty = pty.openpty()
    process = _start_prune(env, "--loop", "1", "--no-color", short_busy_timeout=True, stdout=tty)
    os.close(tty)
    bar = "\r[" + "-" * 30 + "]   0% 0/20"
    try:
        first = process.stderr.readline()
        assert first == "Prune pass failed: database is locked. Next pass in 1 s.\n"
        shown = _read_terminal(terminal, until=f"{bar}\r\n{bar}")
        # Leave the pass the moment it needs to go from drawing to waiting.
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        err = process.stderr.read()
        process.wait(timeout=20)
        shown += _read_terminal(terminal)
    finally:
        process.kill()
        writer.close()
        os.close(terminal)
    assert time.monotonic() - signalled < BUSY_TIMEOUT_SECONDS + 5
    assert process.returncode == 0, err
    # No "Next pass" on the second failure: the stop was already requested.
    assert err == "Prune pass failed: database is locked.\n"
    assert shown.replace("\r\n", "\n").split("\n") == [
        bar,
        bar,
        "Stopped by SIGTERM after 2 passes (2 failed).",
        "Pruned 0 expired sessions in 0.0 s (0 batches).",
        "",
    ]
    assert _scratch_session_count(env) == 40


@pytest.fixture
def table_lock(transactional_db, monkeypatch):
    """Take a ``TableLock`` when the pass asks the clock for its second batch."""
    lock = TableLock()
    readings = []

    def clock():
        readings.append(NOW)
        if len(readings) == 2:
            lock.take()
        return NOW

    monkeypatch.setattr(policy, "clock", clock)
    yield lock
    lock.release()


def test_single_run_cut_short_by_a_database_error_says_what_it_deleted(frozen, fixed_timer, table_lock):
    ids = add_sessions(6, expires_at=NOW - timedelta(minutes=1))
    with pytest.raises(CommandError) as raised:
        prune("--batch-size", "2")
    assert str(raised.value) == (
        f"Pruning failed after pruning 2 expired sessions (1 batch): {table_lock.reason}"
    )
    table_lock.release()
    assert len(remaining(ids)) == 4


def test_loop_totals_count_what_a_failed_pass_deleted(frozen, fixed_timer, table_lock):
    ids = add_sessions(6, expires_at=NOW - timedelta(minutes=1))
    take = table_lock.take

    def take_then_sigterm():
        take()
        os.kill(os.getpid(), signal.SIGTERM)

    table_lock.take = take_then_sigterm
    out, err = StringIO(), StringIO()
    call_command("prune_sessions", "--loop", "60", "--batch-size", "2", stdout=out, stderr=err)
    # The stop came during the failed pass: no next pass is announced.
    assert err.getvalue() == (
        f"Prune pass failed after pruning 2 expired sessions (1 batch): {table_lock.reason}\n"
    )
    assert out.getvalue().splitlines() == [
        "Stopped by SIGTERM after 1 pass (1 failed).",
        "Pruned 2 expired sessions in 0.0 s (1 batch).",
    ]
    table_lock.release()
    assert len(remaining(ids)) == 4


def test_single_run_on_a_locked_database_is_a_one_line_command_error():
    env = _scratch_sqlite_env()
    writer = _hold_sqlite_write_lock(env)
    try:
        out, err = _start_prune(env, short_busy_timeout=True).communicate(timeout=60)
    finally:
        writer.close()
    assert (out, err) == ("", "CommandError: Pruning failed: database is locked.\n")
    assert _scratch_session_count(env) == 40


def test_unreachable_database_one_line_errors_and_the_loop_goes_on():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/sessions",
            "DJANGO_SECRET_KEY": "prune-tests-secret-key",
            "PYTHONUNBUFFERED": "1",
        }
        refused = re.compile(r"connection failed: .*port \d+ failed: Connection refused")
        for args, prefix in (([], "Pruning failed: "), (["--dry-run"], "Counting failed: ")):
            once = subprocess.run(
                [sys.executable, "manage.py", "prune_sessions", *args], cwd=ROOT, env=env,
                capture_output=True, text=True, timeout=60,
            )
            assert once.returncode == 1 and once.stdout == ""
            (line,) = once.stderr.splitlines()
            assert line.startswith("CommandError: " + prefix) and refused.search(line), line
        process = _start_prune(env, "--loop", "1")
        try:
            lines = [process.stderr.readline() for _ in range(2)]
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 0, err
    for line in lines:
        assert line.startswith("Prune pass failed: connection failed: ") and refused.search(line), line
        assert line.endswith(" Next pass in 1 s.\n"), line
    assert "Traceback" not in err and all(line.startswith("Prune pass failed: ") for line in err.splitlines())
    stopped, totals = out.splitlines()
    assert re.fullmatch(r"Stopped by SIGTERM after ([23]) passes \(\1 failed\)\.", stopped), stopped
    assert totals == "Pruned 0 expired sessions in 0.0 s (0 batches)."


# --- PostgreSQL: concurrent pruners and renewals ------------------------------------------


def _in_thread(target, results: list, errors: list, barrier=None):
    def run():
        try:
            if barrier is not None:
                barrier.wait(timeout=30)
            results.append(target())
        except Exception as exc:  # reported by the test; a thread must not die silently
            errors.append(exc)
        finally:
            connection.close()

    return threading.Thread(target=run)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("start_share", [0.0, 0.37, 0.999])
def test_page_windows_cover_every_page_once_from_any_start(monkeypatch, start_share):
    now = policy.clock()
    expired = add_sessions(3_000, expires_at=now - timedelta(minutes=1))
    active = add_sessions(1_000, expires_at=now + timedelta(hours=1))
    monkeypatch.setattr(pruning.random, "randrange", lambda pages: int(pages * start_share))
    windows = []
    real_delete = pruning._PageWindows.delete

    def recording_delete(self, *, cutoff, limit):
        windows.append((self.first_page, self._window_end()))
        return real_delete(self, cutoff=cutoff, limit=limit)

    monkeypatch.setattr(pruning._PageWindows, "delete", recording_delete)
    result = services.session_prune_expired(batch_size=100)
    assert result.deleted == len(expired) and remaining(expired) == set()
    assert remaining(active) == set(active)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('sessions_admin_session') / 8192")
        (pages,) = cursor.fetchone()
    # Windows are revisited only while a batch comes back full; distinct ones tile the table.
    distinct = sorted(set(windows))
    assert distinct[0][0] == 0 and distinct[-1][1] == pages
    assert all(a[1] == b[0] for a, b in itertools.pairwise(distinct))
    assert windows[0][0] == int(pages * start_share)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pruners", [2, 4])
def test_concurrent_pruners_neither_block_nor_double_count(pruners):
    now = policy.clock()
    expired = add_sessions(6_000, expires_at=now - timedelta(minutes=1))
    active = add_sessions(500, expires_at=now + timedelta(hours=1))

    def prune_with_lock_timeout():
        with connection.cursor() as cursor:
            # Waiting for another pruner's row lock would fail rather than block.
            cursor.execute("SET lock_timeout = '2s'")
        return services.session_prune_expired(batch_size=250)

    results, errors = [], []
    barrier = threading.Barrier(pruners)
    threads = [_in_thread(prune_with_lock_timeout, results, errors, barrier) for _ in range(pruners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(result.deleted for result in results) == len(expired)
    assert remaining(expired) == set() and remaining(active) == set(active)


@contextmanager
def row_locks_held_elsewhere(queryset):
    """Lock the rows of ``queryset`` (FOR UPDATE) in another thread's transaction for the block.

    The test's own statements give up on a lock after 2 s instead of waiting.
    """
    locked, release, errors = threading.Event(), threading.Event(), []

    def hold_locks():
        from django.db import transaction

        try:
            with transaction.atomic():
                list(queryset.select_for_update().values_list("pk"))
                locked.set()
                release.wait(timeout=60)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_locks)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        yield
    finally:
        release.set()
        holder.join(timeout=30)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert not errors, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rows_locked_elsewhere_are_skipped_not_waited_for():
    now = policy.clock()
    expired = add_sessions(300, expires_at=now - timedelta(minutes=1))
    held = expired[:50]
    with row_locks_held_elsewhere(Session.objects.filter(pk__in=held)):
        started = time.monotonic()
        result = services.session_prune_expired(batch_size=40)
        assert time.monotonic() - started < 2
        assert result.deleted == 250 and remaining(expired) == set(held)
    assert services.session_prune_expired().deleted == 50


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_unused_configurations_locked_elsewhere_are_skipped_not_waited_for():
    """A create that has just taken a configuration holds it: the pruner leaves it, at once."""
    taken = TimeoutConfigFactory(timeout_minutes=45)
    TimeoutConfigFactory(timeout_minutes=50)  # unused and free: deleted
    with row_locks_held_elsewhere(TimeoutConfig.objects.filter(pk=taken.pk)):
        started = time.monotonic()
        deleted = pruning.timeout_config_prune_unused()
        assert time.monotonic() - started < 2
    assert deleted == 1
    assert set(TimeoutConfig.objects.values_list("pk", flat=True)) == {taken.pk}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sessions_renewed_while_pruning_survive():
    """Heartbeats race a pruner whose clock runs ten minutes ahead.

    To the pruner every session here has expired; to the service they are
    active, so heartbeats renew them to now + 30 min. Every heartbeat that
    succeeded must leave its session in place, whatever the interleaving.
    """
    real_now = policy.clock()
    config = TimeoutConfigFactory(timeout_minutes=30, auto_renew=True, max_duration_minutes=720)
    ids = []
    for minute in range(1, 10):
        ids += add_sessions(300, expires_at=real_now + timedelta(minutes=minute), config=config)
    pruner_cutoff = real_now + timedelta(minutes=10)
    renewed, pruning_started, pruning_done = set(), threading.Event(), threading.Event()
    results, errors = [], []

    def heartbeats(seed):
        rng = random.Random(seed)
        attempts = 0
        while not pruning_done.is_set() or attempts < 50:
            attempts += 1
            session_id = rng.choice(ids)
            try:
                session, _ = services.session_heartbeat(session_id=session_id)
            except (SessionNotFound, SessionExpired):
                continue
            assert session.expires_at > pruner_cutoff
            renewed.add((session_id, pruning_started.is_set()))
        return attempts

    def prune_ahead():
        pruning_started.set()
        try:
            return services.session_prune_expired(batch_size=25, clock=lambda: pruner_cutoff)
        finally:
            pruning_done.set()

    threads = [_in_thread(lambda s=s: heartbeats(s), results, errors) for s in range(3)]
    threads.append(_in_thread(prune_ahead, results, errors))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    (prune_result,) = [r for r in results if isinstance(r, pruning.PruneResult)]
    survivors = remaining(ids)
    renewed_ids = {session_id for session_id, _ in renewed}
    assert renewed_ids <= survivors, "a renewed session was pruned"
    assert survivors == renewed_ids, "only renewed sessions may survive a pruner that sees all expired"
    assert prune_result.deleted == len(ids) - len(survivors)
    assert any(during for _, during in renewed), "no renewal raced the pruner"
    assert prune_result.deleted > 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_prune_commands_at_once_report_counts_that_add_up():
    now = policy.clock()
    expired = add_sessions(8_000, expires_at=now - timedelta(minutes=1))
    active = add_sessions(100, expires_at=now + timedelta(hours=1))
    env = _env_for_test_database()
    command = [sys.executable, "manage.py", "prune_sessions", "--batch-size", "300"]
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    counts = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        match = SUMMARY.match(out.splitlines()[-1])
        assert match, out
        counts.append(int(match["count"].replace(",", "")))
    assert sum(counts) == len(expired)
    assert remaining(expired) == set() and remaining(active) == set(active)


def _env_for_test_database() -> dict:
    """The environment for a ``manage.py`` process on the test's PostgreSQL database."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))},
        "DATABASE_URL": postgres_url_of_test_database(),
        "DJANGO_SECRET_KEY": "prune-tests-secret-key",
        "PYTHONUNBUFFERED": "1",
    }


def _other_backends(*, waiting_for_a_lock: bool = False) -> list[int]:
    """Return the pids of the other connections to the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND (NOT %s OR wait_event_type = 'Lock')",
            [waiting_for_a_lock],
        )
        return [pid for (pid,) in cursor.fetchall()]


def _terminate(pids: list[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_loop_goes_on_after_losing_its_postgresql_connection():
    expired = add_sessions(300, expires_at=policy.clock() - timedelta(minutes=1))
    env = _env_for_test_database()
    holder = psycopg.connect(env["DATABASE_URL"])
    # The first pass blocks on this lock, and its connection is cut while it waits.
    holder.execute(f"LOCK TABLE {Session._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    process = _start_prune(env, "--loop", "1")
    try:
        deadline = time.monotonic() + 30
        while not (blocked := _other_backends(waiting_for_a_lock=True)):
            assert time.monotonic() < deadline, "the pass never waited for the lock"
            time.sleep(0.05)
        _terminate(blocked)
        failed = process.stderr.readline()
        holder.rollback()
        pruned = process.stdout.readline().rstrip("\n")
        # Cut again while the loop sleeps: the next pass reconnects.
        _terminate([pid for pid in _other_backends() if pid != holder.info.backend_pid])
        again = process.stdout.readline().rstrip("\n")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
        holder.close()
    assert failed.startswith("Prune pass failed: terminating connection due to administrator command")
    assert failed.endswith(" Next pass in 1 s.\n"), failed
    assert process.returncode == 0 and err == "", err
    assert SUMMARY.match(pruned) and pruned.startswith("Pruned 300 expired sessions"), pruned
    assert SUMMARY.match(again) and again.startswith("Pruned 0 expired sessions"), again
    stopped, totals = out.splitlines()
    assert stopped == "Stopped by SIGTERM after 3 passes (1 failed)."
    assert SUMMARY.match(totals) and totals.startswith("Pruned 300 expired sessions"), totals
    assert remaining(expired) == set()
