"""The SQLCipher backend through the backend protocol (no vault around it)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from childvault.keys import IntegrityError, StorageError
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._backend import Backend, BackendLog
from childvault.vault._sqlcipher import SQLCipherBackend, _conn

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _backend(tmp_path: Path) -> Backend:
    return SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)


def test_checkpoint_compare_and_set_stores_only_at_the_head(tmp_path: Path) -> None:
    db = _backend(tmp_path)
    try:
        with db.transaction():
            assert db.checkpoints.add_at_head(0, b"r", "n0", "a", "t", b"") is not None
            _audit.append(db.audit, [Event("a", "audit.checkpoint")] * 2, NOW)
            assert db.checkpoints.add_at_head(1, b"r", "n1", "a", "t", b"") is None
            assert db.checkpoints.add_at_head(3, b"r", "n3", "a", "t", b"") is None
            assert db.checkpoints.add_at_head(2, b"r", "n2", "a", "t", b"s") is not None
        assert [(c.size, c.note) for c in db.checkpoints.all()] == [(0, "n0"), (2, "n2")]
        assert db.checkpoints.latest_by("a") == ("n2", b"s")
        assert [c.note for c in db.checkpoints.since(0)] == ["n0", "n2"]
        assert [c.note for c in db.checkpoints.since(1)] == ["n2"]
        assert [c.note for c in db.checkpoints.since(2)] == ["n2"]
        assert db.checkpoints.since(3) == []
        assert BackendLog(db).checkpoints_from(2) == db.checkpoints.since(2)
    finally:
        db.close()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = _backend(tmp_path)
    try:
        try:
            with db.transaction():
                _audit.append(db.audit, [Event("a", "audit.checkpoint")], NOW)
                db.meta.set("k", "v")
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert db.audit.head() == (0, None) and db.meta.get("k") is None
        with db.transaction(), db.transaction():  # nested use joins the outer transaction
            _audit.append(db.audit, [Event("a", "audit.checkpoint")], NOW)
        report = _audit.verify(BackendLog(db), origin="o", signers={})
        assert report.entries == 1
    finally:
        db.close()


def test_a_background_commit_holds_the_connection_until_waited_for(tmp_path: Path) -> None:
    """An import's COMMIT runs on a thread of its own: until ``wait`` the connection
    is refused to every other use (one thread at a time), then it is back and the
    transaction's rows are there."""
    db = SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)
    commits = db.background_commit()
    try:
        with commits.transaction():
            db.meta.set("k", "v1")
            _audit.append(db.audit, [Event("a", "audit.checkpoint")], NOW)
        # Refused whether or not the commit thread has finished: only wait() gives it back.
        with pytest.raises(StorageError, match="another thread"):
            db.meta.get("k")
        with pytest.raises(StorageError, match="another thread"), db.transaction():
            pass
        commits.wait()
        assert db.meta.get("k") == "v1" and db.audit.head()[0] == 1
        # The next transaction waits for the previous commit itself.
        with commits.transaction():
            db.meta.set("k", "v2")
        with commits.transaction():
            db.meta.set("k2", "x")
        commits.close()
        assert (db.meta.get("k"), db.meta.get("k2")) == ("v2", "x")
    finally:
        commits.close()
        db.close()


def test_a_background_commit_that_fails_rolls_back_and_raises_at_wait(tmp_path: Path) -> None:
    """A COMMIT refused by SQLite (a deferred foreign key, checked only at COMMIT)
    rolls the transaction back on the commit thread and is raised by ``wait``, as
    :meth:`transaction` raises it; the connection is usable afterwards."""
    db = SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)
    conn = db._conn
    commits = db.background_commit()
    try:
        with commits.transaction():
            db.meta.set("k", "v")
            conn.q("PRAGMA defer_foreign_keys = ON")
            conn.q(
                "INSERT INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?)",
                ("no-such-record", "name", 1, b"x"),
            )
        with pytest.raises(StorageError):
            commits.wait()
        assert db.meta.get("k") is None
        assert conn.q("SELECT count(*) FROM fields").fetchone()[0] == 0
        # A failure inside the body rolls back at once, as a plain transaction does.
        with pytest.raises(RuntimeError), commits.transaction():
            db.meta.set("k", "v")
            raise RuntimeError("boom")
        assert db.meta.get("k") is None
        with db.transaction():
            db.meta.set("k", "after")
        assert db.meta.get("k") == "after"
    finally:
        commits.close()
        db.close()


def test_a_background_commit_does_not_join_an_open_transaction(tmp_path: Path) -> None:
    db = SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)
    commits = db.background_commit()
    try:
        with db.transaction():
            with pytest.raises(StorageError, match="open transaction"), commits.transaction():
                pass
            db.meta.set("k", "v")
        assert db.meta.get("k") == "v"
    finally:
        commits.close()
        db.close()


def test_many_rows_go_in_multi_row_inserts_with_executemany_s_results(tmp_path: Path) -> None:
    """``many`` and ``append`` insert a plain one-row INSERT's rows as few
    multi-row statements (bound and stepped once each: docs/decisions.md,
    "Multi-row inserts"): the same rows, in chunks past the parameter bound,
    duplicates ignored under ``ON CONFLICT DO NOTHING`` within and across
    statements, a constraint violation refused whole, an audit sequence
    collision still an :class:`IntegrityError`."""
    db = SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)
    conn = db._conn
    sql = "INSERT INTO meta (key, value) VALUES (?, ?)"
    statements = _conn._multirow(sql, [("a", "1"), ("b", "2")])
    assert statements == [
        ("INSERT INTO meta (key, value) VALUES (?, ?), (?, ?)", ["a", "1", "b", "2"])
    ]
    # Not a plain insert, or a row of another width: executemany's own way.
    assert _conn._multirow("UPDATE meta SET value = ? WHERE key = ?", [("1", "a")]) is None
    assert _conn._multirow(sql, [("a", "1"), ("b",)]) is None
    n = _conn._MAX_PARAMS // 3 + 7  # more rows than one statement binds
    rows = [("f", secrets.token_bytes(8), f"r{i:05d}") for i in range(n)]
    assert len(_conn._multirow("INSERT INTO t (a, b, c) VALUES (?, ?, ?)", rows) or []) == 2
    try:
        with db.transaction():
            conn.q(
                "INSERT INTO records (id, type, version, created_at, created_by, updated_at, "
                "consent, retain_until, metadata) "
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "SELECT 'r' || printf('%05d', i), 't', 1, '', '', '', '{}', '', '{}' FROM n",
                (n - 1,),
            )
            db.records.add_index_tags([*rows, rows[0], rows[-1]])
        assert conn.q("SELECT count(*) FROM blind_index").fetchone()[0] == n
        assert db.records.find_by_tag("f", rows[-1][1]) == [rows[-1][2]]
        with pytest.raises(StorageError, match="constraint"), db.transaction():
            conn.many(sql, [("x", "1"), ("y", "2"), ("x", "3")])
        assert conn.q("SELECT count(*) FROM meta WHERE key IN ('x', 'y')").fetchone()[0] == 0
        with pytest.raises(StorageError), db.transaction():
            conn.many(sql, [("x", "1"), ("y",)])
        assert conn.q("SELECT count(*) FROM meta WHERE key IN ('x', 'y')").fetchone()[0] == 0
        with db.transaction():
            _audit.append(db.audit, [Event("a", "audit.checkpoint")] * 3, NOW)
        assert db.audit.head()[0] == 3
        with pytest.raises(IntegrityError, match="collision"), db.transaction():
            db.audit.append([(3, b"e", b"h", None), (4, b"e", b"h", None), (3, b"e", b"h", None)])
        assert db.audit.head()[0] == 3
    finally:
        db.close()


def test_a_connection_used_from_another_thread_is_refused(tmp_path: Path) -> None:
    """sqlite3's same-thread check is off (a background COMMIT needs it off); the
    connection's own check refuses a thread that did not open it, as before."""
    import threading

    db = SQLCipherBackend(tmp_path / "db", secrets.token_bytes(32), create=True)
    caught: list[BaseException] = []

    def use() -> None:
        try:
            db.meta.get("k")
        except BaseException as exc:  # reported to the test thread
            caught.append(exc)

    try:
        thread = threading.Thread(target=use)
        thread.start()
        thread.join()
        assert len(caught) == 1 and isinstance(caught[0], StorageError)
        assert "one Vault per thread" in str(caught[0])
        assert db.meta.get("k") is None
    finally:
        db.close()
