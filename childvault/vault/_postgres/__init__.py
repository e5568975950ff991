"""The PostgreSQL backend: a second implementation of :class:`~childvault.vault._backend.Backend`.

Same tables and semantics as the SQLCipher store (``bytea`` for blobs), for a
province's shared database behind several ``childvault serve`` replicas
(docs/scale.md). The statements over the tables are shared with the SQLCipher
store (``childvault.vault._sql``); connecting, migrating and locking live here.

What the database holds: field values sealed client-side (ciphertext), wrapped
record keys, blind-index MACs and bookkeeping (ids, dates, consent, the audit
log). Unlike the SQLCipher file there is no whole-database encryption layer
here, so the bookkeeping is readable to whoever reads the database; the child
data is not (a ``pg_dump`` holds no field value, tests/postgres).
"""

from __future__ import annotations

import contextlib
from typing import Any

from childvault.vault._postgres._conn import (
    APPEND_ONLY,
    LOCK_TIMEOUT_S,
    MIGRATIONS,
    WRITE_LOCK,
    Connection,
    describe,
    migrate,
)
from childvault.vault._postgres._nonces import PostgresNonceStore
from childvault.vault._sql import Repositories

__all__ = [
    "APPEND_ONLY",
    "LOCK_TIMEOUT_S",
    "MIGRATIONS",
    "WRITE_LOCK",
    "PostgresBackend",
    "PostgresNonceStore",
    "describe",
    "migrate",
]


class PostgresBackend(Repositories):
    """A PostgreSQL database (through a connection pool) as a backend.

    ``create=True`` migrates an empty database with ``dsn``'s role (which then
    owns the tables); otherwise the schema must be current (see
    :func:`migrate`). Not thread-safe: one per process or thread, as the
    SQLCipher backend; several processes and replicas may share the database.
    """

    def __init__(self, dsn: str, *, create: bool = False, pool_size: int = 4) -> None:
        self._conn = Connection(dsn, create=create, pool_size=pool_size)
        self.where = self._conn.where
        super().__init__(self._conn)

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """All or nothing, serialised with every writer on the database (advisory lock)."""
        return self._conn.transaction()

    def compact(self) -> None:
        """Best-effort ``VACUUM`` (needs the table owner; autovacuum does it otherwise)."""
        self._conn.compact()

    def close(self) -> None:
        """Close the pool."""
        self._conn.close()
