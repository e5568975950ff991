"""The SQLCipher backend through the backend protocol (no vault around it)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._backend import Backend, BackendLog
from childvault.vault._sqlcipher import SQLCipherBackend

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
