"""A real lock on the session table, held by a second connection, for tests of what waits on it."""

import sqlite3

import psycopg
from django.db import connection

from sessions_admin.models import Session


def postgres_url_of_test_database() -> str:
    """The URL of the test's PostgreSQL database, for another connection or process."""
    settings = connection.settings_dict
    return (
        f"postgres://{settings['USER']}:{settings['PASSWORD'] or ''}@{settings['HOST'] or '127.0.0.1'}"
        f":{settings['PORT'] or 5432}/{settings['NAME']}"
    )


class TableLock:
    """Make the session table unwritable for the test's connection, from another connection.

    On SQLite (the tests' shared in-memory database) another connection's write
    transaction makes the next ``BEGIN`` fail at once; on PostgreSQL another
    connection's table lock makes the next ``DELETE`` fail after ``lock_timeout``.
    """

    reasons = {
        "sqlite": "database table is locked.",
        "postgresql": "canceling statement due to lock timeout.",
    }

    def __init__(self):
        self.reason = self.reasons[connection.vendor]
        self.other = None

    def take(self) -> None:
        if connection.vendor == "sqlite":
            self.other = sqlite3.connect(connection.settings_dict["NAME"], uri=True, isolation_level=None)
            self.other.execute("BEGIN IMMEDIATE")
        else:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '50ms'")
            self.other = psycopg.connect(postgres_url_of_test_database())
            self.other.execute(f"LOCK TABLE {Session._meta.db_table} IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        if self.other is not None:
            self.other.rollback()
            self.other.close()
            self.other = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
