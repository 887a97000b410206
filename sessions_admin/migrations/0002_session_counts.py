"""Counts that never scan: the counts table, and the triggers that keep it right.

Each session gets a copy of what the counts need from its timeout configuration:
``auto_renew``, and ``warns_at`` (its expiry minus the warning threshold). The
database keeps both right whatever writes the row, so the counts triggers read
the session row alone.

See docs/COUNTS.md for the design. The SQL is written out here, as it was when
this migration was made; ``sessions_admin.counts`` reads and checks it.

Everything runs in the migration's transaction, which holds an exclusive lock
on the session table from the column's addition on: the counts built for the
existing rows cannot miss a concurrent write.
"""

from django.db import migrations, models

SESSION = "sessions_admin_session"
CONFIG = "sessions_admin_timeoutconfig"
COUNT = "sessions_admin_sessioncount"
# Concurrent writers on PostgreSQL add to one of this many rows per counter
# (their backend's pid modulo STRIPES), so that they do not queue on one row.
STRIPES = 4
NO_HORIZON = -9_223_372_036_854_775_807
# (kind, level, bucket width in seconds): a total, then the expiry's and the
# warning start's second, minute and hour.
KEYS = ((0, 0, 1), (1, 0, 1), (1, 1, 60), (1, 2, 3600), (2, 0, 1), (2, 1, 60), (2, 2, 3600))


# -- PostgreSQL ---------------------------------------------------------------

PG_NIL = "'00000000-0000-0000-0000-000000000000'::uuid"
PG_HORIZON = (
    f"COALESCE((SELECT n FROM {COUNT} WHERE kind = 3 AND agent_id = {PG_NIL} "
    f"AND auto_renew = false AND level = 0 AND bucket = 0 AND stripe = 0), {NO_HORIZON})"
)


def _pg_rows(source: str, sign: int) -> str:
    return (
        f"SELECT {sign} AS sign, agent_id, auto_renew, "
        f"floor(date_part('epoch', expires_at))::bigint AS e, "
        f"floor(date_part('epoch', warns_at))::bigint AS w "
        f"FROM {source} WHERE auto_renew IS NOT NULL"
    )


def _pg_deltas(sources: list[tuple[str, int]], *, stripe: str) -> str:
    """``INSERT ... ON CONFLICT`` adding each source row's sign to its 14 counters.

    The rows are first summed per agent, auto-renew and second (a bulk
    statement has far fewer of those than rows), then spread over the levels
    and the two scopes (every agent, the row's agent). Buckets that ended at
    or before the horizon (``horizon``, epoch seconds) are skipped. In key
    order, so that two statements never lock the same counters in opposite
    orders.
    """
    rows = "\n        UNION ALL ".join(_pg_rows(source, sign) for source, sign in sources)
    levels = ", ".join(
        f"({level}::smallint, floor(s.sec / {width}::float8)::bigint, {width}::bigint)"
        for level, width in ((0, 1), (1, 60), (2, 3600))
    )
    return f"""
    WITH d AS MATERIALIZED (
        {rows}
    ), s AS (
        SELECT agent_id, auto_renew, 0::smallint AS kind, 0::bigint AS sec, sum(sign) AS n
        FROM d GROUP BY 1, 2
        UNION ALL
        SELECT agent_id, auto_renew, 1::smallint, e, sum(sign) FROM d WHERE e >= first_second
        GROUP BY 1, 2, 4
        UNION ALL
        SELECT agent_id, auto_renew, 2::smallint, w, sum(sign) FROM d WHERE w >= first_second
        GROUP BY 1, 2, 4
    )
    INSERT INTO {COUNT} AS c (kind, agent_id, auto_renew, level, bucket, stripe, n)
    SELECT s.kind, scope.agent_id, s.auto_renew, k.level,
           CASE WHEN s.kind = 0 THEN 0 ELSE k.bucket END, {stripe}, sum(s.n)
    FROM s
    CROSS JOIN LATERAL (VALUES ({PG_NIL}), (s.agent_id)) scope(agent_id)
    CROSS JOIN LATERAL (VALUES {levels}) k(level, bucket, width)
    WHERE CASE WHEN s.kind = 0 THEN k.level = 0 ELSE (k.bucket + 1) * k.width > horizon END
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(s.n) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (kind, agent_id, auto_renew, level, bucket, stripe)
    DO UPDATE SET n = c.n + EXCLUDED.n;"""


def _pg_count_function(name: str, sources: list[tuple[str, int]]) -> str:
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    horizon bigint := {PG_HORIZON};
    -- Rows whose buckets all end before this second add only to the totals.
    first_second bigint := CASE WHEN horizon = {NO_HORIZON} THEN horizon
                                ELSE floor(horizon / 3600::float8)::bigint * 3600 END;
BEGIN
{_pg_deltas(sources, stripe=f"(pg_backend_pid() % {STRIPES})::smallint")}
    RETURN NULL;
END $$"""


PG_INSTALL = [
    f"""
CREATE TABLE {COUNT} (
    kind smallint NOT NULL,
    agent_id uuid NOT NULL,
    auto_renew boolean NOT NULL,
    level smallint NOT NULL,
    bucket bigint NOT NULL,
    stripe smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (kind, agent_id, auto_renew, level, bucket, stripe)
) WITH (fillfactor = 50)""",
    # The columns of the rows already stored, before the trigger exists.
    f"""
UPDATE {SESSION} s
SET warns_at = s.expires_at - make_interval(mins => t.warning_threshold_minutes),
    auto_renew = t.auto_renew
FROM {CONFIG} t WHERE t.id = s.timeout_config_id""",
    f"""
CREATE FUNCTION session_copy_timeout() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    config {CONFIG}%ROWTYPE;
BEGIN
    SELECT * INTO config FROM {CONFIG} WHERE id = NEW.timeout_config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'timeout configuration % does not exist', NEW.timeout_config_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    NEW.warns_at := NEW.expires_at - make_interval(mins => config.warning_threshold_minutes);
    NEW.auto_renew := config.auto_renew;
    RETURN NEW;
END $$""",
    f"""
CREATE TRIGGER session_copy_timeout_insert BEFORE INSERT ON {SESSION}
FOR EACH ROW EXECUTE FUNCTION session_copy_timeout()""",
    f"""
CREATE TRIGGER session_copy_timeout_update
BEFORE UPDATE OF expires_at, timeout_config_id, warns_at, auto_renew ON {SESSION} FOR EACH ROW
WHEN (OLD.expires_at IS DISTINCT FROM NEW.expires_at
      OR OLD.timeout_config_id IS DISTINCT FROM NEW.timeout_config_id
      OR OLD.warns_at IS DISTINCT FROM NEW.warns_at
      OR OLD.auto_renew IS DISTINCT FROM NEW.auto_renew)
EXECUTE FUNCTION session_copy_timeout()""",
    _pg_count_function("session_count_inserted", [("new_rows", 1)]),
    _pg_count_function("session_count_updated", [("old_rows", -1), ("new_rows", 1)]),
    _pg_count_function("session_count_deleted", [("old_rows", -1)]),
    f"""
CREATE FUNCTION session_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {COUNT} WHERE kind <> 3;
    RETURN NULL;
END $$""",
    f"""
CREATE TRIGGER session_count_insert AFTER INSERT ON {SESSION}
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION session_count_inserted()""",
    f"""
CREATE TRIGGER session_count_update AFTER UPDATE ON {SESSION}
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION session_count_updated()""",
    f"""
CREATE TRIGGER session_count_delete AFTER DELETE ON {SESSION}
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION session_count_deleted()""",
    f"""
CREATE TRIGGER session_count_truncate AFTER TRUNCATE ON {SESSION}
FOR EACH STATEMENT EXECUTE FUNCTION session_count_truncated()""",
    """
CREATE FUNCTION timeout_config_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timeout configurations cannot be changed: sessions point at another one'
        USING ERRCODE = 'restrict_violation';
END $$""",
    f"""
CREATE TRIGGER timeout_config_immutable BEFORE UPDATE ON {CONFIG} FOR EACH ROW
WHEN (OLD.timeout_minutes IS DISTINCT FROM NEW.timeout_minutes
      OR OLD.auto_renew IS DISTINCT FROM NEW.auto_renew
      OR OLD.max_duration_minutes IS DISTINCT FROM NEW.max_duration_minutes
      OR OLD.warning_threshold_minutes IS DISTINCT FROM NEW.warning_threshold_minutes)
EXECUTE FUNCTION timeout_config_refuse_change()""",
    # The counts of the rows already stored: one pass over the table, as if
    # they had all been inserted by one statement (no horizon yet).
    f"""
DO $$
DECLARE
    horizon bigint := {NO_HORIZON};
    first_second bigint := {NO_HORIZON};
BEGIN
{_pg_deltas([(SESSION, 1)], stripe="0::smallint")}
END $$""",
]

PG_UNINSTALL = [
    f"DROP TRIGGER timeout_config_immutable ON {CONFIG}",
    f"DROP TRIGGER session_count_truncate ON {SESSION}",
    f"DROP TRIGGER session_count_delete ON {SESSION}",
    f"DROP TRIGGER session_count_update ON {SESSION}",
    f"DROP TRIGGER session_count_insert ON {SESSION}",
    f"DROP TRIGGER session_copy_timeout_update ON {SESSION}",
    f"DROP TRIGGER session_copy_timeout_insert ON {SESSION}",
    "DROP FUNCTION timeout_config_refuse_change()",
    "DROP FUNCTION session_count_truncated()",
    "DROP FUNCTION session_count_deleted()",
    "DROP FUNCTION session_count_updated()",
    "DROP FUNCTION session_count_inserted()",
    "DROP FUNCTION session_copy_timeout()",
    f"DROP TABLE {COUNT}",
]


# -- SQLite -------------------------------------------------------------------
# Row triggers (SQLite has no others), one writer at a time: one stripe.

SQLITE_NIL = "'00000000000000000000000000000000'"
SQLITE_HORIZON = (
    f"COALESCE((SELECT n FROM {COUNT} WHERE kind = 3 AND agent_id = {SQLITE_NIL} "
    f"AND auto_renew = 0 AND level = 0 AND bucket = 0 AND stripe = 0), {NO_HORIZON})"
)
SQLITE_KEYS = " UNION ALL ".join(
    f"SELECT {kind} AS kind, {level} AS level, {width} AS width" for kind, level, width in KEYS
)


def _sqlite_warns_at(row: str) -> str:
    """``row.expires_at`` minus the threshold, in the text format Django stores datetimes in.

    Whole minutes leave the fraction of a second as it is: SQLite's
    ``datetime()`` moves the whole seconds and the fraction is appended.
    """
    return (
        f"(SELECT datetime(substr({row}.expires_at, 1, 19), "
        f"'-' || (60 * t.warning_threshold_minutes) || ' seconds') || substr({row}.expires_at, 20) "
        f"FROM {CONFIG} t WHERE t.id = {row}.timeout_config_id)"
    )


def _sqlite_auto_renew(row: str) -> str:
    return f"(SELECT t.auto_renew FROM {CONFIG} t WHERE t.id = {row}.timeout_config_id)"


def _sqlite_keys(row: str, sign: int) -> str:
    """The 14 counters ``row`` (``NEW`` or ``OLD``) adds ``sign`` to, as rows.

    A row without its copy of the configuration (inside the statement that
    writes it, before the trigger that copies it) counts nowhere yet.
    """
    bucket = (
        f"CASE k.kind WHEN 0 THEN 0 "
        f"WHEN 1 THEN CAST(strftime('%s', {row}.expires_at) AS INTEGER) / k.width "
        f"ELSE CAST(strftime('%s', {row}.warns_at) AS INTEGER) / k.width END"
    )
    return (
        f"SELECT k.kind AS kind, s.agent_id AS agent_id, {row}.auto_renew AS auto_renew, "
        f"k.level AS level, {bucket} AS bucket, k.width AS width, {sign} AS sign "
        f"FROM (SELECT {SQLITE_NIL} AS agent_id UNION ALL SELECT {row}.agent_id) s, "
        f"({SQLITE_KEYS}) k WHERE {row}.auto_renew IS NOT NULL"
    )


def _sqlite_upsert(keys: str) -> str:
    return (
        f"INSERT INTO {COUNT} (kind, agent_id, auto_renew, level, bucket, stripe, n) "
        f"SELECT kind, agent_id, auto_renew, level, bucket, 0, sum(sign) FROM ({keys}) "
        f"WHERE bucket IS NOT NULL AND (kind = 0 OR (bucket + 1) * width > {SQLITE_HORIZON}) "
        f"GROUP BY kind, agent_id, auto_renew, level, bucket HAVING sum(sign) <> 0 "
        f"ON CONFLICT (kind, agent_id, auto_renew, level, bucket, stripe) "
        f"DO UPDATE SET n = n + excluded.n;"
    )


def _sqlite_copy_timeout(event: str) -> str:
    """A trigger that writes the configuration's copy into a row that lacks it or has a wrong one.

    The application writes both columns itself (SQLite cannot change NEW);
    the counts triggers count the row again when this corrects it.
    """
    return f"""
CREATE TRIGGER session_copy_timeout_{event.split()[0].lower()} AFTER {event} ON {SESSION}
WHEN NEW.warns_at IS NOT {_sqlite_warns_at("NEW")} OR NEW.auto_renew IS NOT {_sqlite_auto_renew("NEW")}
     OR NOT EXISTS (SELECT 1 FROM {CONFIG} WHERE id = NEW.timeout_config_id)
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: no such timeout configuration')
    WHERE NOT EXISTS (SELECT 1 FROM {CONFIG} WHERE id = NEW.timeout_config_id);
    UPDATE {SESSION} SET warns_at = {_sqlite_warns_at("NEW")}, auto_renew = {_sqlite_auto_renew("NEW")}
    WHERE session_id = NEW.session_id;
END"""


SQLITE_INSTALL = [
    f"""
CREATE TABLE {COUNT} (
    kind smallint NOT NULL,
    agent_id char(32) NOT NULL,
    auto_renew bool NOT NULL,
    level smallint NOT NULL,
    bucket bigint NOT NULL,
    stripe smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (kind, agent_id, auto_renew, level, bucket, stripe)
) WITHOUT ROWID""",
    f"UPDATE {SESSION} SET warns_at = {_sqlite_warns_at(SESSION)}, "
    f"auto_renew = {_sqlite_auto_renew(SESSION)}",
    _sqlite_copy_timeout("INSERT"),
    _sqlite_copy_timeout("UPDATE OF expires_at, timeout_config_id, warns_at, auto_renew"),
    f"""
CREATE TRIGGER session_count_insert AFTER INSERT ON {SESSION}
BEGIN
    {_sqlite_upsert(_sqlite_keys("NEW", 1))}
END""",
    f"""
CREATE TRIGGER session_count_update AFTER UPDATE OF expires_at, warns_at, agent_id, auto_renew
ON {SESSION}
WHEN OLD.expires_at IS NOT NEW.expires_at OR OLD.warns_at IS NOT NEW.warns_at
     OR OLD.agent_id IS NOT NEW.agent_id OR OLD.auto_renew IS NOT NEW.auto_renew
BEGIN
    {_sqlite_upsert(_sqlite_keys("OLD", -1) + " UNION ALL " + _sqlite_keys("NEW", 1))}
END""",
    f"""
CREATE TRIGGER session_count_delete AFTER DELETE ON {SESSION}
BEGIN
    {_sqlite_upsert(_sqlite_keys("OLD", -1))}
END""",
    f"""
CREATE TRIGGER timeout_config_immutable BEFORE UPDATE
OF timeout_minutes, auto_renew, max_duration_minutes, warning_threshold_minutes ON {CONFIG}
WHEN OLD.timeout_minutes IS NOT NEW.timeout_minutes OR OLD.auto_renew IS NOT NEW.auto_renew
     OR OLD.max_duration_minutes IS NOT NEW.max_duration_minutes
     OR OLD.warning_threshold_minutes IS NOT NEW.warning_threshold_minutes
BEGIN
    SELECT RAISE(ABORT, 'timeout configurations cannot be changed: sessions point at another one');
END""",
    # The counts of the rows already stored (no horizon yet).
    f"""
INSERT INTO {COUNT} (kind, agent_id, auto_renew, level, bucket, stripe, n)
SELECT k.kind, CASE s.own WHEN 0 THEN {SQLITE_NIL} ELSE r.agent_id END, r.auto_renew, k.level,
       CASE k.kind WHEN 0 THEN 0
            WHEN 1 THEN CAST(strftime('%s', r.expires_at) AS INTEGER) / k.width
            ELSE CAST(strftime('%s', r.warns_at) AS INTEGER) / k.width END,
       0, count(*)
FROM {SESSION} r, (SELECT 0 AS own UNION ALL SELECT 1) s, ({SQLITE_KEYS}) k
WHERE true
GROUP BY 1, 2, 3, 4, 5""",
]

SQLITE_UNINSTALL = [
    "DROP TRIGGER timeout_config_immutable",
    "DROP TRIGGER session_count_delete",
    "DROP TRIGGER session_count_update",
    "DROP TRIGGER session_count_insert",
    "DROP TRIGGER session_copy_timeout_update",
    "DROP TRIGGER session_copy_timeout_insert",
    f"DROP TABLE {COUNT}",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise NotImplementedError(
                f"session counts need PostgreSQL or SQLite, not {schema_editor.connection.vendor}"
            )
        for statement in statements:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_admin", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="warns_at",
            field=models.DateTimeField(editable=False, null=True, verbose_name="warning starts at"),
        ),
        migrations.AddField(
            model_name="session",
            name="auto_renew",
            field=models.BooleanField(editable=False, null=True, verbose_name="auto-renew"),
        ),
        migrations.CreateModel(
            name="SessionCount",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "kind", "agent_id", "auto_renew", "level", "bucket", "stripe",
                        blank=True, editable=False, primary_key=True, serialize=False,
                    ),
                ),
                ("kind", models.SmallIntegerField()),
                ("agent_id", models.UUIDField()),
                ("auto_renew", models.BooleanField()),
                ("level", models.SmallIntegerField()),
                ("bucket", models.BigIntegerField()),
                ("stripe", models.SmallIntegerField()),
                ("n", models.BigIntegerField()),
            ],
            options={
                "verbose_name": "session count",
                "verbose_name_plural": "session counts",
                "db_table": "sessions_admin_sessioncount",
                "managed": False,
            },
        ),
        migrations.RunPython(
            _run({"postgresql": PG_INSTALL, "sqlite": SQLITE_INSTALL}),
            _run({"postgresql": PG_UNINSTALL, "sqlite": SQLITE_UNINSTALL}),
        ),
        migrations.RemoveIndex(model_name="session", name="session_expires_keyset"),
        migrations.AddIndex(
            model_name="session",
            index=models.Index(
                fields=["expires_at", "session_id", "auto_renew"], name="session_expires_keyset"
            ),
        ),
        migrations.AddIndex(
            model_name="session",
            index=models.Index(fields=["warns_at", "auto_renew"], name="session_warns"),
        ),
        migrations.AddIndex(
            model_name="session",
            index=models.Index(
                fields=["agent_id", "expires_at", "auto_renew"], name="session_agent_expires"
            ),
        ),
        migrations.AddIndex(
            model_name="session",
            index=models.Index(
                fields=["agent_id", "warns_at", "auto_renew"], name="session_agent_warns"
            ),
        ),
    ]
