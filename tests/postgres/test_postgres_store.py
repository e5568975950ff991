"""What only the PostgreSQL store has: roles, migrations, a shared database, pg_dump.

- the service role cannot UPDATE, DELETE or TRUNCATE the log or change the schema;
- a database at another schema version is refused with what to do;
- 8 processes appending through one database keep one gap-free hash chain;
- a ``pg_dump`` of a vault holds none of the field values put in (marker values).
"""

from __future__ import annotations

import multiprocessing
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from childvault.keys import NotFound, StorageError
from childvault.vault import NewRecordInput
from childvault.vault._merkle import leaf_hash
from childvault.vault._postgres import MIGRATIONS, PostgresBackend, migrate
from tests.conftest import add_children, child_values, consent
from tests.fixtures.postgres import PostgresServer
from tests.postgres.conftest import OWNER, SERVICE, PgWorld, new_database

PROCESSES = 8
PER_PROCESS = 4


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET entry = entry WHERE seq = 0",
        "DELETE FROM audit WHERE seq = 0",
        "TRUNCATE audit",
        "UPDATE checkpoints SET note = note",
        "DELETE FROM checkpoints",
        "UPDATE statements SET envelope = envelope",
        "DELETE FROM statements",
        "ALTER TABLE audit ADD COLUMN x int",
        "DROP TABLE audit",
        "CREATE TABLE sneaky (x int)",
        "DELETE FROM cv_schema",
    ],
)
def test_the_service_role_cannot_rewrite_the_log(pgworld: PgWorld, statement: str) -> None:
    with (
        psycopg.connect(pgworld.service_dsn(), autocommit=True) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute(statement)  # type: ignore[call-overload]


def test_the_service_role_runs_the_library_and_appends(pgworld: PgWorld) -> None:
    # The world's DSN file names the service role: everything above ran as it.
    with pgworld.open("worker1") as v:
        add_children(v, 2)
    with psycopg.connect(pgworld.service_dsn()) as conn:
        (user,) = conn.execute("SELECT current_user").fetchone()  # type: ignore[misc]
        (count,) = conn.execute("SELECT count(*) FROM audit").fetchone()  # type: ignore[misc]
    assert user == SERVICE and count > 2


def test_a_new_vault_needs_an_empty_database(pgworld: PgWorld) -> None:
    with pytest.raises(StorageError, match="already holds a childvault schema"):
        PostgresBackend(pgworld.owner_dsn(), create=True)


def test_an_unmigrated_database_is_refused_and_migrate_is_idempotent(
    postgres: PostgresServer,
) -> None:
    name = new_database(postgres)
    with pytest.raises(NotFound, match="run `childvault init` first"):
        PostgresBackend(postgres.dsn(OWNER, name))
    assert migrate(postgres.dsn(OWNER, name), service_role=SERVICE) == len(MIGRATIONS)
    assert migrate(postgres.dsn(OWNER, name), service_role=SERVICE) == len(MIGRATIONS)
    with psycopg.connect(postgres.dsn(OWNER, name), autocommit=True) as conn:
        conn.execute("INSERT INTO cv_schema (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StorageError, match="newer childvault"):
        PostgresBackend(postgres.dsn(SERVICE, name))


def test_the_password_never_appears_in_an_error(postgres: PostgresServer) -> None:
    dsn = postgres.dsn(SERVICE, "no_such_database")
    password = dsn.split("password=")[1].split()[0]
    with pytest.raises(StorageError) as info:
        PostgresBackend(dsn)
    assert password not in str(info.value)


def test_a_server_restart_costs_one_clean_error_then_work_resumes(
    pgworld: PgWorld, postgres: PostgresServer
) -> None:
    with pgworld.open("worker1") as v:
        add_children(v, 2)
        postgres.restart()
        try:
            add_children(v, 2)
        except StorageError as exc:
            # The connection held across the restart is gone: said plainly, rolled back.
            assert "cannot reach" in str(exc) or "database error" in str(exc)
            add_children(v, 2)
        assert sum(1 for _ in v.list_records()) == 4
    with pgworld.open("admin") as v:
        v.verify_audit()


def _append_records(home: str, who: str, count: int) -> None:
    # A fresh process (spawn): its own Vault, its own pool, the same database.
    from childvault.vault import Vault
    from tests.conftest import PASSPHRASES, TODAY

    # The system clock (no clock= in a spawned process): dated from today.
    with Vault.open(home, who, PASSPHRASES[who]) as v:
        for i in range(count):
            v.add_records(
                [NewRecordInput("child", child_values(i, today=TODAY), consent(today=TODAY))]
            )


def test_eight_processes_keep_one_gap_free_chain(pgworld: PgWorld) -> None:
    with psycopg.connect(pgworld.service_dsn()) as conn:
        (before,) = conn.execute("SELECT count(*) FROM audit").fetchone()  # type: ignore[misc]
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(
            target=_append_records,
            args=(str(pgworld.home), ("worker1", "worker2")[n % 2], PER_PROCESS),
        )
        for n in range(PROCESSES)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    with psycopg.connect(pgworld.service_dsn()) as conn:
        rows = conn.execute("SELECT seq, entry, hash FROM audit ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert len(rows) == before + PROCESSES * PER_PROCESS
    for seq, entry, digest in rows:
        assert leaf_hash(bytes(entry)) == bytes(digest), seq
    with pgworld.open("admin") as v:
        report = v.verify_audit()
        assert report.entries == len(rows)
        assert v.setting("vault_id")  # still readable after the storm
    with pgworld.open("officer1") as v:
        assert len(list(v.list_records())) == PROCESSES * PER_PROCESS


def test_pg_dump_holds_no_field_value(
    pgworld: PgWorld, postgres: PostgresServer, tmp_path: Path
) -> None:
    markers = {
        "name": "MARKERNAMEzq7",
        "address": "MARKERADDRESSzq7",
        "case_notes": "MARKERNOTESzq7 第二行",
        "guardian_name": "MARKERGUARDIANzq7",
        "health": "MARKERHEALTHzq7",
    }
    with pgworld.open("worker1") as v:
        (rid,) = v.add_records([NewRecordInput("child", child_values(7, **markers), consent())])
        req = v.request_access([rid], ("name", "case_notes"), "case_management", "家访")
    with pgworld.open("officer1") as v:
        approval = v.approve(req)
        v.correct(rid, "health", "MARKERCORRECTEDzq7")
    with pgworld.open("worker1") as v:
        assert v.read_with_grant(approval.token)[rid]["name"] == markers["name"]
    out = tmp_path / "dump.sql"
    subprocess.run(
        [
            str(postgres.bin_dir / "pg_dump"),
            "--dbname",
            pgworld.owner_dsn(),
            "--file",
            str(out),
            "--no-owner",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dump = out.read_bytes()
    assert b"CREATE TABLE public.audit" in dump and rid.encode() in dump
    for value in [*markers.values(), "MARKERCORRECTEDzq7", child_values(7)["id_number"]]:
        for form in (value.encode(), value.encode().hex().encode()):
            assert form not in dump, value
