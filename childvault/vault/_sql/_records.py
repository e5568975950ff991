"""The repository of records (both stores): fields, key blobs, blind index, tombstones, imports."""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any

from childvault._i18n import _t
from childvault.keys import AccessDenied
from childvault.vault._backend import NewRecord, RecordRow
from childvault.vault._sql._conn import SqlConnection as Connection
from childvault.vault._sql._conn import as_bytes, marks

# Built once: json.dumps with keyword arguments builds a new encoder on every
# call, one a record of an import. The same bytes as json.dumps(obj, sort_keys=True)
# (and with ensure_ascii=False): the encoder's defaults are dumps' defaults.
_CONSENT_JSON = json.JSONEncoder(sort_keys=True).encode
_METADATA_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
#: A record's fields in name order (the primary key's), without a lambda a record.
_by_name = operator.itemgetter(0)


def _metadata_json(metadata: dict[str, str]) -> str:
    """:data:`_METADATA_JSON` of a record's clear metadata; a record type without
    any (the default schema's) stores ``{}`` without calling the encoder."""
    if type(metadata) is dict and not metadata:
        return "{}"
    return _METADATA_JSON(metadata)


_RECORD_SELECT = (
    "SELECT id, type, version, created_at, created_by, updated_at, consent, retain_until, "
    "metadata FROM records"
)


class Records:
    """Records, sealed fields, key blobs, blind index, tombstones and imports."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def insert(self, records: Sequence[NewRecord]) -> None:
        """Insert records with their sealed fields and wrapped keys.

        Rows go in primary-key order: random ids inserted in order touch each
        B-tree page once per batch instead of once per row, which matters with
        SQLCipher's ``cipher_memory_security`` (every page split allocates wiped
        memory); on PostgreSQL concurrent importers also lock rows in one order.

        Refused unless the ``accepting_records`` row says "1", read here, in
        the inserting transaction (P-23, compliance gap 8): the services check
        the verified log before they start, but a decommissioning committed
        between that check and this transaction would otherwise let the record
        in after its contact list was taken. Writers are serialised (SQLCipher's
        ``BEGIN IMMEDIATE``, PostgreSQL's advisory write lock, taken before this
        statement's READ COMMITTED snapshot), so this read sees every committed
        decommissioning, and the decommissioning's digest every committed
        insert. A server runs this same method in its transaction, so a client
        cannot skip it.
        """
        row = self._c.q("SELECT value FROM meta WHERE key = ?", ("accepting_records",)).fetchone()
        if row is None or str(row[0]) != "1":
            raise AccessDenied(_t("this vault is decommissioned: it no longer accepts records"))
        records = sorted(records, key=lambda r: r.row.id)
        self._c.many(
            "INSERT INTO records (id, type, version, created_at, created_by, updated_at, "
            "consent, retain_until, metadata, source, source_row) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.row.id,
                    r.row.type,
                    r.row.version,
                    r.row.created_at,
                    r.row.created_by,
                    r.row.updated_at,
                    _CONSENT_JSON(r.row.consent),
                    r.row.retain_until,
                    _metadata_json(r.row.metadata),
                    r.source,
                    r.source_row,
                )
                for r in records
            ],
        )
        self._c.many(
            "INSERT INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?)",
            [
                (r.row.id, name, ver, value)
                for r in records
                for name, ver, value in sorted(r.fields, key=_by_name)
            ],
        )
        self._c.many(
            "INSERT INTO keyblobs (record_id, version, blob) VALUES (?, ?, ?)",
            [(r.row.id, r.row.version, r.blob) for r in records],
        )

    def get(self, record_id: str) -> RecordRow | None:
        """A record's bookkeeping row, or None."""
        row = self._c.q(_RECORD_SELECT + " WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _record(row)

    def get_many(self, record_ids: Sequence[str]) -> dict[str, RecordRow]:
        """:meth:`get` of each of ``record_ids`` in few statements: id -> row, a
        record that does not exist left out (approve and read check many records
        at once; through the server that is one round trip, not one per record)."""
        found: dict[str, RecordRow] = {}
        for chunk in _chunks(record_ids):
            rows = self._c.q(
                _RECORD_SELECT + f" WHERE id IN ({marks(chunk)})",
                tuple(chunk),
            ).fetchall()
            found.update((str(r[0]), _record(r)) for r in rows)
        return found

    def keyblob_many(self, record_ids: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """:meth:`keyblob` of each of ``record_ids``: id -> (version, blob), a record
        without a key blob left out."""
        found: dict[str, tuple[int, bytes]] = {}
        for chunk in _chunks(record_ids):
            rows = self._c.q(
                "SELECT record_id, version, blob FROM keyblobs "  # noqa: S608 (placeholders only)
                f"WHERE record_id IN ({marks(chunk)})",
                tuple(chunk),
            ).fetchall()
            found.update((str(r), (int(v), as_bytes(b))) for r, v, b in rows)
        return found

    def fields_many(
        self, record_ids: Sequence[str], names: Sequence[str] | None = None
    ) -> dict[str, dict[str, tuple[int, bytes]]]:
        """:meth:`fields` of each of ``record_ids`` (every stored field if ``names`` is
        None): id -> {name: (version, sealed)}, one entry for every id asked for
        (empty for a record with none of the fields, as :meth:`fields` answers)."""
        found: dict[str, dict[str, tuple[int, bytes]]] = {str(r): {} for r in record_ids}
        if names is not None and not names:
            return found
        wanted = None if names is None else list(dict.fromkeys(names))
        for chunk in _chunks(list(found)):
            sql = (
                "SELECT record_id, name, version, value FROM fields "  # noqa: S608 (placeholders)
                f"WHERE record_id IN ({marks(chunk)})"
            )
            params: tuple[Any, ...] = tuple(chunk)
            if wanted is not None:
                sql += f" AND name IN ({marks(wanted)})"
                params += tuple(wanted)
            for r, n, v, b in self._c.q(sql + " ORDER BY record_id, name", params).fetchall():
                found[str(r)][str(n)] = (int(v), as_bytes(b))
        return found

    def page(self, *, after: str = "", limit: int = 1000) -> list[RecordRow]:
        """A page of records ordered by id (keyset pagination keeps memory flat)."""
        rows = self._c.q(
            _RECORD_SELECT + " WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [_record(r) for r in rows]

    def count(self) -> int:
        """How many live records there are."""
        return int(self._c.q("SELECT count(*) FROM records").fetchone()[0])

    def due(self, day: str, *, limit: int = 1000) -> list[str]:
        """Ids of records whose retention date is before ``day`` (ISO date)."""
        rows = self._c.q(
            "SELECT id FROM records WHERE retain_until < ? ORDER BY retain_until, id LIMIT ?",
            (day, limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def update(
        self, record_id: str, *, version: int, updated_at: str, consent: dict[str, Any] | None
    ) -> None:
        """Bump a record's version (and optionally replace its consent)."""
        if consent is None:
            self._c.q(
                "UPDATE records SET version = ?, updated_at = ? WHERE id = ?",
                (version, updated_at, record_id),
            )
        else:
            self._c.q(
                "UPDATE records SET version = ?, updated_at = ?, consent = ?, retain_until = ? "
                "WHERE id = ?",
                (
                    version,
                    updated_at,
                    json.dumps(consent, sort_keys=True),
                    str(consent["retain_until"]),
                    record_id,
                ),
            )

    def import_progress(self, source: str) -> tuple[int, bool]:
        """(rows already processed, finished?) of an import source; (0, False) if new."""
        row = self._c.q(
            "SELECT rows_done, finished_at FROM imports WHERE source = ?", (source,)
        ).fetchone()
        return (0, False) if row is None else (int(row[0]), row[1] is not None)

    def set_import_progress(
        self, source: str, rows_done: int, *, at: str, finished: bool = False
    ) -> None:
        """Record how far an import got, in the same transaction as its rows."""
        self._c.q(
            "INSERT INTO imports (source, rows_done, started_at, finished_at) "
            "VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET rows_done = excluded.rows_done, "
            "finished_at = excluded.finished_at",
            (source, rows_done, at, at if finished else None),
        )

    def fields(self, record_id: str, names: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        """Sealed values of the named fields present on a record: name -> (version, sealed)."""
        if not names:
            return {}
        rows = self._c.q(
            "SELECT name, version, value FROM fields "  # noqa: S608 (placeholders only)
            f"WHERE record_id = ? AND name IN ({marks(names)})",
            (record_id, *names),
        ).fetchall()
        return {str(n): (int(v), as_bytes(b)) for n, v, b in rows}

    def field_names(self, record_id: str) -> list[str]:
        """Names of the fields stored for a record."""
        rows = self._c.q(
            "SELECT name FROM fields WHERE record_id = ? ORDER BY name", (record_id,)
        ).fetchall()
        return [str(r[0]) for r in rows]

    def field_names_between(self, first: str, last: str) -> dict[str, list[str]]:
        """Field names of every record with an id in ``[first, last]``, in one query."""
        # One row a record (names joined by ","; field names are [a-z0-9_]).
        rows = self._c.q(
            "SELECT record_id, string_agg(name, ',') FROM fields "
            "WHERE record_id BETWEEN ? AND ? GROUP BY record_id",
            (first, last),
        ).fetchall()
        return {str(record_id): sorted(str(joined).split(",")) for record_id, joined in rows}

    def put_field(self, record_id: str, name: str, version: int, sealed: bytes) -> None:
        """Store (or replace) one sealed field value."""
        self._c.q(
            "INSERT INTO fields (record_id, name, version, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (record_id, name) DO UPDATE SET version = excluded.version, "
            "value = excluded.value",
            (record_id, name, version, sealed),
        )

    def keyblob(self, record_id: str) -> tuple[int, bytes] | None:
        """(record version, wrapped blob) of a record, or None."""
        row = self._c.q(
            "SELECT version, blob FROM keyblobs WHERE record_id = ?", (record_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), as_bytes(row[1]))

    def replace_keyblob(
        self, record_id: str, old_version: int, new_version: int, blob: bytes
    ) -> bool:
        """Move a record's blob to ``new_version`` only if it is still at ``old_version``."""
        cur = self._c.q(
            "UPDATE keyblobs SET version = ?, blob = ? WHERE record_id = ? AND version = ?",
            (new_version, blob, record_id, old_version),
        )
        return bool(cur.rowcount == 1)

    def put_keyblob_if_version(self, record_id: str, version: int, blob: bytes) -> bool:
        """Replace a blob only if the record is still at ``version`` (rotation vs correction)."""
        cur = self._c.q(
            "UPDATE keyblobs SET blob = ? WHERE record_id = ? AND version = ?",
            (blob, record_id, version),
        )
        return bool(cur.rowcount == 1)

    def keyblob_page(self, *, after: str = "", limit: int = 500) -> list[tuple[str, int, bytes]]:
        """A page of (record id, version, blob) ordered by id."""
        rows = self._c.q(
            "SELECT record_id, version, blob FROM keyblobs WHERE record_id > ? "
            "ORDER BY record_id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [(str(r), int(v), as_bytes(b)) for r, v, b in rows]

    def delete(self, record_id: str, *, at: str, by: str, reason: str) -> None:
        """Remove a record's rows (fields, keys, index) and leave a tombstone."""
        self._c.q("DELETE FROM records WHERE id = ?", (record_id,))
        self._c.q(
            "INSERT INTO tombstones (record_id, deleted_at, deleted_by, reason) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET "
            "deleted_at = excluded.deleted_at, deleted_by = excluded.deleted_by, "
            "reason = excluded.reason, key_destroyed = 0",
            (record_id, at, by, reason),
        )

    def tombstone(self, record_id: str) -> tuple[str, str, str, bool] | None:
        """(deleted_at, deleted_by, reason, key destroyed?) of a deleted record, or None."""
        row = self._c.q(
            "SELECT deleted_at, deleted_by, reason, key_destroyed FROM tombstones "
            "WHERE record_id = ?",
            (record_id,),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]), bool(row[3]))

    def mark_key_destroyed(self, record_ids: Sequence[str]) -> None:
        """Note that the provider destroyed these records' key material."""
        self._c.many(
            "UPDATE tombstones SET key_destroyed = 1 WHERE record_id = ?",
            [(r,) for r in record_ids],
        )

    def pending_shreds(self, *, limit: int = 1000) -> list[str]:
        """Deleted records whose external key material is not yet confirmed destroyed."""
        rows = self._c.q(
            "SELECT record_id FROM tombstones WHERE key_destroyed = 0 ORDER BY deleted_at LIMIT ?",
            (limit,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # -- blind index ------------------------------------------------------------

    def add_index_tags(self, rows: Sequence[tuple[str, bytes, str]]) -> None:
        """Add (field, tag, record id) rows to the blind index (in key order, see above)."""
        self._c.many(
            "INSERT INTO blind_index (field, tag, record_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            sorted(rows),
        )

    def drop_index_tags(self, record_id: str, field: str) -> None:
        """Remove a record's tags for one field (before re-indexing a corrected value)."""
        self._c.q("DELETE FROM blind_index WHERE record_id = ? AND field = ?", (record_id, field))

    def find_by_tag(self, field: str, tag: bytes) -> list[str]:
        """Record ids whose tag for ``field`` equals ``tag`` (candidates)."""
        rows = self._c.q(
            "SELECT record_id FROM blind_index WHERE field = ? AND tag = ? ORDER BY record_id",
            (field, tag),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def find_by_tags(self, field: str, tags: Sequence[bytes]) -> list[list[str]]:
        """:meth:`find_by_tag` of each of ``tags``, in order, in few statements.

        One list of record ids per tag (the same list the single call gives),
        so an import's duplicate check is one round trip per field and batch
        rather than one per row, through the server above all.
        """
        found: dict[bytes, list[str]] = {}
        unique = list(dict.fromkeys(bytes(t) for t in tags))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            rows = self._c.q(
                "SELECT tag, record_id FROM blind_index "  # noqa: S608 (placeholders only)
                f"WHERE field = ? AND tag IN ({marks(chunk)}) ORDER BY record_id",
                (field, *chunk),
            ).fetchall()
            for row in rows:
                found.setdefault(as_bytes(row[0]), []).append(str(row[1]))
        return [list(found.get(bytes(t), [])) for t in tags]


#: Values per ``IN (...)``: well inside SQLite's oldest bound of 999 parameters.
_IN_CHUNK = 500


def _chunks(values: Sequence[str]) -> list[list[str]]:
    """``values`` without repeats, in lists of at most :data:`_IN_CHUNK`."""
    unique = list(dict.fromkeys(str(v) for v in values))
    return [unique[i : i + _IN_CHUNK] for i in range(0, len(unique), _IN_CHUNK)]


def _record(row: Sequence[Any]) -> RecordRow:
    return RecordRow(
        str(row[0]),
        str(row[1]),
        int(row[2]),
        str(row[3]),
        str(row[4]),
        str(row[5]),
        json.loads(row[6]),
        str(row[7]),
        json.loads(row[8]),
    )
