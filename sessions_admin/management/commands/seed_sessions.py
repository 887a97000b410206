"""``manage.py seed_sessions``: insert realistic demo sessions in bulk.

A database error (unreachable, locked, connection lost) ends the run with a
one-line ``CommandError`` (exit status 1), and Ctrl-C with one line and exit
status 130; the load is one transaction, so nothing of it is kept.
"""

import argparse
import time

from django import db
from django.core.management.base import BaseCommand, CommandError

from sessions_admin import policy, seeding

PROGRESS_WIDTH = 30


def _fraction(raw: str) -> float:
    # ArgumentTypeError, not CommandError: argparse reports it as a usage error
    # (exit status 2) where a CommandError would escape as a traceback.
    try:
        return float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number between 0 and 1, not {raw!r}."
        ) from None


def _one_line(error: Exception) -> str:
    """Return the first line of an error's message, ending as a sentence."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if text.endswith((".", "?", "!")) else text + "."


class Command(BaseCommand):
    help = (
        "Insert COUNT demo sessions: active ones (some near expiration) and a fraction of "
        "expired ones, spread over several agents, users and timeout configurations. "
        "All in one transaction: an error keeps none of them."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--count",
            type=int,
            required=True,
            help=f"Number of sessions to create, 1 to {seeding.MAX_COUNT:,}.",
        )
        parser.add_argument(
            "--expired-fraction",
            type=_fraction,
            default=seeding.DEFAULT_EXPIRED_FRACTION,
            help="Share of the sessions that are already expired, 0 to 1 (default 0.2).",
        )
        parser.add_argument(
            "--agents",
            type=int,
            help=f"Number of distinct agents, at most COUNT (default: "
            f"{seeding.MAX_DEFAULT_AGENTS}, or COUNT if smaller).",
        )
        parser.add_argument(
            "--users",
            type=int,
            help=f"Number of distinct users, at most COUNT (default: COUNT/10, between 1 and "
            f"{seeding.MAX_DEFAULT_USERS:,}).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=seeding.DEFAULT_BATCH_SIZE,
            help=f"Rows per batch, 1 to {seeding.MAX_BATCH_SIZE:,} "
            f"(default {seeding.DEFAULT_BATCH_SIZE}).",
        )

    def handle(
        self, *args, count, expired_fraction, agents, users, batch_size, verbosity, **options
    ):
        self._validate(count, expired_fraction, agents, users, batch_size)
        show_progress = verbosity > 0 and self.stdout.isatty()
        self._progress_drawn = False
        started = time.monotonic()
        try:
            result = seeding.session_seed(
                count=count,
                now=policy.clock(),
                expired_fraction=expired_fraction,
                agents=agents,
                users=users,
                batch_size=batch_size,
                on_progress=(lambda done: self._progress(done, count)) if show_progress else None,
            )
        except (db.DatabaseError, db.InterfaceError) as exc:
            raise CommandError(f"Seeding failed: {_one_line(exc)} No session was kept.") from exc
        except KeyboardInterrupt:  # Ctrl-C: the transaction has been rolled back
            raise CommandError("Interrupted. No session was kept.", returncode=130) from None
        finally:
            if self._progress_drawn:
                self.stdout.write("")
        elapsed = time.monotonic() - started
        if verbosity > 0:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Seeded {result.created:,} sessions ({result.expired:,} expired) "
                    f"in {elapsed:.1f} s."
                )
            )

    def _validate(self, count, expired_fraction, agents, users, batch_size):
        if not 1 <= count <= seeding.MAX_COUNT:
            raise CommandError(f"--count must be between 1 and {seeding.MAX_COUNT:,}, not {count}.")
        if not 0 <= expired_fraction <= 1:
            raise CommandError(
                f"--expired-fraction must be between 0 and 1, not {expired_fraction}."
            )
        for option, value in (("--agents", agents), ("--users", users)):
            if value is None:
                continue
            if value < 1:
                raise CommandError(f"{option} must be at least 1, not {value}.")
            if value > count:
                raise CommandError(
                    f"{option} ({value:,}) cannot exceed --count ({count:,}): "
                    "every agent and user gets at least one session."
                )
        if not 1 <= batch_size <= seeding.MAX_BATCH_SIZE:
            raise CommandError(
                f"--batch-size must be between 1 and {seeding.MAX_BATCH_SIZE:,}, not {batch_size}."
            )

    def _progress(self, done: int, count: int) -> None:
        filled = PROGRESS_WIDTH * done // count
        bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
        self.stdout.write(f"\r[{bar}] {100 * done // count:3d}% {done:,}/{count:,}", ending="")
        self.stdout.flush()
        self._progress_drawn = True
