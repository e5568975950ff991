"""Fixtures shared by the attack tests.

The two-store fixture of tests/postgres (a PostgreSQL server of the session),
defined once here: a session fixture imported into two modules is two
fixtures, and the second one to run finds the first's template database.
"""

from tests.postgres.conftest import any_world, pg_template

__all__ = ["any_world", "pg_template"]
