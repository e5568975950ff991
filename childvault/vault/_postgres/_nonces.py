"""The request-nonce store of ``childvault serve`` in the vault's PostgreSQL database.

Every replica in front of one database records the (user, nonce) pair of each
signed request here before serving it, so a request replayed against another
replica is refused as it would be by the replica that saw it first, and a
restarted replica does not reopen the replay window it had in memory. The
unique key on (user, nonce) makes "record it unless a live copy is there" one
atomic statement (``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``).

The store has its own autocommit connection, not the vault backend's: a nonce
must be committed at once, whatever client transaction the backend holds open.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from childvault.vault._postgres._conn import describe, translate

#: Seconds between purges of expired pairs (done by whichever call comes next).
PURGE_EVERY_S = 60.0
#: How long to wait for the database when (re)connecting, seconds.
CONNECT_TIMEOUT_S = 5

# An expired pair may be recorded again (its signature would be refused for
# skew anyway); a live one may not: the UPDATE's WHERE leaves it alone and no
# row comes back.
_RECORD = (
    "INSERT INTO nonces (username, nonce, expires_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (username, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at "
    "WHERE nonces.expires_at < %s RETURNING 1"
)
_PURGE = "DELETE FROM nonces WHERE expires_at < %s"


class PostgresNonceStore:
    """A :class:`~childvault.server.NonceStore` shared by every replica on one database.

    Thread-safe (one connection under a lock). A database that cannot be
    reached raises :class:`~childvault.keys.StorageError`; the signature layer
    then answers 503 (fail closed) rather than accept a request unchecked.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.where = describe(dsn)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._next_purge = 0.0

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            self._conn = conn
        return conn

    def check_and_add(self, user: str, nonce: str, expires_at: float, now: float) -> bool:
        """Record the pair; ``False`` if a live copy was recorded before (a replay)."""
        with self._lock:
            for attempt in range(2):
                try:
                    conn = self._connection()
                    fresh = conn.execute(_RECORD, (user, nonce, expires_at, now)).fetchone()
                    if time.monotonic() >= self._next_purge:
                        conn.execute(_PURGE, (now,))
                        self._next_purge = time.monotonic() + PURGE_EVERY_S
                    return fresh is not None
                except psycopg.Error as exc:
                    # A connection broken by a database restart is found out
                    # by using it: try once more on a fresh one. Should the
                    # first INSERT have been stored after all, the pair is
                    # live and the request is refused as a replay (fail closed).
                    broken = self._conn is None or self._conn.closed or self._conn.broken
                    self._drop()
                    if attempt or not broken or not isinstance(exc, psycopg.OperationalError):
                        raise translate(exc, self.where) from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def __len__(self) -> int:
        """How many pairs are recorded (live or not yet purged)."""
        with self._lock:
            try:
                row = self._connection().execute("SELECT count(*) FROM nonces").fetchone()
            except psycopg.Error as exc:
                self._drop()
                raise translate(exc, self.where) from exc
            return int(row[0]) if row else 0

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._drop()
