"""The SQLCipher connection: opening, migrations, transactions, error translation.

SQLCipher (``sqlcipher3``) with a random 32-byte raw key, WAL journal, foreign
keys on, and versioned migrations.

Transactions: :meth:`Connection.transaction` opens ``BEGIN IMMEDIATE`` so
concurrent writers serialise (one linear audit chain); SQLite's busy timeout
retries with backoff for up to :data:`BUSY_TIMEOUT_S` before a clear
:class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlcipher3

from childvault._i18n import _t
from childvault.keys import IntegrityError, NotFound, StorageError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

#: :attr:`Connection._owner` while a :class:`BackgroundCommit` has the
#: connection: only its commit thread may use it then, no other.
_LENT = 0

#: Most parameters one multi-row ``INSERT`` binds (:func:`_multirow`); SQLite
#: allows 32,766.
_MAX_PARAMS = 1024

#: A plain one-row ``INSERT ... VALUES (?, ...)``, optionally ``ON CONFLICT DO
#: NOTHING``: what :func:`_multirow` may repeat for many rows.
_ONE_ROW_INSERT = re.compile(
    r"(INSERT INTO \w+ \([\w, ]+\) VALUES )(\(\?(?:, \?)*\))( ON CONFLICT DO NOTHING)?"
)

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
    # 3: signed statements (docs/trust.md). A trust statement's envelope is
    # kept beside the log entry that carries it (keyed by that entry's seq;
    # the entry's detail holds the envelope's SHA-256), and each verifier
    # keeps the trust state it last verified, signed by its own key, so the
    # next verification replays only the newer entries. A log entry carries
    # its actor's Ed25519 signature over its hash (``sig``).
    """
    CREATE TABLE statements (seq INTEGER PRIMARY KEY, envelope BLOB NOT NULL);
    ALTER TABLE audit ADD COLUMN sig BLOB;
    CREATE TABLE trust_states (
        verifier TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        head BLOB NOT NULL,
        state BLOB NOT NULL,
        sig BLOB NOT NULL
    )
    """,
    # 4: a request's and a grant's log entries are found through an index
    # (`basis_of`, revocation) instead of a scan of every entry of the action.
    # Like the action, the ids are derived from the signed entry bytes (never
    # written separately), and callers still check each entry they get.
    """
    ALTER TABLE audit ADD COLUMN request_ref TEXT GENERATED ALWAYS AS (
        CASE WHEN json_valid(CAST(entry AS TEXT))
        THEN json_extract(CAST(entry AS TEXT), '$.request') END
    ) VIRTUAL;
    ALTER TABLE audit ADD COLUMN grant_ref TEXT GENERATED ALWAYS AS (
        CASE WHEN json_valid(CAST(entry AS TEXT))
        THEN json_extract(CAST(entry AS TEXT), '$.grant') END
    ) VIRTUAL;
    CREATE INDEX audit_request_ref ON audit (request_ref, action);
    CREATE INDEX audit_grant_ref ON audit (grant_ref, action)
    """,
    # 5: the transfers report (`transfers`) reads the entries whose detail names
    # a recipient through an index instead of every `grant.read` entry. Derived
    # from the signed entry bytes like the action and the ids above; callers
    # still check each entry they get.
    """
    ALTER TABLE audit ADD COLUMN recipient_ref TEXT GENERATED ALWAYS AS (
        CASE WHEN json_valid(CAST(entry AS TEXT))
        THEN json_extract(CAST(entry AS TEXT), '$.detail.recipient') END
    ) VIRTUAL;
    CREATE INDEX audit_recipient_ref ON audit (action) WHERE recipient_ref IS NOT NULL
    """,
    # 6: the checkpoints table's look-ups through indexes instead of a scan of
    # every checkpoint (one is stored per approval): `latest_by` (signer, then
    # the largest size; the rowid, which is `id`, ends every SQLite index, so
    # the tie on size is ordered too) and `since`/`all` (size, then id);
    # `after` and `through` already use the primary key. Indexes only: no
    # stored value changes, so no stored-format decision or vectors, and a
    # dropped index changes only the speed (docs/decisions.md, "The
    # checkpoints table's indexes").
    """
    CREATE INDEX checkpoints_signer_size ON checkpoints (signer, size);
    CREATE INDEX checkpoints_size ON checkpoints (size)
    """,
]


def translate(exc: Exception, path: Path) -> Exception:
    msg = str(exc).lower()
    if "database or disk is full" in msg or "disk i/o error" in msg:
        return StorageError(
            _t(
                "the disk holding {path} is full or failing; free space and retry (the "
                "interrupted transaction was rolled back, nothing was lost)",
                path=path,
            )
        )
    if "database is locked" in msg or "database is busy" in msg:
        return StorageError(
            _t(
                "the database {path} stayed locked by another childvault process for more than "
                "{seconds} s; retry when it has finished",
                path=path,
                seconds=round(BUSY_TIMEOUT_S),
            )
        )
    if "file is not a database" in msg or "malformed" in msg or "encrypted" in msg:
        return IntegrityError(
            _t(
                "the database {path} cannot be read with its key: it is damaged or the key slot "
                "does not belong to it; restore from backup",
                path=path,
            )
        )
    if "thread" in msg:
        return StorageError(
            _t(
                "a Vault object was used from another thread than the one that opened it: open "
                "one Vault per thread"
            )
        )
    if "readonly" in msg or "unable to open" in msg:
        return StorageError(
            _t("cannot write the database {path}: check permissions and space", path=path)
        )
    return StorageError(
        _t("database error on {path}: {kind}", path=path, kind=exc.__class__.__name__)
    )


def _multirow(sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]] | None:
    """``sql`` for ``rows`` as few multi-row ``INSERT`` statements (``VALUES (..),
    (..)``, each with its parameters), or None when ``sql`` is not a plain
    one-row insert (:data:`_ONE_ROW_INSERT`) or a row has not its parameter count.

    Why: ``executemany`` resets, binds and steps each row on its own, in
    Python's sqlite3 module; an import writes ~16 rows a record. One
    statement a few thousand rows long is bound once and stepped once (and
    gives up the GIL once): ~5 % of an import's CPU less (docs/decisions.md,
    "Multi-row inserts"). The rows are inserted in order, as by
    ``executemany``, with the same constraints checked, in the caller's
    transaction; a violation fails the whole statement (``executemany`` kept
    the rows before the bad one until the transaction was rolled back).
    """
    match = _ONE_ROW_INSERT.fullmatch(sql)
    if match is None:
        return None
    head, group, tail = match.group(1), match.group(2), match.group(3) or ""
    width = group.count("?")
    if any(len(row) != width for row in rows):
        return None
    per = max(1, _MAX_PARAMS // width)
    out: list[tuple[str, list[Any]]] = []
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        out.append(
            (
                head + ", ".join([group] * len(chunk)) + tail,
                [value for row in chunk for value in row],
            )
        )
    return out


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
            raise translate(exc, self._path) from exc

    def fetchall(self) -> list[Any]:
        try:
            return list(self._cursor.fetchall())
        except sqlcipher3.Error as exc:
            raise translate(exc, self._path) from exc


class Connection:
    """An open SQLCipher database. Not thread-safe: used by the thread that opened
    it, except for the COMMIT a :class:`BackgroundCommit` runs on its thread,
    during which no other thread may use it."""

    def __init__(self, path: Path, key: bytes, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise NotFound(_t("no database at {path}: run `childvault init` first", path=self.path))
        # The thread that may use the connection. sqlite3's own same-thread check
        # is off so that a BackgroundCommit can run an import batch's COMMIT on
        # its thread; this owner check keeps "one thread at a time" (fail closed).
        self._owner = self._opener = threading.get_ident()
        try:
            conn = sqlcipher3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlcipher3.Error as exc:
            raise translate(exc, self.path) from exc
        self.conn: Any = conn
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
            raise translate(exc, self.path) from exc
        except Exception:
            conn.close()
            raise
        self._depth = 0

    def close(self) -> None:
        """Close the connection."""
        self._check_thread()
        self.conn.close()

    def _check_thread(self) -> None:
        owner = self._owner
        if threading.get_ident() != owner:
            if owner == self._opener:
                # What sqlite3's own check said (translate()): the caller's mistake.
                raise StorageError(
                    _t(
                        "a Vault object was used from another thread than the one that opened "
                        "it: open one Vault per thread"
                    )
                )
            raise StorageError(
                _t("the database connection is in use by another thread of this process")
            )

    # -- transactions -------------------------------------------------------

    def _migrate(self) -> None:
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(_MIGRATIONS):
            raise StorageError(
                _t(
                    "the database {path} was written by a newer childvault (schema {version}); "
                    "upgrade childvault",
                    path=self.path,
                    version=version,
                )
            )
        for number in range(version, len(_MIGRATIONS)):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                # Re-read under the lock: another process may have migrated meanwhile.
                now = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
                if now <= number:
                    for stmt in _MIGRATIONS[number].split(";"):
                        if stmt.strip():
                            self.conn.execute(stmt)
                    self.conn.execute(f"PRAGMA user_version = {number + 1}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing, serialised."""
        # Before the nesting test: a transaction whose COMMIT is in flight on a
        # BackgroundCommit's thread is no transaction to join.
        self._check_thread()
        if self._depth:
            # Nested use joins the outer transaction.
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlcipher3.Error as exc:
            raise translate(exc, self.path) from exc
        self._depth = 1
        try:
            yield
            self.conn.execute("COMMIT")
        except sqlcipher3.Error as exc:
            self._rollback()
            raise translate(exc, self.path) from exc
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        with contextlib.suppress(sqlcipher3.Error):
            self.conn.execute("ROLLBACK")

    def q(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Execute one statement; SQLite errors become childvault errors."""
        self._check_thread()
        try:
            return _Cursor(self.conn.execute(sql, params), self.path)
        except sqlcipher3.IntegrityError as exc:
            raise StorageError(_t("database constraint violated: {exc}", exc=exc)) from exc
        except sqlcipher3.Error as exc:
            raise translate(exc, self.path) from exc

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Execute one statement for many rows; SQLite errors become childvault errors."""
        self._check_thread()
        try:
            self._executemany(sql, rows)
        except sqlcipher3.IntegrityError as exc:
            raise StorageError(_t("database constraint violated: {exc}", exc=exc)) from exc
        except sqlcipher3.Error as exc:
            raise translate(exc, self.path) from exc

    def append(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert audit rows; a duplicate sequence number is an :class:`IntegrityError`."""
        self._check_thread()
        try:
            self._executemany(sql, rows)
        except sqlcipher3.IntegrityError as exc:
            raise IntegrityError(
                _t(
                    "audit sequence collision: the log was appended outside a serialised "
                    "transaction"
                )
            ) from exc
        except sqlcipher3.Error as exc:
            raise translate(exc, self.path) from exc

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        # Materialised first: _multirow may decline after reading the rows.
        rows = rows if isinstance(rows, list | tuple) else list(rows)
        statements = _multirow(sql, rows)
        if statements is None:
            self.conn.executemany(sql, rows)
            return
        for statement, params in statements:
            self.conn.execute(statement, params)

    def compact(self) -> None:
        """Checkpoint and truncate the WAL so deleted pages do not linger in it."""
        self._check_thread()
        with contextlib.suppress(sqlcipher3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class BackgroundCommit:
    """Transactions whose COMMIT runs on a thread of its own while the caller
    goes on (an import stages its next batch meanwhile: docs/decisions.md,
    "An import commits a batch while it prepares the next").

    :meth:`transaction` is :meth:`Connection.transaction` up to the COMMIT,
    which it starts on the commit thread and returns; :meth:`wait` finishes it
    and raises its failure (the transaction then rolled back, as a failed
    COMMIT of :meth:`Connection.transaction` is). Until then the connection
    belongs to the commit thread: any other use raises :class:`StorageError`.
    The COMMIT is one ``sqlite3_step`` (SQLCipher encrypting the dirty pages
    into the WAL, then fsync), run without the GIL.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[None] | None = None
        self._lender = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE``, the body, then the COMMIT started in the background
        (the previous one is waited for first). Not nested in another transaction."""
        self.wait()
        conn = self._conn
        conn._check_thread()
        if conn._depth:
            raise StorageError(_t("a background commit cannot join an open transaction"))
        try:
            conn.conn.execute("BEGIN IMMEDIATE")
        except sqlcipher3.Error as exc:
            raise translate(exc, conn.path) from exc
        conn._depth = 1
        try:
            yield
        except sqlcipher3.Error as exc:
            conn._rollback()
            conn._depth = 0
            raise translate(exc, conn.path) from exc
        except BaseException:
            conn._rollback()
            conn._depth = 0
            raise
        if self._pool is None:
            # Imported here: a command that commits in turn loads no thread pool.
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="childvault-commit")
        self._lender = conn._owner
        conn._owner = _LENT
        try:
            self._future = self._pool.submit(self._commit)
        except BaseException:
            conn._owner = self._lender
            conn._rollback()
            conn._depth = 0
            raise

    def _commit(self) -> None:
        conn = self._conn
        conn._owner = threading.get_ident()
        try:
            conn.conn.execute("COMMIT")
        except sqlcipher3.Error as exc:
            conn._rollback()
            raise translate(exc, conn.path) from exc
        except BaseException:
            conn._rollback()
            raise
        finally:
            conn._depth = 0
            conn._owner = _LENT

    def wait(self) -> None:
        """Finish the COMMIT in flight, if any, and raise its failure. Only the
        thread that lent the connection may: another thread taking the result
        would let the owner's own ``wait`` return as if the batch had committed
        (review RV10-4)."""
        future = self._future
        if future is None:
            return
        if threading.get_ident() != self._lender:
            raise StorageError(
                _t("the database connection is in use by another thread of this process")
            )
        try:
            future.result()
        finally:
            # Given back only once the commit thread is done with it: interrupted
            # while waiting, the connection stays unusable (fail closed) and the
            # result stays for the next wait, so a failed COMMIT is never lost.
            if future.done():
                self._future = None
                self._conn._owner = self._lender

    def close(self) -> None:
        """:meth:`wait`, then stop the commit thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
