"""``manage.py prune_sessions``: delete expired sessions in short batches (SPEC §5).

Output, at the default verbosity (1):

- a run ends with ``Pruned 12,345 expired sessions in 0.8 s (3 batches).``
  (``1 expired session``, ``1 batch``); ``batches`` counts the transactions
  that deleted rows;
- ``--dry-run`` prints ``Would prune 12,345 expired sessions.`` and deletes nothing;
- ``--loop`` prints that line after every pass, and when SIGTERM or SIGINT
  stops it, ``Stopped by SIGTERM after 4 passes.`` (``after 4 passes (1
  failed).`` when passes failed) followed by the totals in the same format
  (time spent pruning, sleeps excluded);
- a progress bar is drawn while pruning when stdout is a terminal.

Verbosity 0 prints nothing but errors; verbosity 2 adds a line per batch and
the number of unused timeout configurations removed.

A database error (locked, unreachable, connection lost) ends a single run
with a one-line ``CommandError`` (exit status 1). Under ``--loop`` it ends
only the pass: ``Prune pass failed: database is locked. Next pass in 5 s.``
goes to stderr and the loop carries on. Batches committed before the error
stay deleted and are counted in the totals.
"""

import signal
import threading

from django import db
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from sessions_admin import policy
from sessions_admin.pruning import (
    DEFAULT_BATCH_SIZE,
    PruneBatch,
    PruneResult,
    session_count_prunable,
)
from sessions_admin.services import session_prune_expired

MAX_BATCH_SIZE = 1_000_000
MAX_GRACE_MINUTES = 10 * 365 * 24 * 60
# Pruning more than once a second only repeats the cleanup queries; a week is
# far beyond any useful interval and well inside what a timed wait accepts.
MIN_LOOP_SECONDS = 1
MAX_LOOP_SECONDS = 7 * 24 * 60 * 60
PROGRESS_WIDTH = 30
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """Return ``"1 batch"`` / ``"12,345 batches"``."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def summary_line(result: PruneResult) -> str:
    """Return the one-line summary of a prune: ``Pruned N expired sessions in X s (B batches).``"""
    return (
        f"Pruned {plural(result.deleted, 'expired session')} in {result.seconds:.1f} s "
        f"({plural(result.batches, 'batch', 'batches')})."
    )


class Command(BaseCommand):
    help = (
        "Delete expired sessions (expires_at <= now - grace) in batches, each its own short "
        "transaction. Safe beside the running service and beside other pruners: a session "
        "renewed meanwhile is never deleted, and on PostgreSQL concurrent pruners skip each "
        "other's rows instead of waiting. Unused timeout configurations are removed too."
    )
    # A data command that cron or a process manager runs: the system checks are
    # about serving requests, and their warnings on every run would be noise
    # (cron mails any output). `manage.py check` still reports them.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Count the sessions that would be pruned; delete nothing."
        )
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
            help=f"Rows deleted per transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--grace-minutes", type=int, default=0, metavar="M",
            help="Keep sessions that expired less than M minutes ago (default 0).",
        )
        parser.add_argument(
            "--max-rows", type=int, metavar="N", help="Delete at most N sessions per pass."
        )
        parser.add_argument(
            "--loop", type=float, metavar="SECONDS",
            help=f"Prune again every SECONDS ({MIN_LOOP_SECONDS} to {MAX_LOOP_SECONDS:,}) until "
            "SIGTERM or SIGINT, which stop it cleanly after the current batch.",
        )

    def handle(self, *args, dry_run, batch_size, grace_minutes, max_rows, loop, verbosity, **options):
        self._validate(dry_run, batch_size, grace_minutes, max_rows, loop)
        self.verbosity = verbosity
        if dry_run:
            try:
                count = session_count_prunable(
                    now=policy.clock(), grace_minutes=grace_minutes, max_rows=max_rows
                )
            except (db.DatabaseError, db.InterfaceError) as exc:
                raise CommandError(f"Counting failed: {_one_line(exc)}") from exc
            self._say(f"Would prune {plural(count, 'expired session')}.")
            return
        stop = _StopRequest()
        with stop.on_signals(STOP_SIGNALS):
            prune = dict(batch_size=batch_size, grace_minutes=grace_minutes, max_rows=max_rows)
            if loop is None:
                try:
                    result = self._prune_once(stop, **prune)
                except _PassFailed as failed:
                    raise CommandError(failed.describe("Pruning")) from failed
                if stop.signal_name:
                    self._say(f"Stopped by {stop.signal_name}.")
                self._say(summary_line(result), success=True)
                return
            totals, passes, failures = [], 0, 0
            while not stop.is_set():
                # As between requests: drop a connection that broke or outlived CONN_MAX_AGE.
                close_old_connections()
                passes += 1
                try:
                    totals.append(self._prune_once(stop, **prune))
                except _PassFailed as failed:
                    # A locked or unreachable database is usually over by the next pass.
                    # On SQLite a signal that arrives while a batch waits for another
                    # writer's lock is only handled when that wait ends (at most the
                    # busy timeout): the wait is inside SQLite, where Python cannot act.
                    totals.append(failed.done)
                    failures += 1
                    message = failed.describe("Prune pass")
                    if not stop.is_set():
                        message += f" Next pass in {loop:,g} s."
                    self.stderr.write(message)
                else:
                    self._say(summary_line(totals[-1]))
                stop.wait(loop)
            ran = plural(passes, "pass", "passes") + (f" ({failures:,} failed)" if failures else "")
            self._say(f"Stopped by {stop.signal_name} after {ran}.")
            self._say(summary_line(_sum(totals)), success=True)

    def _validate(self, dry_run, batch_size, grace_minutes, max_rows, loop):
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise CommandError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE:,}, not {batch_size}.")
        if not 0 <= grace_minutes <= MAX_GRACE_MINUTES:
            raise CommandError(
                f"--grace-minutes must be between 0 and {MAX_GRACE_MINUTES:,}, not {grace_minutes}."
            )
        if max_rows is not None and max_rows < 1:
            raise CommandError(f"--max-rows must be at least 1, not {max_rows}.")
        if loop is not None:
            # The comparison is false for nan as well.
            if not MIN_LOOP_SECONDS <= loop <= MAX_LOOP_SECONDS:
                raise CommandError(
                    f"--loop must be between {MIN_LOOP_SECONDS} and {MAX_LOOP_SECONDS:,} seconds, "
                    f"not {loop:.10g}."
                )
            if dry_run:
                raise CommandError("--dry-run cannot be combined with --loop.")

    def _say(self, line: str, *, success: bool = False) -> None:
        if self.verbosity >= 1:
            # Colour only on a terminal, whatever sys.stdout is: the text stays exact in logs.
            self.stdout.write(self.style.SUCCESS(line) if success and self.stdout.isatty() else line)

    def _prune_once(self, stop, *, batch_size, grace_minutes, max_rows) -> PruneResult:
        """Run one pass; raise ``_PassFailed`` if a database error ends it."""
        progress = None
        deleted = batches = 0
        seconds = 0.0

        def on_batch(batch: PruneBatch) -> None:
            nonlocal deleted, batches, seconds
            deleted, batches, seconds = deleted + batch.deleted, batch.number, seconds + batch.seconds
            if progress is not None:
                progress.advance(batch.deleted)
            if self.verbosity >= 2:
                self.stdout.write(
                    f"Batch {batch.number:,}: deleted {plural(batch.deleted, 'session')} expired at or "
                    f"before {policy.format_datetime(batch.cutoff)} in {batch.seconds:.2f} s."
                )

        try:
            if self.verbosity == 1 and self.stdout.isatty():
                expected = session_count_prunable(
                    now=policy.clock(), grace_minutes=grace_minutes, max_rows=max_rows
                )
                progress = _ProgressBar(self.stdout, expected) if expected else None
            result = session_prune_expired(
                batch_size=batch_size,
                grace_minutes=grace_minutes,
                max_rows=max_rows,
                should_stop=stop.is_set,
                on_batch=on_batch,
            )
        except (db.DatabaseError, db.InterfaceError) as exc:
            done = PruneResult(deleted, batches, configs_deleted=0, seconds=seconds, stopped=False)
            raise _PassFailed(exc, done) from exc
        finally:
            if progress is not None:
                progress.close()
        if self.verbosity >= 2 and result.configs_deleted:
            self.stdout.write(
                f"Deleted {plural(result.configs_deleted, 'unused timeout configuration')}."
            )
        return result


def _one_line(error: Exception) -> str:
    """Return the first line of an error's message, ending as a sentence.

    PostgreSQL's messages go on with the statement, a hint or a context; the
    first line says what happened.
    """
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if text.endswith((".", "?", "!")) else text + "."


class _PassFailed(Exception):
    """A pass ended by a database error; ``done`` counts the batches it committed before."""

    def __init__(self, error: Exception, done: PruneResult):
        self.reason, self.done = _one_line(error), done
        super().__init__(self.reason)

    def describe(self, what: str) -> str:
        """Return ``Pruning failed after pruning 10 expired sessions (1 batch): <reason>``."""
        after = ""
        if self.done.deleted:
            after = (
                f" after pruning {plural(self.done.deleted, 'expired session')} "
                f"({plural(self.done.batches, 'batch', 'batches')})"
            )
        return f"{what} failed{after}: {self.reason}"


def _sum(results: list[PruneResult]) -> PruneResult:
    return PruneResult(
        deleted=sum(r.deleted for r in results),
        batches=sum(r.batches for r in results),
        configs_deleted=sum(r.configs_deleted for r in results),
        seconds=sum(r.seconds for r in results),
        stopped=any(r.stopped for r in results),
    )


class _StopRequest:
    """A stop flag that SIGTERM/SIGINT set; waiting on it is interrupted by the signal."""

    def __init__(self):
        self._event = threading.Event()
        self.signal_name = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> None:
        self._event.wait(seconds)

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        self._event.set()

    def on_signals(self, signals):
        return _SignalHandlers(signals, self._handle)


class _SignalHandlers:
    """Install signal handlers for a ``with`` block (main thread only), then restore the old ones."""

    def __init__(self, signals, handler):
        self.signals, self.handler, self.previous = signals, handler, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handler) for sig in self.signals}
        return self

    def __exit__(self, *exc_info):
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


class _ProgressBar:
    """``[#######-----------]  35% 1,750/5,000`` redrawn in place on a terminal."""

    def __init__(self, stdout, expected: int):
        self.stdout, self.expected, self.done = stdout, expected, 0
        self._draw()

    def advance(self, rows: int) -> None:
        self.done += rows
        # Sessions keep expiring while the pass runs, and each batch takes them too:
        # the count made at the start is a floor, never shown below what was done.
        self.expected = max(self.expected, self.done)
        self._draw()

    def _draw(self) -> None:
        share = min(1.0, self.done / self.expected)
        filled = int(PROGRESS_WIDTH * share)
        bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
        self.stdout.write(f"\r[{bar}] {share:4.0%} {self.done:,}/{self.expected:,}", ending="")
        self.stdout.flush()

    def close(self) -> None:
        self.stdout.write("")
