"""Issue 18: an import commits batch N on a thread of its own while it stages
batch N+1 (docs/decisions.md, "An import commits a batch while it prepares the
next"). A failure of N, or of N+1's staging, must leave the vault exactly as
when the batches were written in turn: N-1 (or N) committed with its progress
row, nothing of the later batches, a resume that completes the file once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from childvault.keys import StorageError
from childvault.vault import _svc_records, _svc_records_import
from childvault.vault._importer import file_digest
from childvault.vault._sqlcipher import _conn
from tests.conftest import World
from tests.test_records import marked_rows, write_csv

ROWS = 14
BATCH = 4


def _state(world: World, src: Path) -> tuple[int, tuple[int, bool], int]:
    """(records, import progress, record.create entries), the log verified."""
    with world.open("officer1") as v:
        db = v._session.db
        entries = v.verify_audit().entries
        creates = sum(1 for e in v.audit_entries() if e["entry"]["action"] == "record.create")
        assert entries >= creates
        return db.records.count(), db.records.import_progress(file_digest(src)), creates


def _resume_completes(world: World, src: Path, before: int) -> None:
    with world.open("worker1") as v:
        report = v.import_file(src)
        assert report.imported == ROWS - before
        assert report.already_done == before
    count, (done, finished), creates = _state(world, src)
    assert (count, done, finished, creates) == (ROWS, ROWS, True, ROWS)


def test_a_failed_staging_leaves_the_batches_committed_before_it(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 3's staging fails while batch 2 commits: batch 2 still commits (as it
    had when batches were written in turn), its progress row with it."""
    monkeypatch.setattr(_svc_records_import, "_IMPORT_BATCH", BATCH)
    src = write_csv(tmp_path / "rows.csv", marked_rows(ROWS))
    staged = _svc_records.RecordService._staged
    calls = 0

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("staging failed")
        return staged(self, *args, **kwargs)

    monkeypatch.setattr(_svc_records.RecordService, "_staged", failing)
    with world.open("worker1") as v, pytest.raises(RuntimeError, match="staging failed"):
        v.import_file(src)
    monkeypatch.setattr(_svc_records.RecordService, "_staged", staged)
    count, (done, finished), creates = _state(world, src)
    assert (count, done, finished, creates) == (2 * BATCH, 2 * BATCH, False, 2 * BATCH)
    _resume_completes(world, src, 2 * BATCH)


def test_a_failed_commit_discards_the_next_batch(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 2's COMMIT is refused by SQLite (a row breaking a deferred foreign key
    is slipped into its transaction): batch 2 is rolled back, batch 3 (staged
    meanwhile) is never written, the import raises the storage error, and only
    batch 1 and its progress remain."""
    monkeypatch.setattr(_svc_records_import, "_IMPORT_BATCH", BATCH)
    src = write_csv(tmp_path / "rows.csv", marked_rows(ROWS))
    commit = _conn.BackgroundCommit._commit
    calls = 0

    def refused(self: _conn.BackgroundCommit) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raw = self._conn.conn
            raw.execute("PRAGMA defer_foreign_keys = ON")
            raw.execute(
                "INSERT INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?)",
                ("no-such-record", "name", 1, b"x"),
            )
        commit(self)

    monkeypatch.setattr(_conn.BackgroundCommit, "_commit", refused)
    with world.open("worker1") as v, pytest.raises(StorageError):
        v.import_file(src)
    monkeypatch.setattr(_conn.BackgroundCommit, "_commit", commit)
    count, (done, finished), creates = _state(world, src)
    assert (count, done, finished, creates) == (BATCH, BATCH, False, BATCH)
    _resume_completes(world, src, BATCH)


def test_progress_is_reported_for_committed_batches_only(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's progress is reported once it is committed, in order, then the end."""
    monkeypatch.setattr(_svc_records_import, "_IMPORT_BATCH", BATCH)
    src = write_csv(tmp_path / "rows.csv", marked_rows(ROWS))
    seen: list[tuple[int, int, int]] = []
    with world.open("worker1") as v:
        db = v._session.db

        def progress(done: int, total: int) -> None:
            # Called on the importing thread with the connection back: the batch is there.
            seen.append((done, total, db.records.count()))

        report = v.import_file(src, progress=progress)
    assert report.imported == ROWS
    assert seen == [(4, ROWS, 4), (8, ROWS, 8), (12, ROWS, 12), (ROWS, ROWS, ROWS)]
