"""The store's connection pool after PostgreSQL stops and starts again (issue 17).

psycopg_pool replaces a broken connection in the background and, while the
database is down, retries with a growing delay (1, 2, 4, 8, 16 ... s). Before
the fix a request made after the database was back waited for the next of
those attempts, up to the pool timeout (30 s in production), and then failed:
a replica that had served during an outage stalled after it. Here the outage
lasts until the pool's own counter shows its attempts backing off by 8 s, and
the pool timeout is 3 s, so the old code failed the first request after the
restart; the store must serve it.
"""

from __future__ import annotations

import time

import pytest

from childvault.keys import StorageError
from childvault.vault._postgres._conn import Connection, migrate
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.sessions import OWNER
from tests.postgres.conftest import new_database

#: The pool timeout of the store under test, seconds: shorter than the pool's
#: next reconnection attempt once the outage below has passed (8 s or more).
SHORT_POOL_TIMEOUT_S = 3.0
#: Failed reconnection attempts to wait for while the database is down: two
#: chains (the broken connection's replacement, and the pool growing for the
#: request that found it broken) at 0, 1, 3 and 7 s; the next are 8 s later.
BACKED_OFF_ERRORS = 8


def test_after_a_postgresql_restart_the_first_request_is_served_not_left_to_the_pool_backoff(
    postgres: PostgresServer,
) -> None:
    dsn = postgres.dsn(OWNER, new_database(postgres))
    migrate(dsn)
    store = Connection(dsn, pool_timeout=SHORT_POOL_TIMEOUT_S)
    try:
        assert store.q("SELECT count(*) FROM meta").fetchone() == (0,)
        postgres.stop()
        try:
            # While the database is down: the documented unreachable-store error.
            with pytest.raises(StorageError, match="cannot reach"):
                store.q("SELECT count(*) FROM meta")
            deadline = time.monotonic() + 300
            while store.pool.get_stats().get("connections_errors", 0) < BACKED_OFF_ERRORS:
                assert time.monotonic() < deadline, store.pool.get_stats()
                time.sleep(0.1)
        finally:
            postgres.start()
        # The first request after the restart, a write then a read, is served.
        with store.transaction():
            store.q("INSERT INTO meta (key, value) VALUES (?, ?)", ("issue17", "back"))
        assert store.q("SELECT value FROM meta WHERE key = ?", ("issue17",)).rows == [("back",)]
    finally:
        store.close()
        if not postgres.running:
            postgres.start()
