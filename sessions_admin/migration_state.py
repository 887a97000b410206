"""Tell a database that is not migrated from one that fails for another reason.

A database that exists but lacks this code's tables answers every query with
an error: ``relation ... does not exist`` on PostgreSQL (a ``ProgrammingError``),
``no such table`` on SQLite (an ``OperationalError``). Once a query has failed,
``lacks_migrations`` asks the database whether migrations are missing, so that
the answer says so (503 ``SERVICE_UNAVAILABLE``, health ``"not migrated"``)
instead of a 500. A request that succeeds pays nothing, and nor does a
database that cannot be reached: the question is put only to a connection
that still answers.
"""

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

DATABASE_NOT_MIGRATED = "The database is not migrated: run manage.py migrate"


class DatabaseNotMigrated(DatabaseError):
    """The database answers, but migrations of this code are not applied to it."""

    def __init__(self):
        super().__init__(DATABASE_NOT_MIGRATED)


def unapplied_migrations(using: str = DEFAULT_DB_ALIAS) -> list:
    """The migrations of this code that the database lacks, in the order they would apply."""
    executor = MigrationExecutor(connections[using])
    return executor.migration_plan(executor.loader.graph.leaf_nodes())


def lacks_migrations(error: BaseException, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether ``error`` is a database error from a database that lacks this code's migrations."""
    if isinstance(error, DatabaseNotMigrated):
        return True
    if not isinstance(error, DatabaseError):
        return False
    connection = connections[using]
    if connection.connection is None or not connection.is_usable():
        return False  # unreachable, or in a failed transaction: nothing to ask
    try:
        return bool(unapplied_migrations(using))
    except DatabaseError:
        return False
