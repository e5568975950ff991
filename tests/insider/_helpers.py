"""What the insider tests of records share: the logged refusals, a request for
records, and a record's rows saved and put back (a rollback done by hand)."""

from __future__ import annotations

from typing import Any

from childvault.vault import _audit
from tests._insider import Insider
from tests.conftest import World

#: The tables holding one record's rows (its row, its fields, its key blobs).
RECORD_TABLES = ("records", "fields", "keyblobs")


def refusals(world: World, on: str) -> list[dict[str, object]]:
    """The ``trust.refuse`` entries of the log whose detail says they refused ``on``."""
    with world.open("admin") as v:
        entries = [
            _audit.decode_entry(e) for e in v._session.db.audit.entries_by_action(("trust.refuse",))
        ]
    return [e for e in entries if e["detail"]["on"] == on]  # type: ignore[index]


def request(world: World, ids: list[str], fields: tuple[str, ...] = ("name",)) -> str:
    """worker1's pending request for ``fields`` of ``ids`` (case management)."""
    with world.open("worker1") as v:
        return v.request_access(ids, list(fields), "case_management", "家访")


def record_rows(world: World, rid: str) -> dict[str, Any]:
    """Every row of record ``rid``, by table, with the tables' column names, as an
    insider (worker2) reads them: what :func:`put_back` writes again."""
    with Insider(world, "worker2") as insider:
        rows = {
            t: insider.rows(t, where={"record_id" if t != "records" else "id": rid})
            for t in RECORD_TABLES
        }
        columns = {
            t: [r[1] for r in insider.execute(f"PRAGMA table_info({t})")] for t in RECORD_TABLES
        }
    return {"rows": rows, "columns": columns}


def put_back(world: World, rid: str, saved: dict[str, Any]) -> None:
    """The insider (worker2) puts every row of record ``rid`` back as ``saved``
    (from :func:`record_rows`) holds them."""
    rows, columns = saved["rows"], saved["columns"]
    with Insider(world, "worker2") as insider:
        insider.delete("fields", {"record_id": rid})
        insider.delete("keyblobs", {"record_id": rid})
        for t in ("fields", "keyblobs"):
            for row in rows[t]:
                insider.insert(t, dict(zip(columns[t], row, strict=True)))
        rec = dict(zip(columns["records"], rows["records"][0], strict=True))
        insider.update("records", {k: v for k, v in rec.items() if k != "id"}, {"id": rid})
