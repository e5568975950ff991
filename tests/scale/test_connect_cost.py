"""A client's connection does not cost more with every checkpoint (round 2
session 11): a replica with a witness file of its own reads, before it answers
a bootstrap, only the stored checkpoints above the largest id it read before,
and reads them all again only when the rows below that id changed or the
witness file lost a note it held.

Real parts: the session's PostgreSQL server, ``childvault serve`` processes
and CLI clients as separate processes. Counted from the replica's log (rows
read and copied per catch-up), not timed. docs/decisions.md "A connection
reads only the checkpoints its witness has not seen".
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from childvault.server._witnessfile import note_body
from childvault.vault import _audit
from tests.fixtures.sessions import OWNER
from tests.scale._replicas import PgServed, Replica
from tests.server._vaultserver import synthetic_csv

_CATCH_UP = re.compile(
    r"witness catch-up: (\d+) stored checkpoint\(s\) read \((all|after id \d+)\), (\d+) copied"
)


def _catch_ups(replica: Replica) -> list[tuple[int, str, int]]:
    """(rows read, "all" or "after id N", notes copied) of each catch-up that read a row."""
    text = replica.log_path.read_text(encoding="utf-8")
    return [(int(m[1]), m[2], int(m[3])) for m in _CATCH_UP.finditer(text)]


def _approve(pg: PgServed, record: str, url: str) -> None:
    req = pg.request("worker1", record, reason="home visit", url=url)
    pg.cli("officer1", "approve", req, url=url)


def _bodies(path: Path) -> list[str]:
    return [note_body(n) for n in _audit.read_witness(path)]


def _sql(pg: PgServed) -> psycopg.Connection[tuple[object, ...]]:
    """The migration role: an insider who can delete and insert checkpoint rows."""
    return psycopg.connect(pg.postgres.dsn(OWNER, pg.database), autocommit=True)


def _records(pg: PgServed, tmp_path: Path, url: str, n: int) -> list[str]:
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / "rows.csv", n)), url=url)
    return [str(r["id"]) for r in pg.cli_json("worker1", "list", url=url)["records"]]


def test_a_connection_reads_only_the_checkpoints_added_since_the_last(
    fresh_pg_vault: PgServed, tmp_path: Path
) -> None:
    pg = fresh_pg_vault
    wa, wb = tmp_path / "witness-a.jsonl", tmp_path / "witness-b.jsonl"
    a = pg.start_replica(witness=wa)
    ids = _records(pg, tmp_path, a.url, 4)
    for record in ids[:3]:
        _approve(pg, record, a.url)
    b = pg.start_replica(witness=wb)
    # The first bootstrap through b reads every stored row once and copies them.
    pg.cli("worker1", "list", url=b.url)
    assert _catch_ups(b) == [(3, "all", 3)]
    # Later bootstraps with nothing new read no row (no catch-up line at all).
    for _ in range(3):
        pg.cli("worker1", "list", url=b.url)
    assert _catch_ups(b) == [(3, "all", 3)]
    # One approval through a: the next bootstrap through b reads that row only.
    _approve(pg, ids[3], a.url)
    pg.cli("worker1", "list", url=b.url)
    assert len(_catch_ups(b)) == 2
    read, where, copied = _catch_ups(b)[-1]
    assert (read, copied) == (1, 1) and where.startswith("after id ")
    # a read its own rows the same way: never all again after its first.
    assert [w for _, w, _ in _catch_ups(a)].count("all") == 1
    # Both witnesses still hold every stored checkpoint once, and verify.
    with _sql(pg) as conn:
        stored = {note_body(str(r[0])) for r in conn.execute("SELECT note FROM checkpoints")}
    assert len(stored) == 4
    for path in (wa, wb):
        held = _bodies(path)
        assert set(held) >= stored and len(held) == len(set(held))
    assert pg.cli_json("officer2", "audit", "verify", url=b.url)["ok"] is True
    # A witness file cut short while b runs is refilled at the next bootstrap,
    # as before the mark: b notices a note it held is gone and reads all rows.
    wb.write_bytes(b"")
    pg.cli("worker1", "list", url=b.url)
    assert _catch_ups(b)[-1] == (4, "all", 4)
    assert set(_bodies(wb)) == stored
    assert "lacks checkpoints it held" in b.log_path.read_text(encoding="utf-8")
    # A restarted replica has no mark: it reads every row once, copies nothing.
    b.stop()
    b = pg.start_replica(port=b.port, witness=wb)
    pg.cli("worker1", "list", url=b.url)
    assert _catch_ups(b)[-1] == (4, "all", 0)


def test_a_row_inserted_below_the_mark_is_still_copied(
    fresh_pg_vault: PgServed, tmp_path: Path
) -> None:
    """An insider withholds a checkpoint row, lets b read past it, then puts it
    back under its old (smaller) id: b notices the rows up to its mark changed
    and reads them all again, so the note is copied, not skipped."""
    pg = fresh_pg_vault
    wa, wb = tmp_path / "witness-a.jsonl", tmp_path / "witness-b.jsonl"
    a = pg.start_replica(witness=wa)
    b = pg.start_replica(witness=wb)
    ids = _records(pg, tmp_path, a.url, 2)
    _approve(pg, ids[0], a.url)
    with _sql(pg) as conn:
        row = conn.execute(
            "SELECT id, size, root, note, signer, created_at, resume_state FROM checkpoints "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert row is not None
        conn.execute("DELETE FROM checkpoints WHERE id = %s", (row[0],))
    _approve(pg, ids[1], a.url)
    pg.cli("worker1", "list", url=b.url)
    held = _bodies(wb)
    withheld = note_body(str(row[3]))
    assert withheld not in held and len(held) == 1
    with _sql(pg) as conn:
        conn.execute(
            "INSERT INTO checkpoints (id, size, root, note, signer, created_at, resume_state) "
            "OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s)",
            row,
        )
    pg.cli("worker1", "list", url=b.url)
    assert withheld in _bodies(wb)
    assert _catch_ups(b)[-1] == (2, "all", 1)
    assert "changed: reading them all" in b.log_path.read_text(encoding="utf-8")
    # Put back, the log verifies through b (its witness holds every checkpoint).
    assert pg.cli_json("officer2", "audit", "verify", url=b.url)["ok"] is True
