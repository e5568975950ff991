"""Fast construction of large states (1,000,000 log entries or records) for the benchmarks.

The rows are written in the product's own formats through a raw SQLCipher
connection opened with the vault's real database key, in transactions of
50,000 rows, with ``cipher_memory_security`` left off for the build only (the
product's SQLCipher backend turns it on; the *measured* operations
always go through the product's backend). Log entries are produced by the
product's own :func:`vault._audit.append` (canonical RFC 8785 bytes, hash
chain), through a two-method adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHUNK = 50_000


def connect(home: Path, identity: Any) -> Any:
    """A raw SQLCipher connection to a home's database (what an insider with the key has)."""
    import sqlcipher3

    from childvault.keys import KeySlots

    vault_id = json.loads((home / "config.json").read_text())["vault_id"]
    key = KeySlots(home / "keyslots.json").open(identity, vault_id)["db"]
    conn = sqlcipher3.connect(str(home / "vault.db"), isolation_level=None)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class _Appender:
    """The two audit-log methods :func:`vault._audit.append` needs, on a raw connection."""

    def __init__(self, conn: Any, signer: Any = None) -> None:
        self.conn = conn
        #: Signs the entries in its own name (``vault._audit.append`` asks for it).
        self.signer = signer

    def head(self) -> tuple[int, bytes | None]:
        row = self.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, None) if row is None else (int(row[0]) + 1, bytes(row[1]))

    def append(self, rows: Sequence[tuple[int, bytes, bytes, bytes | None]]) -> None:
        self.conn.executemany("INSERT INTO audit (seq, entry, hash, sig) VALUES (?, ?, ?, ?)", rows)


def fill_log(home: Path, identity: Any, entries: int, actor: str = "worker1") -> int:
    """Append record.create-like entries until the log holds ``entries``; return the size."""
    import secrets
    from datetime import UTC, datetime

    from bench._common import FIELDS
    from childvault.vault import _audit

    conn = connect(home, identity)
    app = _Appender(conn, identity if getattr(identity, "name", None) == actor else None)
    now = datetime.now(UTC)
    try:
        size = app.head()[0]
        while size < entries:
            n = min(CHUNK, entries - size)
            events = [
                _audit.Event(
                    actor,
                    "record.create",
                    records=[secrets.token_hex(16)],
                    fields=list(FIELDS),
                    detail={"type": "child", "source": "0123456789abcdef", "row": size + i + 1},
                )
                for i in range(n)
            ]
            conn.execute("BEGIN IMMEDIATE")
            _audit.append(app, events, now)  # type: ignore[arg-type]
            conn.execute("COMMIT")
            size += n
        return size
    finally:
        conn.close()


def fill_records(home: Path, identity: Any, total: int, tags: Any) -> int:
    """Add synthetic ``records`` rows and their ``id_number`` blind-index rows up to ``total``.

    ``tags(values)`` computes the product's index tags (``Vault.index_tags``),
    so lookups by the synthetic values find their rows. The records carry
    bookkeeping only (no fields or key blobs): ``find`` reads neither.
    """
    import secrets

    conn = connect(home, identity)
    try:
        have = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        consent = json.dumps(
            {"by": "guardian", "purposes": ["case_management"], "retain_until": "2034-01-01"},
            sort_keys=True,
        )
        while have < total:
            n = min(CHUNK, total - have)
            ids = [secrets.token_hex(16) for _ in range(n)]
            values = [synthetic_id_number(have + i) for i in range(n)]
            macs = tags(values)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO records (id, type, version, created_at, created_by, updated_at, "
                "consent, retain_until, metadata) VALUES (?, 'child', 1, ?, 'worker1', ?, ?, "
                "'2034-01-01', '{}')",
                [
                    (rid, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z", consent)
                    for rid in ids
                ],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO blind_index (field, tag, record_id) VALUES (?, ?, ?)",
                [("id_number", mac, rid) for mac, rid in zip(macs, ids, strict=True)],
            )
            conn.execute("COMMIT")
            have += n
        return have
    finally:
        conn.close()


def synthetic_id_number(i: int) -> str:
    """A valid-looking (invented) resident identity number, distinct for each ``i`` < 10^8."""
    from datetime import date, timedelta

    from childvault.vault._validators import make_id_number

    dob = date(2010, 1, 1) + timedelta(days=i % 5000)
    region = f"{110101 + (i // 5000) % 900:06d}"
    return make_id_number(region, dob, (i // (5000 * 900)) % 1000)
