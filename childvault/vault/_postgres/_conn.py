"""The PostgreSQL connection: pool, migrations, roles, transactions, error translation.

psycopg 3 with a :class:`psycopg_pool.ConnectionPool`. Connections are in
autocommit mode; a backend keeps the one it works on between statements, and
:meth:`Connection.transaction` first takes :data:`WRITE_LOCK` with ``pg_advisory_xact_lock``,
so writers serialise across every process and replica on the database exactly
as ``BEGIN IMMEDIATE`` serialises them on one SQLCipher file: one linear audit
chain, and the read-check-write steps of the services see no interleaving.
The lock is released by PostgreSQL at commit or rollback (also when a client
dies mid-transaction).

Schema changes run only in :func:`migrate`, connected as the migration role
that owns the tables; the service role gets the grants of :func:`grant_service`
(``SELECT, INSERT`` on the log and checkpoints, nothing that rewrites them).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from childvault._i18n import _t
from childvault.keys import IntegrityError, NotFound, StorageError

#: Advisory lock key every writer takes first ("cvwrite"); any constant, the same everywhere.
WRITE_LOCK = 0x63_76_77_72_69_74_65
#: How long a writer waits for another writer's transaction (``lock_timeout``), seconds.
LOCK_TIMEOUT_S = 30.0
#: How long to wait for a pooled connection before a clear error, seconds.
POOL_TIMEOUT_S = 30.0
#: How long a checkout waits for the pool before asking the database directly,
#: seconds. A pooled connect takes milliseconds; a longer wait means the
#: database is down or the pool's reconnection is backing off (see
#: :meth:`Connection._checkout`).
POOL_QUICK_S = 2.0
#: ``connect_timeout`` of that direct probe, seconds.
PROBE_TIMEOUT_S = 5
#: How often the database is probed while it does not answer, seconds.
PROBE_EVERY_S = 0.5

# The function behind the audit log's action column: the action named in the
# entry's JSON, or NULL for an entry that is not JSON (tampered). Declared
# IMMUTABLE so a generated column may use it (it depends on its argument only);
# the exception block keeps a damaged entry from failing the INSERT, as
# json_valid does in the SQLCipher schema.
_ACTION_FUNCTION = """
CREATE FUNCTION cv_entry_action(entry bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    RETURN convert_from(entry, 'UTF8')::jsonb ->> 'action';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$fn$
"""

#: The schema migrations, in order; ``cv_schema`` holds the numbers applied.
#: Migration 1 is the SQLCipher schema (both of its migrations) translated:
#: ``bytea`` for blobs, ``bigint`` for integers that can grow, JSON kept as text
#: so both stores hold the same bytes.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE users (
            name text PRIMARY KEY,
            roles text NOT NULL,
            enc_key bytea NOT NULL,
            sign_key bytea NOT NULL,
            created_at text NOT NULL,
            created_by text NOT NULL)""",
        """CREATE TABLE custodians (
            generation bigint PRIMARY KEY,
            public_key bytea NOT NULL,
            state text NOT NULL CHECK (state IN ('current', 'pending', 'retired')),
            created_at text NOT NULL)""",
        """CREATE TABLE custodian_holders (
            generation bigint NOT NULL REFERENCES custodians(generation) ON DELETE CASCADE,
            officer text NOT NULL REFERENCES users(name),
            PRIMARY KEY (generation, officer))""",
        """CREATE TABLE records (
            id text PRIMARY KEY,
            type text NOT NULL,
            version bigint NOT NULL,
            created_at text NOT NULL,
            created_by text NOT NULL,
            updated_at text NOT NULL,
            consent text NOT NULL,
            retain_until text NOT NULL,
            metadata text NOT NULL,
            source text,
            source_row bigint,
            UNIQUE (source, source_row))""",
        "CREATE INDEX records_retain ON records (retain_until)",
        """CREATE TABLE fields (
            record_id text NOT NULL REFERENCES records(id) ON DELETE CASCADE,
            name text NOT NULL,
            version bigint NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (record_id, name))""",
        """CREATE TABLE keyblobs (
            record_id text PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
            version bigint NOT NULL,
            blob bytea NOT NULL)""",
        """CREATE TABLE tombstones (
            record_id text PRIMARY KEY,
            deleted_at text NOT NULL,
            deleted_by text NOT NULL,
            reason text NOT NULL,
            key_destroyed integer NOT NULL DEFAULT 0)""",
        _ACTION_FUNCTION,
        """CREATE TABLE audit (
            seq bigint PRIMARY KEY,
            entry bytea NOT NULL,
            hash bytea NOT NULL,
            action text GENERATED ALWAYS AS (cv_entry_action(entry)) STORED)""",
        "CREATE INDEX audit_action ON audit (action)",
        """CREATE TABLE requests (
            id text PRIMARY KEY,
            requester text NOT NULL,
            records text NOT NULL,
            fields text NOT NULL,
            purpose text NOT NULL,
            reason text NOT NULL,
            created_at text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
            decided_by text,
            decided_at text,
            decision_reason text)""",
        "CREATE INDEX requests_status ON requests (status)",
        """CREATE TABLE grants (
            id text PRIMARY KEY,
            request_id text NOT NULL REFERENCES requests(id),
            officer text NOT NULL,
            requester text NOT NULL,
            issued_at text NOT NULL,
            expires_at text NOT NULL,
            max_uses bigint NOT NULL,
            uses bigint NOT NULL DEFAULT 0,
            revoked_at text,
            revoked_by text,
            cache bytea)""",
        """CREATE TABLE checkpoints (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            size bigint NOT NULL,
            root bytea NOT NULL,
            note text NOT NULL,
            signer text NOT NULL,
            created_at text NOT NULL,
            resume_state bytea)""",
        """CREATE TABLE imports (
            source text PRIMARY KEY,
            rows_done bigint NOT NULL,
            started_at text NOT NULL,
            finished_at text)""",
        """CREATE TABLE blind_index (
            field text NOT NULL,
            tag bytea NOT NULL,
            record_id text NOT NULL REFERENCES records(id) ON DELETE CASCADE,
            PRIMARY KEY (field, tag, record_id))""",
        "CREATE INDEX blind_index_record ON blind_index (record_id)",
    ],
    # 2: signed statements (docs/trust.md), as SQLCipher's migration 3: a trust
    # statement's envelope beside the log entry that carries it, each verifier's
    # signed saved trust state, and the actor's signature of every log entry.
    [
        "CREATE TABLE statements (seq bigint PRIMARY KEY, envelope bytea NOT NULL)",
        "ALTER TABLE audit ADD COLUMN sig bytea",
        """CREATE TABLE trust_states (
            verifier text PRIMARY KEY,
            size bigint NOT NULL,
            head bytea NOT NULL,
            state bytea NOT NULL,
            sig bytea NOT NULL)""",
    ],
    # 3: the request nonces of `childvault serve`, shared by every replica on
    # this database (replay protection across replicas and restarts). The
    # primary key makes "record unless live" one atomic statement; expired
    # pairs are purged by expiry (_nonces.py).
    [
        """CREATE TABLE nonces (
            username text NOT NULL,
            nonce text NOT NULL,
            expires_at double precision NOT NULL,
            PRIMARY KEY (username, nonce))""",
        "CREATE INDEX nonces_expiry ON nonces (expires_at)",
    ],
    # 4: as SQLCipher's migration 4: a request's and a grant's log entries
    # through an index on ids derived from the entry bytes (callers re-check).
    [
        """CREATE FUNCTION cv_entry_member(entry bytea, member text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    RETURN convert_from(entry, 'UTF8')::jsonb ->> member;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$fn$""",
        """ALTER TABLE audit ADD COLUMN request_ref text
            GENERATED ALWAYS AS (cv_entry_member(entry, 'request')) STORED""",
        """ALTER TABLE audit ADD COLUMN grant_ref text
            GENERATED ALWAYS AS (cv_entry_member(entry, 'grant')) STORED""",
        "CREATE INDEX audit_request_ref ON audit (request_ref, action)",
        "CREATE INDEX audit_grant_ref ON audit (grant_ref, action)",
    ],
    # 5: as SQLCipher's migration 5: the entries whose detail names a recipient
    # (the transfers report) through an index (callers re-check).
    [
        """CREATE FUNCTION cv_entry_detail_member(entry bytea, member text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    RETURN convert_from(entry, 'UTF8')::jsonb -> 'detail' ->> member;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$fn$""",
        """ALTER TABLE audit ADD COLUMN recipient_ref text
            GENERATED ALWAYS AS (cv_entry_detail_member(entry, 'recipient')) STORED""",
        "CREATE INDEX audit_recipient_ref ON audit (action) WHERE recipient_ref IS NOT NULL",
    ],
    # 6: as SQLCipher's migration 6: the checkpoints by signer then size
    # (`latest_by`) and by size (`since`, `all`) through indexes, not a scan
    # of one row per approval ever made. The id ends each key: a PostgreSQL
    # index has no implicit row order, and both queries order ties on size by
    # id. Indexes only: no stored value changes (no decision or vectors).
    [
        "CREATE INDEX checkpoints_signer_size ON checkpoints (signer, size, id)",
        "CREATE INDEX checkpoints_size ON checkpoints (size, id)",
    ],
]

#: Tables the service role may only read and append to (never UPDATE, DELETE, TRUNCATE).
APPEND_ONLY = ("audit", "checkpoints", "statements")
#: Tables the service role reads and writes.
READ_WRITE = (
    "meta",
    "users",
    "custodians",
    "custodian_holders",
    "records",
    "fields",
    "keyblobs",
    "tombstones",
    "requests",
    "grants",
    "imports",
    "blind_index",
    "trust_states",
    "nonces",
)

_VERSION_TABLE = "cv_schema"


def describe(dsn: str) -> str:
    """A DSN without its password, for messages (host, port, database, user)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL database"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    return (
        f"postgresql://{parts.get('user', '')}@{host}:{parts.get('port', 5432)}"
        f"/{parts.get('dbname', '')}"
    )


def translate(exc: Exception, where: str) -> Exception:
    """A psycopg error as a childvault error naming ``where`` (never the password)."""
    if isinstance(exc, errors.InsufficientPrivilege):
        return StorageError(
            _t(
                "the database role lacks a privilege on {where}: a service role may not change "
                "the log or the schema (run schema changes as the migration role)",
                where=where,
            )
        )
    if isinstance(exc, errors.LockNotAvailable | errors.QueryCanceled):
        return StorageError(
            _t(
                "{where} stayed locked by another childvault writer for more than {seconds} s; "
                "retry when it has finished",
                where=where,
                seconds=round(LOCK_TIMEOUT_S),
            )
        )
    if isinstance(exc, errors.DiskFull):
        return StorageError(
            _t(
                "the disk of {where} is full; free space and retry (the interrupted transaction "
                "was rolled back, nothing was lost)",
                where=where,
            )
        )
    if isinstance(exc, errors.InvalidPassword | errors.InvalidAuthorizationSpecification):
        return StorageError(
            _t("PostgreSQL refused the login to {where}: check the DSN", where=where)
        )
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return StorageError(
            _t(
                "cannot reach {where}: the server is down or restarting; retry (an interrupted "
                "transaction was rolled back, nothing was lost)",
                where=where,
            )
        )
    return StorageError(
        _t("database error on {where}: {kind}", where=where, kind=exc.__class__.__name__)
    )


@dataclass(frozen=True)
class Result:
    """A statement's rows, fetched while the connection was held."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def fetchone(self) -> Any:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Every row."""
        return self.rows


def _applied(conn: psycopg.Connection[Any]) -> int:
    """How many migrations the database has (0 for an empty database)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (_VERSION_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {_VERSION_TABLE}").fetchone()  # noqa: S608
    return int(row[0]) if row else 0


def migrate(dsn: str, *, service_role: str | None = None) -> int:
    """Bring the schema up to date as the migration role; return the version reached.

    Run as the role that owns (or will own) the tables; ``childvault upgrade``
    calls this. Each migration is one transaction under :data:`WRITE_LOCK`,
    so concurrent upgrades and writers wait rather than interleave. With
    ``service_role``, that role gets the service grants (:func:`grant_service`).
    """
    where = describe(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = _applied(conn)
            if version > len(MIGRATIONS):
                raise StorageError(
                    _t(
                        "{where} was written by a newer childvault (schema {version}); upgrade "
                        "childvault",
                        where=where,
                        version=version,
                    )
                )
            for number in range(version, len(MIGRATIONS)):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} ("
                        " version integer PRIMARY KEY,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    # Re-read under the lock: another process may have migrated meanwhile.
                    if _applied(conn) <= number:
                        for stmt in MIGRATIONS[number]:
                            conn.execute(stmt)
                        conn.execute(
                            f"INSERT INTO {_VERSION_TABLE} (version) VALUES (%s)",  # noqa: S608
                            (number + 1,),
                        )
            if service_role is not None:
                grant_service(conn, service_role)
            return len(MIGRATIONS)
    except psycopg.Error as exc:
        raise translate(exc, where) from exc


def grant_service(conn: psycopg.Connection[Any], role: str) -> None:
    """Give ``role`` what the servers need and no more.

    The log and the checkpoints: ``SELECT, INSERT`` only (PUBLIC loses every
    default privilege first), so a leaked service password cannot rewrite
    history; everything else: ``SELECT, INSERT, UPDATE, DELETE``; the schema
    version: ``SELECT``. No ``TRUNCATE``, no DDL (PostgreSQL 15+ gives PUBLIC
    no ``CREATE`` on schema ``public``).
    """
    ident = sql.Identifier(role)
    tables = [*APPEND_ONLY, *READ_WRITE, _VERSION_TABLE]
    for table in tables:
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(sql.Identifier(table)))
    for table in APPEND_ONLY:
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(table), ident)
        )
    for table in READ_WRITE:
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                sql.Identifier(table), ident
            )
        )
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(_VERSION_TABLE), ident))
    # The checkpoint id comes from its identity sequence.
    conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE checkpoints_id_seq TO {}").format(ident))


@functools.lru_cache(maxsize=256)
def _placeholders(query: str) -> str:
    """The shared repositories' ``?`` placeholders as psycopg's ``%s``.

    The statements hold no literal ``?`` or ``%`` (they are written in
    ``childvault.vault._sql``); a ``%`` is still escaped so it could never be
    read as a placeholder.
    """
    return query.replace("%", "%%").replace("?", "%s")


class Connection:
    """A pool of connections to one vault database. One per process or thread."""

    def __init__(
        self,
        dsn: str,
        *,
        create: bool = False,
        pool_size: int = 4,
        pool_timeout: float = POOL_TIMEOUT_S,
    ) -> None:
        """Open a pool on ``dsn`` (``create``: migrate an empty database first).

        ``pool_timeout``: how long a request waits for a pooled connection
        before it fails as an unreachable store, seconds.
        """
        self.where = describe(dsn)
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        if create:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    if _applied(conn):
                        raise StorageError(
                            _t(
                                "{where} already holds a childvault schema: use an empty "
                                "database for a new vault",
                                where=self.where,
                            )
                        )
            except psycopg.Error as exc:
                raise translate(exc, self.where) from exc
            migrate(dsn)
        try:
            self.pool: ConnectionPool[Any] = self._new_pool()
        except PoolTimeout as exc:
            raise translate(exc, self.where) from exc
        try:
            self._check_schema()
        except BaseException as exc:
            self.pool.close()
            if isinstance(exc, psycopg.Error | PoolTimeout):
                raise translate(exc, self.where) from exc
            raise
        self._tx: psycopg.Connection[Any] | None = None
        self._depth = 0
        # The connection this backend works on, kept between statements (as the
        # SQLCipher backend keeps its one connection): a checkout per statement
        # cost a round trip more for every read. A connection broken by a
        # server restart goes back to the pool (which discards it) and the next
        # statement takes a fresh one, so a restart costs one failed operation.
        self._held: psycopg.Connection[Any] | None = None

    def _new_pool(self) -> ConnectionPool[Any]:
        """A pool holding one connection made now (raises if none can be made)."""
        pool: ConnectionPool[Any] = ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True},
            timeout=self._pool_timeout,
            open=False,
        )
        try:
            pool.open(wait=True, timeout=self._pool_timeout)
        except BaseException:
            pool.close()
            raise
        return pool

    def _checkout(self) -> psycopg.Connection[Any]:
        """A connection from the pool, or from a new pool once the database is back.

        psycopg_pool replaces a broken connection in the background and, while
        the database is down, retries with a growing delay (1, 2, 4, 8 ... s)
        that nothing public can cut short: after a restart the pool gave its
        next connection only at its next attempt, up to the pool timeout
        later (issue 17). So when the pool has no connection within a pooled
        connect's time, or has none ready and has failed to connect before
        (its attempts are backing off), the database is asked directly every
        :data:`PROBE_EVERY_S`: once it answers, the pool is replaced by a new
        one connected at once, and the old one closed with its pending
        attempts. Still down at the pool timeout: the probe's error (an
        unreachable store, as before). Only called with no connection held,
        so nothing in flight on this store uses the old pool.
        """
        deadline = time.monotonic() + self._pool_timeout
        while True:
            stats = self.pool.get_stats()
            if not (stats.get("connections_errors", 0) and not stats.get("pool_available", 0)):
                left = deadline - time.monotonic()
                try:
                    pooled: psycopg.Connection[Any] = self.pool.getconn(
                        timeout=max(0.01, min(POOL_QUICK_S, left))
                    )
                    return pooled
                except PoolTimeout:
                    if time.monotonic() >= deadline:
                        raise
            left = deadline - time.monotonic()
            try:
                probe = psycopg.connect(
                    self._dsn,
                    autocommit=True,
                    connect_timeout=max(1, min(PROBE_TIMEOUT_S, math.ceil(left))),
                )
            except psycopg.OperationalError as exc:
                # Retried only while nothing answers or PostgreSQL is starting
                # up (57P03); a refused login or a missing database fails now.
                if exc.sqlstate not in (None, "57P03"):
                    raise
                if time.monotonic() + PROBE_EVERY_S >= deadline:
                    raise
                time.sleep(PROBE_EVERY_S)
                continue
            probe.close()
            fresh = self._new_pool()
            old, self.pool = self.pool, fresh
            old.close(timeout=1.0)
            renewed: psycopg.Connection[Any] = self.pool.getconn()
            return renewed

    def _check_schema(self) -> None:
        with self.pool.connection() as conn:
            version = _applied(conn)
        if version == 0:
            raise NotFound(
                _t("no childvault schema in {where}: run `childvault init` first", where=self.where)
            )
        if version > len(MIGRATIONS):
            raise StorageError(
                _t(
                    "{where} was written by a newer childvault (schema {version}); upgrade "
                    "childvault",
                    where=self.where,
                    version=version,
                )
            )
        if version < len(MIGRATIONS):
            raise StorageError(
                _t(
                    "{where} has schema {version}, this childvault needs {n}: run `childvault "
                    "upgrade` as the migration role",
                    where=self.where,
                    version=version,
                    n=len(MIGRATIONS),
                )
            )

    def close(self) -> None:
        """Return the held connection and close the pool."""
        if self._held is not None:
            self.pool.putconn(self._held)
            self._held = None
        self.pool.close()

    def _acquire(self) -> psycopg.Connection[Any]:
        if self._held is None:
            self._held = self._checkout()
        return self._held

    def _drop_if_broken(self) -> None:
        held = self._held
        if held is not None and (held.closed or held.broken):
            self._held = None
            self.pool.putconn(held)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing, serialised with every other writer by :data:`WRITE_LOCK`."""
        if self._depth:
            # Nested use joins the outer transaction.
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        try:
            with contextlib.ExitStack() as stack:
                conn = self._begin(stack)
                self._tx, self._depth = conn, 1
                try:
                    yield
                finally:
                    self._tx, self._depth = None, 0
        except (psycopg.Error, PoolTimeout) as exc:
            self._drop_if_broken()
            raise translate(exc, self.where) from exc
        except BaseException:
            self._drop_if_broken()
            raise

    def _begin(self, stack: contextlib.ExitStack) -> psycopg.Connection[Any]:
        """Open a transaction holding :data:`WRITE_LOCK`, registered on ``stack``.

        A held connection broken by a database restart is found out only by
        using it: if the start itself fails on a connection that is then
        broken, nothing was done in it, so the start is tried once more on a
        fresh connection instead of failing the caller's operation.
        """
        for attempt in range(2):
            conn = self._acquire()
            inner = contextlib.ExitStack()
            try:
                inner.enter_context(conn.transaction())
                conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            except BaseException as exc:
                with contextlib.suppress(psycopg.Error, PoolTimeout):
                    inner.__exit__(type(exc), exc, exc.__traceback__)
                broken = conn.closed or conn.broken
                if attempt == 0 and broken and isinstance(exc, psycopg.OperationalError):
                    self._drop_if_broken()
                    continue
                raise
            stack.enter_context(inner)
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            yield self._tx if self._tx is not None else self._acquire()
        except (psycopg.Error, PoolTimeout):
            if self._tx is None:
                self._drop_if_broken()
            raise

    def q(self, query: str, params: Sequence[Any] = ()) -> Result:
        """Execute one statement; psycopg errors become childvault errors.

        A read outside a transaction that fails because its held connection
        was broken (a database restart) is tried once more on a fresh one: a
        read changes nothing, so repeating it is safe; a write is never repeated.
        """
        for attempt in range(2):
            try:
                with self._conn() as conn:
                    cur = conn.execute(_placeholders(query), params)
                    rows = cur.fetchall() if cur.description is not None else []
                    return Result(rows, cur.rowcount)
            except errors.IntegrityError as exc:
                raise StorageError(
                    _t(
                        "database constraint violated: {message_primary}",
                        message_primary=exc.diag.message_primary,
                    )
                ) from exc
            except (psycopg.Error, PoolTimeout) as exc:
                retry = (
                    attempt == 0
                    and isinstance(exc, psycopg.OperationalError)
                    and self._tx is None
                    and self._held is None  # dropped by _conn: it was broken
                    and query.lstrip()[:6].upper() == "SELECT"
                )
                if not retry:
                    raise translate(exc, self.where) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def many(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """Execute one statement for many rows (pipelined); errors become childvault errors."""
        rows = list(rows)
        if not rows:
            return
        try:
            with self._conn() as conn, conn.cursor() as cur:
                cur.executemany(_placeholders(query), rows)
        except errors.IntegrityError as exc:
            raise StorageError(
                _t(
                    "database constraint violated: {message_primary}",
                    message_primary=exc.diag.message_primary,
                )
            ) from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc, self.where) from exc

    def append(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert log rows; a duplicate sequence number is an :class:`IntegrityError`."""
        try:
            with self._conn() as conn, conn.cursor() as cur:
                cur.executemany(_placeholders(query), rows)
        except errors.UniqueViolation as exc:
            raise IntegrityError(
                _t(
                    "audit sequence collision: the log was appended outside a serialised "
                    "transaction"
                )
            ) from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc, self.where) from exc

    def compact(self) -> None:
        """Best effort ``VACUUM`` so deleted rows' pages are reused; skipped without the right."""
        with contextlib.suppress(psycopg.Error, PoolTimeout), self.pool.connection() as conn:
            conn.execute("VACUUM")
