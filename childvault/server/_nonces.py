"""The request-nonce store of ``childvault serve`` for a SQLCipher home.

A SQLCipher home has one server process, but that process can be restarted
(a crash, an upgrade, systemd's ``Restart=``). A store held only in memory
would forget, at each restart, the nonces of requests whose signatures are
still within the clock-skew window, and a request captured on the wire could
then be replayed once. So the pairs go to a small file beside the vault
database, ``server-nonces.db`` in the home (plain SQLite from the standard
library: a nonce and a user name are not secret, and the home is readable by
the service account only).

A pair is committed before the request is served. WAL with
``synchronous = NORMAL`` keeps each commit to an append without an fsync: a
killed *process* loses nothing (the WAL is in the OS page cache); only a
power loss can drop the last commits, and after a power loss the server
restarts long after those signatures' window has passed in practice. The
store keeps :class:`~childvault.server.NonceStore`'s contract: atomic (one
statement under a lock), bounded (refuses when full of live pairs rather than
forget one).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from childvault._i18n import _t
from childvault.server._auth import DEFAULT_MAX_NONCES, NonceStoreFull

__all__ = ["FILE_NAME", "FileNonceStore"]

#: The file's name inside the home.
FILE_NAME = "server-nonces.db"
#: Seconds between purges of expired pairs (done by whichever call comes next).
PURGE_EVERY_S = 10.0

# As in the PostgreSQL store: an expired pair may be recorded again (its
# signature would be refused for skew anyway); a live one may not.
_RECORD = (
    "INSERT INTO nonces (username, nonce, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (username, nonce) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE nonces.expires_at < ?"
)


class FileNonceStore:
    """A :class:`~childvault.server.NonceStore` in a SQLite file that survives restarts."""

    def __init__(self, path: Path, max_entries: int = DEFAULT_MAX_NONCES) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # Created owner-only before SQLite opens it (it would use the umask).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS nonces (username TEXT NOT NULL, nonce TEXT NOT NULL, "
            "expires_at REAL NOT NULL, PRIMARY KEY (username, nonce)) WITHOUT ROWID"
        )
        self._live = self._count()
        self._next_purge = 0.0

    def _count(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM nonces").fetchone()
        return int(row[0])

    def check_and_add(self, user: str, nonce: str, expires_at: float, now: float) -> bool:
        """Record the pair; ``False`` if a live copy was recorded before (a replay)."""
        with self._lock:
            if time.monotonic() >= self._next_purge or self._live >= self.max_entries:
                self._conn.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
                self._live = self._count()
                self._next_purge = time.monotonic() + PURGE_EVERY_S
                if self._live >= self.max_entries:
                    raise NonceStoreFull(_t("{live} live nonces", live=self._live))
            changed = self._conn.execute(_RECORD, (user, nonce, expires_at, now)).rowcount
            if changed:
                self._live += 1
            return bool(changed)

    def __len__(self) -> int:
        """How many pairs are recorded (live or not yet purged)."""
        with self._lock:
            return self._count()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._conn.close()
