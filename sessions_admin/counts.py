"""Session counts that never scan the table: reading, checking and repairing them.

The database keeps a small table of counters (``SessionCount``), by triggers on
the session table that run inside every writing statement (migration 0002). For
each scope (every agent, and the session's own agent) and auto-renew value,
there is a total, and the number of sessions whose expiry, and whose warning
start (``warns_at``), falls in each second, minute and hour. How many sessions
expire after an instant ``t`` is then the sum of the hour buckets after ``t``'s
hour, the minute buckets after ``t``'s minute in that hour, the second buckets
after ``t``'s second in that minute, and an index range count of the rows
inside ``t``'s second: a few hundred small rows and a second's worth of index
entries, whatever the table holds. Counters of buckets that ended before the
horizon (an hour before the last prune's clock) are no longer kept: no reader
asks for them. docs/COUNTS.md has the reasoning and the limits.

Every count a request needs comes from one statement (``session_tallies``), so
they all describe one snapshot. ``session_counts_check`` and
``session_counts_rebuild`` compare the counters with the rows.
"""

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from django.db import connections, router, transaction
from django.db.models import QuerySet

from sessions_admin import policy
from sessions_admin.models import Session, SessionCount, TimeoutConfig

logger = logging.getLogger(__name__)

EVERY_AGENT = UUID(int=0)
HORIZON = timedelta(hours=1)
# (level, bucket width in seconds)
LEVELS = ((0, 1), (1, 60), (2, 3600))
WIDTH = dict(LEVELS)
NO_HORIZON = -9_223_372_036_854_775_807
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# Two repairs at once would both apply the same correction (PostgreSQL).
_REBUILD_LOCK = 0x5E55_C0
_COUNT = SessionCount._meta.db_table
_SESSION = Session._meta.db_table
_CONFIG = TimeoutConfig._meta.db_table


def epoch_second(instant: datetime) -> int:
    """Return the whole epoch second ``instant`` falls in (rounded down)."""
    return (instant - _EPOCH) // _SECOND


@dataclass(frozen=True)
class Tally:
    """Counts of one scope at one instant; ``total = active + expired``."""

    total: int
    active: int
    near_expiration: int

    @property
    def expired(self) -> int:
        return self.total - self.active

    def matching(self, *, status: str | None, near_expiration: bool | None = None) -> int:
        """Count the sessions with ``status`` (``active``, ``expired``, ``all`` or None for all)
        and, when given, near expiration or not (near expiration implies active)."""
        by_status = {"active": self.active, "expired": self.expired, "all": self.total, None: self.total}
        if near_expiration is None:
            return by_status[status]
        near = {"active": self.near_expiration, "expired": 0, "all": self.near_expiration,
                None: self.near_expiration}[status]
        return near if near_expiration else by_status[status] - near


@dataclass(frozen=True)
class Scope:
    """Which sessions to count: those of ``agent_ids`` (each counted apart) or of every
    agent (``None``), with one auto-renew value or either (``None``)."""

    agent_ids: tuple[UUID, ...] | None = None
    auto_renew: bool | None = None


class _Statement:
    """One ``SELECT`` made of ``UNION ALL`` arms, each giving ``(quantity, agent, n)`` rows."""

    def __init__(self, connection):
        self.connection = connection
        self.arms: list[tuple[str, list]] = []
        self._quantities: dict[tuple, int] = {}
        uuid_field = Session._meta.get_field("agent_id")
        self.uuid = lambda value: uuid_field.get_db_prep_value(value, connection)
        self.instant = connection.ops.adapt_datetimefield_value

    def quantity(self, key: tuple, build) -> int:
        """The number of the quantity ``key``, adding its arms (``build(number)``) once."""
        if key not in self._quantities:
            self._quantities[key] = len(self._quantities)
            build(self._quantities[key])
        return self._quantities[key]

    def add(self, sql: str, params: list) -> None:
        self.arms.append((sql, params))

    def sql(self) -> tuple[str, list]:
        sql = (
            "SELECT q, agent_id, SUM(n) FROM ("
            + " UNION ALL ".join(f"SELECT * FROM ({arm}) a{i}" for i, (arm, _) in enumerate(self.arms))
            + ") arms GROUP BY q, agent_id"
        )
        return sql, [param for _, arm_params in self.arms for param in arm_params]


def _as_uuid(value) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _scope_sql(statement: _Statement, scope: Scope) -> tuple[str, list]:
    """The counters' ``agent_id`` and ``auto_renew`` conditions for ``scope``."""
    agents = scope.agent_ids if scope.agent_ids is not None else (EVERY_AGENT,)
    auto_renew = (False, True) if scope.auto_renew is None else (scope.auto_renew,)
    sql = (
        f"agent_id IN ({', '.join(['%s'] * len(agents))}) "
        f"AND auto_renew IN ({', '.join(['%s'] * len(auto_renew))})"
    )
    return sql, [*(statement.uuid(agent) for agent in agents), *auto_renew]


def _rows_sql(statement: _Statement, scope: Scope) -> tuple[str, list, str]:
    """Conditions on session rows for ``scope``, and the agent each row is counted under."""
    conditions, params = [], []
    agent_sql = "%s"
    if scope.agent_ids is not None:
        conditions.append(f"agent_id IN ({', '.join(['%s'] * len(scope.agent_ids))})")
        params += [statement.uuid(agent) for agent in scope.agent_ids]
        agent_sql = "agent_id"
    if scope.auto_renew is not None:
        conditions.append("auto_renew = %s")
        params.append(scope.auto_renew)
    return "".join(f" AND {c}" for c in conditions), params, agent_sql


def _total(statement: _Statement, scope: Scope) -> int:
    def build(q):
        where, params = _scope_sql(statement, scope)
        statement.add(
            f"SELECT {q} AS q, agent_id, n FROM {_COUNT} WHERE kind = 0 AND {where} "
            f"AND level = 0 AND bucket = 0",
            params,
        )

    return statement.quantity(("total", scope), build)


def _after(statement: _Statement, scope: Scope, kind: int, instant: datetime, *, inclusive: bool):
    """The quantities that add up to the sessions whose expiry (kind 1) or warning start
    (kind 2) is after ``instant`` (or at it, if ``inclusive``): the buckets, the rows."""
    second = epoch_second(instant)
    minute, hour = second // 60, second // 3600

    def buckets(q):
        where, params = _scope_sql(statement, scope)
        for level, low, high in ((2, hour, None), (1, minute, (hour + 1) * 60),
                                 (0, second, (minute + 1) * 60)):
            upper = "" if high is None else " AND bucket < %s"
            statement.add(
                f"SELECT {q} AS q, agent_id, n FROM {_COUNT} WHERE kind = {kind} AND {where} "
                f"AND level = {level} AND bucket > %s{upper}",
                [*params, low, *(() if high is None else (high,))],
            )

    def rows(q):
        column = "expires_at" if kind == SessionCount.KIND_EXPIRY else "warns_at"
        where, params, agent_sql = _rows_sql(statement, scope)
        group = " GROUP BY agent_id" if scope.agent_ids is not None else ""
        agent_params = [] if scope.agent_ids is not None else [statement.uuid(EVERY_AGENT)]
        statement.add(
            f"SELECT {q} AS q, {agent_sql} AS agent_id, COUNT(*) AS n FROM {_SESSION} "
            f"WHERE {column} {'>=' if inclusive else '>'} %s AND {column} < %s{where}{group}",
            [*agent_params, statement.instant(instant),
             statement.instant(_EPOCH + (second + 1) * _SECOND), *params],
        )

    return (
        statement.quantity(("buckets", scope, kind, second), buckets),
        statement.quantity(("rows", scope, kind, instant, inclusive), rows),
    )


class TallyQuery:
    """The one statement that counts the sessions of each scope at ``now``, and its reading.

    ``scopes`` are counted apart; ``extra`` querysets are counted as they
    are (``COUNT(*)`` of their rows: for small sets such as a user's
    sessions). Near expiration is counted only when asked (0 otherwise):
    ``near_expiration`` is true for every scope, or the scopes that need it.
    """

    def __init__(
        self,
        *,
        now: datetime,
        scopes: Sequence[Scope],
        near_expiration: bool | Collection[Scope] = False,
        extra: Mapping[str, QuerySet] | None = None,
        using: str | None = None,
    ):
        self.now = now
        self.scopes = list(scopes)
        self.near_expiration = (
            set(self.scopes) if near_expiration is True else set(near_expiration or ())
        )
        self.extra = dict(extra or {})
        self.using = using or router.db_for_read(Session)
        statement = _Statement(connections[self.using])
        soon = now + policy.ONE_MS
        self._plans = []
        for scope in self.scopes:
            plan = {
                "total": _total(statement, scope),
                "active": _after(statement, scope, SessionCount.KIND_EXPIRY, now, inclusive=False),
            }
            if scope in self.near_expiration:
                plan["expiring"] = _after(
                    statement, scope, SessionCount.KIND_EXPIRY, soon, inclusive=True
                )
                plan["warned"] = _after(
                    statement, scope, SessionCount.KIND_WARNING, soon, inclusive=True
                )
            self._plans.append(plan)
        self._extras = {
            name: statement.quantity(("extra", name), _counted(statement, queryset, self.using))
            for name, queryset in self.extra.items()
        }
        self._horizon = statement.quantity(("horizon",), _horizon_arm(statement))
        self.sql, self.params = statement.sql()

    def read(self, rows: list[tuple]) -> tuple[list[dict[UUID, Tally]], dict[str, int], int | None]:
        """Turn the statement's rows into each scope's tallies by agent (``EVERY_AGENT`` for a
        scope of every agent; an agent without sessions is absent), each extra count, and
        the stored horizon (epoch seconds, or None)."""
        values = {(q, _as_uuid(agent)): int(n or 0) for q, agent, n in rows}
        agents_of = defaultdict(set)
        for q, agent in values:
            agents_of[q].add(agent)

        def value(quantity, agent):
            if isinstance(quantity, tuple):
                return sum(values.get((q, agent), 0) for q in quantity)
            return values.get((quantity, agent), 0)

        results = []
        for scope, plan in zip(self.scopes, self._plans, strict=True):
            if scope.agent_ids is None:
                agents = {EVERY_AGENT}
            else:
                agents = set().union(*(agents_of[q] for q in _flatten(plan.values())))
            tallies = {}
            for agent in agents:
                near = 0
                if "expiring" in plan:
                    near = value(plan["expiring"], agent) - value(plan["warned"], agent)
                tallies[agent] = Tally(value(plan["total"], agent), value(plan["active"], agent), near)
            results.append(tallies)
        extras = {name: value(q, EVERY_AGENT) for name, q in self._extras.items()}
        return results, extras, values.get((self._horizon, EVERY_AGENT))

    def run(self) -> tuple[list[dict[UUID, Tally]], dict[str, int]]:
        """Run the statement; return each scope's tallies by agent and each extra count."""
        with connections[self.using].cursor() as cursor:
            cursor.execute(self.sql, self.params)
            rows = cursor.fetchall()
        results, extras, horizon = self.read(rows)
        if horizon is not None and epoch_second(self.now) < horizon:
            # This clock is behind the one that moved the horizon: buckets it
            # reads may no longer be kept. Count the rows instead.
            logger.warning(
                "Counting sessions by reading the rows: this clock (%s) is behind the counts' "
                "horizon (%s).", self.now.isoformat(), (_EPOCH + horizon * _SECOND).isoformat(),
            )
            return _tallies_by_scanning(
                self.now, self.scopes, self.near_expiration, self.extra, self.using
            )
        return results, extras


def _counted(statement: _Statement, queryset: QuerySet, using: str):
    def build(q):
        sql, params = queryset.order_by().values("pk").query.get_compiler(using).as_sql()
        statement.add(
            f"SELECT {q} AS q, %s AS agent_id, COUNT(*) AS n FROM ({sql}) x",
            [statement.uuid(EVERY_AGENT), *params],
        )

    return build


def _horizon_arm(statement: _Statement):
    def build(q):
        statement.add(
            f"SELECT {q} AS q, agent_id, n FROM {_COUNT} WHERE kind = 3 AND agent_id = %s "
            f"AND auto_renew = %s AND level = 0 AND bucket = 0 AND stripe = 0",
            [statement.uuid(EVERY_AGENT), False],
        )

    return build


def session_tallies(
    *,
    now: datetime,
    scopes: Sequence[Scope],
    near_expiration: bool | Collection[Scope] = False,
    extra: Mapping[str, QuerySet] | None = None,
    using: str | None = None,
) -> tuple[list[dict[UUID, Tally]], dict[str, int]]:
    """Count the sessions of each scope at ``now`` (and ``extra``'s querysets), in one query.

    Exact at ``now``: what ``COUNT(*)`` would answer. See ``TallyQuery``.
    """
    return TallyQuery(
        now=now, scopes=scopes, near_expiration=near_expiration, extra=extra, using=using
    ).run()


def _flatten(quantities) -> list[int]:
    flat = []
    for quantity in quantities:
        flat += list(quantity) if isinstance(quantity, tuple) else [quantity]
    return flat


def _tallies_by_scanning(now, scopes, near_expiration, extra, using):
    results = []
    for scope in scopes:
        near = scope in near_expiration
        sessions = Session.objects.using(using)
        if scope.auto_renew is not None:
            sessions = sessions.filter(auto_renew=scope.auto_renew)
        agents = [None] if scope.agent_ids is None else scope.agent_ids
        tallies = {}
        for agent in agents:
            rows = sessions if agent is None else sessions.filter(agent_id=agent)
            counts = rows.stats(now, near_expiration=near)
            if agent is None or counts["total"]:
                tallies[agent or EVERY_AGENT] = Tally(
                    counts["total"], counts["active"], counts.get("near_expiration", 0)
                )
        results.append(tallies)
    return results, {name: queryset.count() for name, queryset in extra.items()}


def session_tally(
    *, now: datetime, scope: Scope = Scope(), near_expiration: bool = False,
    using: str | None = None,
) -> Tally:
    """Count the sessions of one scope of every agent, or of a single agent, at ``now``."""
    (tallies,), _ = session_tallies(
        now=now, scopes=[scope], near_expiration=near_expiration, using=using
    )
    key = EVERY_AGENT if scope.agent_ids is None else scope.agent_ids[0]
    return tallies.get(key, Tally(0, 0, 0))


# -- Keeping the table small ---------------------------------------------------


def _horizon_key(connection) -> list:
    uuid_field = Session._meta.get_field("agent_id")
    return [uuid_field.get_db_prep_value(EVERY_AGENT, connection), False]


def session_counts_advance_horizon(*, now: datetime, using: str | None = None) -> int:
    """Stop keeping the counters of buckets that end an hour or more before ``now``.

    The horizon only moves forward. Returns it, in epoch seconds.
    """
    using = using or router.db_for_write(Session)
    connection = connections[using]
    horizon = epoch_second(now - HORIZON)
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_COUNT} (kind, agent_id, auto_renew, level, bucket, stripe, n) "
            f"VALUES (3, %s, %s, 0, 0, 0, %s) ON CONFLICT (kind, agent_id, auto_renew, level, "
            f"bucket, stripe) DO UPDATE SET n = CASE WHEN {_COUNT}.n > excluded.n "
            f"THEN {_COUNT}.n ELSE excluded.n END",
            [*_horizon_key(connection), horizon],
        )
        cursor.execute(
            f"SELECT n FROM {_COUNT} WHERE kind = 3 AND agent_id = %s AND auto_renew = %s "
            f"AND level = 0 AND bucket = 0 AND stripe = 0",
            _horizon_key(connection),
        )
        return cursor.fetchone()[0]


def session_counts_clean(*, using: str | None = None) -> int:
    """Delete counters no reader needs: buckets behind the horizon, zeros, empty agents.

    Safe beside writers, and never waits for them: a counter is deleted only
    while it is locked here and holds 0 (or, for buckets behind the horizon,
    is never read again); an agent's totals only when all of them are locked
    here and add up to 0. Counters a writer holds are left for the next time.
    Returns how many counters went.
    """
    using = using or router.db_for_write(Session)
    connection = connections[using]
    key = "kind, agent_id, auto_renew, level, bucket, stripe"
    horizon = (
        f"(SELECT n FROM {_COUNT} WHERE kind = 3 AND agent_id = %s AND auto_renew = %s "
        f"AND level = 0 AND bucket = 0 AND stripe = 0)"
    )
    width = "CASE level WHEN 0 THEN 1 WHEN 1 THEN 60 ELSE 3600 END"
    unneeded = (
        f"(kind IN (1, 2) AND (bucket + 1) * {width} <= {horizon}) "
        f"OR (kind IN (0, 1, 2) AND n = 0)"
    )
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor != "postgresql":  # one writer at a time
            cursor.execute(f"DELETE FROM {_COUNT} WHERE {unneeded}", _horizon_key(connection))
            return cursor.rowcount
        cursor.execute(
            f"DELETE FROM {_COUNT} WHERE ({key}) IN (SELECT {key} FROM {_COUNT} WHERE {unneeded} "
            f"ORDER BY {key} FOR UPDATE SKIP LOCKED)",
            _horizon_key(connection),
        )
        deleted = cursor.rowcount
        # An agent's totals spread over stripes (+3 on one, -3 on another) once
        # its sessions are gone: all of them locked, still adding up to 0.
        cursor.execute(
            f"""
            WITH empty AS (
                SELECT agent_id, auto_renew, count(*) AS counters FROM {_COUNT} WHERE kind = 0
                GROUP BY 1, 2 HAVING sum(n) = 0
            ), locked AS (
                SELECT c.agent_id, c.auto_renew, c.n FROM {_COUNT} c
                JOIN empty e ON e.agent_id = c.agent_id AND e.auto_renew = c.auto_renew
                WHERE c.kind = 0 ORDER BY c.agent_id, c.auto_renew, c.stripe
                FOR UPDATE OF c SKIP LOCKED
            ), still_empty AS (
                SELECT l.agent_id, l.auto_renew FROM locked l
                JOIN empty e ON e.agent_id = l.agent_id AND e.auto_renew = l.auto_renew
                GROUP BY l.agent_id, l.auto_renew, e.counters
                HAVING sum(l.n) = 0 AND count(*) = e.counters
            )
            DELETE FROM {_COUNT} c USING still_empty e
            WHERE c.kind = 0 AND c.agent_id = e.agent_id AND c.auto_renew = e.auto_renew
            """
        )
        return deleted + cursor.rowcount


# -- Checking and repairing ----------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """A counter that differs from the rows: ``counted`` where the rows say ``actual``."""

    kind: int
    agent_id: UUID
    auto_renew: bool
    level: int
    bucket: int
    counted: int
    actual: int

    @property
    def difference(self) -> int:
        return self.counted - self.actual

    def describe(self) -> str:
        scope = "every agent" if self.agent_id == EVERY_AGENT else f"agent {self.agent_id}"
        renew = "auto-renew" if self.auto_renew else "no auto-renew"
        if self.kind == SessionCount.KIND_TOTAL:
            what = "total"
        else:
            family = "expiry" if self.kind == SessionCount.KIND_EXPIRY else "warning start"
            start = _EPOCH + self.bucket * WIDTH[self.level] * _SECOND
            unit = {0: "second", 1: "minute", 2: "hour"}[self.level]
            what = f"{family} {unit} from {policy.format_datetime(start)}"
        return (
            f"{what}, {scope}, {renew}: counted {self.counted:,}, rows {self.actual:,} "
            f"({self.difference:+,})"
        )


@dataclass(frozen=True)
class CountCheck:
    """What a check found: the counters that drifted, and how many sessions have a wrong copy
    of their configuration (``warns_at``, ``auto_renew``)."""

    drifts: list[Drift]
    wrong_copies: int
    horizon: int | None

    @property
    def clean(self) -> bool:
        return not self.drifts and not self.wrong_copies


def _truth_and_drift_sql(vendor: str) -> str:
    """``SELECT`` of every counter that differs from the rows, under the stored horizon.

    The warning start is computed from the expiry and the configuration, not
    read from ``warns_at``, so a wrong ``warns_at`` shows too.
    """
    width = "CASE {t}.level WHEN 0 THEN 1 WHEN 1 THEN 60 ELSE 3600 END"
    kept = f"({{t}}.kind = 0 OR ({{t}}.bucket + 1) * {width} > h.horizon)"
    if vendor == "postgresql":
        nil = "'00000000-0000-0000-0000-000000000000'::uuid"
        truth = f"""
        d AS MATERIALIZED (
            SELECT r.agent_id, t.auto_renew,
                   floor(date_part('epoch', r.expires_at))::bigint AS e,
                   floor(date_part('epoch', r.expires_at))::bigint
                       - 60 * t.warning_threshold_minutes AS w
            FROM {_SESSION} r JOIN {_CONFIG} t ON t.id = r.timeout_config_id
        ), s AS (
            SELECT agent_id, auto_renew, 0 AS kind, 0::bigint AS sec, count(*) AS n
            FROM d GROUP BY 1, 2
            UNION ALL SELECT agent_id, auto_renew, 1, e, count(*) FROM d GROUP BY 1, 2, 4
            UNION ALL SELECT agent_id, auto_renew, 2, w, count(*) FROM d GROUP BY 1, 2, 4
        ), truth AS (
            SELECT s.kind, scope.agent_id, s.auto_renew, k.level,
                   CASE WHEN s.kind = 0 THEN 0 ELSE floor(s.sec / k.width::float8)::bigint END
                       AS bucket,
                   sum(s.n) AS n
            FROM s
            CROSS JOIN LATERAL (VALUES ({nil}), (s.agent_id)) scope(agent_id)
            CROSS JOIN (VALUES (0, 1), (1, 60), (2, 3600)) k(level, width)
            WHERE s.kind > 0 OR k.level = 0
            GROUP BY 1, 2, 3, 4, 5
        )"""
    else:
        nil = "'00000000000000000000000000000000'"
        truth = f"""
        truth AS (
            SELECT k.kind AS kind,
                   CASE s.own WHEN 0 THEN {nil} ELSE r.agent_id END AS agent_id,
                   t.auto_renew AS auto_renew, k.level AS level,
                   CASE k.kind WHEN 0 THEN 0 ELSE
                       (CAST(strftime('%%s', r.expires_at) AS INTEGER)
                        - CASE k.kind WHEN 2 THEN 60 * t.warning_threshold_minutes ELSE 0 END)
                       / k.width END AS bucket,
                   count(*) AS n
            FROM {_SESSION} r JOIN {_CONFIG} t ON t.id = r.timeout_config_id,
                 (SELECT 0 AS own UNION ALL SELECT 1) s,
                 (SELECT 0 AS kind, 0 AS level, 1 AS width UNION ALL SELECT 1, 0, 1
                  UNION ALL SELECT 1, 1, 60 UNION ALL SELECT 1, 2, 3600
                  UNION ALL SELECT 2, 0, 1 UNION ALL SELECT 2, 1, 60
                  UNION ALL SELECT 2, 2, 3600) k
            GROUP BY 1, 2, 3, 4, 5
        )"""
    return f"""
        WITH h AS (
            SELECT COALESCE((SELECT n FROM {_COUNT} WHERE kind = 3 AND agent_id = {nil}
                AND auto_renew = %s AND level = 0 AND bucket = 0 AND stripe = 0),
                {NO_HORIZON}) AS horizon
        ), {truth.strip()},
        counted AS (
            SELECT kind, agent_id, auto_renew, level, bucket, sum(n) AS n FROM {_COUNT}
            WHERE kind IN (0, 1, 2) GROUP BY 1, 2, 3, 4, 5
        ), joined AS (
            SELECT kind, agent_id, auto_renew, level, bucket, c.n AS counted, t.n AS actual
            FROM truth t LEFT JOIN counted c USING (kind, agent_id, auto_renew, level, bucket)
            UNION ALL
            SELECT kind, agent_id, auto_renew, level, bucket, c.n, NULL
            FROM counted c WHERE NOT EXISTS (
                SELECT 1 FROM truth t WHERE t.kind = c.kind AND t.agent_id = c.agent_id
                AND t.auto_renew = c.auto_renew AND t.level = c.level AND t.bucket = c.bucket)
        )
        SELECT j.kind, j.agent_id, j.auto_renew, j.level, j.bucket,
               COALESCE(j.counted, 0), COALESCE(j.actual, 0)
        FROM joined j, h
        WHERE COALESCE(j.counted, 0) <> COALESCE(j.actual, 0) AND {kept.format(t="j")}
        ORDER BY 1, 2, 3, 4, 5"""


def _wrong_copy_sql(vendor: str) -> str:
    """The sessions whose copy of their configuration (``warns_at``, ``auto_renew``) is wrong."""
    if vendor == "postgresql":
        right = "r.expires_at - make_interval(mins => t.warning_threshold_minutes)"
    else:
        right = (
            "datetime(substr(r.expires_at, 1, 19), '-' || (60 * t.warning_threshold_minutes) "
            "|| ' seconds') || substr(r.expires_at, 20)"
        )
    return (
        f"SELECT r.session_id FROM {_SESSION} r JOIN {_CONFIG} t ON t.id = r.timeout_config_id "
        f"WHERE r.warns_at IS NULL OR r.warns_at <> {right} "
        f"OR r.auto_renew IS NULL OR r.auto_renew <> t.auto_renew"
    )


def _read_check(cursor, vendor: str) -> CountCheck:
    cursor.execute(_truth_and_drift_sql(vendor), [False])
    drifts = [
        Drift(kind, _as_uuid(agent), bool(renew), level, bucket, counted, actual)
        for kind, agent, renew, level, bucket, counted, actual in cursor.fetchall()
    ]
    cursor.execute(f"SELECT COUNT(*) FROM ({_wrong_copy_sql(vendor)}) x")
    wrong = cursor.fetchone()[0]
    cursor.execute(
        f"SELECT n FROM {_COUNT} WHERE kind = 3 AND auto_renew = %s AND level = 0 "
        f"AND bucket = 0 AND stripe = 0",
        [False],
    )
    horizon = cursor.fetchone()
    return CountCheck(drifts, wrong, horizon[0] if horizon else None)


def session_counts_check(*, using: str | None = None) -> CountCheck:
    """Compare every kept counter with the rows, in one snapshot; change nothing."""
    using = using or router.db_for_read(Session)
    connection = connections[using]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not _in_outer_transaction(connection):
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _read_check(cursor, connection.vendor)


def session_counts_rebuild(*, using: str | None = None) -> CountCheck:
    """Correct every counter that differs from the rows; safe while traffic runs.

    Returns what was found and corrected. Sessions with a wrong copy of their
    configuration are rewritten first (the triggers move their counters with
    them). On PostgreSQL the differences are then read in one snapshot and
    applied as increments, so the changes other transactions commit
    meanwhile, which move both the rows and the counters, are kept; an
    advisory lock keeps two repairs from applying the same correction. On
    SQLite the repair is one write transaction.
    """
    using = using or router.db_for_write(Session)
    connection = connections[using]
    if connection.vendor != "postgresql":
        with transaction.atomic(using=using), connection.cursor() as cursor:
            wrong = _fix_copies(cursor, connection.vendor)
            found = _read_check(cursor, connection.vendor)
            _apply(cursor, found.drifts, connection)
        return CountCheck(found.drifts, wrong, found.horizon)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_REBUILD_LOCK])
    try:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            wrong = _fix_copies(cursor, connection.vendor)
        with transaction.atomic(using=using), connection.cursor() as cursor:
            if not _in_outer_transaction(connection):
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            found = _read_check(cursor, connection.vendor)
        with transaction.atomic(using=using), connection.cursor() as cursor:
            _apply(cursor, found.drifts, connection)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_REBUILD_LOCK])
    return CountCheck(found.drifts, wrong, found.horizon)


def _in_outer_transaction(connection) -> bool:
    """Whether the current atomic block is nested in another (a test's, say): its isolation
    level is then that of the outer transaction."""
    return len(connection.savepoint_ids) > 0 or not connection.commit_on_exit


def _fix_copies(cursor, vendor: str) -> int:
    """Rewrite the sessions whose copy of their configuration is wrong; return how many."""
    # Writing NULL makes each database's trigger copy the configuration again,
    # and its counts triggers move the counters with the row.
    cursor.execute(
        f"UPDATE {_SESSION} SET warns_at = NULL, auto_renew = NULL WHERE session_id IN "
        f"({_wrong_copy_sql(vendor)})"
    )
    return cursor.rowcount


def _apply(cursor, drifts: list[Drift], connection) -> None:
    """Take each drift off its counter, in key order."""
    uuid_field = Session._meta.get_field("agent_id")
    rows = sorted(
        (d.kind, d.agent_id, d.auto_renew, d.level, d.bucket, -d.difference) for d in drifts
    )
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        cursor.execute(
            f"INSERT INTO {_COUNT} (kind, agent_id, auto_renew, level, bucket, stripe, n) VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s, 0, %s)"] * len(chunk))
            + " ON CONFLICT (kind, agent_id, auto_renew, level, bucket, stripe) "
            f"DO UPDATE SET n = {_COUNT}.n + excluded.n",
            [
                value
                for kind, agent, renew, level, bucket, n in chunk
                for value in (kind, uuid_field.get_db_prep_value(agent, connection), renew,
                              level, bucket, n)
            ],
        )
