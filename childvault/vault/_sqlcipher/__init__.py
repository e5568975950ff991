"""The SQLCipher backend: the first implementation of :class:`~childvault.vault._backend.Backend`.

It opens, migrates, locks and backs up the encrypted file; the statements
over its tables are shared with the PostgreSQL store (``childvault.vault._sql``).
The rest of the library talks to it through the repositories of the backend
protocol (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import StorageError
from childvault.vault._sql import Repositories
from childvault.vault._sqlcipher._conn import (
    _MIGRATIONS,
    BUSY_TIMEOUT_S,
    BackgroundCommit,
    Connection,
)

__all__ = ["BUSY_TIMEOUT_S", "MIGRATIONS", "SQLCipherBackend"]

#: The schema migrations, in order (the database's ``user_version`` counts those applied).
MIGRATIONS = _MIGRATIONS


class SQLCipherBackend(Repositories):
    """An open SQLCipher database as a :class:`~childvault.vault._backend.Backend`.

    Not thread-safe: one per process or thread (an import's COMMITs run on a
    thread of their own, the connection unusable meanwhile: :meth:`background_commit`).
    """

    def __init__(self, path: Path, key: bytes, *, create: bool = False) -> None:
        self._conn = Connection(path, key, create=create)
        self.path = self._conn.path
        super().__init__(self._conn)

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, serialised."""
        return self._conn.transaction()

    def background_commit(self) -> BackgroundCommit:
        """Transactions whose COMMIT runs on a thread of its own (an import's
        batches: :class:`~childvault.vault._sqlcipher._conn.BackgroundCommit`)."""
        return BackgroundCommit(self._conn)

    def compact(self) -> None:
        """Checkpoint and truncate the WAL so deleted pages do not linger in it."""
        self._conn.compact()

    def backup_to(self, target: Path, key: bytes) -> None:
        """Copy the database to ``target`` (a new file, mode 0600) with SQLite's online
        backup API: one consistent snapshot while other processes keep writing.

        ``key`` is this database's raw key; the copy is encrypted with it too,
        page by page, so it opens with the same key slots.
        """
        import sqlcipher3

        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        try:
            dest = sqlcipher3.connect(str(target), isolation_level=None)
            try:
                dest.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
                dest.execute("PRAGMA cipher_memory_security = OFF")
                # pages=-1: the whole database in one step, under one read snapshot.
                self._conn.conn.backup(dest, pages=-1)
            finally:
                dest.close()
        except sqlcipher3.Error as exc:
            raise StorageError(
                _t("could not back up the database to {target}: {exc}", target=target, exc=exc)
            ) from exc

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
