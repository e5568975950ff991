"""PostgreSQL stopped under ``--server A,B`` (issue 17): the failed import observed.

``test_failover.py`` restarts PostgreSQL mid-import, but a restart is short and
the replicas ride over it, so the import usually completes and its failure
path goes unseen. Here the outage is made certain to hit the import:

- **Mid-batch.** Once the first batch is committed the test takes a ``SHARE``
  lock on ``imports``: the next batch's transaction, which holds the store's
  write lock and has written its records and log entries, then waits to write
  the import's progress row, the last write before its commit. The test sees
  it waiting in ``pg_locks``, with its writes made, and stops PostgreSQL
  (``pg_ctl stop -m fast``) while it waits. No sleep decides when.
- **Before the import.** PostgreSQL is stopped before the command starts.

In each case: the documented exit code of an unreachable store (1, a
``StorageError``), a message in the reader's language saying what to do, whole
batches only, the log verifying, and the same command run again (through the
other replica alone) importing exactly the rows not yet stored: each CSV row
once, named by its log entry and by its record.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.postgres import PostgresServer
from tests.fixtures.sessions import SERVICE
from tests.scale._replicas import PgServed, make_pg_vault
from tests.server._vaultserver import synthetic_csv

#: Rows of the import: four batches of 500 (through several replicas a batch is
#: one transaction of 500 rows), so at least two are still to come when the
#: first is seen committed.
ROWS = 2000
BATCH = 500
#: What a failed command's stderr says in Chinese (the zh_CN catalog's words for
#: "the server is down or restarting; retry" and "could not reach their database").
ZH_DOWN = "已停止或正在重启"


@pytest.fixture
def served(tmp_path: Path, postgres: PostgresServer) -> Iterator[PgServed]:
    """A PostgreSQL vault with an officer and a worker; PostgreSQL running afterwards."""
    pg = make_pg_vault(tmp_path, postgres, people=("officer1", "worker1"))
    try:
        yield pg
    finally:
        pg.stop()
        # A failed test must not leave the session's server stopped for the others.
        if not postgres.running:
            postgres.start()


def _connect(pg: PgServed) -> psycopg.Connection[tuple[object, ...]]:
    """A superuser session on the vault's database (not through a replica)."""
    return psycopg.connect(pg.postgres.dsn(database=pg.database), connect_timeout=10)


def _count(pg: PgServed, table: str = "records") -> int:
    with psycopg.connect(pg.postgres.dsn(SERVICE, pg.database), connect_timeout=10) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _zh(env: dict[str, str]) -> dict[str, str]:
    return {**env, "LC_ALL": "zh_CN.UTF-8", "LANG": "zh_CN.UTF-8"}


def _background_zh(pg: PgServed, *args: str) -> subprocess.Popen[bytes]:
    """``childvault --server A,B --as worker1 ARGS`` in Chinese, not waited for."""
    cmd, env = pg._cmd("worker1", pg.urls, args)
    return subprocess.Popen(
        cmd, cwd=pg.root, env=_zh(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _stored_exactly(pg: PgServed, csv: Path, rows: int, *, url: str | None = None) -> None:
    """Rows 1..``rows`` of ``csv`` stored once each: as records (their source and
    row), in the log (one ``record.create`` per record, naming the same row), in
    the import's progress; every dependent row whole; ``audit verify`` passes
    (through ``url``, default every replica)."""
    source = hashlib.sha256(csv.read_bytes()).hexdigest()
    with _connect(pg) as conn:
        stored = conn.execute("SELECT id, source, source_row FROM records").fetchall()
        progress = conn.execute(
            "SELECT rows_done FROM imports WHERE source = %s", (source,)
        ).fetchall()
        keyless = conn.execute(
            "SELECT count(*) FROM records r WHERE NOT EXISTS "
            "(SELECT 1 FROM keyblobs k WHERE k.record_id = r.id) "
            "OR NOT EXISTS (SELECT 1 FROM fields f WHERE f.record_id = r.id)"
        ).fetchone()
    assert {s for _, s, _ in stored} <= {source}
    by_row = {int(r): str(i) for i, _, r in stored}
    assert len(stored) == len(by_row) == rows
    assert sorted(by_row) == list(range(1, rows + 1))
    assert progress == ([(rows,)] if rows else [])
    assert keyless == (0,)
    pg.cli("officer1", "audit", "verify", url=url)
    with pg.open_local("officer1") as officer:
        entries = [e["entry"] for e in officer.audit_entries()]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    created = [e for e in entries if e["action"] == "record.create"]
    logged = {int(e["detail"]["row"]): e["records"] for e in created}
    assert len(created) == len(logged) == rows
    assert {row: ids[0] for row, ids in logged.items()} == by_row
    assert {e["detail"]["source"] for e in created} <= {source[:16]}


def _waits_for_the_write_lock(blocker: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether a session of this database waits on an advisory lock (the store's
    write lock, which ``blocker`` holds)."""
    return bool(
        blocker.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event = 'advisory'"
        ).fetchall()
    )


def _wait_for(what: str, ready: object, importer: subprocess.Popen[bytes]) -> None:
    """Poll ``ready()`` until true; fail if the import ends first (bounded)."""
    deadline = time.monotonic() + 600
    while not ready():  # type: ignore[operator]
        assert importer.poll() is None, f"the import ended before {what}"
        assert time.monotonic() < deadline, f"not {what} in 600 s"
        time.sleep(0.05)


#: The backend of a transaction waiting for a lock on ``imports`` and the
#: relations it holds ROW EXCLUSIVE (has written in this transaction).
_WAITING = """
SELECT w.pid, array(
    SELECT c.relname::text FROM pg_locks g JOIN pg_class c ON c.oid = g.relation
    WHERE g.pid = w.pid AND g.granted AND g.mode = 'RowExclusiveLock' ORDER BY 1)
FROM pg_locks w
WHERE w.relation = 'imports'::regclass AND NOT w.granted
"""


def test_postgresql_stopped_mid_batch_is_exit_1_whole_batches_and_a_rerun_imports_the_rest(
    served: PgServed, tmp_path: Path
) -> None:
    pg = served
    first = pg.start_replica()
    other = pg.start_replica()
    csv = synthetic_csv(tmp_path / "rows.csv", ROWS)
    importer = _background_zh(pg, "import", "--allow-duplicates", str(csv))
    _wait_for("a batch was committed", lambda: _count(pg) > 0, importer)
    blocker = _connect(pg)
    try:
        # Granted once no batch has written its progress row uncommitted; a
        # batch commits only after writing it, so from now on what is committed
        # cannot change, and the next batch waits here before its commit.
        blocker.execute("LOCK TABLE imports IN SHARE MODE")
        row = blocker.execute("SELECT count(*) FROM records").fetchone()
        committed = int(row[0]) if row else -1
        assert 0 < committed < ROWS and committed % BATCH == 0, committed
        waiting: list[tuple[int, list[str]]] = []

        def batch_waits() -> bool:
            waiting[:] = blocker.execute(_WAITING).fetchall()
            return bool(waiting)

        _wait_for("the next batch waited", batch_waits, importer)
        # Mid-transaction: the batch has written its records and log entries.
        assert {"records", "fields", "keyblobs", "audit"} <= set(waiting[0][1]), waiting
        pg.postgres.stop()
    finally:
        blocker.close()
    try:
        out, err = importer.communicate(timeout=600)
    finally:
        pg.postgres.start()
    text = err.decode()
    assert importer.returncode == 1, (importer.returncode, out.decode(), text)
    assert "Traceback" not in text and "internal error" not in text, text
    assert ZH_DOWN in text and "重试" in text, text
    # Each replica serves again, the one whose transaction the stop broke too
    # (issue 17: its pool used to wait for its next reconnection attempt, up
    # to 30 s; docs/scale.md, section 10). Then the batch that was waiting is
    # gone entirely; the committed ones are whole.
    for replica in (first, other):
        pg.cli("officer1", "audit", "verify", url=replica.url)
    _stored_exactly(pg, csv, committed, url=first.url)
    # The documented resume: the same command again, here through the other replica alone.
    done = pg.cli_json("worker1", "import", "--allow-duplicates", str(csv), url=other.url)
    assert (done["imported"], done["already_done"]) == (ROWS - committed, committed)
    _stored_exactly(pg, csv, ROWS, url=other.url)


def test_postgresql_stopped_between_batches_and_started_again_the_import_goes_on(
    served: PgServed, tmp_path: Path
) -> None:
    """The other side of the line: a restart while the next batch waits for the
    write lock (nothing written yet) is ridden over by the replica, which opens
    the transaction again on a fresh connection; the import completes."""
    pg = served
    pg.start_replica()
    pg.start_replica()
    csv = synthetic_csv(tmp_path / "rows.csv", ROWS)
    importer = pg.cli_background("worker1", "--json", "import", "--allow-duplicates", str(csv))
    _wait_for("a batch was committed", lambda: _count(pg) > 0, importer)
    from childvault.vault._postgres._conn import WRITE_LOCK

    blocker = _connect(pg)
    blocker.autocommit = True
    try:
        blocker.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        row = blocker.execute("SELECT count(*) FROM records").fetchone()
        assert row is not None and 0 < int(row[0]) < ROWS

        _wait_for(
            "the next batch waited for the write lock",
            lambda: _waits_for_the_write_lock(blocker),
            importer,
        )
        pg.postgres.stop()
    finally:
        blocker.close()
    pg.postgres.start()
    out, err = importer.communicate(timeout=600)
    assert importer.returncode == 0, (out.decode(), err.decode())
    _stored_exactly(pg, csv, ROWS)


def _down_before(pg: PgServed, csv: Path, url: str) -> subprocess.CompletedProcess[bytes]:
    with _connect(pg) as conn:
        row = conn.execute("SELECT count(*) FROM audit").fetchone()
    log_before = int(row[0]) if row else -1
    pg.postgres.stop()
    try:
        cmd, env = pg._cmd("worker1", url, ["import", "--allow-duplicates", str(csv)])
        done = subprocess.run(
            cmd, cwd=pg.root, env=_zh(env), capture_output=True, timeout=600, check=False
        )
    finally:
        pg.postgres.start()
    text = done.stderr.decode()
    assert done.returncode == 1, (done.returncode, done.stdout.decode(), text)
    assert "Traceback" not in text and "internal error" not in text, text
    assert ZH_DOWN in text and "重试" in text, text
    assert _count(pg, "audit") == log_before
    _stored_exactly(pg, csv, 0)
    return done


def test_regression_postgresql_down_before_import_one_replica_said_key_provider_exit_5(
    served: PgServed, tmp_path: Path
) -> None:
    """Before the fix a replica answered 503 ``unavailable`` when its database
    was down, which the client took for an unavailable key provider (exit 5,
    "the server cannot answer now"); it is now the store (exit 1) saying so."""
    pg = served
    replica = pg.start_replica()
    csv = synthetic_csv(tmp_path / "rows.csv", 600)
    done = _down_before(pg, csv, replica.url)
    assert "数据库" in done.stderr.decode()
    assert [r["reason"] for r in replica.refusals()][-1:] == ["store_unavailable"]
    assert pg.cli_json("worker1", "import", "--allow-duplicates", str(csv))["imported"] == 600
    _stored_exactly(pg, csv, 600)


@pytest.mark.slow  # the client looks for a replica that can answer for 60 s first
def test_regression_postgresql_down_before_import_said_no_server_answered_exit_5(
    served: PgServed, tmp_path: Path
) -> None:
    """Before the fix, with ``--server A,B``, both replicas answered 503 for 60 s
    and the client said "no childvault server of A,B answered" (exit 5): the
    servers did answer; their database did not. Now exit 1, naming the database."""
    pg = served
    pg.start_replica()
    pg.start_replica()
    csv = synthetic_csv(tmp_path / "rows.csv", 600)
    done = _down_before(pg, csv, pg.urls)
    text = done.stderr.decode()
    assert pg.urls in text and "数据库" in text, text
    assert pg.cli_json("worker1", "import", "--allow-duplicates", str(csv))["imported"] == 600
    _stored_exactly(pg, csv, 600)


#: How long PostgreSQL stays down in the back-off test, seconds: the replica's
#: pool attempts to reconnect at 0, 1, 3, 7, 15, 31 and 63 s, so its next
#: attempt after the start is about 60 s away, twice the 30 s pool timeout.
LONG_OUTAGE_S = 70


@pytest.mark.slow  # PostgreSQL is kept down for LONG_OUTAGE_S
def test_regression_a_replica_whose_pool_backed_off_serves_at_once_when_postgresql_is_back(
    served: PgServed, tmp_path: Path
) -> None:
    """Issue 17. A batch begins again on a fresh connection after the stop broke
    its first (the between-batches case) and waits for one while PostgreSQL
    stays down: the pool's replacement and growth attempts both back off.
    The first request through the same replica after the start must be
    served. Before the fix it waited for the pool's next attempt (47.7 s in
    one run, docs/scale.md section 10) and was served late, so this test
    passed then too: it guards the outcome, not the time (no timed tests);
    tests/postgres/test_pool_recovery.py shows the old code failing."""
    pg = served
    replica = pg.start_replica()
    csv = synthetic_csv(tmp_path / "rows.csv", ROWS)
    importer = pg.cli_background(
        "worker1", "import", "--allow-duplicates", str(csv), url=replica.url
    )
    _wait_for("a batch was committed", lambda: _count(pg) > 0, importer)
    from childvault.vault._postgres._conn import WRITE_LOCK

    blocker = _connect(pg)
    blocker.autocommit = True
    try:
        blocker.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))

        _wait_for(
            "the next batch waited for the write lock",
            lambda: _waits_for_the_write_lock(blocker),
            importer,
        )
        pg.postgres.stop()
    finally:
        blocker.close()
    stopped = time.monotonic()
    try:
        out, err = importer.communicate(timeout=600)
        time.sleep(max(0.0, LONG_OUTAGE_S - (time.monotonic() - stopped)))
    finally:
        pg.postgres.start()
    # Down past the pool timeout: the documented unreachable-store failure.
    assert importer.returncode == 1, (out.decode(), err.decode())
    assert "Traceback" not in err.decode(), err.decode()
    # The same replica serves the next request needing the database: the
    # rerun imports exactly the rows not yet stored.
    stored = _count(pg)
    done = pg.cli_json("worker1", "import", "--allow-duplicates", str(csv), url=replica.url)
    assert (done["imported"], done["already_done"]) == (ROWS - stored, stored)
    _stored_exactly(pg, csv, ROWS, url=replica.url)
