"""Witness files of several ``serve`` replicas on one PostgreSQL database (issue 17).

Each replica may keep a witness file of its own (``serve --witness-file``):
it appends the checkpoints of the approvals it serves and, before it answers a
client's bootstrap, copies in the verified checkpoints other replicas stored,
so either file verifies the whole log. Several writers on one witness file
never interleave a line. Real parts only: the session's PostgreSQL server,
``childvault serve`` processes, CLI clients as separate processes.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import psycopg

from childvault.server._witnessfile import append_missing, append_notes, note_body, read_notes
from childvault.vault import _audit
from tests.fixtures.sessions import OWNER
from tests.scale._replicas import PgServed
from tests.server._vaultserver import synthetic_csv


def _approve(pg: PgServed, record: str, url: str) -> None:
    """worker1 asks through ``url`` and officer1 approves through ``url``."""
    req = pg.request("worker1", record, reason="home visit", url=url)
    pg.cli("officer1", "approve", req, url=url)


def _bodies(path: Path) -> list[str]:
    return [note_body(n) for n in _audit.read_witness(path)]


def _stored(pg: PgServed) -> list[str]:
    with pg.open_local("officer1") as officer:
        return [note_body(cp.note) for cp in officer._session.db.checkpoints.all()]


def test_each_replica_witness_holds_every_checkpoint_and_verifies(
    fresh_pg_vault: PgServed, tmp_path: Path
) -> None:
    pg = fresh_pg_vault
    configured = pg.open_local("officer1")
    with configured:
        home_witness = configured.witness_path
    before = home_witness.read_bytes() if home_witness.exists() else b""
    wa, wb = tmp_path / "witness-a.jsonl", tmp_path / "witness-b.jsonl"
    a = pg.start_replica(witness=wa)
    b = pg.start_replica(witness=wb)
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / "rows.csv", 4)), url=a.url)
    ids = [r["id"] for r in pg.cli_json("worker1", "list", url=a.url)["records"]]
    _approve(pg, ids[0], a.url)
    _approve(pg, ids[1], b.url)
    _approve(pg, ids[2], a.url)
    # Verifying through either replica: its own witness, caught up with the other's.
    for replica in (a, b):
        done = pg.cli_json("officer2", "audit", "verify", url=replica.url)
        assert done["ok"] is True
    stored = _stored(pg)
    assert len(stored) >= 3
    for path in (wa, wb):
        held = _bodies(path)
        assert set(stored) <= set(held), path
        assert len(held) == len(set(held)), f"a checkpoint twice in {path}"
        assert path.stat().st_mode & 0o777 == 0o600
    # The replicas wrote only their own files, not the home's configured witness.
    assert (home_witness.read_bytes() if home_witness.exists() else b"") == before
    # Either file, put where the configured witness goes, verifies the log offline.
    for path in (wa, wb):
        shutil.copy(path, home_witness)
        with pg.open_local("officer2") as officer:
            assert officer.verify_audit().witnessed >= len(stored)
    assert a.refusals() == b.refusals() == []


def test_a_stored_checkpoint_that_does_not_verify_is_not_copied(
    fresh_pg_vault: PgServed, tmp_path: Path
) -> None:
    pg = fresh_pg_vault
    wa, wb = tmp_path / "witness-a.jsonl", tmp_path / "witness-b.jsonl"
    a = pg.start_replica(witness=wa)
    b = pg.start_replica(witness=wb)
    pg.cli("worker1", "import", str(synthetic_csv(tmp_path / "rows.csv", 2)), url=a.url)
    ids = [r["id"] for r in pg.cli_json("worker1", "list", url=a.url)["records"]]
    _approve(pg, ids[0], a.url)
    good = _bodies(wa)
    assert good
    # An insider with the migration role adds a checkpoint row officer1 never
    # signed: officer1's genuine note with a larger size, under the old signature.
    genuine = _audit.read_witness(wa)[0]
    body, signatures = genuine.split("\n\n", 1)
    lines = body.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    forged = "\n".join(lines) + "\n\n" + signatures
    with psycopg.connect(pg.postgres.dsn(OWNER, pg.database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO checkpoints (size, root, note, signer, created_at, resume_state) "
            "SELECT size + 1, root, %s, signer, created_at, resume_state FROM checkpoints "
            "ORDER BY id DESC LIMIT 1",
            (forged,),
        )
    # A bootstrap through b makes it catch up: the genuine note is copied, the forged not.
    pg.cli("worker1", "list", url=b.url)
    assert _bodies(wb) == good
    assert note_body(forged) not in _bodies(wb)
    assert "is not copied to the witness" in b.log_path.read_text(encoding="utf-8")


def _hammer(path: str, writer: int, count: int) -> None:
    """Append ``count`` large notes (``writer`` in each) to the file at ``path``."""
    for i in range(count):
        # Larger than a pipe buffer and the default write buffer: one line is
        # more than one page, so only the lock keeps it whole.
        append_notes(Path(path), [f"writer {writer} note {i}\n" + "x" * 70_000])


def test_writers_on_one_witness_file_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("spawn")
    writers, each = 4, 25
    procs = [ctx.Process(target=_hammer, args=(str(path), w, each)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    notes = [json.loads(line)["note"] for line in lines[:-1]]
    assert sorted(notes) == sorted(
        f"writer {w} note {i}\n" + "x" * 70_000 for w in range(writers) for i in range(each)
    )
    # Catching up adds only what is missing, under the same lock.
    added, after = append_missing(path, [notes[0], "writer 9 note 0\n"], read_notes(path))
    assert added == 1 and after.notes == [*notes, "writer 9 note 0\n"]
