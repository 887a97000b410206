"""The session counts: what the database keeps, how it is read, checked and repaired.

The random sequences of writes are in ``test_counts_stateful.py``; here each
way of writing, each edge and each tool has a test of its own.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from sessions_admin import counts, policy, pruning, selectors
from sessions_admin.counts import EVERY_AGENT, Scope, Tally
from sessions_admin.models import Session, SessionCount, TimeoutConfig
from tests.factories import SessionFactory, TimeoutConfigFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 10, 0, 0, 250_000, tzinfo=UTC)
SESSION = Session._meta.db_table
COUNT = SessionCount._meta.db_table
AGENT = uuid.UUID("3c90c3cc-0d44-4b50-8888-8dd25736052a")


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def brute_force(now, **filters) -> dict:
    rows = Session.objects.filter(**filters)
    return rows.stats(now, near_expiration=True)


def tally(now, scope=Scope()) -> Tally:
    return counts.session_tally(now=now, scope=scope, near_expiration=True)


def assert_counts_match(now, scope=Scope()):
    filters = {}
    if scope.agent_ids is not None:
        filters["agent_id"] = scope.agent_ids[0]
    if scope.auto_renew is not None:
        filters["timeout_config__auto_renew"] = scope.auto_renew
    truth = brute_force(now, **filters)
    assert tally(now, scope) == Tally(truth["total"], truth["active"], truth["near_expiration"])


def raw(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def at(value):
    return connection.ops.adapt_datetimefield_value(value)


def as_db(value: uuid.UUID):
    return Session._meta.get_field("agent_id").get_db_prep_value(value, connection)


def check_output(*args) -> str:
    out = StringIO()
    call_command("session_counts", *args, stdout=out)
    return out.getvalue()


# -- Reading: every mix of filters from one tally.


@pytest.mark.parametrize(
    ("status", "near", "expected"),
    [
        ("active", None, 7), ("expired", None, 3), ("all", None, 10), (None, None, 10),
        ("active", True, 2), ("expired", True, 0), ("all", True, 2),
        ("active", False, 5), ("expired", False, 3), ("all", False, 8),
    ],
)
def test_a_tally_answers_every_mix_of_status_and_near_expiration(status, near, expected):
    assert Tally(total=10, active=7, near_expiration=2).matching(
        status=status, near_expiration=near
    ) == expected


def test_counts_are_exact_at_every_boundary_of_a_second(frozen):
    config = TimeoutConfigFactory(timeout_minutes=30, warning_threshold_minutes=5)
    edge = NOW.replace(microsecond=0) + timedelta(seconds=1)  # 10:00:01.000
    for expires_at in (NOW, NOW + policy.ONE_MS, edge - policy.ONE_MS, edge, edge + policy.ONE_MS,
                       edge + timedelta(minutes=5), edge + timedelta(minutes=5, milliseconds=1)):
        SessionFactory(created_at=NOW - timedelta(minutes=1), expires_at=expires_at,
                       timeout_config=config)
    # From before the edge to after it, a millisecond at a time around each row.
    instants = [edge + k * policy.ONE_MS for k in range(-752, 3)]
    instants += [edge + timedelta(minutes=5) + k * policy.ONE_MS for k in (-2, -1, 0, 1)]
    for now in instants:
        assert_counts_match(now)


def test_counts_by_agent_and_auto_renew(frozen):
    renewing, fixed = TimeoutConfigFactory(auto_renew=True), TimeoutConfigFactory(auto_renew=False)
    for config in (renewing, fixed):
        SessionFactory(now=frozen, agent_id=AGENT, timeout_config=config)
        SessionFactory(now=frozen, agent_id=AGENT, timeout_config=config, near_expiration=True)
        SessionFactory(now=frozen, timeout_config=config, expired=True)
    for scope in (Scope(), Scope(auto_renew=True), Scope(agent_ids=(AGENT,)),
                  Scope(agent_ids=(AGENT,), auto_renew=False)):
        assert_counts_match(frozen, scope)
    # An agent without sessions has no tally; a scope of several agents gives one each.
    other = uuid.uuid4()
    (by_agent,), _ = counts.session_tallies(
        now=frozen, scopes=[Scope(agent_ids=(AGENT, other))], near_expiration=True
    )
    assert by_agent == {AGENT: Tally(4, 4, 2)}
    assert tally(frozen, Scope(agent_ids=(other,))) == Tally(0, 0, 0)


def test_the_list_counts_a_users_sessions_from_their_rows(admin_api, frozen, django_assert_num_queries):
    user = uuid.uuid4()
    SessionFactory(now=frozen, user_id=user)
    SessionFactory(now=frozen, user_id=user, expired=True)
    SessionFactory(now=frozen)
    with django_assert_num_queries(2):  # the counts with the user's rows, then the page
        body = admin_api.get("/api/messaging/sessions", {"userId": str(user), "status": "all"}).json()
    assert body["total"] == 2
    assert body["stats"] == {"totalSessions": 3, "activeSessions": 2, "expiredSessions": 1}


# -- Writing: whatever writes the rows, the counts follow.


def test_raw_sql_writes_keep_the_counts(frozen):
    config = TimeoutConfigFactory(warning_threshold_minutes=5)
    sessions = SessionFactory.create_batch(
        4, now=frozen, agent_id=AGENT, timeout_config=config, created_at=NOW - timedelta(minutes=9)
    )
    raw(f"UPDATE {SESSION} SET expires_at = %s WHERE session_id = %s",
        [at(NOW + timedelta(minutes=3)), as_db(sessions[0].pk)])
    raw(f"UPDATE {SESSION} SET expires_at = %s WHERE session_id = %s",
        [at(NOW - timedelta(seconds=1)), as_db(sessions[1].pk)])
    raw(f"UPDATE {SESSION} SET agent_id = %s WHERE session_id = %s",
        [as_db(uuid.uuid4()), as_db(sessions[2].pk)])
    raw(f"DELETE FROM {SESSION} WHERE session_id = %s", [as_db(sessions[3].pk)])
    assert tally(NOW) == Tally(3, 2, 1)
    assert tally(NOW, Scope(agent_ids=(AGENT,))) == Tally(2, 1, 1)
    assert_counts_match(NOW + timedelta(minutes=4))
    assert counts.session_counts_check().clean


def test_a_raw_insert_gets_its_copy_of_the_configuration(frozen):
    config = TimeoutConfigFactory(auto_renew=False, warning_threshold_minutes=5)
    session_id = uuid.uuid4()
    raw(
        f"INSERT INTO {SESSION} (session_id, agent_id, user_id, metadata, created_at, last_activity,"
        f" expires_at, renewal_count, timeout_config_id) VALUES (%s, %s, %s, '{{}}', %s, %s, %s, 0, %s)",
        [as_db(session_id), as_db(AGENT), as_db(uuid.uuid4()), at(NOW), at(NOW),
         at(NOW + timedelta(minutes=4)), config.pk],
    )
    session = Session.objects.get(pk=session_id)
    assert session.warns_at == NOW - timedelta(minutes=1)
    assert session.auto_renew is False
    assert tally(NOW, Scope(auto_renew=False)) == Tally(1, 1, 1)
    # A wrong copy written by hand is put right.
    raw(f"UPDATE {SESSION} SET warns_at = %s, auto_renew = %s WHERE session_id = %s",
        [at(NOW), True, as_db(session_id)])
    session.refresh_from_db()
    assert (session.warns_at, session.auto_renew) == (NOW - timedelta(minutes=1), False)
    assert counts.session_counts_check().clean


def test_a_session_cannot_point_at_a_configuration_that_does_not_exist(frozen):
    with pytest.raises(IntegrityError), transaction.atomic():
        raw(
            f"INSERT INTO {SESSION} (session_id, agent_id, user_id, metadata, created_at,"
            f" last_activity, expires_at, renewal_count, timeout_config_id)"
            f" VALUES (%s, %s, %s, '{{}}', %s, %s, %s, 0, %s)",
            [as_db(uuid.uuid4()), as_db(AGENT), as_db(uuid.uuid4()), at(NOW), at(NOW),
             at(NOW + timedelta(minutes=4)), 987_654],
        )
    assert tally(NOW) == Tally(0, 0, 0)


def test_timeout_configurations_cannot_be_changed_in_place(frozen):
    session = SessionFactory(now=frozen)
    for column, value in (("auto_renew", False), ("warning_threshold_minutes", 2),
                          ("timeout_minutes", 31), ("max_duration_minutes", 700)):
        with pytest.raises(IntegrityError), transaction.atomic():
            raw(f"UPDATE {TimeoutConfig._meta.db_table} SET {column} = %s WHERE id = %s",
                [value, session.timeout_config_id])
    # Rewriting the same values changes nothing, and is allowed.
    raw(f"UPDATE {TimeoutConfig._meta.db_table} SET auto_renew = auto_renew")
    assert_counts_match(NOW)


def test_deleting_every_row_without_a_where_empties_the_counts(frozen):
    # SQLite skips its truncate optimisation when the table has triggers.
    SessionFactory.create_batch(3, now=frozen)
    SessionFactory(now=frozen, expired=True)
    raw(f"DELETE FROM {SESSION}")
    assert tally(NOW) == Tally(0, 0, 0)
    assert counts.session_counts_check().clean


@pytest.mark.postgres
def test_truncate_empties_the_counts(frozen):
    SessionFactory.create_batch(3, now=frozen)
    counts.session_counts_advance_horizon(now=NOW)
    raw("SET CONSTRAINTS ALL IMMEDIATE")  # no foreign key check may be pending at a TRUNCATE
    raw(f"TRUNCATE {SESSION}")
    assert tally(NOW) == Tally(0, 0, 0)
    assert list(SessionCount.objects.values_list("kind", flat=True)) == [SessionCount.KIND_HORIZON]


@pytest.mark.postgres
def test_upserts_and_multi_row_statements_keep_the_counts(frozen):
    config = TimeoutConfigFactory()
    sessions = SessionFactory.create_batch(5, now=frozen, timeout_config=config)
    # INSERT ... ON CONFLICT DO UPDATE: one row updated, one inserted.
    raw(
        f"INSERT INTO {SESSION} AS s (session_id, agent_id, user_id, metadata, created_at,"
        f" last_activity, expires_at, renewal_count, timeout_config_id)"
        f" VALUES (%s, %s, %s, '{{}}', %s, %s, %s, 0, %s), (%s, %s, %s, '{{}}', %s, %s, %s, 0, %s)"
        f" ON CONFLICT (session_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        [sessions[0].pk, AGENT, uuid.uuid4(), NOW, NOW, NOW + timedelta(minutes=2), config.pk,
         uuid.uuid4(), AGENT, uuid.uuid4(), NOW, NOW, NOW + timedelta(minutes=3), config.pk],
    )
    raw(f"UPDATE {SESSION} SET expires_at = created_at")
    assert tally(NOW) == Tally(6, 0, 0)
    assert counts.session_counts_check().clean


def test_bulk_statements_are_counted_once_for_all_their_rows(frozen):
    SessionFactory.create_batch(50, now=frozen, agent_id=AGENT)
    Session.objects.update(expires_at=NOW + timedelta(minutes=2))
    assert tally(NOW, Scope(agent_ids=(AGENT,))) == Tally(50, 50, 50)
    Session.objects.filter(agent_id=AGENT).delete()
    assert tally(NOW) == Tally(0, 0, 0)
    assert counts.session_counts_check().clean


def test_seeding_counts_what_it_inserts(frozen):
    call_command("seed_sessions", "--count", "300", "--expired-fraction", "0.4", stdout=StringIO())
    assert_counts_match(NOW)
    assert_counts_match(NOW + timedelta(minutes=7, milliseconds=1))
    assert counts.session_counts_check().clean


# -- The horizon and the table's size.


def test_pruning_moves_the_horizon_and_removes_counters_no_reader_needs(frozen):
    fixed = TimeoutConfigFactory(auto_renew=False)
    old = SessionFactory(now=frozen, agent_id=AGENT, timeout_config=fixed,
                         created_at=NOW - timedelta(hours=4), expires_at=NOW - timedelta(hours=3))
    SessionFactory(now=frozen, timeout_config=fixed, expired=True)
    SessionFactory(now=frozen, agent_id=AGENT)
    with time_machine.travel(NOW + timedelta(minutes=20), tick=False):
        result = pruning.session_prune_expired()
    assert result.deleted == 2
    horizon = counts.epoch_second(NOW + timedelta(minutes=20) - counts.HORIZON)
    stored = SessionCount.objects.filter(kind=SessionCount.KIND_HORIZON).get()
    assert stored.n == horizon
    # No bucket that ended before the horizon is kept, nor any counter at zero.
    for row in SessionCount.objects.exclude(kind__in=[SessionCount.KIND_TOTAL,
                                                       SessionCount.KIND_HORIZON]):
        assert (row.bucket + 1) * counts.WIDTH[row.level] > horizon
    assert not SessionCount.objects.filter(n=0).exists()
    # The agent of the pruned no-auto-renew sessions has no counters left for them.
    assert not SessionCount.objects.filter(agent_id=AGENT, auto_renew=False).exists()
    assert tally(NOW + timedelta(minutes=20)) == Tally(1, 1, 0)
    assert counts.session_counts_check().clean
    assert old.pk not in set(Session.objects.values_list("pk", flat=True))


def test_rows_behind_the_horizon_change_only_the_totals(frozen):
    counts.session_counts_advance_horizon(now=NOW)
    SessionFactory(now=frozen, created_at=NOW - timedelta(hours=5), expires_at=NOW - timedelta(hours=2))
    kinds = set(SessionCount.objects.exclude(kind=SessionCount.KIND_HORIZON)
                .values_list("kind", flat=True))
    assert kinds == {SessionCount.KIND_TOTAL}
    assert tally(NOW) == Tally(1, 0, 0)


def test_the_horizon_never_moves_back(frozen):
    assert counts.session_counts_advance_horizon(now=NOW) == counts.epoch_second(NOW) - 3600
    assert counts.session_counts_advance_horizon(now=NOW - timedelta(days=1)) == (
        counts.epoch_second(NOW) - 3600
    )


def test_a_clock_behind_the_horizon_counts_the_rows_instead(frozen, caplog):
    SessionFactory(now=frozen)
    SessionFactory(now=frozen, created_at=NOW - timedelta(hours=3), expires_at=NOW - timedelta(hours=2))
    counts.session_counts_advance_horizon(now=NOW)
    behind = NOW - timedelta(hours=2, minutes=30)  # the second session is active then
    with caplog.at_level(logging.WARNING, "sessions_admin.counts"):
        assert tally(behind) == Tally(2, 2, 0)
    assert "behind the counts' horizon" in caplog.text


# -- Checking and repairing (manage.py session_counts).


def test_check_reports_nothing_when_the_counts_match(frozen):
    SessionFactory.create_batch(3, now=frozen)
    assert check_output("--check") == "The session counts match the sessions.\n"


def test_check_reports_each_counter_that_drifted_and_rebuild_corrects_it(frozen):
    SessionFactory.create_batch(3, now=frozen, agent_id=AGENT)
    raw(f"UPDATE {COUNT} SET n = n + 5 WHERE kind = 0 AND agent_id = %s", [as_db(AGENT)])
    raw(f"DELETE FROM {COUNT} WHERE kind = 1 AND level = 2 AND agent_id = %s",
        [as_db(EVERY_AGENT)])
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("session_counts", "--check", stdout=out)
    assert failed.value.returncode == 1
    assert str(failed.value) == (
        "2 counters differ from the sessions. Run session_counts --rebuild to correct."
    )
    assert f"total, agent {AGENT}, auto-renew: counted 8, rows 3 (+5)" in out.getvalue()
    hour = policy.format_datetime(NOW.replace(minute=0, second=0, microsecond=0))
    assert f"expiry hour from {hour}, every agent, auto-renew: counted 0, rows 3 (-3)" in (
        out.getvalue()
    )
    assert check_output("--rebuild").startswith(
        f"total, agent {AGENT}, auto-renew: counted 8, rows 3 (+5)"
    )
    assert check_output("--check") == "The session counts match the sessions.\n"
    assert tally(NOW, Scope(agent_ids=(AGENT,))) == Tally(3, 3, 0)


def test_check_and_rebuild_find_a_wrong_copy_of_the_configuration(frozen):
    session = SessionFactory(now=frozen)
    triggers = ["session_copy_timeout_update"]
    with _triggers_off(triggers):
        raw(f"UPDATE {SESSION} SET warns_at = %s WHERE session_id = %s",
            [at(NOW), as_db(session.pk)])
    found = counts.session_counts_check()
    assert found.wrong_copies == 1
    # The second and minute the counters moved it to, and those they left, in both scopes.
    assert len(found.drifts) == 8
    counts.session_counts_rebuild()
    assert counts.session_counts_check().clean
    session.refresh_from_db()
    assert session.warns_at == session.expires_at - timedelta(minutes=5)


class _triggers_off:
    """Drop (SQLite) or disable (PostgreSQL) triggers inside the test's transaction."""

    def __init__(self, names):
        self.names = names

    def __enter__(self):
        self.saved = []
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # No foreign key check may be pending at an ALTER TABLE.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for name in self.names:
                if connection.vendor == "postgresql":
                    cursor.execute(f"ALTER TABLE {SESSION} DISABLE TRIGGER {name}")
                else:
                    cursor.execute("SELECT sql FROM sqlite_master WHERE name = %s", [name])
                    self.saved.append(cursor.fetchone()[0])
                    cursor.execute(f"DROP TRIGGER {name}")

    def __exit__(self, *exc):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for name in self.names:
                if connection.vendor == "postgresql":
                    cursor.execute(f"ALTER TABLE {SESSION} ENABLE TRIGGER {name}")
            for sql in self.saved:
                cursor.execute(sql)


def test_rebuild_also_tidies_the_table(frozen):
    SessionFactory(now=frozen)
    raw(f"INSERT INTO {COUNT} VALUES (0, %s, %s, 0, 0, 0, 0)", [as_db(uuid.uuid4()), True])
    out = check_output("--rebuild")
    assert out == (
        "The session counts matched the sessions; nothing to correct. "
        "Removed 1 counter no longer needed.\n"
    )


# -- The migration builds the counts of the rows already stored.


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_sessions_stored_before_it():
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([("sessions_admin", "0001_initial")])
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO sessions_admin_timeoutconfig (timeout_minutes, auto_renew, "
                "max_duration_minutes, warning_threshold_minutes) VALUES (30, false, 720, 5)"
            )
            config = cursor.lastrowid if connection.vendor == "sqlite" else None
            if config is None:
                cursor.execute("SELECT id FROM sessions_admin_timeoutconfig")
                config = cursor.fetchone()[0]
            for expires_at in (NOW + timedelta(minutes=2), NOW + timedelta(minutes=20),
                               NOW - timedelta(minutes=1)):
                cursor.execute(
                    f"INSERT INTO {SESSION} (session_id, agent_id, user_id, metadata, created_at,"
                    f" last_activity, expires_at, renewal_count, timeout_config_id)"
                    f" VALUES (%s, %s, %s, '{{}}', %s, %s, %s, 0, %s)",
                    [as_db(uuid.uuid4()), as_db(AGENT), as_db(uuid.uuid4()),
                     at(NOW - timedelta(minutes=10)), at(NOW - timedelta(minutes=10)),
                     at(expires_at), config],
                )
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        assert tally(NOW) == Tally(3, 2, 1)
        assert tally(NOW, Scope(agent_ids=(AGENT,), auto_renew=False)) == Tally(3, 2, 1)
        assert counts.session_counts_check().clean
        assert set(Session.objects.values_list("auto_renew", flat=True)) == {False}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


# -- The selectors use them.


def test_session_stats_reads_the_counts(frozen, django_assert_num_queries):
    SessionFactory(now=frozen, near_expiration=True)
    SessionFactory(now=frozen, expired=True)
    with django_assert_num_queries(1):
        stats = selectors.session_stats(now=NOW)
    assert stats == {"total": 2, "active": 1, "expired": 1, "near_expiration": 1}
