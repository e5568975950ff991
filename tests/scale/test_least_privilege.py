"""Least privilege in PostgreSQL (issue 17): the service role can append, never rewrite.

A migration role owns the ``audit`` table; the service role is granted
``SELECT, INSERT`` and nothing else. Appends from several connections are
serialised by ``pg_advisory_xact_lock``, which gives one gap-free sequence and
one hash chain: the pattern several ``childvault serve`` replicas will use on
one database.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.fixtures.postgres import PostgresServer

# Any constant works; it only has to be the same for every appender.
APPEND_LOCK = 0x63_76_61_75_64_69_74  # "cvaudit"
WRITERS = 8
PER_WRITER = 25
GENESIS = "0" * 64


@dataclass
class Roles:
    migrate_dsn: str
    service_dsn: str


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresServer) -> Iterator[Roles]:
    postgres.create_role("lp_migrate")
    postgres.create_role("lp_service")
    postgres.create_database("cv_audit", owner="lp_migrate")
    migrate = postgres.dsn("lp_migrate", "cv_audit")
    with psycopg.connect(migrate, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE audit ("
            " seq bigint PRIMARY KEY,"
            " payload text NOT NULL,"
            " prev_hash text NOT NULL,"
            " hash text NOT NULL UNIQUE)"
        )
        conn.execute("REVOKE ALL ON audit FROM PUBLIC")
        conn.execute("GRANT SELECT, INSERT ON audit TO lp_service")
        conn.execute(
            "INSERT INTO audit VALUES (0, 'genesis', %s, %s)", (GENESIS, _link(GENESIS, "genesis"))
        )
    yield Roles(migrate, postgres.dsn("lp_service", "cv_audit"))


def _link(prev_hash: str, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{payload}".encode()).hexdigest()


def _append(conn: psycopg.Connection[Any], payload: str) -> int:
    """Append one entry after the current head, in one transaction under the append lock."""
    with conn.transaction():
        # Held until commit or rollback: the read of the head and the insert are atomic
        # with respect to every other appender.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
        row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        assert row is not None
        seq, prev = row
        conn.execute(
            "INSERT INTO audit VALUES (%s, %s, %s, %s)",
            (int(seq) + 1, payload, prev, _link(str(prev), payload)),
        )
    return int(seq) + 1


def test_the_service_role_reads_and_appends(audit_db: Roles) -> None:
    with psycopg.connect(audit_db.service_dsn) as conn:
        seq = _append(conn, "service may append")
        row = conn.execute("SELECT payload FROM audit WHERE seq = %s", (seq,)).fetchone()
    assert row == ("service may append",)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET payload = 'rewritten' WHERE seq = 0",
        "DELETE FROM audit WHERE seq = 0",
        "TRUNCATE audit",
        "ALTER TABLE audit DROP CONSTRAINT audit_hash_key",
        "DROP TABLE audit",
        "CREATE TABLE shadow (n int)",
    ],
    ids=["update", "delete", "truncate", "alter", "drop", "create"],
)
def test_the_service_role_cannot_rewrite_the_log(audit_db: Roles, statement: str) -> None:
    with psycopg.connect(audit_db.service_dsn) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)
    with psycopg.connect(audit_db.migrate_dsn) as conn:
        row = conn.execute("SELECT payload FROM audit WHERE seq = 0").fetchone()
    assert row == ("genesis",)


def test_concurrent_appends_form_one_gap_free_chain(audit_db: Roles) -> None:
    start = threading.Barrier(WRITERS)
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with psycopg.connect(audit_db.service_dsn) as conn:
                start.wait(timeout=60)
                for i in range(PER_WRITER):
                    _append(conn, f"writer {w} entry {i}")
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    with psycopg.connect(audit_db.service_dsn) as conn:
        rows = conn.execute(
            "SELECT seq, payload, prev_hash, hash FROM audit ORDER BY seq"
        ).fetchall()
    seqs = [int(r[0]) for r in rows]
    assert seqs == list(range(len(rows))), "the sequence has a gap or does not start at 0"
    prev = GENESIS
    for _seq, payload, prev_hash, digest in rows:
        assert prev_hash == prev and digest == _link(prev, str(payload))
        prev = str(digest)
    payloads = {str(r[1]) for r in rows}
    expected = {f"writer {w} entry {i}" for w in range(WRITERS) for i in range(PER_WRITER)}
    assert expected <= payloads, "an append was lost"
