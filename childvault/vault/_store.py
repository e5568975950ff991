"""The record store: every SQL statement of childvault lives in this module.

SQLCipher (``sqlcipher3``) with a random 32-byte raw key, WAL journal, foreign
keys on, and versioned migrations. The rest of the library talks to
:class:`Store` through narrow methods that take and return plain Python values,
so a PostgreSQL store can later implement the same methods.

Transactions: :meth:`Store.write` opens ``BEGIN IMMEDIATE`` so concurrent
writers serialise (one linear audit chain); SQLite's busy timeout retries with
backoff for up to :data:`BUSY_TIMEOUT_S` before a clear :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlcipher3

from childvault.keys import IntegrityError, NotFound, StorageError

#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

_MIGRATIONS: list[str] = [
    # 1: the foundation.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        roles TEXT NOT NULL,
        enc_key BLOB NOT NULL,
        sign_key BLOB NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE custodians (
        generation INTEGER PRIMARY KEY,
        public_key BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('current', 'pending', 'retired')),
        created_at TEXT NOT NULL
    );
    CREATE TABLE custodian_holders (
        generation INTEGER NOT NULL REFERENCES custodians(generation) ON DELETE CASCADE,
        officer TEXT NOT NULL REFERENCES users(name),
        PRIMARY KEY (generation, officer)
    );
    CREATE TABLE records (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        consent TEXT NOT NULL,
        retain_until TEXT NOT NULL,
        metadata TEXT NOT NULL,
        source TEXT,
        source_row INTEGER,
        UNIQUE (source, source_row)
    );
    CREATE INDEX records_retain ON records (retain_until);
    CREATE TABLE fields (
        record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (record_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE keyblobs (
        record_id TEXT PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        blob BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE tombstones (
        record_id TEXT PRIMARY KEY,
        deleted_at TEXT NOT NULL,
        deleted_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        key_destroyed INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        entry BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE TABLE requests (
        id TEXT PRIMARY KEY,
        requester TEXT NOT NULL,
        records TEXT NOT NULL,
        fields TEXT NOT NULL,
        purpose TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
        decided_by TEXT,
        decided_at TEXT,
        decision_reason TEXT
    );
    CREATE INDEX requests_status ON requests (status);
    CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL REFERENCES requests(id),
        officer TEXT NOT NULL,
        requester TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        max_uses INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0,
        revoked_at TEXT,
        revoked_by TEXT,
        cache BLOB
    );
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        size INTEGER NOT NULL,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        signer TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE imports (
        source TEXT PRIMARY KEY,
        rows_done INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE blind_index (
        field TEXT NOT NULL,
        tag BLOB NOT NULL,
        record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
        PRIMARY KEY (field, tag, record_id)
    ) WITHOUT ROWID;
    CREATE INDEX blind_index_record ON blind_index (record_id);
    """,
    # 2: registrations are found through an index instead of a scan of the whole
    # log (every writer and every `audit verify` looks them up), and a
    # checkpoint keeps the Merkle state it was signed over, so an approval
    # checks only the entries after the approving officer's last checkpoint.
    # The action is derived from the entry itself (never written separately),
    # and an entry that is not JSON (tampered) simply has none.
    """
    ALTER TABLE audit ADD COLUMN action TEXT GENERATED ALWAYS AS (
        CASE WHEN json_valid(CAST(entry AS TEXT))
        THEN json_extract(CAST(entry AS TEXT), '$.action') END
    ) VIRTUAL;
    CREATE INDEX audit_action ON audit (action);
    ALTER TABLE checkpoints ADD COLUMN resume_state BLOB
    """,
]


@dataclass(frozen=True)
class UserRow:
    """A registered user: public keys and roles (never secrets)."""

    name: str
    roles: tuple[str, ...]
    enc_key: bytes
    sign_key: bytes
    created_at: str
    created_by: str


@dataclass(frozen=True)
class RecordRow:
    """Clear-text bookkeeping of a record (no child data)."""

    id: str
    type: str
    version: int
    created_at: str
    created_by: str
    updated_at: str
    consent: dict[str, Any]
    retain_until: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class NewRecord:
    """Everything inserted for one new record, in one call."""

    row: RecordRow
    fields: Sequence[tuple[str, int, bytes]]  # (name, field version, sealed value)
    blob: bytes
    source: str | None = None
    source_row: int | None = None


@dataclass(frozen=True)
class RequestRow:
    """An access request and its decision."""

    id: str
    requester: str
    records: tuple[str, ...]
    fields: tuple[str, ...]
    purpose: str
    reason: str
    created_at: str
    status: str
    decided_by: str | None
    decided_at: str | None
    decision_reason: str | None


@dataclass(frozen=True)
class GrantRow:
    """Server-side state of an issued approval token."""

    id: str
    request_id: str
    officer: str
    requester: str
    issued_at: str
    expires_at: str
    max_uses: int
    uses: int
    revoked_at: str | None
    revoked_by: str | None
    cache: bytes | None


@dataclass(frozen=True)
class CheckpointRow:
    """A stored signed checkpoint."""

    id: int
    size: int
    root: bytes
    note: str
    signer: str
    created_at: str


def _translate(exc: Exception, path: Path) -> Exception:
    msg = str(exc).lower()
    if "database or disk is full" in msg or "disk i/o error" in msg:
        return StorageError(
            f"the disk holding {path} is full or failing; free space and retry "
            "(the interrupted transaction was rolled back, nothing was lost)"
        )
    if "database is locked" in msg or "database is busy" in msg:
        return StorageError(
            f"the database {path} stayed locked by another childvault process for more than "
            f"{BUSY_TIMEOUT_S:.0f} s; retry when it has finished"
        )
    if "file is not a database" in msg or "malformed" in msg or "encrypted" in msg:
        return IntegrityError(
            f"the database {path} cannot be read with its key: it is damaged or the key slot "
            "does not belong to it; restore from backup"
        )
    if "thread" in msg:
        return StorageError(
            "a Vault object was used from another thread than the one that opened it: "
            "open one Vault per thread"
        )
    if "readonly" in msg or "unable to open" in msg:
        return StorageError(f"cannot write the database {path}: check permissions and space")
    return StorageError(f"database error on {path}: {exc.__class__.__name__}")


class _Cursor:
    """A cursor whose fetches translate SQLite errors as ``execute`` does: a
    damaged page is often met only when a row is stepped to, not at execute."""

    def __init__(self, cursor: Any, path: Path) -> None:
        self._cursor = cursor
        self._path = path

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> Any:
        return self._cursor.lastrowid

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlcipher3.Error as exc:
            raise _translate(exc, self._path) from exc

    def fetchall(self) -> list[Any]:
        try:
            return list(self._cursor.fetchall())
        except sqlcipher3.Error as exc:
            raise _translate(exc, self._path) from exc


class Store:
    """An open SQLCipher database. Not thread-safe; one per process or thread."""

    def __init__(self, path: Path, key: bytes, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise NotFound(f"no database at {self.path}: run `childvault init` first")
        try:
            conn = sqlcipher3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlcipher3.Error as exc:
            raise _translate(exc, self.path) from exc
        self._conn: Any = conn
        try:
            if create:
                # Private before the first write; SQLite gives the WAL the same mode.
                self.path.touch(mode=0o600, exist_ok=True)
                os.chmod(self.path, 0o600)
            # The key is raw 32 bytes, so SQLCipher skips its own KDF.
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            # Off (SQLCipher's own default since 4.5): it mlocks and wipes every
            # allocation, which cost more than half of an import's time, while the
            # pages it protects hold only field ciphertexts and Python keeps
            # copies of every secret anyway (docs/decisions.md, SECURITY.md).
            conn.execute("PRAGMA cipher_memory_security = OFF")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
            self._migrate()
        except sqlcipher3.Error as exc:
            conn.close()
            raise _translate(exc, self.path) from exc
        except Exception:
            conn.close()
            raise
        self._depth = 0

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- transactions -------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(_MIGRATIONS):
            raise StorageError(
                f"the database {self.path} was written by a newer childvault "
                f"(schema {version}); upgrade childvault"
            )
        for number in range(version, len(_MIGRATIONS)):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the lock: another process may have migrated meanwhile.
                now = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
                if now <= number:
                    for stmt in _MIGRATIONS[number].split(";"):
                        if stmt.strip():
                            self._conn.execute(stmt)
                    self._conn.execute(f"PRAGMA user_version = {number + 1}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def write(self) -> Iterator[Store]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, serialised."""
        if self._depth:
            # Nested use joins the outer transaction.
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlcipher3.Error as exc:
            raise _translate(exc, self.path) from exc
        self._depth = 1
        try:
            yield self
            self._conn.execute("COMMIT")
        except sqlcipher3.Error as exc:
            self._rollback()
            raise _translate(exc, self.path) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        with contextlib.suppress(sqlcipher3.Error):
            self._conn.execute("ROLLBACK")

    def _q(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return _Cursor(self._conn.execute(sql, params), self.path)
        except sqlcipher3.IntegrityError as exc:
            raise StorageError(f"database constraint violated: {exc}") from exc
        except sqlcipher3.Error as exc:
            raise _translate(exc, self.path) from exc

    def _many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlcipher3.IntegrityError as exc:
            raise StorageError(f"database constraint violated: {exc}") from exc
        except sqlcipher3.Error as exc:
            raise _translate(exc, self.path) from exc

    # -- meta ---------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value of the vault's settings table, or None."""
        row = self._q("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value in the vault's settings table."""
        self._q("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        """Remove a value from the vault's settings table."""
        self._q("DELETE FROM meta WHERE key = ?", (key,))

    # -- users --------------------------------------------------------------

    def add_user(self, user: UserRow) -> None:
        """Register a user's public keys and roles."""
        self._q(
            "INSERT INTO users (name, roles, enc_key, sign_key, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                user.name,
                ",".join(user.roles),
                user.enc_key,
                user.sign_key,
                user.created_at,
                user.created_by,
            ),
        )

    def get_user(self, name: str) -> UserRow | None:
        """A registered user, or None."""
        row = self._q(
            "SELECT name, roles, enc_key, sign_key, created_at, created_by FROM users "
            "WHERE name = ?",
            (name,),
        ).fetchone()
        return None if row is None else _user(row)

    def list_users(self) -> list[UserRow]:
        """All registered users, by name."""
        rows = self._q(
            "SELECT name, roles, enc_key, sign_key, created_at, created_by FROM users ORDER BY name"
        ).fetchall()
        return [_user(r) for r in rows]

    # -- custodian keys (LocalProvider) ---------------------------------------

    def add_custodian(self, generation: int, public_key: bytes, state: str, at: str) -> None:
        """Register a custodian key pair's public half."""
        self._q(
            "INSERT INTO custodians (generation, public_key, state, created_at) "
            "VALUES (?, ?, ?, ?)",
            (generation, public_key, state, at),
        )

    def set_custodian_state(self, generation: int, state: str) -> None:
        """Mark a custodian generation current, pending or retired."""
        self._q("UPDATE custodians SET state = ? WHERE generation = ?", (state, generation))

    def custodians(self) -> list[tuple[int, bytes, str]]:
        """(generation, public key, state) of every custodian generation."""
        rows = self._q(
            "SELECT generation, public_key, state FROM custodians ORDER BY generation"
        ).fetchall()
        return [(int(g), _blob(p), str(s)) for g, p, s in rows]

    def add_custodian_holder(self, generation: int, officer: str) -> None:
        """Note that ``officer``'s key slot holds the custodian secret of ``generation``.

        Bookkeeping only: the secret itself lives in the key-slot file, outside
        the database, so a copy of the database alone never holds it.
        """
        self._q(
            "INSERT OR IGNORE INTO custodian_holders (generation, officer) VALUES (?, ?)",
            (generation, officer),
        )

    def custodian_holders(self, generation: int) -> list[str]:
        """Officers holding the custodian secret of ``generation``."""
        rows = self._q(
            "SELECT officer FROM custodian_holders WHERE generation = ? ORDER BY officer",
            (generation,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def delete_custodian(self, generation: int) -> None:
        """Forget a custodian generation (its secret is removed from the key slots)."""
        self._q("DELETE FROM custodian_holders WHERE generation = ?", (generation,))
        self._q("DELETE FROM custodians WHERE generation = ?", (generation,))

    # -- records --------------------------------------------------------------

    def insert_records(self, records: Sequence[NewRecord]) -> None:
        """Insert records with their sealed fields and wrapped keys.

        Rows go in primary-key order: random ids inserted in order touch each
        B-tree page once per batch instead of once per row, which matters with
        ``cipher_memory_security`` (every page split allocates wiped memory).
        """
        records = sorted(records, key=lambda r: r.row.id)
        self._many(
            "INSERT INTO records (id, type, version, created_at, created_by, updated_at, "
            "consent, retain_until, metadata, source, source_row) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.row.id,
                    r.row.type,
                    r.row.version,
                    r.row.created_at,
                    r.row.created_by,
                    r.row.updated_at,
                    json.dumps(r.row.consent, sort_keys=True),
                    r.row.retain_until,
                    json.dumps(r.row.metadata, sort_keys=True, ensure_ascii=False),
                    r.source,
                    r.source_row,
                )
                for r in records
            ],
        )
        self._many(
            "INSERT INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?)",
            [
                (r.row.id, name, ver, value)
                for r in records
                for name, ver, value in sorted(r.fields, key=lambda f: f[0])
            ],
        )
        self._many(
            "INSERT INTO keyblobs (record_id, version, blob) VALUES (?, ?, ?)",
            [(r.row.id, r.row.version, r.blob) for r in records],
        )

    def get_record(self, record_id: str) -> RecordRow | None:
        """A record's bookkeeping row, or None."""
        row = self._q(_RECORD_SELECT + " WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _record(row)

    def iter_records(self, *, after: str = "", limit: int = 1000) -> list[RecordRow]:
        """A page of records ordered by id (keyset pagination keeps memory flat)."""
        rows = self._q(
            _RECORD_SELECT + " WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [_record(r) for r in rows]

    def count_records(self) -> int:
        """How many live records there are."""
        return int(self._q("SELECT count(*) FROM records").fetchone()[0])

    def records_due(self, day: str, *, limit: int = 1000) -> list[str]:
        """Ids of records whose retention date is before ``day`` (ISO date)."""
        rows = self._q(
            "SELECT id FROM records WHERE retain_until < ? ORDER BY retain_until, id LIMIT ?",
            (day, limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def update_record(
        self, record_id: str, *, version: int, updated_at: str, consent: dict[str, Any] | None
    ) -> None:
        """Bump a record's version (and optionally replace its consent)."""
        if consent is None:
            self._q(
                "UPDATE records SET version = ?, updated_at = ? WHERE id = ?",
                (version, updated_at, record_id),
            )
        else:
            self._q(
                "UPDATE records SET version = ?, updated_at = ?, consent = ?, retain_until = ? "
                "WHERE id = ?",
                (
                    version,
                    updated_at,
                    json.dumps(consent, sort_keys=True),
                    str(consent["retain_until"]),
                    record_id,
                ),
            )

    def import_progress(self, source: str) -> tuple[int, bool]:
        """(rows already processed, finished?) of an import source; (0, False) if new."""
        row = self._q(
            "SELECT rows_done, finished_at FROM imports WHERE source = ?", (source,)
        ).fetchone()
        return (0, False) if row is None else (int(row[0]), row[1] is not None)

    def set_import_progress(
        self, source: str, rows_done: int, *, at: str, finished: bool = False
    ) -> None:
        """Record how far an import got, in the same transaction as its rows."""
        self._q(
            "INSERT INTO imports (source, rows_done, started_at, finished_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET rows_done = excluded.rows_done, "
            "finished_at = excluded.finished_at",
            (source, rows_done, at, at if finished else None),
        )

    def get_fields(self, record_id: str, names: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """Sealed values of the named fields present on a record: name -> (version, sealed)."""
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = self._q(
            f"SELECT name, version, value FROM fields WHERE record_id = ? AND name IN ({marks})",  # noqa: S608
            (record_id, *names),
        ).fetchall()
        return {str(n): (int(v), _blob(b)) for n, v, b in rows}

    def field_names(self, record_id: str) -> list[str]:
        """Names of the fields stored for a record."""
        rows = self._q(
            "SELECT name FROM fields WHERE record_id = ? ORDER BY name", (record_id,)
        ).fetchall()
        return [str(r[0]) for r in rows]

    def put_field(self, record_id: str, name: str, version: int, sealed: bytes) -> None:
        """Store (or replace) one sealed field value."""
        self._q(
            "INSERT OR REPLACE INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?)",
            (record_id, name, version, sealed),
        )

    def get_keyblob(self, record_id: str) -> tuple[int, bytes] | None:
        """(record version, wrapped blob) of a record, or None."""
        row = self._q(
            "SELECT version, blob FROM keyblobs WHERE record_id = ?", (record_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), _blob(row[1]))

    def replace_keyblob(
        self, record_id: str, old_version: int, new_version: int, blob: bytes
    ) -> bool:
        """Move a record's blob to ``new_version`` only if it is still at ``old_version``."""
        cur = self._q(
            "UPDATE keyblobs SET version = ?, blob = ? WHERE record_id = ? AND version = ?",
            (new_version, blob, record_id, old_version),
        )
        return bool(cur.rowcount == 1)

    def put_keyblob_if_version(self, record_id: str, version: int, blob: bytes) -> bool:
        """Replace a blob only if the record is still at ``version`` (rotation vs correction)."""
        cur = self._q(
            "UPDATE keyblobs SET blob = ? WHERE record_id = ? AND version = ?",
            (blob, record_id, version),
        )
        return bool(cur.rowcount == 1)

    def compact_wal(self) -> None:
        """Checkpoint and truncate the WAL so deleted pages do not linger in it."""
        with contextlib.suppress(sqlcipher3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def iter_keyblobs(self, *, after: str = "", limit: int = 500) -> list[tuple[str, int, bytes]]:
        """A page of (record id, version, blob) ordered by id."""
        rows = self._q(
            "SELECT record_id, version, blob FROM keyblobs WHERE record_id > ? "
            "ORDER BY record_id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [(str(r), int(v), _blob(b)) for r, v, b in rows]

    def delete_record(self, record_id: str, *, at: str, by: str, reason: str) -> None:
        """Remove a record's rows (fields, keys, index) and leave a tombstone."""
        self._q("DELETE FROM records WHERE id = ?", (record_id,))
        self._q(
            "INSERT OR REPLACE INTO tombstones (record_id, deleted_at, deleted_by, reason) "
            "VALUES (?, ?, ?, ?)",
            (record_id, at, by, reason),
        )

    def tombstone(self, record_id: str) -> tuple[str, str, str, bool] | None:
        """(deleted_at, deleted_by, reason, key destroyed?) of a deleted record, or None."""
        row = self._q(
            "SELECT deleted_at, deleted_by, reason, key_destroyed FROM tombstones "
            "WHERE record_id = ?",
            (record_id,),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]), bool(row[3]))

    def mark_key_destroyed(self, record_ids: Sequence[str]) -> None:
        """Note that the provider destroyed these records' key material."""
        self._many(
            "UPDATE tombstones SET key_destroyed = 1 WHERE record_id = ?",
            [(r,) for r in record_ids],
        )

    def pending_shreds(self, *, limit: int = 1000) -> list[str]:
        """Deleted records whose external key material is not yet confirmed destroyed."""
        rows = self._q(
            "SELECT record_id FROM tombstones WHERE key_destroyed = 0 ORDER BY deleted_at LIMIT ?",
            (limit,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # -- blind index ------------------------------------------------------------

    def add_index_tags(self, rows: Sequence[tuple[str, bytes, str]]) -> None:
        """Add (field, tag, record id) rows to the blind index (in key order, see above)."""
        self._many(
            "INSERT OR IGNORE INTO blind_index (field, tag, record_id) VALUES (?, ?, ?)",
            sorted(rows),
        )

    def drop_index_tags(self, record_id: str, field: str) -> None:
        """Remove a record's tags for one field (before re-indexing a corrected value)."""
        self._q("DELETE FROM blind_index WHERE record_id = ? AND field = ?", (record_id, field))

    def find_by_tag(self, field: str, tag: bytes) -> list[str]:
        """Record ids whose tag for ``field`` equals ``tag`` (candidates)."""
        rows = self._q(
            "SELECT record_id FROM blind_index WHERE field = ? AND tag = ? ORDER BY record_id",
            (field, tag),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # -- audit log ------------------------------------------------------------

    def audit_head(self) -> tuple[int, bytes | None]:
        """(next sequence number, hash of the last entry or None)."""
        row = self._q("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0, None
        return int(row[0]) + 1, _blob(row[1])

    def append_audit(self, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Append (seq, entry bytes, entry hash) rows."""
        try:
            self._conn.executemany("INSERT INTO audit (seq, entry, hash) VALUES (?, ?, ?)", rows)
        except sqlcipher3.IntegrityError as exc:
            raise IntegrityError(
                "audit sequence collision: the log was appended outside a serialised transaction"
            ) from exc
        except sqlcipher3.Error as exc:
            raise _translate(exc, self.path) from exc

    def audit_size(self) -> int:
        """Number of log entries (by count, not by the last sequence number)."""
        return int(self._q("SELECT count(*) FROM audit").fetchone()[0])

    def iter_audit(
        self, start: int = 0, *, batch: int = 5000
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Stream (seq, entry, hash) in sequence order, in pages to keep memory flat."""
        audit_row = self.audit_row
        for rows in self.audit_pages(start, batch=batch):
            for row in rows:
                yield audit_row(row)

    def audit_pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[list[Any]]:
        """The raw (seq, entry, hash) rows from ``start`` in sequence order, a page at a time.

        Unconverted, for ``audit verify``'s bulk checks; pass each row through
        :meth:`audit_row` to get checked types (a column altered to another
        type raises there, when that row is reached).
        """
        after = start - 1
        while True:
            rows = self._q(
                "SELECT seq, entry, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, batch),
            ).fetchall()
            if not rows:
                return
            yield rows
            after = int(rows[-1][0])

    @staticmethod
    def audit_row(row: Any) -> tuple[int, bytes, bytes]:
        """One raw row of :meth:`audit_pages` as (seq, entry, hash)."""
        seq, entry, digest = row
        return int(seq), _blob(entry), _blob(digest)

    def audit_hashes(self, upto: int) -> list[bytes]:
        """Leaf hashes of entries 0..upto-1, for building proofs."""
        rows = self._q("SELECT hash FROM audit WHERE seq < ? ORDER BY seq", (upto,)).fetchall()
        return [_blob(r[0]) for r in rows]

    def audit_entries_with_actions(self, actions: Sequence[str]) -> list[bytes]:
        """Entries whose action is one of ``actions``, through the action index.

        The index is derived from the entries; callers still parse each entry
        and check its action (a damaged index can hide an entry, which makes
        the caller's check fail closed, but cannot invent one).
        """
        marks = ", ".join("?" for _ in actions)
        rows = self._q(
            f"SELECT entry FROM audit WHERE action IN ({marks}) ORDER BY seq",  # noqa: S608
            list(actions),
        ).fetchall()
        return [_blob(r[0]) for r in rows]

    def audit_entry(self, seq: int) -> tuple[bytes, bytes] | None:
        """(entry, hash) at ``seq``, or None."""
        row = self._q("SELECT entry, hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else (_blob(row[0]), _blob(row[1]))

    # -- requests and grants ------------------------------------------------------

    def add_request(self, req: RequestRow) -> None:
        """Store a new access request."""
        self._q(
            "INSERT INTO requests (id, requester, records, fields, purpose, reason, created_at, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                req.id,
                req.requester,
                json.dumps(list(req.records)),
                json.dumps(list(req.fields)),
                req.purpose,
                req.reason,
                req.created_at,
                req.status,
            ),
        )

    def get_request(self, request_id: str) -> RequestRow | None:
        """An access request, or None."""
        row = self._q(_REQUEST_SELECT + " WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _request(row)

    def list_requests(self, status: str | None = "pending") -> list[RequestRow]:
        """Requests with ``status`` (all if None), oldest first."""
        if status is None:
            rows = self._q(_REQUEST_SELECT + " ORDER BY created_at, id").fetchall()
        else:
            rows = self._q(
                _REQUEST_SELECT + " WHERE status = ? ORDER BY created_at, id", (status,)
            ).fetchall()
        return [_request(r) for r in rows]

    def decide_request(
        self, request_id: str, *, status: str, by: str, at: str, reason: str | None
    ) -> bool:
        """Mark a pending request approved or denied; False if it was not pending."""
        cur = self._q(
            "UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ? "
            "WHERE id = ? AND status = 'pending'",
            (status, by, at, reason, request_id),
        )
        return bool(cur.rowcount == 1)

    def add_grant(self, grant: GrantRow) -> None:
        """Record an issued grant."""
        self._q(
            "INSERT INTO grants (id, request_id, officer, requester, issued_at, expires_at, "
            "max_uses, uses) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (
                grant.id,
                grant.request_id,
                grant.officer,
                grant.requester,
                grant.issued_at,
                grant.expires_at,
                grant.max_uses,
            ),
        )

    def get_grant(self, grant_id: str) -> GrantRow | None:
        """A grant's server-side state, or None."""
        row = self._q(
            "SELECT id, request_id, officer, requester, issued_at, expires_at, max_uses, uses, "
            "revoked_at, revoked_by, cache FROM grants WHERE id = ?",
            (grant_id,),
        ).fetchone()
        if row is None:
            return None
        return GrantRow(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            str(row[3]),
            str(row[4]),
            str(row[5]),
            int(row[6]),
            int(row[7]),
            None if row[8] is None else str(row[8]),
            None if row[9] is None else str(row[9]),
            None if row[10] is None else _blob(row[10]),
        )

    def use_grant(self, grant_id: str) -> bool:
        """Consume one use if any is left and the grant is not revoked."""
        cur = self._q(
            "UPDATE grants SET uses = uses + 1 WHERE id = ? AND uses < max_uses "
            "AND revoked_at IS NULL",
            (grant_id,),
        )
        return bool(cur.rowcount == 1)

    def refund_grant_use(self, grant_id: str) -> bool:
        """Give back a use consumed by a read that failed before any plaintext."""
        cur = self._q(
            "UPDATE grants SET uses = uses - 1 WHERE id = ? AND uses > 0 AND revoked_at IS NULL",
            (grant_id,),
        )
        return bool(cur.rowcount == 1)

    def set_grant_cache(self, grant_id: str, cache: bytes | None) -> None:
        """Keep redeemed key material (sealed to the requester) for later uses."""
        self._q("UPDATE grants SET cache = ? WHERE id = ?", (cache, grant_id))

    def revoke_grant(self, grant_id: str, *, at: str, by: str) -> bool:
        """Revoke a grant; False if unknown or already revoked."""
        cur = self._q(
            "UPDATE grants SET revoked_at = ?, revoked_by = ?, cache = NULL "
            "WHERE id = ? AND revoked_at IS NULL",
            (at, by, grant_id),
        )
        return bool(cur.rowcount == 1)

    # -- checkpoints ------------------------------------------------------------

    def add_checkpoint(
        self, size: int, root: bytes, note: str, signer: str, at: str, resume_state: bytes
    ) -> int:
        """Store a signed checkpoint with the Merkle state it was signed over; return its id."""
        cur = self._q(
            "INSERT INTO checkpoints (size, root, note, signer, created_at, resume_state) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (size, root, note, signer, at, resume_state),
        )
        return int(cur.lastrowid)

    def latest_checkpoint_by(self, signer: str) -> tuple[str, bytes] | None:
        """(note, resume state) of ``signer``'s checkpoint of the largest tree that has one.

        The columns are only claims: the caller verifies the note's signature
        with its own key and the state against the signed root.
        """
        row = self._q(
            "SELECT note, resume_state FROM checkpoints "
            "WHERE signer = ? AND length(resume_state) > 0 "
            "ORDER BY size DESC, id DESC LIMIT 1",
            (signer,),
        ).fetchone()
        if row is None or not isinstance(row[0], str) or not isinstance(row[1], bytes):
            return None
        return row[0], row[1]

    def list_checkpoints(self) -> list[CheckpointRow]:
        """Every stored checkpoint, by tree size then id."""
        rows = self._q(
            "SELECT id, size, root, note, signer, created_at FROM checkpoints ORDER BY size, id"
        ).fetchall()
        return [
            CheckpointRow(int(i), int(s), _blob(r), str(n), str(g), str(c))
            for i, s, r, n, g, c in rows
        ]


_RECORD_SELECT = (
    "SELECT id, type, version, created_at, created_by, updated_at, consent, retain_until, "
    "metadata FROM records"
)
_REQUEST_SELECT = (
    "SELECT id, requester, records, fields, purpose, reason, created_at, status, decided_by, "
    "decided_at, decision_reason FROM requests"
)


def _blob(value: Any) -> bytes:
    """A BLOB column as bytes. Someone editing the database may have stored TEXT
    (e.g. with SQL ``replace``); that is tampering, caught by the hash checks,
    not a crash."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise IntegrityError(
        "a binary column holds a value of the wrong type: the database was altered"
    )


def _user(row: Sequence[Any]) -> UserRow:
    return UserRow(
        str(row[0]),
        tuple(r for r in str(row[1]).split(",") if r),
        _blob(row[2]),
        _blob(row[3]),
        str(row[4]),
        str(row[5]),
    )


def _record(row: Sequence[Any]) -> RecordRow:
    return RecordRow(
        str(row[0]),
        str(row[1]),
        int(row[2]),
        str(row[3]),
        str(row[4]),
        str(row[5]),
        json.loads(row[6]),
        str(row[7]),
        json.loads(row[8]),
    )


def _request(row: Sequence[Any]) -> RequestRow:
    return RequestRow(
        str(row[0]),
        str(row[1]),
        tuple(json.loads(row[2])),
        tuple(json.loads(row[3])),
        str(row[4]),
        str(row[5]),
        str(row[6]),
        str(row[7]),
        None if row[8] is None else str(row[8]),
        None if row[9] is None else str(row[9]),
        None if row[10] is None else str(row[10]),
    )
