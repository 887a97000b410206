"""``manage.py session_counts``: check the session counts against the rows, or repair them.

``--check`` changes nothing: it prints each counter that differs from the rows
(at most ``SHOWN`` of them unless ``--verbosity 2``) and exits with status 1
when any does. ``--rebuild`` corrects them while the service runs, and deletes
the counters no reader needs. See ``sessions_admin.counts``.
"""

from django import db
from django.core.management.base import BaseCommand, CommandError

from sessions_admin import counts

SHOWN = 20


class Command(BaseCommand):
    help = (
        "Compare the session counts (kept by the database's triggers) with the sessions "
        "themselves: --check prints the counters that differ and exits with status 1 if any "
        "does; --rebuild corrects them, safely while the service runs."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument(
            "--check", action="store_true", help="Report the differences; change nothing."
        )
        action.add_argument(
            "--rebuild", action="store_true", help="Correct the differences, and tidy the table."
        )

    def handle(self, *args, check, rebuild, verbosity, **options):
        try:
            if check:
                found = counts.session_counts_check()
            else:
                found = counts.session_counts_rebuild()
                removed = counts.session_counts_clean()
        except (db.DatabaseError, db.InterfaceError) as exc:
            raise CommandError(f"Could not read the counts: {str(exc).strip()}") from exc
        if verbosity > 0:
            shown = found.drifts if verbosity > 1 else found.drifts[:SHOWN]
            for drift in shown:
                self.stdout.write(drift.describe())
            if len(shown) < len(found.drifts):
                self.stdout.write(
                    f"... and {len(found.drifts) - len(shown):,} more (--verbosity 2 lists them all)."
                )
        problems = []
        if found.drifts:
            noun = "counter differs" if len(found.drifts) == 1 else "counters differ"
            problems.append(f"{len(found.drifts):,} {noun} from the sessions")
        if found.wrong_copies:
            noun = "session has" if found.wrong_copies == 1 else "sessions have"
            problems.append(
                f"{found.wrong_copies:,} {noun} a wrong copy of the timeout configuration "
                "(warns_at, auto_renew)"
            )
        if check:
            if problems:
                raise CommandError(
                    f"{'; '.join(problems).capitalize()}. Run session_counts --rebuild to correct.",
                    returncode=1,
                )
            if verbosity > 0:
                self.stdout.write(self.style.SUCCESS("The session counts match the sessions."))
            return
        if verbosity > 0:
            if problems:
                message = f"Corrected: {'; '.join(problems)}."
            else:
                message = "The session counts matched the sessions; nothing to correct."
            if removed:
                noun = "counter" if removed == 1 else "counters"
                message += f" Removed {removed:,} {noun} no longer needed."
            self.stdout.write(self.style.SUCCESS(message))
