"""Set-up shared by the tests of the audit log's indexes and migrations.

``tests/insider/test_log_index.py``, ``tests/insider/test_log_index_transfers.py``
and ``tests/test_incremental_checkpoints.py`` each built a database as an older
release left it and asked query plans the same way: one copy here.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlcipher3

from childvault.vault import _merkle
from childvault.vault._sqlcipher import MIGRATIONS, SQLCipherBackend
from tests._insider import Insider


@contextmanager
def old_store(path: Path, version: int, entries: Sequence[bytes]) -> Iterator[SQLCipherBackend]:
    """A database at ``path`` as schema ``version`` left it (migrations 1 to
    ``version`` only) whose log holds ``entries`` (seq = position), opened by
    today's backend: opening it runs the newer migrations."""
    key = secrets.token_bytes(32)
    conn = sqlcipher3.connect(str(path), isolation_level=None)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    for migration in MIGRATIONS[:version]:
        for stmt in migration.split(";"):
            if stmt.strip():
                conn.execute(stmt)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.executemany(
        "INSERT INTO audit (seq, entry, hash) VALUES (?, ?, ?)",
        [(i, e, _merkle.leaf_hash(e)) for i, e in enumerate(entries)],
    )
    conn.close()
    store = SQLCipherBackend(path, key)
    try:
        yield store
    finally:
        store.close()


def query_plan(insider: Insider, sql: str, params: Sequence[object]) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` of ``sql`` as one string (index names appear in it)."""
    plan = insider.execute(f"EXPLAIN QUERY PLAN {sql}", list(params))
    return " ".join(str(c) for row in plan for c in row)
