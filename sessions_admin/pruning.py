"""Pruning: delete expired sessions in short batches, never loading a row (SPEC §5).

Every batch is one ``DELETE`` in its own transaction. It picks at most
``batch_size`` expired rows, locks them with ``FOR UPDATE SKIP LOCKED`` and
deletes them with the expiry condition checked again in the ``DELETE``
itself, so a session renewed after it was picked survives. The condition is
compiled from ``SessionQuerySet.expired_q``: pruning uses the boundary rule
the API, the admin and the stats use (``expires_at <= cutoff``).

PostgreSQL walks the table in physical order, one window of heap pages at a
time::

    DELETE FROM session
    WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM session
            WHERE ctid >= '(first page,0)' AND ctid < '(page after window,0)'
              AND expires_at <= %(cutoff)s
            LIMIT %(batch_size)s
            FOR UPDATE SKIP LOCKED))
      AND expires_at <= %(cutoff)s

Expired rows are spread all over the heap (expiry order is not insertion
order), so picking them in ``expires_at`` order would dirty a few thousand
scattered pages per batch and look each one up again through the primary
key: about ten times the cost of one plain ``DELETE``. A TID range scan reads
each page once, and ``ctid = ANY(...)`` deletes without an index probe. Rows
we locked cannot move or vanish before our own ``DELETE``, so their ``ctid``
stays valid; a row updated between our snapshot and our lock is simply left
for the next pass. A window is done when its batch comes back short; the
window's size adapts so a batch holds about ``batch_size`` rows. Correctness
does not depend on the scan order the planner picks.

Other databases (SQLite) take the oldest expired rows by ``expires_at`` through
the index; SQLite's ``BEGIN IMMEDIATE`` makes each batch the only writer.

Timeout configurations are shared value rows that sessions reference
(``PROTECT``). Their number is bounded only by the valid ranges (billions of
combinations), and a client choosing a new combination per session would add
a row per session that outlived it. So a pass ends by deleting the
configurations no session references (``timeout_config_prune_unused``). A
writer that ``get_or_create``d such a row just before it went fails on the
deferred foreign key and tries again, up to ``CONFIG_PRUNED_ATTEMPTS`` times
in all (``retry_if_config_pruned`` on ``services.session_create`` and
``services.session_update_timeout``).

The session counts (``sessions_admin.counts``) follow each batch through the
database's triggers. A pass first moves the counts' horizon to an hour before
its clock, so that the rows it deletes, expired longer ago, change only the
totals; it ends by deleting the counters no reader needs any more.
"""

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Exists, OuterRef
from django.db.models.sql import DeleteQuery
from django.db.models.sql.constants import ROW_COUNT

from sessions_admin import counts, policy
from sessions_admin.exceptions import SessionWriteConflict
from sessions_admin.models import Session, SessionQuerySet, TimeoutConfig

DEFAULT_BATCH_SIZE = 5000
# Aim windows a little below a full batch, so that a window seldom needs a second pass.
_WINDOW_FILL = 0.9


@dataclass(frozen=True)
class PruneBatch:
    """One committed batch: its number, rows deleted, the cutoff it used and its duration."""

    number: int
    deleted: int
    cutoff: datetime
    seconds: float


@dataclass(frozen=True)
class PruneResult:
    """The outcome of one pruning pass.

    ``batches`` counts the batches that deleted at least one row.
    ``stopped`` is true when ``should_stop`` ended the pass early.
    """

    deleted: int
    batches: int
    configs_deleted: int
    seconds: float
    stopped: bool


def prune_cutoff(now: datetime, grace_minutes: int = 0) -> datetime:
    """Return the latest expiry a prune at ``now`` may delete: ``now - grace``."""
    return now - timedelta(minutes=grace_minutes)


def session_count_prunable(*, now: datetime, grace_minutes: int = 0, max_rows: int | None = None) -> int:
    """Count the sessions a prune at ``now`` would delete (``--dry-run``)."""
    count = Session.objects.expired(prune_cutoff(now, grace_minutes)).count()
    return count if max_rows is None else min(count, max_rows)


def _raw_delete(queryset, using: str) -> int:
    """Run ``queryset`` as one ``DELETE`` statement and return its row count.

    ``QuerySet.delete()`` does the same today, because nothing references a
    session, but it silently falls back to loading every row into Python as
    soon as a delete signal receiver or a reverse relation appears. This never
    does.
    """
    return queryset.query.chain(DeleteQuery).get_compiler(using).execute_sql(ROW_COUNT) or 0


def _expired_sql(cutoff: datetime, using: str) -> tuple[str, tuple]:
    """Compile ``SessionQuerySet.expired_q(cutoff)`` to SQL on the session table."""
    query = Session.objects.filter(SessionQuerySet.expired_q(cutoff)).query
    compiler = query.get_compiler(using)
    sql, params = compiler.compile(query.where)
    return sql, tuple(params)


class _OrderedBatches:
    """Batches of the oldest expired sessions, through the ``expires_at`` index."""

    def __init__(self, using: str):
        self.using = using

    def done(self) -> bool:
        return False

    def delete(self, *, cutoff: datetime, limit: int) -> int:
        expired = SessionQuerySet.expired_q(cutoff)
        sessions = Session.objects.using(self.using)
        candidates = (
            sessions.filter(expired).order_by("expires_at").select_for_update(skip_locked=True)
        ).values("pk")[:limit]
        with transaction.atomic(using=self.using):
            return _raw_delete(sessions.filter(expired, pk__in=candidates), self.using)

    def advance(self, deleted: int, limit: int) -> bool:
        """Return whether another batch may find rows."""
        return deleted >= limit


class _PageWindows:
    """PostgreSQL: batches over windows of heap pages, in physical order."""

    def __init__(self, using: str, batch_size: int):
        self.using = using
        connection = connections[using]
        self.table = connection.ops.quote_name(Session._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int, "
                "relpages, reltuples FROM pg_class WHERE oid = %s::regclass",
                [self.table, self.table],
            )
            pages, relpages, reltuples = cursor.fetchone()
        # Rows per page from the planner's statistics; unknown before the first ANALYZE.
        rows_per_page = reltuples / relpages if relpages > 0 and reltuples > 0 else 50
        self.window = max(1, math.ceil(batch_size / rows_per_page))
        start = 0
        if pages <= 4 * self.window:
            # A small table is one window: plain LIMIT batches, rescanning a few pages.
            self.window = max(1, pages)
        else:
            # Start anywhere and wrap around: pruners running at once then mostly
            # work on different pages instead of taking turns on the same ones.
            start = random.randrange(pages)
        self.segments = [(start, pages), (0, start)]
        self.first_page, self.end = self.segments.pop(0)
        self.deleted_in_window = 0

    def done(self) -> bool:
        return self.first_page >= self.end and not any(a < b for a, b in self.segments)

    def _window_end(self) -> int:
        return min(self.first_page + self.window, self.end)

    def delete(self, *, cutoff: datetime, limit: int) -> int:
        expired, params = _expired_sql(cutoff, self.using)
        sql = (
            f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {self.table} WHERE ctid >= %s::tid AND ctid < %s::tid AND {expired} "
            f"LIMIT %s FOR UPDATE SKIP LOCKED)) AND {expired}"
        )
        window = (f"({self.first_page},0)", f"({self._window_end()},0)")
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                # Don't wait for each batch's WAL flush: a crash can only bring
                # back expired rows, which the next pass deletes again.
                cursor.execute("SET LOCAL synchronous_commit = off")
                cursor.execute(sql, (*window, *params, limit, *params))
                return cursor.rowcount

    def advance(self, deleted: int, limit: int) -> bool:
        """Stay on a window until a batch comes back short, then size the next one.

        The next window aims at a little less than a batch at the density
        just seen, and at most doubles, so a sparse stretch cannot make it huge.
        """
        self.deleted_in_window += deleted
        if deleted >= limit:
            return True
        scanned = self._window_end() - self.first_page
        grown = 2 * self.window
        if self.deleted_in_window:
            grown = min(grown, int(scanned * limit * _WINDOW_FILL / self.deleted_in_window))
        self.window = max(1, grown)
        self.deleted_in_window = 0
        self.first_page += scanned
        while self.first_page >= self.end and self.segments:
            self.first_page, self.end = self.segments.pop(0)
        return not self.done()


def timeout_config_prune_unused(*, using: str | None = None) -> int:
    """Delete the timeout configurations no session references; return how many went.

    A session being created at that moment may have just ``get_or_create``d
    one of them. Rows it holds a lock on are skipped; if its insert commits
    first, the foreign key makes this delete fail, which only means "still in
    use" (0 is returned); if this delete commits first, its insert fails and
    ``services`` retries it with a fresh configuration.
    """
    using = using or router.db_for_write(TimeoutConfig)
    unused = (
        TimeoutConfig.objects.using(using)
        .filter(~Exists(Session.objects.filter(timeout_config=OuterRef("pk"))))
        .select_for_update(skip_locked=True)
        .values("pk")
    )
    try:
        with transaction.atomic(using=using):
            return _raw_delete(TimeoutConfig.objects.using(using).filter(pk__in=unused), using)
    except IntegrityError:
        return 0


def session_prune_expired(
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    grace_minutes: int = 0,
    max_rows: int | None = None,
    clock: Callable[[], datetime] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[PruneBatch], None] | None = None,
    prune_configs: bool = True,
    using: str | None = None,
) -> PruneResult:
    """Delete expired sessions, at most ``batch_size`` per transaction; never load a row.

    Each batch reads ``clock()`` (default ``policy.clock``) once and deletes
    only sessions with ``expires_at <= now - grace_minutes``, re-checked in
    the ``DELETE``. The pass ends when nothing is left that this pruner may take (rows another
    pruner holds are its business), after ``max_rows`` rows, or when
    ``should_stop()`` turns true between batches. Unless ``prune_configs`` is
    false or the pass was stopped, timeout configurations no session uses any
    more are deleted at the end, so that table cannot grow without bound; the
    counters no reader needs go too (``counts.session_counts_clean``).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_rows is not None and max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    if grace_minutes < 0:
        raise ValueError("grace_minutes cannot be negative")
    using = using or router.db_for_write(Session)
    clock = clock or policy.clock
    started = time.monotonic()
    if connections[using].vendor == "postgresql":
        batches_source = _PageWindows(using, batch_size)
    else:
        batches_source = _OrderedBatches(using)
    deleted = batches = 0
    stopped = horizon_moved = False
    more = not batches_source.done()
    while more:
        if should_stop():
            stopped = True
            break
        limit = batch_size if max_rows is None else min(batch_size, max_rows - deleted)
        now = clock()
        if not horizon_moved:
            counts.session_counts_advance_horizon(now=now, using=using)
            horizon_moved = True
        cutoff = prune_cutoff(now, grace_minutes)
        batch_started = time.monotonic()
        count = batches_source.delete(cutoff=cutoff, limit=limit)
        if count:
            deleted += count
            batches += 1
            if on_batch is not None:
                on_batch(PruneBatch(batches, count, cutoff, time.monotonic() - batch_started))
        more = batches_source.advance(count, limit) and (max_rows is None or deleted < max_rows)
    configs_deleted = 0
    if prune_configs and not stopped:
        configs_deleted = timeout_config_prune_unused(using=using)
        counts.session_counts_clean(using=using)
    return PruneResult(deleted, batches, configs_deleted, time.monotonic() - started, stopped)


# Attempts of a write whose timeout configuration a concurrent prune deleted.
# Each new attempt has the same tiny window, so a second failure is already
# rare (pruners deleting unused configurations in a tight loop made it happen);
# five make it vanishingly so.
CONFIG_PRUNED_ATTEMPTS = 5


def _is_foreign_key_violation(error: IntegrityError) -> bool:
    """Whether ``error`` is a foreign key that failed (PostgreSQL's 23503, or SQLite's)."""
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    return sqlstate == "23503" or "FOREIGN KEY constraint failed" in str(error)


def retry_if_config_pruned(write):
    """Run ``write`` again if a concurrent prune deleted the timeout config it just got.

    ``timeout_config_prune_unused`` may delete an unused configuration between
    a writer's ``get_or_create`` and the commit of the session row pointing at
    it; the deferred foreign key then fails that commit, and the next attempt
    ``get_or_create``s the configuration afresh. After ``CONFIG_PRUNED_ATTEMPTS``
    lost races, ``SessionWriteConflict`` says so (a 503: nothing was saved).
    Other integrity errors are bugs and pass through untouched. Inside an
    outer transaction the key is only checked at its commit, so nothing is
    retried.
    """

    @functools.wraps(write)
    def wrapper(*args, **kwargs):
        for attempt in range(1, CONFIG_PRUNED_ATTEMPTS + 1):
            try:
                return write(*args, **kwargs)
            except IntegrityError as error:
                if (
                    not _is_foreign_key_violation(error)
                    or transaction.get_connection().in_atomic_block
                ):
                    raise
                if attempt == CONFIG_PRUNED_ATTEMPTS:
                    raise SessionWriteConflict(attempt) from error

    return wrapper
